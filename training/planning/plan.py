"""Compute planning: how many tokens, FLOPs, GPU-days, dollars and days a pre-training run needs.

    python -m training.plan --model 30b --tokens 600B --gpu h100 --num-gpus 512 --price 7
    python -m training.plan --params 7e9 --gpu a100-40gb --price 2 --inference-tokens 2T --json

Give a model (a preset, for the exact shape) or a parameter count, and/or a token count, or a
FLOP budget; what is missing is filled in the compute-optimal way: about 20 tokens per parameter
(Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"), or, with --law, the
allocation that minimises a fitted loss law L(N, D) = E + A/N^alpha + B/D^beta.

Training FLOPs are 6ND plus, when the model's shape is known, the attention term 12 * layers *
d_model * seq_len per token (llm-foundry's MFU formula, `MPTConfig.flops_per_token`). GPU time
is FLOPs / (peak * MFU). The MFU defaults to the project's measured value when the table that ships
with the package (training/planning/data/measured_mfu.csv) has a row for the GPU, else 0.40; the
output says which.

Failures: at a rate per GPU-day (default 1 per 1,000 GPU-days) the run expects GPU-days / 1,000
failures; checkpoints every sqrt(2 x save time x job MTBF) (Young 1974, Daly 2006) minimise the
time lost to them, and the plan prices what is still lost (restarts, redone work, blocking saves).

With --inference-tokens the plan adds the inference-aware view of Sardana et al. 2024, "Beyond
Chinchilla-Optimal": at the planned model's loss, the model that minimises training plus
inference FLOPs (inference costs 2N FLOPs per token) is smaller and trained on more tokens.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.resources
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.hardware import GPU, get_gpu
from training.model import PRESETS, MPTConfig
from training.run.journal import JOURNAL_NAME, blocking_save_seconds, read_events

TOKENS_PER_PARAM = 20.0
FAILURES_PER_1000_GPU_DAYS = 1.0  # the seed's rate for large GPU clusters
RESTART_MINUTES = 25.0  # the seed's 20-30 minutes to notice a failure, reschedule, and reload a checkpoint
CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 weights + AdamW's two fp32 moments
CHECKPOINT_WRITE_GB_S = 5.0  # assumed aggregate write rate, only when no save time is given or journaled
DEFAULT_MFU = 0.40
DEFAULT_SEQ_LEN = 2048  # MPT's pre-training context; the presets' max_seq_len may be a later stage's
MFU_TABLE = importlib.resources.files("training.planning") / "data" / "measured_mfu.csv"  # package data


@dataclass(frozen=True)
class LossLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta, N parameters and D training tokens.

    The constants belong to the data and tokenizer they were fitted on: use the predicted loss to
    compare allocations, not as a promise about this project's loss.
    """

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def optimal_params(self, flops: float) -> float:
        """N minimising L under 6ND = flops: G (C/6)^(beta/(alpha+beta)), G = (alpha A/(beta B))^(1/(alpha+beta))."""
        total = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / total)
        return g * (flops / 6) ** (self.beta / total)

    def optimal_tokens_for_params(self, params: float) -> float:
        """D for which N is the compute-optimal size (the inverse of optimal_params)."""
        total = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / total)
        compute_over_6 = (params / g) ** (total / self.beta)
        return compute_over_6 / params

    def optimal_params_for_tokens(self, tokens: float) -> float:
        """N whose compute-optimal token count is D (solved by bisection in log N)."""
        low, high = 1.0, 1e16
        for _ in range(200):
            mid = math.sqrt(low * high)
            if self.optimal_tokens_for_params(mid) < tokens:
                low = mid
            else:
                high = mid
        return math.sqrt(low * high)

    def tokens_for_loss(self, params: float, loss: float) -> float:
        """Tokens that bring a model of `params` to `loss`; inf when the model is too small to ever get there."""
        gap = loss - self.E - self.A / params**self.alpha
        return (self.B / gap) ** (1 / self.beta) if gap > 0 else math.inf


