"""mmseg-style training augmentation on numpy arrays (H, W, 3) uint8 RGB and (H, W) uint8 labels.

Every random choice comes from the ``np.random.Generator`` passed in, so a sample is a pure function of its seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from vlt_perception.labels import IGNORE_INDEX


def rescale_factor(height: int, width: int, scale: Sequence[int]) -> float:
    """mmcv's keep-ratio rescale: the largest factor with long edge <= max(scale) and short edge <= min(scale)."""
    long_edge, short_edge = max(scale), min(scale)
    return min(long_edge / max(height, width), short_edge / min(height, width))


def resize(image: np.ndarray, seg: np.ndarray | None, size: tuple[int, int]):
    """Resize to ``size`` (H, W): bilinear for the image, nearest for labels."""
    h, w = size
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if seg is not None:
        seg = cv2.resize(seg, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, seg


def random_resize(image, seg, rng: np.random.Generator, scale: Sequence[int] | None, ratio_range: Sequence[float],
                  keep_ratio: bool = True):
    """Fit ``scale`` (H, W) keeping the aspect ratio (if given; ``keep_ratio=False``: resize to exactly ``scale``),
    then resize by a ratio drawn from ``ratio_range``."""
    h, w = image.shape[:2]
    if scale and not keep_ratio:
        base_h, base_w = float(scale[0]), float(scale[1])
    else:
        factor = rescale_factor(h, w, scale) if scale else 1.0
        base_h, base_w = h * factor, w * factor
    ratio = rng.uniform(ratio_range[0], ratio_range[1]) if ratio_range[1] > ratio_range[0] else ratio_range[0]
    new = (max(1, int(round(base_h * ratio))), max(1, int(round(base_w * ratio))))
    if new == (h, w):
        return image, seg
    return resize(image, seg, new)


def random_crop(image, seg, rng: np.random.Generator, crop: Sequence[int], cat_max_ratio: float = 0.75,
                ignore_index: int = IGNORE_INDEX, tries: int = 10):
    """Crop ``crop`` (H, W) (or less where the image is smaller); retry until no class dominates (mmseg)."""
    h, w = image.shape[:2]
    ch, cw = min(crop[0], h), min(crop[1], w)
    for _ in range(tries):
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        if cat_max_ratio >= 1.0 or seg is None:
            break
        window = seg[y0:y0 + ch, x0:x0 + cw]
        _, counts = np.unique(window[window != ignore_index], return_counts=True)
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
    image = image[y0:y0 + ch, x0:x0 + cw]
    seg = seg[y0:y0 + ch, x0:x0 + cw] if seg is not None else None
    return image, seg


def pad_to(image, seg, size: Sequence[int], ignore_index: int = IGNORE_INDEX):
    """Pad bottom/right to ``size`` (H, W): image with 0, labels with ``ignore_index``."""
    h, w = image.shape[:2]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return image, seg
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    if seg is not None:
        seg = np.pad(seg, ((0, ph), (0, pw)), constant_values=ignore_index)
    return image, seg


def random_flip(image, seg, rng: np.random.Generator, prob: float = 0.5):
    if rng.random() < prob:
        image = image[:, ::-1]
        seg = seg[:, ::-1] if seg is not None else None
    return image, seg


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness_delta: int = 32,
                           contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta: int = 18):
    """mmseg's PhotoMetricDistortion: brightness, contrast (before or after), saturation, hue; each p=0.5."""
    img = image.astype(np.float32)
    if rng.integers(2):
        img += rng.uniform(-brightness_delta, brightness_delta)
    contrast_first = bool(rng.integers(2))
    if contrast_first and rng.integers(2):
        img *= rng.uniform(*contrast_range)
    do_sat, do_hue = bool(rng.integers(2)), bool(rng.integers(2))
    if do_sat or do_hue:
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        if do_sat:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*saturation_range), 0, 255)
        if do_hue:
            hsv[..., 0] = (hsv[..., 0] + rng.integers(-hue_delta, hue_delta)) % 180  # OpenCV hue is 0..179
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if not contrast_first and rng.integers(2):
        img *= rng.uniform(*contrast_range)
    return np.clip(img, 0, 255).astype(np.uint8)


def to_tensor(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised with mean/std given for RGB in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)  # 3, H, W
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (tensor - mean_t) / std_t
