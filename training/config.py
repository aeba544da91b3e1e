"""The training YAML, as typed dataclasses.

```yaml
name: tiny                       # run name; default: a timestamp
output_dir: runs                 # each run writes runs/<name>/
model: {preset: tiny, overrides: {max_seq_len: 64}}
data:
  datasets:
    - {path: s3://bucket/web, proportion: 0.7}          # newest complete v=N under the root
    - {path: s3://bucket/code, proportion: 0.3, version: 3}
train: {max_steps: 1000, global_batch_size: 256, micro_batch_size: 8}
optimizer: {name: adamw, lr: 3.0e-4, weight_decay: 1.0e-5}
schedule: {warmup_steps: 100, decay: cosine}
```
Every key is checked (name and type) by ``shards.config.from_dict`` and every cross-key rule by
``check_world_size``, so ``python -m training.launch`` rejects a bad file before any rank starts.
Overrides on the command line use dotted keys: ``train.max_steps=10 optimizer.lr=1e-3``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shards.config import ConfigError, from_dict, load_yaml, parse_override, set_path, to_dict

from .model import MPTConfig


def _positive(section: str, **values: Any) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ValueError(f"{section}.{key} must be positive, got {value!r}")


@dataclass
class ModelSection:
    """An MPT preset (see training.model.PRESETS) and any MPTConfig fields to change."""

    preset: str = "tiny"  # a name in training.model.PRESETS: tiny, 125m, 350m, 760m, 1b, 3b, 7b, 30b
    overrides: dict[str, Any] = field(default_factory=dict)  # MPTConfig fields to change (table below)

    def __post_init__(self) -> None:
        self.build()  # an unknown preset or field, or a bad shape, fails while the YAML is checked

    def build(self) -> MPTConfig:
        return MPTConfig.preset(self.preset, **self.overrides)


@dataclass
class DatasetSpec:
    """One dataset of the mixture.

    ``path`` is a dataset root (its newest complete ``v=N``, or ``version`` when given), one
    ``v=N`` folder, or a plain MDS folder with an index.json (no manifest, so no version).
    """

    path: str  # dataset root, v=N folder or plain MDS folder; local, file://, s3://, gs://
    proportion: float = 1.0  # share of each batch drawn from this dataset (normalised over the mixture)
    version: int | None = None  # pin a dataset version; default the newest complete one
    # Only this source's samples, from a dataset the ETL packed by source (tokenize.pack_by_source): list the
    # same path once per source to mix its sources by proportion (and by data.schedule).
    source: str | None = None

    def __post_init__(self) -> None:
        _positive("dataset", proportion=self.proportion, version=self.version)


@dataclass
class InstructionSpec:
    """Prompt/response JSONL for instruction fine-tuning (training.data.finetune): examples are packed
    into rows of ``seq_len`` tokens, loss only on response tokens, packed examples kept apart. The rows
    are written once per machine as MDS under ``cache_dir`` and then streamed like any dataset."""

    path: str  # local JSONL, one {prompt_key: ..., response_key: ...} object a line; the prompt holds its template
    tokenizer: str  # tokenizer.json (Hugging Face tokenizers); its end-of-text token ends each response
    seq_len: int | None = None  # tokens per packed row; default model max_seq_len
    prompt_key: str = "prompt"  # the JSON key of each example's prompt...
    response_key: str = "response"  # ...and of its response (the tokens that carry loss)
    overflow: Literal["truncate", "drop"] = "truncate"  # an example longer than seq_len: cut its end, or leave it out
    eval_path: str | None = None  # held-out JSONL for the eval loss; default: eval_fraction of path's examples
    eval_fraction: float = 0.1  # examples of path held out (picked with data.seed) when eval_path is null; 0: none
    cache_dir: str | None = None  # packed rows (MDS), keyed by content; default <tmp>/kiln-instruction-cache

    def __post_init__(self) -> None:
        _positive("data.instruction", seq_len=self.seq_len)
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"data.instruction.eval_fraction must be in [0, 1), got {self.eval_fraction}")

    @property
    def has_held_out(self) -> bool:
        return self.eval_path is not None or self.eval_fraction > 0


@dataclass
class PhaseSection:
    """One phase of ``data.schedule``: the mixture's proportions until a step."""

    until_step: int | None = None  # the phase's last step; null: to the end of the run (the last phase only)
    proportions: list[float] = field(default_factory=list)  # one per data.datasets entry, in order; 0 leaves one out

    def __post_init__(self) -> None:
        _positive("data.schedule", until_step=self.until_step)
        if not self.proportions or min(self.proportions) < 0 or sum(self.proportions) <= 0:
            raise ValueError(f"data.schedule: proportions must be given, none negative and not all 0, got {self.proportions!r}")


