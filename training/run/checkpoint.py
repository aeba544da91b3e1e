"""Sharded checkpoints (torch.distributed.checkpoint) that a relaunch finds again, on any number of ranks.

Layout under the checkpoint root (``checkpoint.dir``, default ``<output_dir>/<name>/checkpoints``), a
local folder or any fsspec URL (s3://...), written through DCP's FsspecWriter:

    step-00000012/
        .metadata, __0_0.distcp, ...   DCP: model and optimizer shards, and each rank's RNG states
        manifest.json                  written last, by rank 0, after every rank's files are in: step,
                                       tokens, loader state, data versions, the resolved config, and the
                                       size of every file above
    latest                             the name of the newest complete checkpoint

A checkpoint is complete when its manifest exists and every file it lists has the listed size, so
a save cut short (a crash, a kill, a truncated upload) is never chosen: ``latest_complete`` warns
about it and falls back to the previous complete one.

Resuming on M ranks from a checkpoint saved on N: DCP reshards model and optimizer; the loader's
state is a global sample count, so the global sample order carries on unchanged; the RNG states of
ranks below min(N, M) are restored (the others keep the run's seed; training draws no random
numbers today). The learning-rate schedule is a pure function of the step, so the step is its state.
"""
from __future__ import annotations

import json
import logging
import random
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter  # no public name in torch 2.11
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from shards import storage
from shards.config import ConfigError, from_dict

from ..config import ModelSection, TrainConfig
from ..data.loader import StreamingLoader, tokens_consumed
from ..data.sources import Source
from .journal import Journal
from .watchdog import FaultPlan

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LATEST_NAME = "latest"
STEP_PREFIX = "step-"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """Where training stands, beyond model and optimizer: what a checkpoint must also hold."""

    step: int = 0
    loader: dict = field(default_factory=dict)  # StreamingLoader.state_dict()
    spike: dict = field(default_factory=dict)  # SpikePolicy.state_dict(): baseline, rollbacks, learning-rate scale


# --------------------------------------------------------------------------- layout and completeness

def checkpoint_root(cfg: TrainConfig) -> str:
    return cfg.checkpoint.dir or storage.join(cfg.output_dir, cfg.name or "", "checkpoints")


def step_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def list_steps(root: str) -> list[int]:
    """Steps of every checkpoint folder under ``root`` (complete or not), ascending."""
    return sorted(int(name[len(STEP_PREFIX):]) for name in storage.list_names(root)
                  if name.startswith(STEP_PREFIX) and name[len(STEP_PREFIX):].isdigit())


def read_manifest(url: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(url, MANIFEST_NAME)))


def incomplete_reason(url: str) -> str | None:
    """Why the checkpoint folder ``url`` is not complete, or None when it is."""
    try:
        manifest = read_manifest(url)
    except FileNotFoundError:
        return f"no {MANIFEST_NAME} (the save did not finish)"
    except (ValueError, OSError) as err:
        return f"{MANIFEST_NAME} is unreadable: {err}"
    found = file_sizes(url)
    for name, size in manifest["files"].items():
        if name not in found:
            return f"{name} is missing"
        if found[name] != size:
            return f"{name} holds {found[name]} bytes, the manifest says {size} (truncated?)"
    return None


def file_sizes(url: str) -> dict[str, int]:
    """Name -> size of the files directly in folder ``url``."""
    fs, path = storage.open_fs(url)
    fs.invalidate_cache(path)
    return {info["name"].rstrip("/").rsplit("/", 1)[-1]: info["size"] for info in fs.ls(path, detail=True)
            if info["type"] == "file"}


def rollbacks(manifest: dict) -> int:
    """The spike policy's rollbacks before this checkpoint (training.run.spike)."""
    return len(manifest.get("spike", {}).get("rollbacks", []))


def latest_complete(root: str) -> tuple[str, dict] | None:
    """The newest complete checkpoint under ``root`` as (url, manifest); newer incomplete ones are
    skipped with a warning. The ``latest`` pointer is checked first; a newer complete checkpoint (a
    crash between manifest and pointer) still wins. A checkpoint of a branch a spike rollback abandoned
    (fewer rollbacks than an older one's manifest records: a kill before the rollback retired it) loses."""
    steps = list_steps(root)
    pointer = storage.join(root, LATEST_NAME)
    pointed = storage.read_bytes(pointer).decode().strip() if storage.exists(pointer) else None
    found = None
    for step in reversed(steps):
        url = storage.join(root, step_name(step))
        reason = incomplete_reason(url)
        if reason is None:
            manifest = read_manifest(url)
            if found is None or rollbacks(manifest) > rollbacks(found[1]):
                found = url, manifest
            continue
        if found is None:
            log.warning("skipping checkpoint %s: %s", url, reason)
    if found is not None and pointed != step_name(found[1]["step"]):
        log.warning("checkpoint pointer %s names %s, but %s is the newest complete one", pointer, pointed,
                    step_name(found[1]["step"]))
    return found


