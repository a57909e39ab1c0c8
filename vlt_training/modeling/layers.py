"""Small building blocks shared by the neck, pixel decoder and transformer decoder."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of an NCHW tensor (ViTDet / ConvNeXt style)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B, C, H, W: normalise each pixel's channel vector (written out so ONNX sees plain reductions)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class MLP(nn.Module):
    """A plain multi-layer perceptron with ReLU between layers (DETR / Mask2Former mask embedding)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def sine_position_encoding(x: torch.Tensor, num_pos_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """Normalised 2-D sine position encoding of DETR (``PositionEmbeddingSine(normalize=True)``).

    Computed from the static shape of ``x`` (B, C, H, W), without a padding mask, so it traces to constants.
    Returns (B, 2 * num_pos_feats, H, W) (an expanded view of a table cached per size, device and dtype).
    """
    b, _, h, w = x.shape
    pos = cached_constant(("sine", int(h), int(w), num_pos_feats, temperature), x.device, x.dtype,
                          lambda: _sine_table(int(h), int(w), num_pos_feats, temperature, x.device))
    return pos[None].expand(b, -1, -1, -1)


def _sine_table(h: int, w: int, num_pos_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """The (2F, H, W) fp32 table of :func:`sine_position_encoding`."""
    scale = 2 * math.pi
    eps = 1e-6
    # 1..H / 1..W normalised to (0, 2pi], as cumsum over an all-valid mask would give
    y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=device)[:, None].expand(h, w)
    x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=device)[None, :].expand(h, w)
    y_embed = y_embed / (h + eps) * scale
    x_embed = x_embed / (w + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_x = x_embed[:, :, None] / dim_t  # H, W, F
    pos_y = y_embed[:, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
    pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()), dim=3).flatten(2)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).contiguous()  # 2F, H, W


_CONSTANTS: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_MAX_CONSTANTS = 64


def cached_constant(key: tuple, device: torch.device, dtype: torch.dtype,
                    build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A shape-derived constant (position encodings, reference points ...) built once per key, device and dtype.

    Such tensors depend only on static sizes, so recomputing them every forward is pure overhead (sin/cos,
    arange, meshgrid ...). Entries are built outside inference mode (usable by autograd later) and without
    grad; under ONNX tracing the cached tensor becomes a graph initialiser. A small LRU bound keeps multi-size
    evaluation from growing the cache without limit.
    """
    full_key = key + (str(device), dtype)
    value = _CONSTANTS.get(full_key)
    if value is None:
        with torch.inference_mode(False), torch.no_grad():
            value = build().to(device=device, dtype=dtype)
        _CONSTANTS[full_key] = value
        if len(_CONSTANTS) > _MAX_CONSTANTS:
            _CONSTANTS.popitem(last=False)
    else:
        _CONSTANTS.move_to_end(full_key)
    return value


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2 / detectron2 'XavierFill': kaiming-uniform with a=1 and zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)
