"""Pieces of the Mask R-CNN DDP test that spawned processes import (a spawned worker must live in an importable
module; test files are imported by path)."""

from __future__ import annotations

import torch
from helpers.gloo import gloo_group, mean_over_ranks, rank_share, uneven_detection_batch

from vlt_training.modeling.det_head import FasterRCNNHead

STRIDES = (8.0, 16.0)
IMAGE_SIZE = (64, 64)
MASK_PARAMETERS = ("roi_heads.mask_head.", "roi_heads.mask_predictor.")  # trained by loss_mask alone


def make_head() -> FasterRCNNHead:
    """A tiny Mask R-CNN whose RoI sampler keeps every candidate (quota far above proposals + ground truth), so the
    positive RoIs of an image do not depend on the random sampler or on which rank holds the image."""
    torch.manual_seed(0)
    return FasterRCNNHead(
        16, 3, STRIDES, anchor_sizes=((16.0,), (32.0,)), rpn_convs=1, rpn_pre_nms_topk=(100, 100),
        rpn_post_nms_topk=(40, 40), box_convs=1, box_conv_dim=16, box_fc_dim=32, roi_batch_size=4096,
        roi_positive_fraction=0.5, mask_convs=1, mask_conv_dim=16, mask_roi_output_size=7,
    )


def _box_masks(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy boxes -> (N, H, W) uint8: an ellipse inscribed in each box (not the box, so the mask matters)."""
    ys, xs = torch.meshgrid(torch.arange(IMAGE_SIZE[0]) + 0.5, torch.arange(IMAGE_SIZE[1]) + 0.5, indexing="ij")
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
    inside = ((xs - cx[:, None, None]) / rx[:, None, None]) ** 2 + ((ys - cy[:, None, None]) / ry[:, None, None]) ** 2
    return (inside <= 1).to(torch.uint8)


def make_batch():
    """The FCOS test's uneven 4-image batch, with an instance mask per object."""
    features, targets = uneven_detection_batch()
    return features, [{**t, "masks": _box_masks(t["boxes"])} for t in targets]


def mask_loss_and_grads(head, features, targets):
    """``loss_mask`` and the gradients of the mask branch, after a backward of the sum of every loss (DDP needs
    every parameter used; the mask branch gets gradient from ``loss_mask`` only)."""
    losses = head(features, IMAGE_SIZE, targets)
    sum(losses.values()).backward()
    grads = {n.removeprefix("module."): p.grad.clone() for n, p in head.named_parameters()}
    return losses["loss_mask"].detach(), {n: g for n, g in grads.items() if n.startswith(MASK_PARAMETERS)}


def worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_group(rank, world, port):
        head = torch.nn.parallel.DistributedDataParallel(make_head())
        features, targets = make_batch()
        mine = rank_share(rank, world, len(targets))
        loss, grads = mask_loss_and_grads(head, [f[mine] for f in features], targets[mine])  # grads: DDP's mean
        loss = mean_over_ranks(loss)  # the logged loss
        if rank == 0:
            torch.save({"loss_mask": loss, "grads": grads}, out)
