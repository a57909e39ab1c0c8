"""Plumbing shared by the 2-process gloo tests: a free port, a process group per spawned worker, each rank's even
share of a batch, and a detection batch whose halves hold very different numbers of objects."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import torch
import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int) -> Iterator[None]:
    """A gloo process group on localhost for this worker (one thread: 2 workers share 2 cores)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        yield
    finally:
        dist.destroy_process_group()


def rank_share(rank: int, world: int, batch: int) -> slice:
    """This rank's contiguous, even share of a global batch of ``batch`` images."""
    per_rank = batch // world
    return slice(rank * per_rank, (rank + 1) * per_rank)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The logged value: the mean of a scalar over ranks (in place)."""
    dist.all_reduce(value)
    value /= dist.get_world_size()
    return value


def uneven_detection_batch():
    """Four 64x64 images (features at strides 8 and 16, 16 channels) with very different numbers of objects: an even
    split over 2 ranks has unequal positives per rank. Boxes are xyxy pixels, labels ``0 .. 2``."""
    g = torch.Generator().manual_seed(1)
    features = [torch.randn(4, 16, 8, 8, generator=g), torch.randn(4, 16, 4, 4, generator=g)]
    boxes = [
        [[4.0, 4.0, 40.0, 44.0], [30.0, 10.0, 60.0, 50.0], [8.0, 30.0, 28.0, 60.0]],
        [[2.0, 2.0, 62.0, 62.0], [20.0, 20.0, 36.0, 40.0]],
        [[10.0, 10.0, 22.0, 24.0]],  # the second half (rank 1) has one small object: few positives
        [],
    ]
    targets = [{"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.arange(len(b), dtype=torch.int64) % 3} for b in boxes]
    return features, targets
