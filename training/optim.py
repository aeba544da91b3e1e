"""AdamW and LION with decoupled weight decay, and the learning-rate schedule.

"Decoupled" as in Loshchilov & Hutter and llm-foundry's DecoupledAdamW/DecoupledLionW: weights shrink
by ``weight_decay * lr / peak_lr`` per step, so weight_decay is independent of the learning rate's
size and follows its schedule. Only matrices (dim >= 2, embeddings included) decay; biases and norm
weights do not. Both optimizers work on FSDP2's sharded DTensor parameters element by element.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimizerSection, ScheduleSection


class _Decoupled(torch.optim.Optimizer):
    """``step(skip=...)``: ``skip`` is a 0-dim bool tensor on the parameters' device (the non-finite guard's
    verdict, training.train). When it is true the step changes nothing: parameters, moments and step
    counters keep their values. The choice is made on the device (``torch.where``), so the host never waits
    for the verdict; each parameter's update is computed out of place, one parameter at a time, which
    costs a few temporaries of the largest parameter's size, not a copy of the model."""

    @staticmethod
    def _decayed(param: torch.Tensor, group: dict) -> torch.Tensor:
        if group["weight_decay"] and param.dim() >= 2:
            return param.mul(1.0 - group["weight_decay"] * group["lr"] / group["peak_lr"])
        return param

    @staticmethod
    def _keep_unless(skip: torch.Tensor, old: torch.Tensor, new: torch.Tensor) -> None:
        old.copy_(torch.where(skip, old, new))


class AdamW(_Decoupled):
    """The step counter is a float64 tensor on the device, so a skipped step leaves it as it was without
    the host knowing; the bias corrections computed from it are the same numbers as from a Python int."""

    def __init__(self, params, lr: float, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, peak_lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None, skip: torch.Tensor | None = None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if skip is None:
                    skip = torch.zeros((), dtype=torch.bool, device=p.device)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                if not torch.is_tensor(state["step"]):  # checkpoints written before the guard hold an int
                    state["step"] = torch.tensor(float(state["step"]), dtype=torch.float64, device=p.device)
                step = state["step"] + 1
                exp_avg = state["exp_avg"].lerp(p.grad, 1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].mul(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                bias1 = 1 - beta1 ** step
                bias2 = 1 - beta2 ** step
                denom = (exp_avg_sq / bias2).sqrt_().add_(group["eps"])
                # p.addcdiv_(exp_avg, denom, value=v) computes p + (v * exp_avg) / denom; v is a tensor here
                update = exp_avg.mul(-group["lr"] / bias1).div_(denom)
                self._keep_unless(skip, p, self._decayed(p, group).add(update))
                self._keep_unless(skip, state["exp_avg"], exp_avg)
                self._keep_unless(skip, state["exp_avg_sq"], exp_avg_sq)
                self._keep_unless(skip, state["step"], step)


class Lion(_Decoupled):
    """LION (Chen et al. 2023): the update is the sign of an interpolated momentum.

    Use a learning rate 3-10x smaller than AdamW's."""

    def __init__(self, params, lr: float, betas=(0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, peak_lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None, skip: torch.Tensor | None = None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if skip is None:
                    skip = torch.zeros((), dtype=torch.bool, device=p.device)
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                update = exp_avg.lerp(p.grad, 1 - beta1).sign_()
                self._keep_unless(skip, p, self._decayed(p, group).add(update, alpha=-group["lr"]))
                self._keep_unless(skip, exp_avg, exp_avg.lerp(p.grad, 1 - beta2))


def build_optimizer(model: nn.Module, cfg: OptimizerSection) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "adamw":
        return AdamW(params, cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay)
    return Lion(params, cfg.lr, cfg.betas, cfg.weight_decay)


def lr_multiplier(step: int, cfg: ScheduleSection, max_steps: int) -> float:
    """The learning rate at ``step`` (1-based) as a fraction of the peak: linear warmup, then decay."""
    if step <= cfg.warmup_steps:
        return step / cfg.warmup_steps
    decay_steps = cfg.decay_steps or max_steps
    if cfg.decay == "constant" or decay_steps <= cfg.warmup_steps:
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / (decay_steps - cfg.warmup_steps))
    if cfg.decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * multiplier
    return optimizer.param_groups[0]["lr"]