@dataclass
class DataSection:
    datasets: list[DatasetSpec] = field(default_factory=list)  # the pre-training mixture (MDS datasets)...
    instruction: InstructionSpec | None = None  # ...or instead prompt/response data to fine-tune on
    train_split: str = "train"  # the split folder training reads
    eval_split: str | None = "val"  # the split evaluation reads; null: none
    shuffle: bool = True  # false: read samples in stored order (the ETL already shuffled globally)
    # The shuffle permutes shards, then samples within windows of this many consecutive shards.
    shuffle_window_shards: int = 8
    seed: int = 1234  # the sample order depends on this and the epoch only (not on ranks or workers)
    # Remote shards are kept here (default: <tmp>/kiln-shard-cache), least recently used out first.
    cache_dir: str | None = None
    cache_limit_gb: float = 64.0  # local shard cache size before eviction
    prefetch_shards: int = 4  # shards downloaded ahead of the one being read
    download_retries: int = 5  # attempts per shard, with exponential backoff
    verify_hashes: bool = True  # check each downloaded shard against the hashes in index.json
    num_workers: int = 1  # DataLoader worker processes per rank
    prefetch_batches: int = 4  # batches each worker prepares ahead
    # A file of document ids, one a line as `etl erase --ids` takes them (local path or object-store URL):
    # those documents' tokens carry no loss wherever the train split holds them, traced through the datasets'
    # provenance tables. Sample positions and order stay as they are; the list is read at every (re)start.
    exclude_docs: str | None = None
    # Mixture phases (training.data.order): the datasets' proportions change at the steps given, e.g. an
    # anneal on high-quality data at the end; each dataset's samples continue where the last phase left them.
    schedule: list[PhaseSection] = field(default_factory=list)
    # The run's step where this data takes over (a later data phase, e.g. a long-context stage on a dataset packed
    # at a longer seq_len): the run goes on from its checkpoint of this step with model, optimizer and schedule,
    # and this data's order starts at position 0; the tokens consumed before carry over. 0: the run's data.
    from_step: int = 0

    def __post_init__(self) -> None:
        if bool(self.datasets) == (self.instruction is not None):
            raise ValueError("data: give either datasets (at least one) or instruction, not both")
        if self.exclude_docs is not None and self.instruction is not None:
            raise ValueError("data.exclude_docs traces document ids through the provenance tables of ETL-built "
                             "datasets; data.instruction has none")
        if self.exclude_docs == "":
            raise ValueError("data.exclude_docs must be a file path or URL, or null")
        if self.schedule:
            self._check_schedule()
        _positive("data", shuffle_window_shards=self.shuffle_window_shards, cache_limit_gb=self.cache_limit_gb,
                  prefetch_shards=self.prefetch_shards, prefetch_batches=self.prefetch_batches)
        if self.num_workers < 0 or self.download_retries < 0 or self.from_step < 0:
            raise ValueError("data.num_workers, data.download_retries and data.from_step must be >= 0")

    def _check_schedule(self) -> None:
        if self.instruction is not None:
            raise ValueError("data.schedule mixes data.datasets; data.instruction has none")
        if any(d.proportion != 1.0 for d in self.datasets):
            raise ValueError("data.schedule sets the proportions: leave data.datasets[].proportion out")
        if any(len(p.proportions) != len(self.datasets) for p in self.schedule):
            raise ValueError(f"data.schedule: every phase gives one proportion per dataset ({len(self.datasets)})")
        ends = [p.until_step for p in self.schedule]
        if None in ends[:-1] or any(b is not None and b <= a for a, b in zip(ends, ends[1:])):
            raise ValueError(f"data.schedule: until_step must rise from phase to phase, only the last may be null; got {ends}")
        if ends[0] is not None and ends[0] <= self.from_step:
            raise ValueError(f"data.schedule: the first phase ends at step {ends[0]}, not after data.from_step "
                             f"({self.from_step}) where this data starts")


