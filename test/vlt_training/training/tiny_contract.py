"""A tiny segmentation model honouring the model contract, for fast trainer tests (not collected by pytest).

``install(monkeypatch_or_none)`` routes the trainer's and the checkpoint loader's model building to it, so the
loop, resume and DDP tests run in a second per step instead of the real Mask2Former's several.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlt_perception.labels import CITYSCAPES_CLASSES


class TinySegNet(nn.Module):
    model_name = "tiny_seg_net"

    def __init__(self, width: int = 8, dropout: float = 0.1, crash_at_forward: int | None = None) -> None:
        super().__init__()
        self.init_kwargs = {"width": width, "dropout": dropout}
        self.class_names = list(CITYSCAPES_CLASSES)
        self.pixel_mean = (0.485, 0.456, 0.406)
        self.pixel_std = (0.229, 0.224, 0.225)
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1))
        self.norm = nn.GroupNorm(1, width)
        # Dropout draws from the global torch RNG: resuming must restore it to reproduce the next steps.
        self.drop = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(width, len(self.class_names), 1)
        self.crash_at_forward = crash_at_forward
        self.forwards = 0

    def forward(self, images, targets=None):
        self.forwards += 1
        if self.crash_at_forward is not None and self.forwards >= self.crash_at_forward:
            raise KeyboardInterrupt("simulated kill")
        scores = self.head(self.drop(self.norm(F.gelu(self.backbone(images)))))  # B, C, H, W
        if not self.training:
            return {"sem_seg": scores.softmax(1)}
        labels = torch.stack([t["sem_seg"] for t in targets])  # B, H, W
        # Mean over each image's labelled pixels, then over images: batch size and accumulation split agree.
        per_pixel = F.cross_entropy(scores, labels, ignore_index=255, reduction="none")  # B, H, W
        valid = (labels != 255).flatten(1).sum(1).clamp(min=1)  # B
        ce = (per_pixel.flatten(1).sum(1) / valid).mean()
        return {"loss_ce": ce, "loss_aux": 0.01 * scores.pow(2).mean()}


def install(monkeypatch, **model_kwargs) -> None:
    """Make the trainer build TinySegNet(**model_kwargs) and load_model rebuild TinySegNet from meta.json."""
    from vlt_training.training import checkpoint, trainer

    def build(cfg):
        return TinySegNet(**model_kwargs)

    def rebuild(meta, source=None):
        return TinySegNet(**meta["model_kwargs"])

    if monkeypatch is None:  # subprocesses (torchrun workers) patch for good
        trainer.build_model, checkpoint.build_model = build, rebuild
    else:
        monkeypatch.setattr(trainer, "build_model", build)
        monkeypatch.setattr(checkpoint, "build_model", rebuild)
