"""Test-time augmentation for segmentation: multi-scale (0.5-1.75) + horizontal flip, scores averaged.

This is mmseg's ``TestTimeAug`` (``Resize(scale_factor=r, keep_ratio=True)`` for each ratio ``r`` x
``RandomFlip`` off / on), which the leaderboard figures of VLTSeg and of most domain-generalisation papers use:
the image (already at the test scale) is rescaled by each ratio, run through the normal inference (whole image or
sliding window), flipped back where it was flipped, resized back to the test scale, and the class scores of all
passes are averaged before the argmax.

Used by the trainer's evaluator (``eval.tta``) and, through :func:`tta_export_module`, by the torch engine of the
offline bag evaluation (``bag_eval --engine torch --tta``). Exported ONNX / TensorRT graphs never contain it: it
multiplies the cost by ``2 x len(scales)`` (about 12x), which is an offline-evaluation choice, not a deployed one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# mmseg's standard multi-scale ratios (configs/_base_/datasets/*.py, img_ratios)
DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def tta_scores(infer: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
               scales: Sequence[float] = DEFAULT_SCALES, flip: bool = True) -> torch.Tensor:
    """Mean of ``infer`` over rescaled (and, with ``flip``, mirrored) copies of ``images`` (B, 3, H, W).

    ``infer`` maps images (B, 3, h, w) to class scores (B, K, h', w') at any resolution; every pass is resized
    back to (H, W) (bilinear) before averaging. Returns float32 scores (B, K, H, W).
    """
    if not scales or min(scales) <= 0:
        raise ValueError(f"TTA scales must be positive ratios, got {list(scales)}")
    h, w = int(images.shape[-2]), int(images.shape[-1])
    total, passes = None, 0
    for ratio in scales:
        size = (max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5)))  # mmcv's rounding of scale_factor
        scaled = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            scores = infer(scaled.flip(-1) if mirrored else scaled).float()  # B, K, h', w'
            if mirrored:
                scores = scores.flip(-1)
            if scores.shape[-2:] != (h, w):
                scores = F.interpolate(scores, size=(h, w), mode="bilinear", align_corners=False)
            total = scores if total is None else total + scores
            passes += 1
    return total / passes


class TTASemantic(nn.Module):
    """A segmentation model whose ``semantic_inference`` averages :func:`tta_scores` passes of the wrapped one."""

    def __init__(self, model: nn.Module, scales: Sequence[float] = DEFAULT_SCALES, flip: bool = True):
        super().__init__()
        if not hasattr(model, "semantic_inference"):
            raise ValueError(f"TTA needs a segmentation model with semantic_inference(); got {type(model).__name__}")
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip

    def semantic_inference(self, images: torch.Tensor) -> torch.Tensor:
        return tta_scores(self.model.semantic_inference, images, self.scales, self.flip)  # B, K, H, W

    def forward(self, images: torch.Tensor) -> dict:
        return {"sem_seg": self.semantic_inference(images)}


def tta_export_module(model: nn.Module, scales: Sequence[float] = DEFAULT_SCALES, flip: bool = True) -> nn.Module:
    """The model's deployment module (labels, confidence) computed from TTA-averaged scores (torch engine only)."""
    from vlt_training.modeling.meta_arch.vltseg import SegmentationExport

    return SegmentationExport(TTASemantic(model, scales, flip)).eval()