@dataclass
class SeqLenWarmupSection:
    """Sequence-length warmup, as Composer's SeqLengthWarmup with truncation: step s of the first ``steps``
    trains on each sample's first L(s) tokens, L growing linearly from ``start`` towards the data's seq_len.
    The rest of each sample is dropped, not kept for later, so the data order and the loader's position
    are those of a run without warmup (resume and N->M restarts are unaffected)."""

    steps: int = 0  # steps of warmup; 0: off
    start: int = 64  # tokens per sample at step 1; must be below the data's seq_len
    multiple: int = 8  # L(s) is rounded down to a multiple of this (never below start)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"train.seq_len_warmup.steps must be >= 0, got {self.steps!r}")
        _positive("train.seq_len_warmup", multiple=self.multiple)
        if self.start < 2:
            raise ValueError(f"train.seq_len_warmup.start must be at least 2 tokens (one input, one label), got {self.start!r}")

    def length(self, step: int, seq_len: int) -> int:
        """Tokens per sample at ``step`` (1-based) for data of ``seq_len`` tokens."""
        if step > self.steps:
            return seq_len
        grown = self.start + (seq_len - self.start) * (step - 1) / self.steps
        return min(seq_len, max(self.start, int(grown) // self.multiple * self.multiple))


@dataclass
class TrainSection:
    max_steps: int  # optimizer steps of the whole run (a resumed run continues to this)
    global_batch_size: int  # samples per optimizer step, over all ranks
    micro_batch_size: int  # samples per rank per forward; the rest is gradient accumulation
    seed: int = 42  # model initialisation
    grad_clip: float | None = 1.0  # clip the global gradient norm to this; null: no clipping
    # A step whose loss or gradient norm is NaN/Inf on any rank is skipped on every rank (weights,
    # optimizer moments and step counter unchanged); this many skipped steps in a row fail the run.
    max_skipped_steps: int = 5
    # Steps skipped the same way on purpose (stepping over a known bad batch; tests). Their samples
    # are still consumed, so the data order does not change.
    skip_steps: list[int] = field(default_factory=list)
    seq_len_warmup: SeqLenWarmupSection = field(default_factory=SeqLenWarmupSection)  # shorter samples first

    def __post_init__(self) -> None:
        _positive("train", max_steps=self.max_steps, global_batch_size=self.global_batch_size,
                  micro_batch_size=self.micro_batch_size, grad_clip=self.grad_clip,
                  max_skipped_steps=self.max_skipped_steps)
        if not all(isinstance(s, int) and s >= 1 for s in self.skip_steps):
            raise ValueError(f"train.skip_steps must be a list of step numbers >= 1, got {self.skip_steps!r}")


@dataclass
class OptimizerSection:
    name: Literal["adamw", "lion"] = "adamw"  # both with decoupled weight decay
    lr: float = 3.0e-4  # peak learning rate (after warmup)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # moment decay rates
    eps: float = 1.0e-8  # AdamW denominator term (LION has none)
    # Decoupled: each step multiplies weights by (1 - weight_decay * lr / peak lr), so the value is
    # a fraction per step (1e-5 is typical), not scaled by the learning rate as in torch's AdamW.
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _positive("optimizer", lr=self.lr, eps=self.eps)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optimizer.betas must be two numbers in [0, 1), got {self.betas!r}")
        if not 0.0 <= self.weight_decay < 1.0:
            raise ValueError(f"optimizer.weight_decay must be in [0, 1), got {self.weight_decay!r}")


@dataclass
class ScheduleSection:
    warmup_steps: int = 0  # linear warmup from 0 to optimizer.lr
    decay: Literal["cosine", "linear", "constant"] = "cosine"  # the shape after warmup
    min_lr_ratio: float = 0.1  # the learning rate ends at lr * min_lr_ratio
    decay_steps: int | None = None  # default: train.max_steps

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _positive("schedule", decay_steps=self.decay_steps)


@dataclass
class ParallelSection:
    # full: shard parameters over every rank. hybrid: shard within groups of shard_group_size
    # ranks (default: the ranks of one node) and replicate across groups.
    sharding: Literal["full", "hybrid"] = "full"
    shard_group_size: int | None = None  # ranks per shard group in hybrid sharding
    device: Literal["auto", "cuda", "cpu"] = "auto"  # auto: cuda when available
    mixed_precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on cuda, fp32 on cpu
    activation_checkpointing: bool = False  # recompute each block in the backward pass to save memory
    compile: bool = False  # torch.compile each block

    def __post_init__(self) -> None:
        _positive("parallel", shard_group_size=self.shard_group_size)


@dataclass
class EvalSection:
    every_steps: int = 0  # 0: no evaluation; otherwise every N steps and after the last step
    batches: int = 4  # global batches of the eval split (read in order, not shuffled)
    global_batch_size: int | None = None  # default: train.global_batch_size
    # A tasks YAML as `python -m training.eval` takes (perplexity, ICL, code, vibe checks), run at every
    # evaluation point on rank 0 with a full copy of the weights; generated code runs in the sandbox only
    # when it gets OS isolation or the YAML sets sandbox.unsafe.
    tasks: str | None = None
    tokenizer: str | None = None  # tokenizer.json for the tasks; default data.instruction.tokenizer
    # Also log the eval loss of each source's tokens (eval_loss/<source>), traced through the eval dataset's
    # provenance table at the start (training.data.by_source); needs a dataset built by the ETL.
    loss_by_source: bool = False

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            raise ValueError(f"eval.every_steps must be >= 0, got {self.every_steps}")
        if self.tasks is not None and not self.every_steps:
            raise ValueError("eval.tasks is set but eval.every_steps is 0: set when to evaluate")
        _positive("eval", batches=self.batches, global_batch_size=self.global_batch_size)


@dataclass
class LoggingSection:
    every_steps: int = 1  # metrics every N steps (the progress bar moves every step)
    progress_bar: bool = True  # a tqdm bar on rank 0
    mlflow: bool = True  # log to MLflow
    # Default: a local SQLite store, sqlite:///<output_dir>/mlflow.db, artifacts beside it.
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "kiln"  # experiment the run is filed under
    wandb_project: str | None = None  # needs `pip install wandb`
    # Dense bf16 FLOP/s of one device for MFU; default: looked up for known GPUs, none on CPU.
    peak_flops_per_device: float | None = None
    # Write the global sample positions and ids each rank consumed per step (for audits and tests).
    sample_ledger: bool = False
    # Also the mean loss of every document span of each sample (split at EOS), for
    # `python -m training.explain_step`; turns sample_ledger on.
    ledger_document_losses: bool = False
    plot: bool = True  # write loss.png in the run folder

    def __post_init__(self) -> None:
        _positive("logging", every_steps=self.every_steps, peak_flops_per_device=self.peak_flops_per_device)
        if self.ledger_document_losses:
            self.sample_ledger = True  # the losses are written in the ledger's lines: one key turns both on


@dataclass
class CheckpointSection:
    """Sharded checkpoints and automatic resumption (training.run.checkpoint; runbook: docs/operations.md).

    Checkpointing is on when ``every_steps`` or ``dir`` is set; then a relaunch of the same run
    (same ``name``) continues from the newest complete checkpoint in ``dir``.
    """

    dir: str | None = None  # local path or object-store URL; default <output_dir>/<name>/checkpoints
    every_steps: int = 0  # 0: save only after the last step and on SIGTERM/SIGINT
    keep_last: int = 2  # retention: the newest complete checkpoints kept...
    keep_every: int = 0  # ...plus every checkpoint whose step is a multiple of this (0: none)
    async_save: bool = False  # write in a background thread while training goes on (dcp.async_save)
    # Resuming on a dataset version other than the one the checkpoint recorded is refused unless true.
    allow_data_change: bool = False
    # On SIGTERM/SIGINT, how long to check that every rank is alive before saving (else exit unsaved).
    alive_check_s: float = 10.0

    def __post_init__(self) -> None:
        if self.every_steps < 0 or self.keep_every < 0:
            raise ValueError("checkpoint.every_steps and checkpoint.keep_every must be >= 0")
        _positive("checkpoint", keep_last=self.keep_last, alive_check_s=self.alive_check_s)
        if self.keep_every and self.every_steps and self.keep_every % self.every_steps:
            raise ValueError(f"checkpoint.keep_every ({self.keep_every}) must be a multiple of "
                             f"checkpoint.every_steps ({self.every_steps}), or no checkpoint lands on it")

    @property
    def enabled(self) -> bool:
        return bool(self.every_steps) or self.dir is not None


@dataclass
class WatchdogSection:
    """Hang detection (training.run.watchdog): no completed step for this long dumps every rank's stacks
    and fails the job, so the launcher can restart it. The time must cover a step plus any
    evaluation and checkpoint save that follow it."""

    timeout_s: float = 1800.0  # 0: no watchdog
    first_step_timeout_s: float = 3600.0  # the first step also starts loaders, downloads and compiles

    def __post_init__(self) -> None:
        if self.timeout_s < 0:
            raise ValueError(f"watchdog.timeout_s must be >= 0, got {self.timeout_s}")
        _positive("watchdog", first_step_timeout_s=self.first_step_timeout_s)


@dataclass
class JournalSection:
    """What the training journal (training.run.journal) calls a loss spike or a throughput change."""

    window: int = 20  # logged steps that make the baseline
    loss_spike_factor: float = 1.5  # a loss above this x the baseline's mean is a spike
    throughput_change: float = 0.3  # tokens/s moving this fraction away from the baseline is logged

    def __post_init__(self) -> None:
        _positive("journal", window=self.window, throughput_change=self.throughput_change)
        if self.loss_spike_factor <= 1.0:
            raise ValueError(f"journal.loss_spike_factor must be > 1, got {self.loss_spike_factor}")


@dataclass
class SpikeSection:
    """What the trainer does about a loss spike (training.run.spike; runbook: docs/runbook_loss_spike.md).

    With ``skip`` or ``rollback`` every step's all-reduced loss and gradient norm are read on the host (one
    sync a step) and judged against the mean of the last ``window`` steps that were not spikes."""

    # log: only journal spikes (journal.loss_spike_factor, at logging points); skip: the spiking step's
    # update is not applied; rollback: back to an earlier checkpoint, past the data that followed it.
    action: Literal["log", "skip", "rollback"] = "log"
    window: int = 20  # steps (not spikes) whose mean loss and mean gradient norm are the baseline; judged once full
    loss_factor: float = 2.0  # a loss above this x the baseline loss is a spike
    grad_norm_factor: float = 10.0  # a gradient norm (before clipping) above this x its baseline is a spike
    min_steps_back: int = 1  # rollback: the target is the newest complete checkpoint at least this many steps back
    max_rollbacks: int = 3  # rollbacks in one run before a spike fails it (with a message)
    lr_scale: float = 1.0  # rollback: the learning rate is multiplied by this...
    lr_scale_steps: int = 0  # ...for this many steps after the rollback target (0: not scaled)
    # A shell command run (rank 0) on each rollback and on a spike failure, the event as JSON on stdin; null: none.
    notify_command: str | None = None
    notify_url: str | None = None  # an http(s) URL the same JSON is POSTed to on those events; null: none

    def __post_init__(self) -> None:
        _positive("spike", window=self.window, min_steps_back=self.min_steps_back, lr_scale=self.lr_scale)
        if self.loss_factor <= 1.0 or self.grad_norm_factor <= 1.0:
            raise ValueError("spike.loss_factor and spike.grad_norm_factor must be > 1")
        if self.max_rollbacks < 0 or self.lr_scale_steps < 0:
            raise ValueError("spike.max_rollbacks and spike.lr_scale_steps must be >= 0")
        if self.notify_url is not None and not self.notify_url.startswith(("http://", "https://")):
            raise ValueError(f"spike.notify_url must be an http:// or https:// URL, got {self.notify_url!r}")


@dataclass
class GateSection:
    """The go/no-go at evaluation points (training.run.gate): the train loss against the band that
    ``python -m training.sweep --band`` exported, and when to stop a run that stays behind it."""

    band: str | None = None  # the band JSON; every evaluation point journals on track / behind / ahead; null: off
    # Evaluations behind the band in a row that stop the run (after a checkpoint, exit status 3,
    # not restarted by training.launch); 0: only journal the verdicts.
    stop_after: int = 0

    def __post_init__(self) -> None:
        if self.stop_after < 0:
            raise ValueError(f"gate.stop_after must be >= 0, got {self.stop_after}")
        if self.stop_after and self.band is None:
            raise ValueError("gate.stop_after is set but gate.band is not: there is nothing to judge against")


@dataclass
class TrainConfig:
    data: DataSection
    train: TrainSection
    model: ModelSection = field(default_factory=ModelSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    eval: EvalSection = field(default_factory=EvalSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    watchdog: WatchdogSection = field(default_factory=WatchdogSection)
    journal: JournalSection = field(default_factory=JournalSection)
    gate: GateSection = field(default_factory=GateSection)  # the expected loss band and the stop gate
    spike: SpikeSection = field(default_factory=SpikeSection)  # loss-spike detection and its action
    name: str | None = None  # run name (folder, MLflow run, checkpoint lookup); default a timestamp
    output_dir: str = "runs"  # each run writes <output_dir>/<name>/
    # Weights to start from (a checkpoint dir or root, a consolidated folder, or a Hugging Face MPT folder):
    # weights only, with a fresh optimizer and schedule from step 0. A checkpoint of this run wins.
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"name must be a non-empty run name without '/', got {self.name!r}")
        if self.eval.every_steps and not self.has_eval_loss and self.eval.tasks is None:
            held_out = "data.instruction has no held-out examples" if self.data.instruction else \
                "data.eval_split is null"
            raise ValueError(f"eval.every_steps is set but {held_out} and eval.tasks is not set")
        if self.eval.loss_by_source and not (self.eval.every_steps and self.has_eval_loss):
            raise ValueError("eval.loss_by_source needs an eval loss: set eval.every_steps and data.eval_split")
        if self.train.seq_len_warmup.steps and self.data.instruction is not None:
            raise ValueError("train.seq_len_warmup truncates samples to their first tokens, which in instruction "
                             "data are mostly prompt (no loss): use it for pre-training data")
        last = self.data.schedule[-1].until_step if self.data.schedule else None
        if last is not None and last < self.train.max_steps:
            raise ValueError(f"data.schedule's last phase ends at step {last}, before train.max_steps "
                             f"({self.train.max_steps}): give it until_step: null")
        if self.gate.band is not None and not self.eval.every_steps:
            raise ValueError("gate.band is judged at evaluation points: set eval.every_steps")
        if self.checkpoint.enabled and self.name is None:
            raise ValueError("checkpointing needs a fixed run name (name: ...): a relaunch finds its checkpoints by it")
        if self.data.from_step and not self.checkpoint.enabled:
            raise ValueError("data.from_step goes on from the run's checkpoint of that step: enable checkpoints "
                             "(checkpoint.every_steps, or the default save after the last step)")
        if self.data.from_step >= self.train.max_steps:
            raise ValueError(f"data.from_step ({self.data.from_step}) must be below train.max_steps "
                             f"({self.train.max_steps}): the data phase trains the steps after it")
        if self.spike.action == "rollback" and not self.checkpoint.enabled:
            raise ValueError("spike.action=rollback needs checkpoints to roll back to: set checkpoint.every_steps")
        ckpt = self.checkpoint
        if self.spike.action == "rollback" and ckpt.every_steps and \
                (ckpt.keep_last - 1) * ckpt.every_steps < self.spike.min_steps_back - 1:
            raise ValueError(f"checkpoint retention (keep_last {ckpt.keep_last}, every_steps {ckpt.every_steps}) may "
                             f"delete every checkpoint spike.min_steps_back ({self.spike.min_steps_back}) steps back: "
                             "raise checkpoint.keep_last")

    @property
    def has_eval_loss(self) -> bool:
        """Whether evaluation points compute a loss on held-out data (besides any eval.tasks)."""
        if self.data.instruction is not None:
            return self.data.instruction.has_held_out
        return self.data.eval_split is not None

    @property
    def eval_tokenizer(self) -> str | None:
        return self.eval.tokenizer or (self.data.instruction.tokenizer if self.data.instruction else None)

    @property
    def eval_global_batch_size(self) -> int:
        return self.eval.global_batch_size or self.train.global_batch_size

    def to_dict(self) -> dict:
        return to_dict(self)


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read the YAML, apply ``key.path=value`` overrides, and check every key and type."""
    data = load_yaml(path)
    for override in overrides:
        parts, value = parse_override(override)
        set_path(data, parts, value)
    try:
        return from_dict(TrainConfig, data, "config")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def accumulation_steps(global_batch: int, micro_batch: int, world_size: int, what: str = "train") -> int:
    """Micro-batches per rank per step; the global batch must split evenly over the ranks."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise ConfigError(
            f"{what} global batch size {global_batch} is not a multiple of train.micro_batch_size "
            f"({micro_batch}) x {world_size} ranks = {per_step}"
        )
    return global_batch // per_step


def check_world_size(cfg: TrainConfig, world_size: int, local_world_size: int) -> None:
    """The rules that depend on how many ranks run (the launcher checks them before starting any)."""
    accumulation_steps(cfg.train.global_batch_size, cfg.train.micro_batch_size, world_size)
    if cfg.eval.every_steps and cfg.has_eval_loss:
        accumulation_steps(cfg.eval_global_batch_size, cfg.train.micro_batch_size, world_size, "eval")
    if cfg.parallel.sharding == "hybrid":
        group = cfg.parallel.shard_group_size or local_world_size
        if world_size % group:
            raise ConfigError(
                f"parallel.shard_group_size {group} does not divide the {world_size} ranks (hybrid sharding)"
            )
