"""DenseCLIP-style vision-language guidance (Rao et al., CVPR 2022), simplified to fixed prompts.

Class names become prompts ("a photo of a {name}.") embedded once by the frozen open_clip text tower at build
time and stored as a buffer, so training, inference and export never need the text tower. Dense image features
projected into the joint space give pixel-text score maps (cosine similarities), which

* feed an auxiliary pixel-text loss (cross-entropy of ``scores / temperature`` against the labels downsampled
  to the score-map resolution), and
* are concatenated to the stride-32 input of the feature pyramid, as DenseCLIP does with its last stage.

Towers without a pretrained text encoder (the custom tiny tower, or any tower built with ``pretrained=None``)
use the matching open_clip text tower with random weights: the code path is the same, the embeddings are
deterministic for a given seed and, like every buffer, restored from the model checkpoint.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_PROMPT = "a photo of a {}."


def class_prompts(class_names: Sequence[str], template: str = DEFAULT_PROMPT) -> list[str]:
    """One prompt per class name."""
    if "{}" not in template:
        raise ValueError(f"prompt template {template!r} has no '{{}}' placeholder for the class name")
    return [template.format(name) for name in class_names]


class PixelTextScore(nn.Module):
    """Cosine score maps between dense features (B, D, h, w) and fixed text embeddings (K, D) -> (B, K, h, w)."""

    def __init__(self, text_embeddings: torch.Tensor, temperature: float = 0.07):
        super().__init__()
        if text_embeddings.dim() != 2:
            raise ValueError(f"text embeddings must be (K, D), got {tuple(text_embeddings.shape)}")
        # persistent: the checkpoint carries the embeddings, so a rebuilt model needs no text tower weights
        self.register_buffer("text_embeddings", F.normalize(text_embeddings.float(), dim=-1))
        self.temperature = temperature

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        dense = F.normalize(dense, dim=1)
        return torch.einsum("bdhw,kd->bkhw", dense, self.text_embeddings.to(dense.dtype))

    def loss(self, scores: torch.Tensor, sem_seg: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """Pixel-text cross-entropy: scores (B, K, h, w), labels (B, H, W) downsampled by nearest neighbour."""
        labels = F.interpolate(sem_seg[:, None].float(), size=scores.shape[-2:], mode="nearest")[:, 0].long()
        if (labels == ignore_index).all():
            return scores.sum() * 0.0
        return F.cross_entropy(scores.float() / self.temperature, labels, ignore_index=ignore_index)
