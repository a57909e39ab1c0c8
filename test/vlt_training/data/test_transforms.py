"""Augmentation primitives: sizes, label handling, cat_max_ratio, determinism per seed, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlt_training.data import transforms as T


def sample(h=40, w=60):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    seg = np.zeros((h, w), np.uint8)
    seg[:, w // 2:] = 1
    seg[: h // 4] = 255
    return image, seg


def test_rescale_factor_keeps_ratio_within_scale():
    # mmcv: 1052x1914 into (720, 1280): long edge limit 1280 / 1914, short edge 720 / 1052 -> the smaller wins.
    assert T.rescale_factor(1052, 1914, [720, 1280]) == pytest.approx(min(1280 / 1914, 720 / 1052))
    assert T.rescale_factor(1024, 2048, [1024, 2048]) == pytest.approx(1.0)


def test_random_resize_range_and_nearest_labels():
    image, seg = sample()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        out, out_seg = T.random_resize(image, seg, rng, None, [0.5, 2.0])
        assert 20 <= out.shape[0] <= 80 and out.shape[:2] == out_seg.shape
        assert set(np.unique(out_seg)) <= {0, 1, 255}  # nearest: no blended label values


def test_fixed_resize_without_keep_ratio():
    # GTA5 recipe: mmseg Resize(scale=(1280, 720)) with keep_ratio=False gives exactly 720x1280 for 1052x1914 frames
    image = np.zeros((1052, 1914, 3), np.uint8)
    seg = np.zeros((1052, 1914), np.uint8)
    out, out_seg = T.random_resize(image, seg, np.random.default_rng(0), [720, 1280], [1.0, 1.0], keep_ratio=False)
    assert out.shape[:2] == out_seg.shape == (720, 1280)
    kept, _ = T.random_resize(image, None, np.random.default_rng(0), [720, 1280], [1.0, 1.0])
    assert kept.shape[:2] == (704, 1280)  # keep-ratio fit: the long edge limits


def test_random_crop_respects_cat_max_ratio():
    h, w = 64, 64
    seg = np.zeros((h, w), np.uint8)
    seg[:, 40:] = 1  # only crops starting right of x=16 are balanced enough
    image = np.zeros((h, w, 3), np.uint8)
    for seed in range(10):
        _, crop = T.random_crop(image, seg, np.random.default_rng(seed), (32, 32), cat_max_ratio=0.75)
        _, counts = np.unique(crop[crop != 255], return_counts=True)
        assert len(counts) == 2 and counts.max() / counts.sum() < 0.75
    _, crop = T.random_crop(image, seg, np.random.default_rng(0), (100, 100))
    assert crop.shape == (64, 64)  # never larger than the image


def test_pad_uses_zero_and_ignore():
    image, seg = sample(10, 10)
    out, out_seg = T.pad_to(image, seg, (12, 16))
    assert out.shape == (12, 16, 3) and out_seg.shape == (12, 16)
    assert (out[10:] == 0).all() and (out_seg[:, 10:] == 255).all()
    assert (out_seg[:10, :10] == seg).all()


def test_flip_moves_image_and_labels_together():
    image, seg = sample()
    flipped = [T.random_flip(image, seg, np.random.default_rng(s), 0.5) for s in range(20)]
    assert any((i == image[:, ::-1]).all() and (g == seg[:, ::-1]).all() for i, g in flipped)
    assert any((i == image).all() and (g == seg).all() for i, g in flipped)
    for i, g in flipped:
        assert ((i == image).all() and (g == seg).all()) or ((i == image[:, ::-1]).all() and (g == seg[:, ::-1]).all())


def test_photometric_changes_pixels_deterministically():
    image, _ = sample()
    a = T.photometric_distortion(image, np.random.default_rng(3))
    b = T.photometric_distortion(image, np.random.default_rng(3))
    assert a.dtype == np.uint8 and a.shape == image.shape and np.array_equal(a, b)
    changed = [not np.array_equal(T.photometric_distortion(image, np.random.default_rng(s)), image) for s in range(8)]
    assert sum(changed) >= 6


def test_to_tensor_normalises_rgb():
    image = np.full((2, 3, 3), [255, 0, 51], np.uint8)
    t = T.to_tensor(image, mean=(0.5, 0.5, 0.2), std=(0.5, 0.25, 0.1))
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, -2.0, 0.0]), atol=1e-6)