LAWS = {
    # Hoffmann et al. 2022, approach 3 (parametric fit), as published.
    "hoffmann": LossLaw("hoffmann", E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    # Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt": approach 3 refitted on the
    # paper's own data points; its optimum is close to 20 tokens per parameter, unlike the published fit.
    "besiroglu": LossLaw("besiroglu", E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658),
}


# ------------------------------------------------------------------------------------------ MFU


def read_mfu_table(path: Path | None = None) -> tuple[list[dict], str]:
    """The measured-MFU rows (CSV: gpu, mfu, notes) and a name for messages: `path`, else the table that
    ships inside the package (training/planning/data/measured_mfu.csv), so an installed wheel has it too."""
    if path is None:
        text, name = MFU_TABLE.read_text(), "measured_mfu.csv"
    else:
        if not path.exists():
            return [], path.name
        text, name = path.read_text(), path.name
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"gpu", "mfu"} <= set(rows[0]):
        raise ValueError(f"{name}: the header must name the columns gpu, mfu (and notes), got {list(rows[0])}")
    return rows, name


def measured_mfu(gpu: GPU, path: Path | None = None) -> tuple[float, str] | None:
    """The project's measured MFU for `gpu`, with where it came from.

    The table (documented in docs/planning.md) is a CSV with a header ``gpu,mfu,notes``: a GPU name
    from training.hardware, the MFU as a fraction, and free text. The last row for the GPU wins.
    Rows naming GPUs the hardware table does not know are ignored.
    """
    rows, name = read_mfu_table(path)
    found = None
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            row_gpu = get_gpu(row["gpu"].strip())
        except ValueError:
            continue
        if row_gpu.name != gpu.name:
            continue
        try:
            value = float(row["mfu"])
        except (TypeError, ValueError):
            raise ValueError(f"{name}:{number}: MFU {row['mfu']!r} is not a number") from None
        if not 0 < value <= 1:
            raise ValueError(f"{name}:{number}: MFU {value} must be a fraction in (0, 1]")
        found = (value, f"measured, {name} line {number}")
    return found


def resolve_mfu(gpu: GPU, mfu: float | None, path: Path | None = None) -> tuple[float, str]:
    """The MFU to plan with and a few words saying where it came from."""
    if mfu is not None:
        if not 0 < mfu <= 1:
            raise ValueError(f"--mfu must be a fraction in (0, 1], got {mfu}")
        return mfu, "given"
    name = path.name if path is not None else "measured_mfu.csv"
    return measured_mfu(gpu, path) or (DEFAULT_MFU, f"assumed default: no {gpu.name} row in {name}")


# ------------------------------------------------------------------------------------------ the plan


@dataclass
class PlanRequest:
    """What the user gave; None means 'work it out'."""

    model: str | None = None  # an MPT preset: exact shape, so the attention FLOPs are counted
    params: float | None = None
    tokens: float | None = None
    flops: float | None = None
    seq_len: int = DEFAULT_SEQ_LEN
    gpu: str = "h100-sxm"
    num_gpus: int = 8
    price_per_gpu_hour: float | None = None
    mfu: float | None = None
    law: str | None = None  # None: 20 tokens per parameter; else a LAWS key
    tokens_per_param: float = TOKENS_PER_PARAM
    inference_tokens: float | None = None
    inference_mfu: float | None = None  # default: the training MFU
    failure_rate: float = FAILURES_PER_1000_GPU_DAYS  # failures per 1,000 GPU-days
    save_seconds: float | None = None  # blocking time of one checkpoint save; None: save_journal, else estimated
    save_journal: Path | None = None  # an earlier run's journal.jsonl (or its run folder)
    restart_minutes: float = RESTART_MINUTES  # after each failure, before training goes on
    global_batch: int | None = None  # samples per step: the interval in steps too


@dataclass
class Allocation:
    """One way to spend compute: a model size, its tokens, and what training (and serving) it costs."""

    label: str
    params: float
    tokens: float
    training_flops: float
    inference_flops: float
    gpu_hours: float
    cost: float | None
    loss: float | None

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


