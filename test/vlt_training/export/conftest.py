"""Tiny contract-following torch models for the exporter tests (the registry's real models are tested too, in
test_export_registry.py; these keep the exporter's own logic testable in a second or two)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlt_perception.metadata import CLIP_MEAN, CLIP_STD, TASK_DETECTION, TASK_SEGMENTATION, ModelMetadata


class _SegExport(nn.Module):
    def __init__(self, model: "ToySeg") -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = self.model(images)["sem_seg"]  # B, C, H, W
        confidence, labels = scores.softmax(1).max(1)  # B, H, W
        return {"labels": labels.to(torch.uint8), "confidence": confidence}


class ToySeg(nn.Module):
    """Conv stem at stride 4 + bilinear upsampling: the shape path of a real segmenter at a fraction of the cost."""

    model_name = "toy_seg"

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.init_kwargs = {"num_classes": num_classes}
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN))
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD))
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, images: torch.Tensor, targets=None):
        logits = self.head(F.gelu(self.stem(images)))  # B, C, H/4, W/4
        return {"sem_seg": F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)}

    def export_module(self) -> nn.Module:
        return _SegExport(self)


class ToyDet(nn.Module):
    """Pooled conv features -> K boxes, scores and labels (fixed K, like a padded detection head)."""

    model_name = "toy_det"
    task = "detection"

    def __init__(self, num_classes: int = 3, k: int = 6) -> None:
        super().__init__()
        self.init_kwargs = {"num_classes": num_classes, "k": k}
        self.k, self.num_classes = k, num_classes
        self.class_names = [f"t{i}" for i in range(num_classes)]
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN))
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD))
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.out = nn.Linear(8, k * (4 + 1 + num_classes))

    def export_module(self) -> nn.Module:
        return self

    def forward(self, images: torch.Tensor):
        b, _, h, w = images.shape
        feat = F.relu(self.stem(images)).mean((2, 3))  # B, 8
        raw = self.out(feat).view(b, self.k, 5 + self.num_classes)  # B, K, 5 + C
        centre = raw[..., :2].sigmoid() * torch.tensor([w, h])  # B, K, 2
        size = raw[..., 2:4].sigmoid() * torch.tensor([w, h]) / 2  # B, K, 2
        boxes = torch.cat([centre - size / 2, centre + size / 2], -1)  # B, K, 4
        return boxes, raw[..., 4].sigmoid(), raw[..., 5:].argmax(-1)


def _toy(model_class, task: str, name: str):
    """A seeded toy model in eval mode and its metadata at a 32 x 64 input."""
    torch.manual_seed(0)
    model = model_class().eval()
    return model, ModelMetadata(task=task, model_name=name, class_names=model.class_names, input_height=32,
                                input_width=64)


@pytest.fixture
def toy_seg():
    return _toy(ToySeg, TASK_SEGMENTATION, "toy_seg")


@pytest.fixture
def toy_det():
    return _toy(ToyDet, TASK_DETECTION, "toy_det")
