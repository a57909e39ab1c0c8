"""Mask2Former's masked-attention transformer decoder (Cheng et al., CVPR 2022).

Differences from the reference code, for ONNX / TensorRT export:
* attention masks are float additive biases (0 or ``MASK_BIAS``) instead of bool masks,
* the "fully masked row" guard (a query whose predicted mask is empty at this level attends everywhere) is
  arithmetic instead of boolean indexing with ``torch.where``,
* sine position encodings come from static shapes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vlt_training.modeling.layers import MLP, c2_xavier_fill, sine_position_encoding

# Additive bias of masked keys: exp(-1e4) is exactly 0 in fp32, fp16 and bf16, and unlike -inf it never makes
# NaN through inf - inf in reduced precision engines.
MASK_BIAS = -1e4


def _xavier_init(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention over the queries. Tensors are sequence-first (Q, B, C) as in Mask2Former."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = k = tgt + query_pos
        tgt2 = self.self_attn(q, k, value=tgt, need_weights=False)[0]
        return self.norm(tgt + self.dropout(tgt2))


class CrossAttentionLayer(nn.Module):
    """Post-norm (masked) cross-attention from queries (Q, B, C) to pixels (HW, B, C)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, attn_bias: Optional[torch.Tensor],
                pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        tgt2 = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory, attn_mask=attn_bias,
                                   need_weights=False)[0]
        return self.norm(tgt + self.dropout(tgt2))


class FFNLayer(nn.Module):
    """Post-norm feed-forward block."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm(tgt + self.dropout(tgt2))


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Queries attend to one pyramid level per layer (round robin, low resolution first), restricted to the
    foreground of the mask predicted by the previous layer.

    Args:
        in_channels: channels of the multi-scale features (pixel decoder ``conv_dim``).
        num_classes: number of classes without the "no object" class.
        hidden_dim, num_queries, nheads, dim_feedforward, dec_layers: transformer settings (256, 100, 8, 2048, 9).
        mask_dim: channels of the mask features.
        num_feature_levels: pyramid levels cycled through (3).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        mask_dim: int = 256,
        num_feature_levels: int = 3,
        enforce_input_project: bool = False,
    ):
        super().__init__()
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_feature_levels = num_feature_levels
        self.hidden_dim = hidden_dim
        self.self_attention_layers = nn.ModuleList(SelfAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.ffn_layers = nn.ModuleList(FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # learnable query features
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnable query positions
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                c2_xavier_fill(conv)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, features: list[torch.Tensor], mask_features: torch.Tensor,
                query_embed: Optional[torch.Tensor] = None, query_feat: Optional[torch.Tensor] = None) -> dict:
        """features [(B, C, h, w)] * 3 (low resolution first), mask_features (B, mask_dim, H/4, W/4).

        ``query_embed`` / ``query_feat``: externally supplied query positions / features, (Q, C) or (B, Q, C),
        replacing the learned tables (Rein links its tokens to the queries this way).

        Returns ``{"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H/4, W/4), "aux_outputs": [...]}`` with one
        aux entry per decoder layer (the prediction before the layer) for deep supervision in training; at
        inference (``eval()``) ``aux_outputs`` is empty.
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(features)}")
        b = mask_features.shape[0]
        src, pos, sizes = [], [], []
        for i, x in enumerate(features):
            sizes.append((int(x.shape[-2]), int(x.shape[-1])))
            pos.append(sine_position_encoding(x, self.hidden_dim // 2).flatten(2).permute(2, 0, 1))  # HW, B, C
            y = self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(y.permute(2, 0, 1))  # HW, B, C
        query_embed = self._queries(query_embed, self.query_embed, b, "query_embed")  # Q, B, C
        output = self._queries(query_feat, self.query_feat, b, "query_feat")  # Q, B, C

        # In training every layer's full-size masks feed the auxiliary losses. At inference only the last layer's
        # are returned; the others only make the next layer's attention bias at a pyramid level's size. Bilinear
        # resizing is linear and per channel and the mask projection is linear per pixel, so projecting mask
        # features resized once per level gives the same low-resolution masks as resizing full-size masks
        # (up to rounding), without the full-size einsum of every layer (~15 GFLOPs at 512x1024) or its resize.
        low_res = None if self.training else {size: F.interpolate(mask_features, size=size, mode="bilinear",
                                                                  align_corners=False) for size in set(sizes)}
        classes, masks = [], []
        cls, mask, attn_bias = self._predict(output, mask_features, sizes[0], low_res)
        classes.append(cls)
        masks.append(mask)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            output = self.cross_attention_layers[i](output, src[level], attn_bias, pos[level], query_embed)
            output = self.self_attention_layers[i](output, query_embed)
            output = self.ffn_layers[i](output)
            # the last prediction's attention bias would never be used: skip it
            next_size = sizes[(i + 1) % self.num_feature_levels] if i + 1 < self.num_layers else None
            cls, mask, attn_bias = self._predict(output, mask_features, next_size, low_res)
            classes.append(cls)
            masks.append(mask)
        return {
            "pred_logits": classes[-1],
            "pred_masks": masks[-1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1])
                            if m is not None],
        }

    @staticmethod
    def _queries(given: Optional[torch.Tensor], table: Optional[nn.Embedding], b: int, name: str) -> torch.Tensor:
        """Sequence-first queries (Q, B, C) from an external (Q, C) / (B, Q, C) tensor or the learned table."""
        if given is None:
            if table is None:
                raise ValueError(f"this decoder has no learned {name} table: pass {name}= (e.g. Rein's queries)")
            given = table.weight
        if given.dim() == 2:
            return given.unsqueeze(1).repeat(1, b, 1)
        return given.transpose(0, 1)

    def _predict(self, output: torch.Tensor, mask_features: torch.Tensor, target_size: Optional[tuple[int, int]],
                 low_res: Optional[dict] = None):
        """Class logits (B, Q, K+1), mask logits (B, Q, H/4, W/4) and the next layer's additive attention bias
        (B * heads, Q, h * w) at ``target_size`` (``None``: no next layer, no bias).

        With ``low_res`` (inference: mask features resized to each level's size) a prediction that has a next
        layer returns no full-size masks (``None``): its bias comes from masks projected at ``target_size``.
        """
        decoded = self.decoder_norm(output).transpose(0, 1)  # B, Q, C
        outputs_class = self.class_embed(decoded)
        mask_embed = self.mask_embed(decoded)
        if target_size is None:
            return outputs_class, torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features), None
        if low_res is not None:
            low = torch.einsum("bqc,bchw->bqhw", mask_embed, low_res[target_size])  # B, Q, h, w
            return outputs_class, None, self._attention_bias(low)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        # B, Q, h, w at the resolution of the level the next layer attends to
        low = F.interpolate(outputs_mask, size=target_size, mode="bilinear", align_corners=False)
        return outputs_class, outputs_mask, self._attention_bias(low)

    def _attention_bias(self, low: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, Q, h, w) -> additive attention bias (B * heads, Q, h * w): masked where sigmoid < 0.5."""
        masked = (low.sigmoid().flatten(2) < 0.5).to(low.dtype)  # B, Q, h*w; 1 = background = not attended
        # a query that masks out every pixel would get NaN attention: let it attend everywhere instead
        full = (masked.sum(-1, keepdim=True) >= masked.shape[-1]).to(low.dtype)
        bias = (masked * (1.0 - full) * MASK_BIAS).detach()
        return bias.unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1)  # B*heads, Q, h*w