@dataclass
class FailurePlan:
    """Failures expected over the run, the Young/Daly checkpoint interval, and what failures still cost.

    First order (Young 1974; Daly 2006): failures arrive at random (exponential, MTBF of the job =
    GPU MTBF / GPUs); each costs the restart time plus, on average, half an interval of redone work;
    every save blocks training for its blocking time. Failures during restarts, saves or redone work
    are not counted (they are second order while interval and save are much shorter than the MTBF).
    """

    expected_failures: float  # GPU-days x failure rate / 1,000
    gpu_mtbf_hours: float
    job_mtbf_hours: float  # GPU MTBF / number of GPUs
    save_seconds: float  # blocking part of one save
    save_source: str
    interval_minutes: float  # sqrt(2 x save x job MTBF)
    interval_steps: int | None  # with --global-batch
    lost_hours_per_failure: float  # wall clock: restart + half an interval
    saves: float  # saves over the run at the interval
    lost_wall_hours: float  # failures x lost per failure + saves x save time
    lost_gpu_hours: float
    lost_cost: float | None


def young_daly_interval(save_seconds: float, job_mtbf_seconds: float) -> float:
    """The checkpoint interval (seconds) that minimises expected lost time: sqrt(2 x save x MTBF) (Young 1974).
    Daly 2006 refines it to sqrt(2 delta M) - delta for delta << M; the difference is one save time."""
    return math.sqrt(2 * save_seconds * job_mtbf_seconds)


def job_mtbf_seconds(failure_rate: float, num_gpus: int) -> float:
    """The whole job's mean time between failures: one GPU's (1,000 / rate GPU-days) over the GPUs."""
    if not failure_rate > 0:
        raise ValueError(f"--failure-rate must be positive, got {failure_rate}")
    return 1000 / failure_rate * 24 * 3600 / num_gpus


def save_time(save_seconds: float | None, save_journal: Path | None, params: float) -> tuple[float, str]:
    """Blocking seconds of one save, and where it came from: given, the median of an earlier run's
    journaled saves (their blocking part), or estimated from the checkpoint's size."""
    if save_seconds is not None:
        if not save_seconds > 0:
            raise ValueError(f"--save-seconds must be positive, got {save_seconds}")
        return save_seconds, "given"
    if save_journal is not None:
        path = save_journal / JOURNAL_NAME if save_journal.is_dir() else save_journal
        if not path.exists():
            raise ValueError(f"--save-journal {save_journal}: no {JOURNAL_NAME} there")
        seconds = blocking_save_seconds(read_events(path))
        if seconds is None:
            raise ValueError(f"--save-journal {path}: it records no checkpoint saves")
        return seconds, f"median blocking save in {path}"
    size = params * CHECKPOINT_BYTES_PER_PARAM
    return (size / (CHECKPOINT_WRITE_GB_S * 1e9),
            f"estimated: {size / 1e9:,.0f} GB at {CHECKPOINT_WRITE_GB_S:g} GB/s (give --save-seconds or --save-journal)")


def failure_plan(request: PlanRequest, params: float, tokens: float, gpu_hours: float) -> FailurePlan:
    """Expected failures, the Young/Daly interval and the expected lost GPU-hours and dollars (FailurePlan)."""
    if request.restart_minutes < 0:
        raise ValueError(f"--restart-minutes must be >= 0, got {request.restart_minutes}")
    save, source = save_time(request.save_seconds, request.save_journal, params)
    job_mtbf_hours = job_mtbf_seconds(request.failure_rate, request.num_gpus) / 3600
    gpu_mtbf_hours = job_mtbf_hours * request.num_gpus
    interval = young_daly_interval(save, job_mtbf_hours * 3600)
    wall_hours = gpu_hours / request.num_gpus
    interval_steps = None
    if request.global_batch is not None:
        if request.global_batch < 1:
            raise ValueError(f"--global-batch must be >= 1, got {request.global_batch}")
        step_seconds = wall_hours * 3600 / (tokens / (request.global_batch * request.seq_len))
        interval_steps = max(1, round(interval / step_seconds))
    failures = gpu_hours / gpu_mtbf_hours
    per_failure = request.restart_minutes / 60 + interval / 2 / 3600
    saves = wall_hours * 3600 / interval
    lost_wall = failures * per_failure + saves * save / 3600
    lost_gpu_hours = lost_wall * request.num_gpus
    price = request.price_per_gpu_hour
    return FailurePlan(failures, gpu_mtbf_hours, job_mtbf_hours, save, source, interval / 60, interval_steps,
                       per_failure, saves, lost_wall, lost_gpu_hours,
                       lost_gpu_hours * price if price is not None else None)


