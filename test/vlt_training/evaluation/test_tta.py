"""Test-time augmentation: scale and flip passes undone and averaged, in the evaluator and the torch engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlt_training.config import ConfigError, EvalConfig, load_config
from vlt_training.evaluation.segmentation import predict
from vlt_training.evaluation.tta import DEFAULT_SCALES, TTASemantic, tta_export_module, tta_scores


class Pointwise(nn.Module):
    """A 1x1 convolution: flip-equivariant, so mirroring and un-mirroring changes nothing."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)
        self.class_names = [f"c{i}" for i in range(classes)]
        self.pixel_mean, self.pixel_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def semantic_inference(self, images):
        return self.conv(images).softmax(1)  # B, K, H, W

    def forward(self, images, targets=None):
        return {"sem_seg": self.semantic_inference(images)}


class RampLeftRight(nn.Module):
    """Scores that ignore the image: class 0 rises from left to right, class 1 is its mirror image, class 2 holds the
    input height. Un-flipping a flipped pass mirrors the ramps; averaging the two gives 0.5 everywhere."""

    def forward(self, images):
        b, _, h, w = images.shape
        ramp = torch.linspace(0.0, 1.0, w).expand(b, 1, h, w)
        return torch.cat([ramp, 1.0 - ramp, torch.full((b, 1, h, w), float(h))], dim=1)  # B, 3, H, W


def test_flip_equivariant_model_gives_the_plain_result():
    model = Pointwise().eval()
    images = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        plain = model.semantic_inference(images)
        flipped = tta_scores(model.semantic_inference, images, scales=[1.0], flip=True)
    torch.testing.assert_close(flipped, plain)


def test_flip_is_undone_and_scales_are_averaged():
    images = torch.zeros(1, 3, 16, 32)
    no_flip = tta_scores(RampLeftRight(), images, scales=[1.0], flip=False)
    torch.testing.assert_close(no_flip[0, 0, 0], torch.linspace(0.0, 1.0, 32))
    both = tta_scores(RampLeftRight(), images, scales=[1.0], flip=True)
    torch.testing.assert_close(both[:, :2], torch.full((1, 2, 16, 32), 0.5))
    # class 2 = the height each pass saw (8, 16, 24), constant maps survive the resize back exactly
    scaled = tta_scores(RampLeftRight(), images, scales=[0.5, 1.0, 1.5], flip=True)
    assert scaled.shape == (1, 3, 16, 32)
    torch.testing.assert_close(scaled[:, 2], torch.full((1, 16, 32), (8 + 16 + 24) / 3))


def test_averages_the_passes_of_a_tiny_model():
    """Averaging, written out for two scales and the flip: mean of the four resized-back score maps."""
    model = Pointwise().eval()
    images = torch.randn(1, 3, 12, 20)
    with torch.no_grad():
        got = tta_scores(model.semantic_inference, images, scales=[0.5, 1.0], flip=True)
        half = F.interpolate(images, size=(6, 10), mode="bilinear", align_corners=False)
        back = lambda s: F.interpolate(s, size=(12, 20), mode="bilinear", align_corners=False)  # noqa: E731
        passes = [model.semantic_inference(images), model.semantic_inference(images.flip(-1)).flip(-1),
                  back(model.semantic_inference(half)), back(model.semantic_inference(half.flip(-1)).flip(-1))]
    torch.testing.assert_close(got, torch.stack(passes).mean(0))
    assert not torch.allclose(got, passes[0])  # the half-scale passes do change the result


def test_scales_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        tta_scores(RampLeftRight(), torch.zeros(1, 3, 4, 4), scales=[0.0, 1.0])


def test_evaluator_predict_with_tta():
    model = Pointwise().eval()
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    plain = predict(model, image, EvalConfig(mode="whole", size_divisor=1), model.pixel_mean, model.pixel_std)
    flip_only = predict(model, image, EvalConfig(mode="whole", size_divisor=1, tta=True, tta_scales=[1.0]),
                        model.pixel_mean, model.pixel_std)
    np.testing.assert_array_equal(flip_only, plain)
    slide = EvalConfig(mode="slide", crop_size=[16, 16], stride=[8, 8], tta=True)
    labels = predict(model, image, slide, model.pixel_mean, model.pixel_std)
    assert labels.shape == (20, 30) and labels.dtype == np.uint8


def test_config_switch_and_defaults():
    cfg = load_config(None, ["eval.tta=true"])
    assert cfg.eval.tta and cfg.eval.tta_scales == list(DEFAULT_SCALES) and cfg.eval.tta_flip
    assert DEFAULT_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    with pytest.raises(ConfigError, match="eval.tta"):
        load_config(None, ["task=detection", "eval.tta=true"])
    with pytest.raises(ConfigError, match="tta_scales"):
        load_config(None, ["eval.tta_scales=[]"])


def test_export_module_for_the_torch_engine():
    model = Pointwise().eval()
    images = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        labels, confidence = tta_export_module(model, scales=[0.75, 1.0])(images)
        sem = TTASemantic(model, [0.75, 1.0]).semantic_inference(images)
    assert labels.dtype == torch.uint8 and labels.shape == (2, 16, 24)
    torch.testing.assert_close(labels.long(), sem.argmax(1))
    with pytest.raises(ValueError, match="segmentation"):
        tta_export_module(nn.Conv2d(3, 3, 1))
