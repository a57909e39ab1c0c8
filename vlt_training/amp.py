"""Mixed precision helpers: one place that maps ``train.amp`` (none | bf16 | fp16) onto torch.autocast."""

from __future__ import annotations

import contextlib

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, amp: str):
    """``torch.autocast`` for ``amp`` on ``device``'s type, or a no-op context for ``none``."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp not in _DTYPES:
        raise ValueError(f"unknown amp mode {amp!r}; expected none, bf16 or fp16")
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[amp])


def grad_scaler(device: torch.device | str, amp: str) -> torch.amp.GradScaler:
    """A GradScaler that is only enabled for fp16 (bf16 has fp32's range and needs no loss scaling)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=amp == "fp16")
