"""ViTDet's simple feature pyramid (Li et al., "Exploring Plain Vision Transformer Backbones", 2022).

ViTDet builds all four levels from the *last* block's map. VLTSeg's mmseg reimplementation (like mmseg's
``Feature2Pyramid`` + ``MultiLevelNeck`` for ViT/BEiT segmentation) feeds each of the four intermediate maps into
one level instead: block i -> stride 4 / 8 / 16 / 32. We follow the multi-level variant (shallow blocks give the
high-resolution levels, deep blocks the low-resolution ones); ``multi_level=False`` gives ViTDet's original.

With patch size p the levels have strides p/4, p/2, p, 2p: 4/8/16/32 for patch 16, 3.5/7/14/28 for patch 14.
The names ``res2..res5`` keep the Mask2Former convention either way.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vlt_training.modeling.layers import LayerNorm2d

LEVEL_NAMES = ("res2", "res3", "res4", "res5")


def _rescale(in_channels: int, scale: float) -> tuple[nn.Module, int]:
    """The resampling stage of one level and its output channels."""
    if scale == 4.0:
        mid = in_channels // 2
        return nn.Sequential(
            nn.ConvTranspose2d(in_channels, mid, kernel_size=2, stride=2),
            LayerNorm2d(mid),
            nn.GELU(),
            nn.ConvTranspose2d(mid, in_channels // 4, kernel_size=2, stride=2),
        ), in_channels // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2), in_channels // 2
    if scale == 1.0:
        return nn.Identity(), in_channels
    if scale == 0.5:
        return nn.MaxPool2d(kernel_size=2, stride=2), in_channels
    raise ValueError(f"unsupported pyramid scale {scale}")


class SimpleFeaturePyramid(nn.Module):
    """Four ViT maps (B, C, h, w) -> ``{"res2": (B, out, 4h, 4w), "res3": 2x, "res4": 1x, "res5": 0.5x}``.

    Args:
        in_channels: channels of the backbone maps (the tower width).
        out_channels: channels of every pyramid level.
        scales: resampling factor of each level relative to the patch grid.
        multi_level: each input map feeds one level (VLTSeg); False = all levels from the last map (ViTDet).
        extra_in_channels: extra channels concatenated to the last map before the stride-32 level
            (DenseCLIP's score maps), per level.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        multi_level: bool = True,
        extra_in_channels: Sequence[int] = (0, 0, 0, 0),
    ):
        super().__init__()
        self.multi_level = multi_level
        self.scales = tuple(scales)
        self.stages = nn.ModuleList()
        for scale, extra in zip(self.scales, extra_in_channels):
            rescale, ch = _rescale(in_channels + extra, scale)
            self.stages.append(nn.Sequential(
                rescale,
                nn.Conv2d(ch, out_channels, kernel_size=1, bias=False),
                LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
                LayerNorm2d(out_channels),
            ))

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.multi_level and len(features) != len(self.stages):
            raise ValueError(f"expected {len(self.stages)} feature maps, got {len(features)}")
        inputs = features if self.multi_level else [features[-1]] * len(self.stages)
        return {name: stage(x) for name, stage, x in zip(LEVEL_NAMES, self.stages, inputs)}
