"""Processes and devices: the process group and device mesh, the FSDP2-sharded model, and what ranks share.

On GPU: NCCL, bf16 mixed precision, parameters initialised on the meta device and materialised shard
by shard. On CPU: gloo and fp32, with the full model initialised on every rank before sharding (small
models only), which makes a run's numbers independent of the number of ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from shards.config import ConfigError

from .config import ParallelSection
from .model import MPT, MPTConfig


@dataclass
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    mesh: DeviceMesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(cfg: ParallelSection) -> Distributed:
    """Join the process group torchrun set up (or make a one-process group) and build the device mesh.

    Full sharding is a 1-D mesh over every rank; hybrid is 2-D: replicate across groups of
    ``shard_group_size`` ranks (default: one node), shard within each group.
    """
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("parallel.device is 'cuda' but no CUDA device is available")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
    if "RANK" in os.environ:
        dist.init_process_group(backend, device_id=device if use_cuda else None)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    world_size = dist.get_world_size()
    if cfg.sharding == "hybrid":
        group = cfg.shard_group_size or local_world_size
        mesh = init_device_mesh(device.type, (world_size // group, group), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh(device.type, (world_size,), mesh_dim_names=("shard",))
    return Distributed(dist.get_rank(), world_size, local_rank, local_world_size, device, mesh)


def broadcast_from_main(value, dist_info: Distributed):
    """Rank 0's ``value`` on every rank; an exception on rank 0 is raised on every rank."""
    payload = [value]
    dist.broadcast_object_list(payload, src=0, device=dist_info.device)
    if isinstance(payload[0], Exception):
        raise payload[0]
    return payload[0]


def compute_dtype(par: ParallelSection, device: torch.device) -> torch.dtype:
    """bf16 when configured, or by default on GPU; else fp32."""
    bf16 = par.mixed_precision == "bf16" or (par.mixed_precision == "auto" and device.type == "cuda")
    return torch.bfloat16 if bf16 else torch.float32


def build_model(model_cfg: MPTConfig, par: ParallelSection, d: Distributed) -> nn.Module:
    """The MPT model, each block and then the root sharded with FSDP2 (fully_shard) over the mesh."""
    on_gpu = d.device.type == "cuda"
    with torch.device("meta" if on_gpu else "cpu"):
        model = MPT(model_cfg)
    if par.activation_checkpointing:
        for i, block in enumerate(model.blocks):
            model.blocks[i] = checkpoint_wrapper(block)
    if par.compile:
        for i, block in enumerate(model.blocks):
            model.blocks[i] = torch.compile(block)
    # bf16: bf16 compute and all-gathers, fp32 gradient reduction and master weights
    if compute_dtype(par, d.device) == torch.bfloat16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mesh=d.mesh, mp_policy=policy)
    fully_shard(model, mesh=d.mesh, mp_policy=policy)
    if on_gpu:
        model.to_empty(device=d.device)
        with torch.no_grad():
            model.init_weights()
    return model


def grad_norm_and_clip(model: nn.Module, max_norm: float | None) -> torch.Tensor:
    """The total gradient norm (before clipping) as a 0-dim float32 tensor on the device, the same on every
    rank; clips to ``max_norm`` when set. Not read on the host here: the step must not wait for it.

    The squares are summed in float64 (each rank its shards, then one all-reduce) and the norm rounded to
    float32 once, so it does not depend on how the gradients are sharded. torch's clip_grad_norm_ sums
    each shard in float32: on an AVX-512 Xeon its norm differed in the last bit between 1 and 2 ranks, and
    so did the clipped weights of a run resumed on 1 rank from the 2-rank run's checkpoint."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float32, device=next(model.parameters()).device)
    locals_, layout = [], None
    for grad in grads:
        if isinstance(grad, DTensor):
            if layout not in (None, (grad.device_mesh, grad.placements)):
                raise RuntimeError(f"gradients on two layouts, {layout[1]} and {grad.placements}: one norm needs one")
            layout = grad.device_mesh, grad.placements
            grad = grad.to_local()
        locals_.append(grad)
    squares = sum(torch.linalg.vector_norm(g, dtype=torch.float64).square() for g in locals_)
    if layout is not None:  # add up the shards; replicas (hybrid sharding's other dimension) hold the same
        mesh, placements = layout
        for dim, placement in enumerate(placements):
            if placement.is_shard():
                dist.all_reduce(squares, group=mesh.get_group(dim))
            elif not placement.is_replicate():
                raise RuntimeError(f"gradient placement {placement}: expected shards or replicas")
    norm = squares.sqrt().float()
    if max_norm is not None:
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_ computes it
        for g in locals_:
            g.mul_(scale)
    return norm
