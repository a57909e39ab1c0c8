"""Pieces of the FCOS DDP test that spawned processes import (a spawned worker must live in an importable module;
test files are imported by path)."""

from __future__ import annotations

import torch
from helpers.gloo import gloo_group, mean_over_ranks, rank_share
from helpers.gloo import uneven_detection_batch as make_batch

from vlt_training.modeling.det_head import FCOSDetHead

STRIDES = (8.0, 16.0)


def make_head() -> FCOSDetHead:
    torch.manual_seed(0)
    return FCOSDetHead(16, 3, STRIDES, num_convs=1, norm_groups=4)


def loss_and_grads(head, features, targets):
    losses = head(features, targets)
    total = sum(losses.values())
    total.backward()
    return {k: v.detach() for k, v in losses.items()}, {n: p.grad.clone() for n, p in head.named_parameters()}


def worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_group(rank, world, port):
        head = torch.nn.parallel.DistributedDataParallel(make_head())
        features, targets = make_batch()
        mine = rank_share(rank, world, len(targets))
        losses, _ = loss_and_grads(head, [f[mine] for f in features], targets[mine])
        losses = {k: mean_over_ranks(v) for k, v in losses.items()}
        grads = {n.removeprefix("module."): p.grad for n, p in head.named_parameters()}  # averaged by DDP
        if rank == 0:
            torch.save({"losses": losses, "grads": grads}, out)
