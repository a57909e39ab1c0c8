"""Learning-rate schedule: linear warm-up then poly (mmseg / VLTSeg) or cosine (CLIP) decay, a pure function of
the step."""

from __future__ import annotations

import functools
import math

import torch

from vlt_training.config import ScheduleConfig


def lr_factor(
    step: int, max_iters: int, warmup_iters: int = 0, warmup_ratio: float = 1e-6, power: float = 1.0,
    min_lr_ratio: float = 0.0, policy: str = "poly",
) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based).

    Warm-up: ``warmup_ratio`` at step 0 rising linearly to 1 at ``warmup_iters``. Afterwards poly decay over the
    remaining steps: ``min + (1 - min) * (1 - t) ** power`` with ``t`` going 0 -> 1 from ``warmup_iters`` to
    ``max_iters``; ``policy="cosine"`` decays as ``min + (1 - min) * (1 + cos(pi t)) / 2`` instead (``power`` unused).
    """
    if step < warmup_iters:
        return warmup_ratio + (1.0 - warmup_ratio) * step / warmup_iters
    span = max(max_iters - warmup_iters, 1)
    progress = min(max(step - warmup_iters, 0) / span, 1.0)
    if policy == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if policy != "poly":
        raise ValueError(f"unknown schedule policy {policy!r}; expected poly or cosine")
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress) ** power


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, max_iters: int):
    """A ``LambdaLR`` over :func:`lr_factor`; its state is just the step, so resuming is exact."""
    factor = functools.partial(
        lr_factor, max_iters=max_iters, warmup_iters=cfg.warmup_iters, warmup_ratio=cfg.warmup_ratio,
        power=cfg.power, min_lr_ratio=cfg.min_lr_ratio, policy=cfg.policy,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
