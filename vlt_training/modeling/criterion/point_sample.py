"""Point sampling of mask logits (PointRend), used by the Mask2Former matcher and losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(inputs: torch.Tensor, point_coords: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinearly sample ``inputs`` (N, C, H, W) at ``point_coords`` (N, P, 2) in [0, 1] x, y -> (N, C, P)."""
    grid = 2.0 * point_coords.unsqueeze(2) - 1.0  # N, P, 1, 2
    return F.grid_sample(inputs, grid, mode="bilinear", align_corners=align_corners).squeeze(3)


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary mask logits (N, 1, P): highest (0) where the logit is 0."""
    return -torch.abs(logits)


def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float,
) -> torch.Tensor:
    """PointRend importance sampling: (N, 1, H, W) logits -> (N, num_points, 2) coordinates in [0, 1].

    Oversample ``oversample_ratio * num_points`` uniform points, keep the ``importance_sample_ratio`` most
    uncertain of them, fill the rest with fresh uniform points.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
    n = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=coarse_logits.device)
    uncertainties = calculate_uncertainty(point_sample(coarse_logits, coords))  # N, 1, S
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainties[:, 0, :], k=num_uncertain, dim=1)[1]  # N, U
    coords = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(n, num_random, 2, device=coarse_logits.device)], dim=1)
    return coords
