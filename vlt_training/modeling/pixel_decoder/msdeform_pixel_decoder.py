"""Mask2Former's multi-scale deformable-attention pixel decoder (``MSDeformAttnPixelDecoder``).

A deformable-attention encoder runs over the stride 8/16/32 levels; an FPN-style lateral fusion adds the stride-4
level and produces the per-pixel mask features. No padding masks: every image in a batch has the same size.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlt_training.modeling.layers import c2_xavier_fill, cached_constant, sine_position_encoding
from vlt_training.modeling.pixel_decoder.ms_deform_attn import MSDeformAttn


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or the largest divisor of ``channels`` below that (tiny models)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels + FFN."""

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.0, n_levels: int = 3,
                 n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        # B, S, C
        src = self.norm1(src + self.dropout1(self.self_attn(src + pos, reference_points, src, spatial_shapes)))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


def encoder_reference_points(spatial_shapes: Sequence[tuple[int, int]], n_levels: int,
                             device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1]: (1, S, L, 2) as x, y (same for every level)."""
    refs = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
    ref = torch.cat(refs, 0)  # S, 2
    return ref[None, :, None, :].expand(1, -1, n_levels, 2)


class MSDeformAttnPixelDecoder(nn.Module):
    """Pyramid ``{"res2".."res5": (B, C_in, h_i, w_i)}`` -> (mask_features, multi_scale_features).

    ``mask_features`` (B, mask_dim, H/4, W/4); ``multi_scale_features`` [(B, conv_dim, h, w)] at strides 32, 16,
    8 (low resolution first, the order the transformer decoder cycles through).

    Args:
        in_channels: channels of each pyramid level (res2..res5).
        conv_dim: channels of the encoder / outputs (256).
        mask_dim: channels of the mask features (256).
        encoder_layers, encoder_ffn_dim, encoder_heads, encoder_points, dropout: deformable encoder settings.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        encoder_layers: int = 6,
        encoder_ffn_dim: int = 1024,
        encoder_heads: int = 8,
        encoder_points: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError("MSDeformAttnPixelDecoder expects 4 levels (res2..res5)")
        self.n_levels = 3
        # the encoder levels, lowest resolution first (res5, res4, res3)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), group_norm(conv_dim))
            for c in reversed(list(in_channels[1:]))
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.level_embed = nn.Parameter(torch.empty(self.n_levels, conv_dim))
        nn.init.normal_(self.level_embed)
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, encoder_ffn_dim, dropout, self.n_levels, encoder_heads, encoder_points)
            for _ in range(encoder_layers)
        )
        self.lateral_conv = nn.Sequential(nn.Conv2d(in_channels[0], conv_dim, kernel_size=1, bias=False),
                                          group_norm(conv_dim))
        self.output_conv = nn.Sequential(nn.Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=False),
                                         group_norm(conv_dim), nn.ReLU())
        c2_xavier_fill(self.lateral_conv[0])
        c2_xavier_fill(self.output_conv[0])
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        c2_xavier_fill(self.mask_features)
        self.conv_dim = conv_dim

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        levels = [features["res5"], features["res4"], features["res3"]]
        srcs, pos_list, shapes = [], [], []
        for lvl, (x, proj) in enumerate(zip(levels, self.input_proj)):
            y = proj(x)  # B, C, h, w
            shapes.append((int(y.shape[2]), int(y.shape[3])))
            pos = sine_position_encoding(y, self.conv_dim // 2)
            srcs.append(y.flatten(2).transpose(1, 2))  # B, h*w, C
            pos_list.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        src = torch.cat(srcs, 1)  # B, S, C
        pos = torch.cat(pos_list, 1)
        # depends only on the level sizes: built once per size (an initialiser in exported graphs)
        ref = cached_constant(("encoder_ref", tuple(shapes), self.n_levels), src.device, src.dtype,
                              lambda: encoder_reference_points(shapes, self.n_levels, src.device, src.dtype))
        ref = ref.expand(src.shape[0], -1, -1, -1)
        for layer in self.layers:
            src = layer(src, pos, ref, shapes)
        b = src.shape[0]
        outs = [
            y.transpose(1, 2).reshape(b, self.conv_dim, h, w)
            for y, (h, w) in zip(src.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        # stride-4 lateral fusion with the upsampled stride-8 output (FPN style)
        res2 = self.lateral_conv(features["res2"])
        fused = res2 + F.interpolate(outs[-1], size=res2.shape[-2:], mode="bilinear", align_corners=False)
        fused = self.output_conv(fused)
        return self.mask_features(fused), outs
