"""AdamW and LION with decoupled weight decay, and the learning-rate schedule."""
from __future__ import annotations

import math

import pytest
import torch

from training.config import ScheduleSection
from training.optim import AdamW, Lion, lr_multiplier, set_lr


def test_schedule_warmup_then_cosine_or_linear_decay():
    cosine = ScheduleSection(warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    assert [lr_multiplier(s, cosine, 110) for s in (1, 5, 10)] == [0.1, 0.5, 1.0]
    assert lr_multiplier(60, cosine, 110) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert lr_multiplier(110, cosine, 110) == pytest.approx(0.1)
    assert lr_multiplier(500, cosine, 110) == pytest.approx(0.1)  # stays at the floor past the end
    linear = ScheduleSection(warmup_steps=0, decay="linear", min_lr_ratio=0.0, decay_steps=100)
    assert [lr_multiplier(s, linear, 1000) for s in (25, 50, 100)] == pytest.approx([0.75, 0.5, 0.0])
    assert lr_multiplier(7, ScheduleSection(decay="constant"), 100) == 1.0


def test_adamw_without_decay_matches_torch():
    torch.manual_seed(0)
    ours = torch.randn(4, 3, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_(True)
    opt_ours = AdamW([ours], lr=0.1, betas=(0.9, 0.95), eps=1e-8)
    opt_theirs = torch.optim.AdamW([theirs], lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    target = torch.randn(4, 3)
    for _ in range(5):
        for p, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            ((p - target) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("cls", [AdamW, Lion])
def test_weight_decay_is_decoupled_and_follows_the_schedule(cls):
    matrix = torch.ones(2, 2, requires_grad=True)
    bias = torch.ones(2, requires_grad=True)
    opt = cls([matrix, bias], lr=0.5, weight_decay=0.1)
    for p in (matrix, bias):
        p.grad = torch.zeros_like(p)
    set_lr(opt, 0.5)  # half the peak lr: half the decay
    opt.step()
    torch.testing.assert_close(matrix, torch.full((2, 2), 1 - 0.1 * 0.5))
    torch.testing.assert_close(bias, torch.ones(2))  # vectors (biases, norms) do not decay


def test_lion_steps_by_the_sign_of_the_gradient():
    p = torch.zeros(3, requires_grad=True)
    opt = Lion([p], lr=0.01)
    p.grad = torch.tensor([3.0, -0.001, 0.0])
    opt.step()
    torch.testing.assert_close(p, torch.tensor([-0.01, 0.01, 0.0]))


@pytest.mark.parametrize("cls,lr", [(AdamW, 0.05), (Lion, 0.05)])
def test_both_minimise_a_quadratic(cls, lr):
    torch.manual_seed(1)
    p = torch.randn(8, 8, requires_grad=True)
    opt = cls([p], lr=lr)
    start = (p ** 2).sum().item()
    for _ in range(200):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
    assert (p ** 2).sum().item() < 0.01 * start
    assert math.isfinite(p.sum().item())


def test_adamw_resumes_a_step_counter_saved_as_an_int():
    """Checkpoints written before the non-finite guard hold the step as a Python int: resuming them steps on
    exactly as a counter kept as a tensor does."""
    torch.manual_seed(0)
    start = torch.randn(4, 3)
    params = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    optimizers = [AdamW([p], lr=1e-2, weight_decay=0.1) for p in params]
    for step in range(1, 4):
        grad = torch.randn(4, 3)
        for p, optimizer in zip(params, optimizers):
            p.grad = grad.clone()
            optimizer.step()
        if step == 2:  # as an old checkpoint loads
            optimizers[1].state[params[1]]["step"] = int(optimizers[1].state[params[1]]["step"].item())
    assert torch.equal(params[0], params[1])
    assert torch.is_tensor(optimizers[1].state[params[1]]["step"])
