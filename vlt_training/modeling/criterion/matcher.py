"""Hungarian matching of predicted masks to ground-truth masks (Mask2Former's ``HungarianMatcher``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlt_training.modeling.criterion.point_sample import point_sample


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise dice cost: mask logits (Q, P), binary targets (T, P) -> (Q, T)."""
    inputs = inputs.sigmoid()
    numerator = 2 * inputs @ targets.T
    denominator = inputs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean binary cross-entropy: mask logits (Q, P), binary targets (T, P) -> (Q, T)."""
    p = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / p


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising class + mask BCE + dice cost, mask costs on uniformly sampled points.

    Args:
        cost_class, cost_mask, cost_dice: weights of the three costs (2, 5, 5).
        num_points: points sampled per image (12544 = 112 * 112); the same points for predictions and targets.
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 12544):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matcher costs are 0")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """outputs: ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, h, w); targets: per image ``labels`` (T,)
        and ``masks`` (T, H, W). Returns per image (query indices, target indices), both int64 of length min(Q, T).
        """
        try:
            from scipy.optimize import linear_sum_assignment
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Hungarian matching needs scipy: pip install -r requirements/train.txt") from exc

        b = len(targets)
        empty = torch.empty(0, dtype=torch.int64)
        indices = [(empty, empty)] * b
        used = [i for i, t in enumerate(targets) if t["labels"].numel() > 0]
        if not used:
            return indices
        masks = outputs["pred_masks"]
        # one draw of (n, P, 2) equals n per-image draws of (1, P, 2) in order: same points as a per-image loop
        coords = torch.rand(len(used), self.num_points, 2, device=masks.device)  # n, P, 2
        # all images' predictions in one sampling call: queries are channels, (n, Q, h, w) -> (n, Q, P)
        out_pts = point_sample(masks[used].float(), coords)
        # target masks per image, as views (a full-resolution concatenation would copy every mask): [(T, P)]
        tgt_pts = []
        for n, i in enumerate(used):
            tgt_mask = targets[i]["masks"][:, None].to(out_pts)  # T, 1, H, W
            tgt_pts.append(point_sample(tgt_mask, coords[n:n + 1].expand(tgt_mask.shape[0], -1, -1))[:, 0])
        # BCE against all-ones / all-zeros targets, for every image at once (the pairwise CE cost's two terms)
        pos = F.binary_cross_entropy_with_logits(out_pts, torch.ones_like(out_pts), reduction="none")
        neg = F.binary_cross_entropy_with_logits(out_pts, torch.zeros_like(out_pts), reduction="none")
        probs = outputs["pred_logits"][used].float().softmax(-1)  # n, Q, K+1
        for n, i in enumerate(used):
            tgt_ids = targets[i]["labels"]
            tgt = tgt_pts[n]  # T, P
            cost_mask = (pos[n] @ tgt.T + neg[n] @ (1 - tgt).T) / out_pts.shape[-1]  # Q, T
            cost = (self.cost_mask * cost_mask
                    + self.cost_class * -probs[n][:, tgt_ids]
                    + self.cost_dice * batch_dice_cost(out_pts[n], tgt))
            cost = cost.cpu().numpy()
            if not np.isfinite(cost).all():
                raise FloatingPointError("non-finite matching cost: the model produced NaN/inf predictions")
            rows, cols = linear_sum_assignment(cost)
            indices[i] = (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
        return indices
