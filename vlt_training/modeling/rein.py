"""Rein (Wei et al., "Stronger, Fewer, & Superior", CVPR 2024): learnable tokens refine a frozen tower.

Every block ``i`` owns ``T`` learnable tokens, factorised low-rank as ``A_i (T, r) @ B_i (r, C)``. After block
``i`` the patch features ``f`` (N, C) attend to the tokens (softmax of ``f t^T / sqrt(C)``), read the tokens
through a shared linear map, and a shared MLP turns ``attended + f`` into a refinement ``delta``; the block output
becomes ``f + scale * delta`` with a learnable ``scale`` initialised small (1e-3), so at start the frozen tower
is almost unchanged. Class / prefix tokens pass through untouched.

Tokens are linked to the Mask2Former queries as in the reference: each block's tokens go through one linear map
to the decoder width; max- and mean-pooled over blocks and the last block's tokens are concatenated and merged
into ``T`` query positions; a linear map of those gives the query features (the reference's
``replace_query_feat``). The decoder's own learned query tables are then unused and removed.

Differences from w1oves/Rein: the reference leaves its first token out of the attention read-out; here every
token takes part (no reason for the asymmetry is given there, and it would make ``num_tokens=1`` degenerate).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


class Rein(nn.Module):
    """One module handling every block of a tower (install with ``backbone.set_block_hook(rein)``).

    The MLPs are shared over blocks and only the tokens are per block, as in the reference: per-block MLPs
    would cost ``2 C^2`` per block (16% of ViT-L instead of ~1%).

    Args:
        num_blocks: blocks of the tower (one token set each).
        width: token width ``C`` of the tower.
        patch_size: the tower's patch size (the reference's token initialisation range depends on it).
        num_tokens: tokens per block ``T``.
        rank: rank ``r`` of the token factorisation.
        scale_init: initial value of the learnable output scale.
        query_dim: decoder width; ``None`` disables the link to the decoder queries.
    """

    def __init__(self, num_blocks: int, width: int, patch_size: int = 16, num_tokens: int = 100, rank: int = 16,
                 scale_init: float = 1e-3, query_dim: Optional[int] = None):
        super().__init__()
        if num_tokens < 1 or rank < 1 or num_blocks < 1:
            raise ValueError(f"Rein needs num_blocks, num_tokens and rank >= 1, got {num_blocks}, {num_tokens}, "
                             f"{rank}")
        self.num_blocks, self.width, self.num_tokens, self.rank = num_blocks, width, num_tokens, rank
        self.tokens_a = nn.Parameter(torch.empty(num_blocks, num_tokens, rank))
        self.tokens_b = nn.Parameter(torch.empty(num_blocks, rank, width))
        # the reference's range: uniform init of a patch embedding with 3 * p^2 inputs, for the low-rank factors
        bound = math.sqrt(6.0 / (3 * patch_size * patch_size + math.sqrt(width * rank)))
        nn.init.uniform_(self.tokens_a, -bound, bound)
        nn.init.uniform_(self.tokens_b, -bound, bound)
        self.token_to_feat = nn.Linear(width, width)
        self.delta = nn.Linear(width, width)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))
        self.query_dim = query_dim
        if query_dim is not None:
            self.to_query = nn.Linear(width, query_dim)
            self.merge = nn.Linear(3 * query_dim, query_dim)
            self.query_to_feat = nn.Linear(query_dim, query_dim)

    def block_tokens(self, block: Optional[int] = None) -> torch.Tensor:
        """Tokens (T, C) of one block, or (L, T, C) of all blocks."""
        if block is None:
            return self.tokens_a @ self.tokens_b
        return self.tokens_a[block] @ self.tokens_b[block]

    def forward(self, x: torch.Tensor, block: int, grid: tuple, num_prefix: int) -> torch.Tensor:
        """Refine the patch tokens of ``x`` (B, N, C) after ``block``; prefix tokens are returned unchanged."""
        prefix, feats = x[:, :num_prefix], x[:, num_prefix:]  # B, P, C / B, hw, C
        tokens = self.block_tokens(block).to(feats.dtype)  # T, C
        attn = torch.softmax(feats @ tokens.t() * self.width ** -0.5, dim=-1)  # B, hw, T
        read = attn @ self.token_to_feat(tokens)  # B, hw, C
        delta = self.delta(read + feats) * self.scale
        return torch.cat([prefix, feats + delta], dim=1)

    def decoder_queries(self) -> dict[str, torch.Tensor]:
        """Mask2Former inputs from the tokens: ``query_embed`` (positions) and ``query_feat`` (T, D) each."""
        if self.query_dim is None:
            return {}
        q = self.to_query(self.block_tokens())  # L, T, D
        q = q.permute(1, 2, 0)  # T, D, L
        pooled = torch.cat([q.max(dim=-1).values, q.mean(dim=-1), q[..., -1]], dim=-1)  # T, 3D
        query_embed = self.merge(pooled)  # T, D
        return {"query_embed": query_embed, "query_feat": self.query_to_feat(query_embed)}


def rein_parameter_count(num_blocks: int, width: int, num_tokens: int, rank: int, query_dim: Optional[int]) -> int:
    """Parameters of a :class:`Rein` module, without building it (for the big towers' table)."""
    n = num_blocks * (num_tokens * rank + rank * width) + 2 * (width * width + width) + 1
    if query_dim is not None:
        n += (width * query_dim + query_dim) + (3 * query_dim * query_dim + query_dim) + (query_dim ** 2 + query_dim)
    return n


def tower_rein_fraction(tower: str, num_tokens: int = 100, rank: int = 16, query_dim: Optional[int] = 256) -> dict:
    """Rein's parameters against an open_clip vision tower's (built on the meta device: no memory, no weights)."""
    from vlt_training.modeling.backbone.clip_vit import _import_open_clip, register_open_clip_configs

    open_clip = _import_open_clip()
    register_open_clip_configs()
    with torch.device("meta"):
        visual = open_clip.create_model(tower, device="meta").visual
    if hasattr(visual, "trunk"):
        depth, width = len(visual.trunk.blocks), visual.trunk.embed_dim
    else:
        depth, width = len(visual.transformer.resblocks), visual.transformer.width
    tower_params = sum(p.numel() for p in visual.parameters())
    rein = rein_parameter_count(depth, width, num_tokens, rank, query_dim)
    return {"tower": tower, "blocks": depth, "width": width, "tower_params": tower_params, "rein_params": rein,
            "fraction": rein / tower_params}