@dataclass
class Plan:
    request: PlanRequest
    gpu: str
    peak_tflops: float
    mfu: float
    mfu_source: str
    params: float
    tokens: float
    optimal_tokens: float  # compute-optimal tokens for this model size (same rule or law)
    sizing: str  # how params and tokens were chosen
    flops_per_token: float
    attention_share: float  # the attention term's share of flops_per_token (0 without a shape)
    training_flops: float
    gpu_hours: float
    cost: float | None
    wall_clock_days: float
    predicted_loss: float | None
    loss_law: str | None
    inference: list[Allocation]  # planned, Chinchilla-optimal, inference-optimal (with inference_tokens)
    failures: FailurePlan

    @property
    def gpu_days(self) -> float:
        return self.gpu_hours / 24

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["gpu_days"] = self.gpu_days
        data["tokens_per_param"] = self.tokens / self.params
        for item in data["inference"]:
            item["tokens_per_param"] = item["tokens"] / item["params"]
        return data


def make_plan(request: PlanRequest, mfu_table: Path | None = None) -> Plan:
    """Fill in the missing quantities, then turn FLOPs into GPU time, money and wall-clock days."""
    gpu = get_gpu(request.gpu)
    mfu, mfu_source = resolve_mfu(gpu, request.mfu, mfu_table)
    if request.num_gpus < 1:
        raise ValueError(f"--num-gpus must be >= 1, got {request.num_gpus}")
    if request.seq_len < 1:
        raise ValueError(f"--seq-len must be >= 1, got {request.seq_len}")
    if request.law is not None and request.law not in LAWS:
        raise ValueError(f"--law {request.law!r} is not one of {sorted(LAWS)}")
    law = LAWS.get(request.law) if request.law else None
    shape = _model_shape(request)
    params, tokens, sizing = _size(request, shape, law)

    flops_per_token = shape.flops_per_token(request.seq_len) if shape else 6 * params
    training_flops = flops_per_token * tokens
    gpu_hours = training_flops / (gpu.peak_flops * mfu) / 3600
    cost = gpu_hours * request.price_per_gpu_hour if request.price_per_gpu_hour is not None else None
    loss_law = law or LAWS["hoffmann"]
    if law:
        optimal_tokens = law.optimal_tokens_for_params(params)
    else:
        optimal_tokens = request.tokens_per_param * params
    inference = []
    if request.inference_tokens is not None:
        inference = _inference_view(request, params, tokens, loss_law, gpu, mfu)
    return Plan(
        request=request, gpu=gpu.name, peak_tflops=gpu.bf16_tflops, mfu=mfu, mfu_source=mfu_source,
        params=params, tokens=tokens, optimal_tokens=optimal_tokens, sizing=sizing,
        flops_per_token=flops_per_token, attention_share=1 - 6 * params / flops_per_token,
        training_flops=training_flops, gpu_hours=gpu_hours, cost=cost,
        wall_clock_days=gpu_hours / 24 / request.num_gpus,
        predicted_loss=loss_law.loss(params, tokens), loss_law=loss_law.name, inference=inference,
        failures=failure_plan(request, params, tokens, gpu_hours),
    )


