"""The synthetic benchmark at 32 x 64 (Cityscapes + ACDC layouts), for tests that read or train on a few images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vlt_training.synthetic.benchmark import generate_benchmark


def tiny_bench(out: Path, num_train: int = 4, num_val: int = 1, conditions: Sequence[str] = ("fog",)) -> Path:
    """Write ``num_train`` source images and ``num_val`` validation scenes (each also under ``conditions``)."""
    generate_benchmark(out, num_train, num_val, height=32, width=64, conditions=list(conditions))
    return out
