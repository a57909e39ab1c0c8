"""The engine benchmark's FLOP count against a hand count (the efficiency figures divide by it)."""

from __future__ import annotations

import pytest

import torch
from helpers.benchmarks import load_benchmark


def _bench():
    return load_benchmark("bench_engines")


class _Attention(torch.nn.Module):
    """Patch embedding + one nn.MultiheadAttention block, the backbone's layout (batch first)."""

    def __init__(self, width: int, heads: int, patch: int) -> None:
        super().__init__()
        self.embed = torch.nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, images):
        tokens = self.embed(images).flatten(2).transpose(1, 2)  # B, N, D
        return self.attn(tokens, tokens, tokens, need_weights=False)[0]


def test_attention_flops_are_counted():
    width, heads, patch, height, image_width = 32, 4, 8, 32, 64
    tokens = (height // patch) * (image_width // patch)
    expected = (2 * tokens * width * 3 * patch * patch  # patch embedding
                + 2 * tokens * width * 4 * width        # q, k, v and output projections
                + 2 * 2 * tokens * tokens * width)      # q @ k^T and attn @ v over all heads
    module = _Attention(width, heads, patch).eval()
    assert _bench().count_gflops(module, height, image_width) * 1e9 == pytest.approx(expected, rel=1e-6)
    assert torch.backends.mha.get_fastpath_enabled()  # restored for everything else in the process