def _model_shape(request: PlanRequest) -> MPTConfig | None:
    if request.model is None:
        return None
    if request.params is not None:
        raise ValueError("give --model or --params, not both (the preset fixes the parameter count)")
    return MPTConfig.preset(request.model, max_seq_len=request.seq_len)


def _size(request: PlanRequest, shape: MPTConfig | None, law: LossLaw | None) -> tuple[float, float, str]:
    """(params, tokens, how they were chosen) from whichever of params, tokens and FLOPs were given."""
    params = float(shape.num_params()) if shape else request.params
    tokens, flops = request.tokens, request.flops
    for name, value in (("params", params), ("tokens", tokens), ("flops", flops)):
        if value is not None and not value > 0:
            raise ValueError(f"--{name} must be positive, got {value}")
    rule = f"{law.name} law optimum" if law else f"{request.tokens_per_param:g} tokens/param"
    given = [name for name, value in (("params", params), ("tokens", tokens), ("flops", flops)) if value is not None]
    if len(given) == 3:
        raise ValueError("give at most two of model/params, tokens and flops: the third follows from them")
    if not given:
        raise ValueError("give a model (--model or --params), --tokens, or a FLOP budget (--flops)")

    def per_token(n: float) -> float:
        return shape.flops_per_token(request.seq_len) if shape else 6 * n

    if given == ["params", "tokens"]:
        return params, tokens, "given"
    if given == ["params"]:
        tokens = law.optimal_tokens_for_params(params) if law else request.tokens_per_param * params
        return params, tokens, f"tokens: {rule}"
    if given == ["tokens"]:
        params = law.optimal_params_for_tokens(tokens) if law else tokens / request.tokens_per_param
        return params, tokens, f"params: {rule}"
    if given == ["params", "flops"]:
        return params, flops / per_token(params), "tokens: FLOP budget / FLOPs per token"
    if given == ["tokens", "flops"]:
        return flops / (6 * tokens), tokens, "params: FLOP budget / (6 x tokens)"
    # FLOPs only: the compute-optimal split of 6ND = C.
    params = law.optimal_params(flops) if law else math.sqrt(flops / (6 * request.tokens_per_param))
    return params, flops / (6 * params), f"params and tokens: {rule} for the FLOP budget (6ND)"


def _inference_view(request: PlanRequest, params: float, tokens: float, law: LossLaw, gpu: GPU,
                    mfu: float) -> list[Allocation]:
    """The planned model, the cheapest-to-train model of equal loss, and the cheapest to train and serve.

    Equal loss is judged by `law`; training costs 6ND, serving 2N per inference token (Sardana et al.).
    """
    inference_tokens = request.inference_tokens
    if not inference_tokens > 0:
        raise ValueError(f"--inference-tokens must be positive, got {inference_tokens}")
    inference_mfu = request.inference_mfu if request.inference_mfu is not None else mfu
    target = law.loss(params, tokens)

    def allocation(label: str, n: float, d: float) -> Allocation:
        train, serve = 6 * n * d, 2 * n * inference_tokens
        hours = (train / mfu + serve / inference_mfu) / gpu.peak_flops / 3600
        price = request.price_per_gpu_hour
        return Allocation(label, n, d, train, serve, hours, hours * price if price is not None else None, target)

    chinchilla = _cheapest_at_loss(law, target, inference_tokens=0.0)
    best = _cheapest_at_loss(law, target, inference_tokens)
    return [
        allocation("planned", params, tokens),
        allocation("chinchilla-optimal", chinchilla, law.tokens_for_loss(chinchilla, target)),
        allocation("inference-optimal", best, law.tokens_for_loss(best, target)),
    ]


