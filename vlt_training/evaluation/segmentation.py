"""Segmentation inference (whole image / sliding window) and mIoU per dataset and per condition.

Metrics use ``vlt_perception.metrics.segmentation.ConfusionMatrix``, the same code as the rosbag evaluator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlt_perception.metrics.segmentation import ConfusionMatrix
from vlt_training.amp import autocast
from vlt_training.config import Config, EvalConfig
from vlt_training.data import transforms as T
from vlt_training.evaluation.tta import tta_scores
from vlt_training.modeling.registry import model_norm


def _forward_scores(model: nn.Module, images: torch.Tensor, amp: str) -> torch.Tensor:
    """Model scores (B, C, H, W) at the input size, float32."""
    with autocast(images.device, amp):
        scores = model(images)["sem_seg"]  # B, C, h, w
    scores = scores.float()
    if scores.shape[-2:] != images.shape[-2:]:
        scores = F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return scores


def whole_inference(model: nn.Module, images: torch.Tensor, size_divisor: int = 32, amp: str = "none"):
    """One pass over the image padded (bottom / right, zeros) to a multiple of ``size_divisor``: (B, C, H, W)."""
    h, w = images.shape[-2:]
    div = max(size_divisor, 1)
    ph, pw = math.ceil(h / div) * div - h, math.ceil(w / div) * div - w
    padded = F.pad(images, (0, pw, 0, ph)) if ph or pw else images  # B, 3, H', W'
    return _forward_scores(model, padded, amp)[..., :h, :w]


def slide_inference(model: nn.Module, images: torch.Tensor, crop_size: Sequence[int], stride: Sequence[int],
                    amp: str = "none"):
    """mmseg's sliding window: ``crop_size`` windows every ``stride``, the last one aligned to the border, scores
    averaged where windows overlap. Images smaller than a window are padded to it. Returns (B, C, H, W)."""
    b, _, h, w = images.shape
    ch, cw = crop_size
    sh, sw = stride
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    total = None
    count = images.new_zeros((1, 1, h, w))
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            window = images[:, :, y1:y2, x1:x2]  # B, 3, <=ch, <=cw
            wh, ww = window.shape[-2:]
            if (wh, ww) != (ch, cw):
                window = F.pad(window, (0, cw - ww, 0, ch - wh))
            scores = _forward_scores(model, window, amp)[..., :wh, :ww]  # B, C, wh, ww
            if total is None:
                total = images.new_zeros((b, scores.shape[1], h, w), dtype=torch.float32)
            total[:, :, y1:y2, x1:x2] += scores
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


def preprocess(image: np.ndarray, mean, std, resize: Sequence[int] | None) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') normalised, resized keep-ratio to fit ``resize`` if given."""
    if resize:
        factor = T.rescale_factor(image.shape[0], image.shape[1], resize)
        size = (max(1, round(image.shape[0] * factor)), max(1, round(image.shape[1] * factor)))
        image, _ = T.resize(image, None, size)
    return T.to_tensor(image, mean, std).unsqueeze(0)


@torch.no_grad()
def predict(model: nn.Module, image: np.ndarray, eval_cfg: EvalConfig, mean, std, device="cpu",
            amp: str = "none", mode: str | None = None) -> np.ndarray:
    """Label map (H, W) uint8 at the image's own resolution (with ``eval_cfg.tta``: from TTA-averaged scores)."""
    images = preprocess(image, mean, std, eval_cfg.resize).to(device)
    mode = mode or eval_cfg.mode
    if mode == "slide":
        def infer(x):
            return slide_inference(model, x, eval_cfg.crop_size, eval_cfg.stride, amp)
    elif mode == "whole":
        def infer(x):
            return whole_inference(model, x, eval_cfg.size_divisor, amp)
    else:
        raise ValueError(f"unknown eval mode {mode!r}; expected whole or slide")
    if getattr(eval_cfg, "tta", False):
        scores = tta_scores(infer, images, eval_cfg.tta_scales, eval_cfg.tta_flip)  # 1, K, H', W'
    else:
        scores = infer(images)
    if scores.shape[-2:] != image.shape[:2]:
        scores = F.interpolate(scores, size=image.shape[:2], mode="bilinear", align_corners=False)
    return scores.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()  # H, W


def evaluate_records(model: nn.Module, records: list[dict], cfg: Config, device="cpu", amp: str = "none",
                     mode: str | None = None, progress: bool | None = None) -> dict:
    """mIoU of ``model`` on ``records`` overall and per ``condition``.

    Returns ``{"overall": metrics, "conditions": {condition: metrics}, "num_images": N}`` where metrics is
    ``ConfusionMatrix.as_dict`` (``mIoU``, ``pixel_accuracy``, ``per_class_iou``) plus ``num_images``.
    """
    from tqdm import tqdm

    from vlt_training.data.segmentation import _read

    class_names = list(model.class_names)
    mean, std = model_norm(model)
    was_training = model.training
    model.eval()
    overall = ConfusionMatrix(len(class_names), cfg.data.ignore_index)
    per_condition: dict[str, ConfusionMatrix] = {}
    counts: dict[str, int] = {}
    try:
        for record in tqdm(records, desc="eval", disable=None if progress is None else not progress, leave=False):
            image, seg = _read(record)
            pred = predict(model, image, cfg.eval, mean, std, device, amp, mode)
            cond = str(record.get("condition") or "all")
            cm = per_condition.setdefault(cond, ConfusionMatrix(len(class_names), cfg.data.ignore_index))
            cm.update(pred, seg)
            overall.update(pred, seg)
            counts[cond] = counts.get(cond, 0) + 1
    finally:
        model.train(was_training)
    result = {"overall": {**overall.as_dict(class_names), "num_images": len(records)}, "conditions": {},
              "num_images": len(records)}
    for cond, cm in sorted(per_condition.items()):
        result["conditions"][cond] = {**cm.as_dict(class_names), "num_images": counts[cond]}
    return result
