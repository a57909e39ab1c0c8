"""Poly + linear warm-up schedule: values at known steps, and LambdaLR applying it to every param group."""

from __future__ import annotations

import pytest
import torch

from vlt_training.config import ScheduleConfig
from vlt_training.training.schedule import build_scheduler, lr_factor


def test_warmup_is_linear_from_ratio_to_one():
    kw = dict(max_iters=100, warmup_iters=10, warmup_ratio=0.1)
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(5, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(10, **kw) == pytest.approx(1.0)


def test_poly_decay_after_warmup():
    kw = dict(max_iters=110, warmup_iters=10, warmup_ratio=0.1)
    # 50 of the 100 post-warm-up steps done: (1 - 0.5) ** 1.0
    assert lr_factor(60, **kw) == pytest.approx(0.5)
    assert lr_factor(60, power=2.0, **kw) == pytest.approx(0.25)
    assert lr_factor(110, **kw) == pytest.approx(0.0)
    assert lr_factor(60, min_lr_ratio=0.2, **kw) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor(500, **kw) == pytest.approx(0.0)  # past the end stays at the floor


def test_no_warmup():
    assert lr_factor(0, max_iters=4, warmup_iters=0) == 1.0
    assert lr_factor(3, max_iters=4, warmup_iters=0) == pytest.approx(0.25)


def test_scheduler_scales_each_group_and_resumes():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.1}], lr=1.0)
    cfg = ScheduleConfig(warmup_iters=2, warmup_ratio=0.5, power=1.0)
    sched = build_scheduler(opt, cfg, max_iters=6)
    seen = []
    for _ in range(4):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = [lr_factor(s, 6, 2, 0.5) for s in range(4)]
    assert [s[0] for s in seen] == pytest.approx(expected)
    assert [s[1] for s in seen] == pytest.approx([0.1 * e for e in expected])

    opt2 = torch.optim.SGD([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.1}], lr=1.0)
    sched2 = build_scheduler(opt2, cfg, max_iters=6)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(lr_factor(4, 6, 2, 0.5))


def test_cosine_policy_decays_from_one_to_the_floor_after_warm_up():
    kw = dict(max_iters=110, warmup_iters=10, warmup_ratio=0.1, min_lr_ratio=0.02, policy="cosine")
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(0.02 + 0.98 * 0.5)  # half-way: the cosine's midpoint
    assert lr_factor(110, **kw) == pytest.approx(0.02)
    values = [lr_factor(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="policy"):
        lr_factor(20, max_iters=110, policy="step")