def _cheapest_at_loss(law: LossLaw, loss: float, inference_tokens: float) -> float:
    """N minimising 6 N D(N) + 2 N * inference_tokens where D(N) reaches `loss`: a grid in log N, then a finer one."""
    smallest = (law.A / (loss - law.E)) ** (1 / law.alpha)  # below this size the loss is out of reach
    low, high = math.log(smallest) + 1e-9, math.log(smallest) + math.log(1e6)
    best = low
    for _ in range(4):
        grid = np.linspace(low, high, 2001)
        sizes = np.exp(grid)
        gap = loss - law.E - law.A / sizes**law.alpha
        with np.errstate(divide="ignore", invalid="ignore"):
            data = np.where(gap > 0, (law.B / gap) ** (1 / law.beta), np.inf)
        total = 6 * sizes * data + 2 * sizes * inference_tokens
        i = int(np.argmin(total))
        best = grid[i]
        step = grid[1] - grid[0]
        low, high = grid[max(i - 2, 0)], grid[min(i + 2, len(grid) - 1)]
        if step < 1e-9:
            break
    return float(math.exp(best))


# ------------------------------------------------------------------------------------------ output


_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}


def parse_count(text: str) -> float:
    """'30B', '1.5T', '7e9' or '600000000' as a number (K, M, B/G, T, P suffixes, case-insensitive)."""
    cleaned = text.strip().replace("_", "").replace(",", "")
    multiplier = _SUFFIXES.get(cleaned[-1:].lower())
    try:
        return float(cleaned[:-1]) * multiplier if multiplier else float(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (examples: 7e9, 30B, 1.5T)") from None


def human(value: float, unit: str = "") -> str:
    """Short numbers for tables: 6.65e9 -> '6.65B' (K, M, B, T suffixes, three significant digits)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.0f}"


def format_plan(plan: Plan) -> str:
    """The plan as an aligned two-column table (and the inference comparison, when asked for)."""
    req = plan.request
    subject = f"MPT-{req.model} ({human(plan.params)} params)" if req.model else f"{human(plan.params)} params"
    rows = [
        ("model", subject),
        ("tokens", f"{human(plan.tokens)} ({plan.tokens / plan.params:.1f} per param; sizing: {plan.sizing})"),
        ("compute-optimal tokens", f"{human(plan.optimal_tokens)} for this size "
                                   f"({'law ' + req.law if req.law else f'{req.tokens_per_param:g}/param'})"),
        ("FLOPs per token", f"{plan.flops_per_token:.3e} (attention {plan.attention_share:.1%}, seq {req.seq_len})"
                            if req.model else f"{plan.flops_per_token:.3e} (6N; no shape, attention not counted)"),
        ("training FLOPs", f"{plan.training_flops:.3e}"),
        ("GPU", f"{plan.gpu}, {plan.peak_tflops:g} TFLOP/s dense bf16"),
        ("MFU", f"{plan.mfu:.2f} ({plan.mfu_source})"),
        ("GPU-hours", f"{plan.gpu_hours:,.0f}"),
        ("GPU-days", f"{plan.gpu_days:,.0f}"),
        ("cost", _money(plan.cost) + (f" at ${req.price_per_gpu_hour:g}/GPU-hour"
                                      if plan.cost is not None else " (give --price per GPU-hour)")),
        ("wall clock", f"{plan.wall_clock_days:,.1f} days on {req.num_gpus} GPUs"),
        ("predicted loss", f"{plan.predicted_loss:.3f} ({plan.loss_law} law; its data, not ours: compare only)"),
    ]
    f = plan.failures
    steps = f" = {f.interval_steps:,} steps" if f.interval_steps is not None else " (give --global-batch for steps)"
    rows += [
        ("expected failures", f"{f.expected_failures:.1f} (1 per {1000 / req.failure_rate:,.0f} GPU-days; "
                              f"job MTBF {f.job_mtbf_hours:,.1f} h on {req.num_gpus} GPUs)"),
        ("checkpoint save", f"{f.save_seconds:,.1f} s blocking ({f.save_source})"),
        ("checkpoint interval", f"{f.interval_minutes:,.1f} min{steps}: sqrt(2 x save x job MTBF), Young/Daly"),
        ("lost to failures", f"{f.lost_gpu_hours:,.0f} GPU-hours, {_money(f.lost_cost)} "
                             f"({f.lost_hours_per_failure * 60:,.0f} min per failure: {req.restart_minutes:g} restart"
                             f" + half an interval; plus {f.saves:,.0f} saves)"),
    ]
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    if plan.inference:
        lines += ["", f"inference-aware (Sardana et al.), {human(req.inference_tokens)} inference tokens, "
                      f"same loss {plan.inference[0].loss:.3f} ({plan.loss_law} law):"]
        header = ("", "params", "tokens", "tok/param", "train FLOPs", "infer FLOPs", "total FLOPs", "GPU-hours", "cost")
        table = [header] + [
            (a.label, human(a.params), human(a.tokens), f"{a.tokens_per_param:.0f}", f"{a.training_flops:.2e}",
             f"{a.inference_flops:.2e}", f"{a.training_flops + a.inference_flops:.2e}", f"{a.gpu_hours:,.0f}",
             _money(a.cost))
            for a in plan.inference
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines += ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
                  for row in table]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.plan",
        description="Tokens, FLOPs, GPU-days, cost and wall clock for a pre-training run.",
    )
    size = parser.add_argument_group("what to train (give one or two)")
    size.add_argument("--model", choices=sorted(PRESETS), help="an MPT preset (exact shape; attention FLOPs counted)")
    size.add_argument("--params", type=parse_count, help="parameter count, e.g. 7e9 or 7B")
    size.add_argument("--tokens", type=parse_count, help="training tokens, e.g. 1T")
    size.add_argument("--flops", type=parse_count, help="a training FLOP budget, e.g. 1e23")
    parser.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, help="sequence length for attention FLOPs")
    parser.add_argument("--law", choices=sorted(LAWS), help="size with a fitted loss law instead of tokens/param")
    parser.add_argument("--tokens-per-param", type=float, default=TOKENS_PER_PARAM)
    parser.add_argument("--gpu", default="h100-sxm", help="GPU type (training.hardware.GPUS), e.g. h100, a100-40gb")
    parser.add_argument("--num-gpus", type=int, default=8, help="GPUs for the wall-clock estimate")
    parser.add_argument("--price", type=float, dest="price_per_gpu_hour", help="dollars per GPU-hour")
    parser.add_argument("--mfu", type=float, help="model FLOPs utilisation (default: measured_mfu.csv's row, "
                                                  f"else {DEFAULT_MFU})")
    parser.add_argument("--inference-tokens", type=parse_count, help="tokens the model will serve (Sardana et al.)")
    parser.add_argument("--inference-mfu", type=float, help="MFU while serving (default: the training MFU)")
    parser.add_argument("--mfu-table", type=Path, help="a measured-MFU CSV (gpu,mfu,notes) instead of the packaged one")
    failures = parser.add_argument_group("failures and checkpoints")
    failures.add_argument("--failure-rate", type=float, default=FAILURES_PER_1000_GPU_DAYS,
                          help="failures per 1,000 GPU-days (default %(default)g)")
    failures.add_argument("--save-seconds", type=float, help="blocking time of one checkpoint save (default: "
                                                             "--save-journal's, else estimated from the size)")
    failures.add_argument("--save-journal", type=Path, help="an earlier run's journal.jsonl (or run folder): "
                                                            "its checkpoint saves' blocking time")
    failures.add_argument("--restart-minutes", type=float, default=RESTART_MINUTES,
                          help="detect, reschedule and reload after a failure (default %(default)g)")
    failures.add_argument("--global-batch", type=int, help="samples per step, to give the interval in steps")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fields = {f.name for f in dataclasses.fields(PlanRequest)}
    request = PlanRequest(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        plan = make_plan(request, mfu_table=args.mfu_table)
    except ValueError as err:
        print(f"training.plan: {err}", file=sys.stderr)
        return 2
    print(json.dumps(plan.to_dict(), indent=2, default=str) if args.json else format_plan(plan))  # str: paths
    return 0


if __name__ == "__main__":
    sys.exit(main())
