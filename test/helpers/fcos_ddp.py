"""Pieces of the FCOS DDP test that spawned processes import (a spawned worker must live in an importable module;
test files are imported by path)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from vlt_training.modeling.det_head import FCOSDetHead

STRIDES = (8.0, 16.0)


def make_head() -> FCOSDetHead:
    torch.manual_seed(0)
    return FCOSDetHead(16, 3, STRIDES, num_convs=1, norm_groups=4)


def make_batch():
    """Four 64x64 images with very different numbers of objects: an even split has unequal positives per rank."""
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


def loss_and_grads(head, features, targets):
    losses = head(features, targets)
    total = sum(losses.values())
    total.backward()
    return {k: v.detach() for k, v in losses.items()}, {n: p.grad.clone() for n, p in head.named_parameters()}


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        head = torch.nn.parallel.DistributedDataParallel(make_head())
        features, targets = make_batch()
        half = len(targets) // world
        mine = slice(rank * half, (rank + 1) * half)
        losses, _ = loss_and_grads(head, [f[mine] for f in features], targets[mine])
        for value in losses.values():  # the logged loss: mean over ranks
            dist.all_reduce(value)
            value /= world
        grads = {n.removeprefix("module."): p.grad for n, p in head.named_parameters()}  # averaged by DDP
        if rank == 0:
            torch.save({"losses": losses, "grads": grads}, out)
    finally:
        dist.destroy_process_group()