def remove(url: str) -> None:
    fs, path = storage.open_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def apply_retention(root: str, keep_last: int, keep_every: int) -> list[int]:
    """Delete checkpoints outside the newest ``keep_last`` complete ones and multiples of ``keep_every``,
    and incomplete ones older than the newest complete one; returns the deleted steps."""
    steps = list_steps(root)
    complete = [s for s in steps if incomplete_reason(storage.join(root, step_name(s))) is None]
    if not complete:
        return []
    keep = set(complete[-keep_last:])
    if keep_every:
        keep |= {s for s in complete if s % keep_every == 0}
    doomed = [s for s in steps if s not in keep and s < complete[-1]]
    for step in doomed:
        remove(storage.join(root, step_name(step)))
    return doomed


def writer(url: str) -> FsspecWriter:
    # fsync only makes sense for local files; an object-store upload is durable when it returns.
    return FsspecWriter(url, sync_files=storage.is_local(url))


def reader(url: str) -> FsspecReader:
    return FsspecReader(url)


def write_manifest(url: str, manifest: dict) -> dict:
    """Write ``manifest`` plus the size of every file DCP wrote into ``url``; returns what was written."""
    files = file_sizes(url)
    files.pop(MANIFEST_NAME, None)
    manifest = {**manifest, "files": files}
    storage.atomic_write_bytes(storage.join(url, MANIFEST_NAME), json.dumps(manifest, indent=1).encode())
    return manifest


def finalize(url: str, manifest: dict) -> dict:
    """Complete the checkpoint ``url``: its manifest first, then the ``latest`` pointer beside it."""
    written = write_manifest(url, manifest)
    root, name = url.rstrip("/").rsplit("/", 1)
    storage.atomic_write_bytes(storage.join(root, LATEST_NAME), name.encode())
    return written


# --------------------------------------------------------------------------- RNG states

def rng_state() -> tuple:
    """Every random generator this process uses (a tuple, so DCP stores it as one object)."""
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def set_rng_state(state: tuple) -> None:
    cpu, cuda, numpy_state, python_state = state
    torch.set_rng_state(cpu)
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)
    np.random.set_state(numpy_state)
    random.setstate(python_state)


def rng_key(rank: int) -> str:
    return f"rank{rank:05d}"


# --------------------------------------------------------------------------- the trainer's checkpointer

def describe_data(sources: list[Source]) -> list[dict]:
    return [{k: v for k, v in s.describe().items() if k in ("path", "split", "version", "fingerprint", "source")}
            for s in sources]


