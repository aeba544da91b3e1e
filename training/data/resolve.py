"""A config's data as the trainer, the launcher and the planning tools see it: sources pinned to a
version and checked against the model and the eval batches, and a rank's batches over them."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from shards.config import ConfigError
from shards.provenance import ProvenanceError

from ..config import DataSection, ParallelSection, TrainConfig
from ..distributed import Distributed, broadcast_from_main, compute_dtype
from ..model import check_sdpa_fits
from .by_source import KEY as BY_SOURCE_KEY
from .by_source import SourceTags, tag_sources
from .cache import CacheSettings, default_cache_root
from .exclude import KEY as EXCLUDE_KEY
from .exclude import Exclusions, read_exclude_list, trace
from .finetune import instruction_sources, prepare_instruction_data
from .loader import TokenBatches
from .order import BatchLayout, build_order, schedule_phases
from .sources import Source, check_sources, resolve_source, with_document_ids


def instruction_seq_len(cfg: TrainConfig) -> int:
    return cfg.data.instruction.seq_len or cfg.model.build().max_seq_len


def resolve_sources(cfg: TrainConfig, check_model: bool = True) -> tuple[list[Source], list[Source] | None]:
    """The train (and eval) sources of the config, checked against the eval batches and, unless
    ``check_model`` is false (pre-flight reports that check on its own), against the model: sample length,
    vocabulary, and the SDPA attention bias against the training device's memory. With
    ``model.attn_uses_sequence_id`` they are read with one sequence id per document (``with_document_ids``)."""
    data = cfg.data
    if data.instruction is not None:
        train, held_out = instruction_sources(data.instruction, instruction_seq_len(cfg), data.seed)
    else:
        train = [resolve_source(s.path, data.train_split, s.version, s.proportion, s.source) for s in data.datasets]
    seq_len = check_sources(train)
    model = cfg.model.build()
    if model.attn_uses_sequence_id:
        train = with_document_ids(train)
    if check_model:
        if seq_len > model.max_seq_len:
            raise ConfigError(f"samples hold {seq_len} tokens but the model's max_seq_len is {model.max_seq_len} "
                              "(model.overrides.max_seq_len)")
        for source in train:
            if source.vocab_size is not None and source.vocab_size > model.vocab_size:
                raise ConfigError(f"{source.path} has vocab_size {source.vocab_size} but the model's is "
                                  f"{model.vocab_size} (model.overrides.vocab_size)")
        device = training_device(cfg.parallel)
        if device is not None:
            try:
                check_sdpa_fits(model, cfg.train.micro_batch_size, seq_len, device_memory(device),
                                compute_dtype(cfg.parallel, device))
            except ValueError as err:
                raise ConfigError(str(err)) from None
    evals = None
    if cfg.eval.every_steps and cfg.has_eval_loss:
        if data.instruction is not None:
            evals = held_out
        else:
            # Under data.schedule the eval split is mixed by the first phase's proportions, the same all run long.
            mix = data.schedule[0].proportions if data.schedule else [s.proportion for s in data.datasets]
            evals = [resolve_source(s.path, data.eval_split, s.version, share, s.source) for s, share in zip(data.datasets, mix)]
        needed = cfg.eval.batches * cfg.eval_global_batch_size
        available = sum(s.num_samples for s in evals)
        if needed > available:
            raise ConfigError(
                f"eval reads eval.batches x global batch = {needed} samples but split {evals[0].split!r} "
                f"has {available}; lower eval.batches or eval.global_batch_size"
            )
        if check_sources(evals) != check_sources(train):
            raise ConfigError("the eval split's sample length differs from the train split's")
        if model.attn_uses_sequence_id:
            evals = with_document_ids(evals)
    return train, evals


def training_device(par: ParallelSection) -> torch.device | None:
    """The kind of device the ranks will train on, as training.distributed picks it; None when the config
    asks for CUDA and this machine has none (a launcher on a CPU node: rank 0 checks again)."""
    if par.device == "cuda" or (par.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0) if torch.cuda.is_available() else None
    return torch.device("cpu")


def device_memory(device: torch.device) -> int:
    """Bytes of memory of one such device: the GPU's, or this machine's RAM for CPU training."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resolve_data(cfg: TrainConfig, d: Distributed) -> tuple[list[Source], list[Source] | None]:
    """Rank 0 pins each dataset's version (newest complete one unless configured) for every rank,
    so a version published while the ranks start is never half-seen. Instruction data is packed by
    rank 0, then by the first rank of each other machine (a no-op where they share the cache folder)."""
    result: object = None
    if d.is_main:
        try:
            result = resolve_sources(cfg)
        except (ValueError, OSError, ConfigError) as err:
            result = ConfigError(f"data: {err}")
    sources = broadcast_from_main(result, d)
    if cfg.data.instruction is not None:
        if d.local_rank == 0 and not d.is_main:
            prepare_instruction_data(cfg.data.instruction, instruction_seq_len(cfg), cfg.data.seed)
        dist.barrier()
    return sources


def _on_main(d: Distributed, key: str, compute):
    """``compute()`` on rank 0 for every rank; what stops it is a ConfigError on every rank, naming ``key``."""
    result: object = None
    if d.is_main:
        try:
            result = compute()
        except ConfigError as err:
            result = err
        except (ProvenanceError, ValueError, OSError) as err:
            result = ConfigError(f"{key}: {err}")
    return broadcast_from_main(result, d)


def resolve_exclusions(data: DataSection, sources: list[Source], run_dir: Path, d: Distributed) -> Exclusions | None:
    """``data.exclude_docs`` traced in the train ``sources`` by rank 0 for every rank (training.data.exclude);
    None when it is not set."""
    if data.exclude_docs is None:
        return None
    return _on_main(d, EXCLUDE_KEY, lambda: trace(read_exclude_list(data.exclude_docs), sources, run_dir))


def resolve_source_tags(cfg: TrainConfig, sources: list[Source] | None, d: Distributed) -> SourceTags | None:
    """The source of every token the evaluation reads, traced by rank 0 for every rank (training.data.by_source);
    None unless ``eval.loss_by_source`` is set."""
    if not cfg.eval.loss_by_source or sources is None:
        return None
    def trace():
        order = build_order(sources, cfg.data.seed, False, cfg.data.shuffle_window_shards)
        return tag_sources(sources, order, cfg.eval_global_batch_size * cfg.eval.batches)

    return _on_main(d, BY_SOURCE_KEY, trace)


def make_batches(sources: list[Source], data: DataSection, global_batch: int, micro_batch: int, d: Distributed,
                 shuffle: bool, num_micro_batches: int | None = None,
                 exclusions: Exclusions | None = None, tags: SourceTags | None = None,
                 scheduled: bool = False) -> TokenBatches:
    """This rank's batches over ``sources``, cached and prefetched as the config's data section says, with the
    tokens of ``exclusions`` marked, and each token's source number when ``tags`` are given; mixed by
    ``data.schedule`` when ``scheduled`` (the train split)."""
    phases = schedule_phases(data.schedule, global_batch, data.from_step) if scheduled else None
    order = build_order(sources, data.seed, shuffle, data.shuffle_window_shards, phases)
    layout = BatchLayout(global_batch, micro_batch, d.rank, d.world_size)
    cache = CacheSettings(data.cache_dir or default_cache_root(), int(data.cache_limit_gb * 1e9),
                          data.download_retries, data.verify_hashes, data.prefetch_shards)
    return TokenBatches(sources, order, layout, cache, num_micro_batches=num_micro_batches,
                        excluded=None if exclusions is None else exclusions.spans,
                        token_sources=None if tags is None else tags.spans)