class Checkpointer:
    """Saves and resumes one training run; every method runs on every rank.

    ``resume`` restores model, optimizer, loader and RNG states in place from the newest complete
    checkpoint (or leaves them as they are) and returns the state to continue from. ``save`` writes
    one checkpoint (in a background thread with ``async_save``; the manifest follows once it is
    done); ``poll`` finalizes a finished background save; ``close`` waits for the last one.
    """

    def __init__(self, cfg: TrainConfig, rank: int, world_size: int, journal: Journal, faults: FaultPlan,
                 sources: list[Source], seq_len: int):
        self.cfg, self.section = cfg, cfg.checkpoint
        self.data = describe_data(sources)
        self.root = checkpoint_root(cfg)
        self.rank, self.world_size = rank, world_size
        self.journal, self.faults, self.seq_len = journal, faults, seq_len
        self.last_saved_step: int | None = None
        self._pending: tuple[Future, str, dict, float, float] | None = None
        # Its own gloo group: DCP's planning collectives run on CPU, and a background save must not
        # interleave with the training loop's collectives on the default group.
        self.group = dist.new_group(backend="gloo") if self.section.enabled and dist.is_initialized() else None

    @property
    def enabled(self) -> bool:
        return self.section.enabled

    def due(self, step: int) -> bool:
        every = self.section.every_steps
        return self.enabled and bool(every) and step % every == 0

    # ---- resume

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: StreamingLoader) -> TrainState:
        if not self.enabled:
            return TrainState(step=0, loader=loader.state_dict())
        found = self._broadcast(self._choose() if self.rank == 0 else None)
        if found is None:
            return TrainState(step=0, loader=loader.state_dict())
        url, manifest = found
        state = self.load(url, manifest, model, optimizer, loader)
        if self.rank == 0:
            self._journal_if_missing(url, manifest)
            self.journal.record("resume", step=manifest["step"], checkpoint=url, tokens=manifest["tokens"],
                                saved_world_size=manifest["world_size"], world_size=self.world_size)
            if state.loader.get("from_step") == state.step and state.loader["position"] == 0:
                self.journal.record("data_phase", step=state.step, tokens_before=state.loader["tokens_before"],
                                    data=self.data, seq_len=self.seq_len)
        return state

    def load(self, url: str, manifest: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
             loader: StreamingLoader) -> TrainState:
        """Restore model, optimizer, RNG and loader states in place from the complete checkpoint ``url``."""
        new_phase = starts_data_phase(manifest, self.cfg, url)
        same_data = new_phase or check_data(manifest, self.data, self.section.allow_data_change, url)
        state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
        restore_rng = self.rank < manifest["world_size"]
        if restore_rng:
            state["rng"] = {rng_key(self.rank): rng_state()}
        dcp.load(state, storage_reader=reader(url), process_group=self.group)
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
        if restore_rng:
            set_rng_state(state["rng"][rng_key(self.rank)])
        saved_loader = manifest["loader"]
        if not same_data:  # allowed: the sample count carries over to the new data
            saved_loader = {**saved_loader, "datasets": loader.state_dict()["datasets"]}
        if new_phase:
            loader.start_phase(manifest["tokens"])
        else:
            try:
                loader.load_state_dict(saved_loader)
            except ValueError as err:  # e.g. another data.seed: a different global sample order
                raise ConfigError(f"cannot resume from {url}: {err}") from None
        self.last_saved_step = manifest["step"]
        return TrainState(step=manifest["step"], loader=loader.state_dict(), spike=manifest.get("spike", {}))

    # ---- rollback (training.run.spike)

    def target_before(self, step: int) -> tuple[str, dict] | None:
        """Every rank: the newest complete checkpoint of step <= ``step`` as (url, manifest), or None."""
        self.close()
        found = None
        if self.rank == 0:
            complete = [s for s in list_steps(self.root) if s <= step
                        and incomplete_reason(storage.join(self.root, step_name(s))) is None]
            if complete:
                url = storage.join(self.root, step_name(complete[-1]))
                found = url, read_manifest(url)
        return self._broadcast(found)

    def retarget(self, url: str, manifest: dict, state: TrainState) -> list[str]:
        """After a rollback to ``url``: rank 0 rewrites its manifest's loader and spike state to ``state``'s
        (the skipped positions and the rollback) and points ``latest`` at it, so a relaunch resumes the same
        sequence, then deletes every checkpoint newer than it (the abandoned branch). Returns the deleted checkpoints' names (rank 0; [] elsewhere)."""
        retired = []
        if self.rank == 0:  # the manifest first: from then on it outranks the newer ones (latest_complete)
            written = {k: v for k, v in manifest.items() if k != "files"}
            finalize(url, {**written, "loader": state.loader, "spike": state.spike,
                           "tokens": tokens_consumed(state.loader, self.seq_len), "samples": state.loader["position"]})
            for step in list_steps(self.root):
                if step > manifest["step"]:
                    remove(storage.join(self.root, step_name(step)))
                    retired.append(step_name(step))
        self._broadcast(None)  # every rank waits for rank 0
        return retired

    def _journal_if_missing(self, url: str, manifest: dict) -> None:
        """Rank 0 of an attempt after the first: the checkpoint's ``checkpoint`` event, when the attempt that
        saved it was killed between its manifest and its journal line."""
        name = step_name(manifest["step"])
        if self.journal.attempt > 0 and not any(e["event"] == "checkpoint" and e.get("name") == name
                                                for e in self.journal.events()):
            self.journal.record("checkpoint", step=manifest["step"], name=name, url=url, reason=manifest["reason"],
                                bytes=sum(manifest["files"].values()), seconds=None, blocking_seconds=None,
                                removed=[], reconciled=True)

    def _choose(self) -> tuple[str, dict] | None:
        """Rank 0: the newest complete checkpoint; incomplete ones after it (interrupted saves) go."""
        found = latest_complete(self.root)
        newest = found[1]["step"] if found else -1
        for step in list_steps(self.root):
            if step > newest:
                remove(storage.join(self.root, step_name(step)))
        return found

    def _broadcast(self, value):
        if self.group is None or self.world_size == 1:
            return value
        payload = [value]
        dist.broadcast_object_list(payload, src=0, group=self.group)
        return payload[0]

    # ---- save

    def save(self, state: TrainState, model: nn.Module, optimizer: torch.optim.Optimizer, reason: str) -> None:
        if not self.enabled or state.step == self.last_saved_step:
            return
        self.close()  # one save at a time
        url = storage.join(self.root, step_name(state.step))
        manifest = {
            "format": FORMAT_VERSION, "step": state.step, "tokens": tokens_consumed(state.loader, self.seq_len),
            "samples": state.loader["position"], "world_size": self.world_size, "reason": reason,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
            "loader": state.loader, "spike": state.spike, "data": self.data, "config": self.cfg.to_dict(),
        }
        to_save = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer),
                   "rng": {rng_key(self.rank): rng_state()}}
        started = time.perf_counter()
        if self.section.async_save and reason == "periodic":
            future = dcp.async_save(to_save, storage_writer=writer(url), process_group=self.group)
            self._pending = (future, url, manifest, started, time.perf_counter() - started)
        else:
            dcp.save(to_save, storage_writer=writer(url), process_group=self.group)
            self._finish(url, manifest, started, time.perf_counter() - started)
        self.last_saved_step = state.step

    def poll(self) -> None:
        """Finalize a background save that has finished (call once per step)."""
        if self._pending is not None and self._pending[0].done():
            self.close()

    def close(self) -> None:
        """Wait for a background save and finalize it."""
        if self._pending is not None:
            future, url, manifest, started, blocking = self._pending
            self._pending = None
            future.result()
            self._finish(url, manifest, started, blocking)

    def release(self) -> None:
        """Destroy the checkpoint process group (when no save is in flight). A gloo group left to the
        garbage collector may be collected in a forked child (a DataLoader worker), where its
        destructor waits forever for threads that only exist in the parent."""
        if self.group is not None and self._pending is None:
            dist.destroy_process_group(self.group)
            self.group = None

    def _finish(self, url: str, manifest: dict, started: float, blocking: float) -> None:
        """Rank 0, once DCP has every rank's files (its coordinator wrote .metadata last): manifest,
        pointer, retention, journal. ``blocking``: the seconds training waited (all of a synchronous
        save, the staging of an asynchronous one), which the planners' checkpoint interval needs."""
        if self.rank != 0:
            return
        self.faults.during_save(manifest["step"])
        size = sum(finalize(url, manifest)["files"].values())
        removed = apply_retention(self.root, self.section.keep_last, self.section.keep_every)
        seconds = time.perf_counter() - started  # both rounded alike, so blocking never reads above the whole save
        self.journal.record("checkpoint", step=manifest["step"], name=step_name(manifest["step"]), url=url,
                            reason=manifest["reason"], bytes=size, seconds=round(seconds, 3),
                            blocking_seconds=round(min(blocking, seconds), 3),
                            removed=[step_name(s) for s in removed])


def starts_data_phase(manifest: dict, cfg: TrainConfig, url: str) -> bool:
    """True when the checkpoint ``url`` ends the data phase before ``data.from_step``: the run goes on from it on
    the new data (its order from position 0). A ConfigError when the checkpoint and data.from_step do not meet."""
    saved_from, from_step = manifest["loader"].get("from_step", 0), cfg.data.from_step
    if saved_from == from_step:
        return False
    if saved_from > from_step or manifest["step"] != from_step:
        raise ConfigError(
            f"cannot resume from {url}: it was saved at step {manifest['step']} on data that starts at step "
            f"{saved_from}, but data.from_step is {from_step}. A new data phase goes on from the checkpoint of "
            f"exactly its first step: set data.from_step to {manifest['step']}, or train the earlier phase to step "
            f"{from_step} first (its train.max_steps)")
    saved_model = from_dict(ModelSection, manifest["config"]["model"], "checkpoint config.model").build()
    model = cfg.model.build()
    if model.position == "learned" and saved_model.max_seq_len != model.max_seq_len:
        raise ConfigError(f"cannot resume from {url} at max_seq_len {model.max_seq_len}: its learned position table "
                          f"has {saved_model.max_seq_len} rows; a longer-context phase needs position: alibi or rope")
    return True


def check_data(manifest: dict, current: list[dict], allowed: bool, url: str) -> bool:
    """True when the checkpoint was trained on the data this run resolves; False when it was not and
    that is allowed; otherwise ConfigError naming both sides."""
    saved = manifest["data"]
    if saved == current:
        return True
    lines = [f"  checkpoint: {d['path']} ({d['split']}) version {d['version']}, fingerprint {d['fingerprint']}"
             for d in saved]
    lines += [f"  this run:   {d['path']} ({d['split']}) version {d['version']}, fingerprint {d['fingerprint']}"
              for d in current]
    message = f"checkpoint {url} was trained on other data than this run resolves:\n" + "\n".join(lines)
    if not allowed:
        raise ConfigError(message + "\npin data.datasets[*].version to the checkpoint's versions to resume on the "
                                    "same data, or set checkpoint.allow_data_change=true to continue on the new "
                                    "data from the same sample count")
    log.warning("%s\ncontinuing anyway (checkpoint.allow_data_change=true)", message)
    return False
