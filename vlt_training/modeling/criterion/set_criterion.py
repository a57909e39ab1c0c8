"""Mask2Former's set criterion: class CE + point-sampled mask BCE + dice, on every decoder layer."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vlt_training.modeling.criterion.matcher import HungarianMatcher
from vlt_training.modeling.criterion.point_sample import get_uncertain_point_coords_with_randomness, point_sample


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """inputs: mask logits (N, P), targets: binary (N, P); summed over masks, divided by ``num_masks``."""
    inputs = inputs.sigmoid()
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy averaged over points, summed over masks, divided by ``num_masks``."""
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def sem_seg_to_instances(sem_seg: torch.Tensor, num_classes: int, ignore_index: int = 255) -> dict:
    """A (H, W) label map -> ``{"labels": (T,), "masks": (T, H, W) float}``: one mask per class present."""
    return batch_sem_seg_to_instances(sem_seg[None], num_classes, ignore_index)[0]


def batch_sem_seg_to_instances(sem_seg: torch.Tensor, num_classes: int, ignore_index: int = 255) -> list[dict]:
    """(B, H, W) label maps -> per image ``{"labels": (T,) ascending, "masks": (T, H, W) float}``.

    The classes present come from one bincount over the batch instead of a ``torch.unique`` (a sort) per image.
    """
    b = sem_seg.shape[0]
    valid = (sem_seg != ignore_index) & (sem_seg >= 0) & (sem_seg < num_classes)  # B, H, W
    # each image counts into its own num_classes + 1 bins; the last bin collects ignored pixels
    offsets = torch.arange(b, device=sem_seg.device)[:, None, None] * (num_classes + 1)
    bins = torch.where(valid, sem_seg.long(), num_classes) + offsets
    present = torch.bincount(bins.flatten(), minlength=b * (num_classes + 1)).view(b, num_classes + 1)
    present = present[:, :num_classes] > 0  # B, K
    instances = []
    for i in range(b):
        classes = present[i].nonzero()[:, 0]  # T, ascending
        masks = (sem_seg[i][None] == classes[:, None, None]).float()  # T, H, W
        instances.append({"labels": classes, "masks": masks})
    return instances


class SetCriterion(nn.Module):
    """Losses of Mask2Former for semantic segmentation.

    Args:
        num_classes: classes without "no object".
        matcher: the Hungarian matcher.
        class_weight, mask_weight, dice_weight: loss weights (2, 5, 5).
        no_object_weight: CE weight of the "no object" class (0.1).
        num_points, oversample_ratio, importance_sample_ratio: point sampling of the mask losses
            (12544, 3.0, 0.75).
    Returns from ``forward``: ``loss_ce``, ``loss_mask``, ``loss_dice`` and ``loss_*_{i}`` for each aux layer,
    already multiplied by their weights.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        self.label_smoothing = 0.0  # of the class loss (FAMix sets 0.1)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def loss_labels(self, outputs: dict, targets: list[dict], indices, num_masks: float) -> torch.Tensor:
        logits = outputs["pred_logits"].float()  # B, Q, K+1
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        for b, ((src, tgt), target) in enumerate(zip(indices, targets)):
            target_classes[b, src.to(logits.device)] = target["labels"][tgt.to(logits.device)]
        return F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight.to(logits.dtype),
                               label_smoothing=self.label_smoothing)

    def loss_masks(self, outputs: dict, targets: list[dict], indices, num_masks: float):
        pred = outputs["pred_masks"]  # B, Q, h, w
        src = torch.cat([pred[b, s.to(pred.device)] for b, (s, _) in enumerate(indices)])  # N, h, w
        if src.shape[0] == 0:
            # no ground-truth mask in the batch: zero loss that still depends on the predictions
            zero = pred.sum() * 0.0
            return zero, zero
        src = src[:, None].float()  # N, 1, h, w
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                src, self.num_points, self.oversample_ratio, self.importance_sample_ratio)  # N, P, 2
            tgt_pts = self._sample_matched_targets(targets, indices, coords)  # N, P
        src_pts = point_sample(src, coords)[:, 0]
        return sigmoid_ce_loss(src_pts, tgt_pts, num_masks), dice_loss(src_pts, tgt_pts, num_masks)

    @staticmethod
    def _sample_matched_targets(targets: list[dict], indices, coords: torch.Tensor) -> torch.Tensor:
        """Target mask values (N, P) of the matched pairs (in ``indices`` order) at their points ``coords``.

        Samples each image's (T, H, W) masks in place, each target at the points of the prediction it is matched
        to, instead of gathering the matched full-resolution masks into a new (N, H, W) tensor first.
        """
        out, start = [], 0
        for target, (_, j) in zip(targets, indices):
            n = len(j)
            if n == 0:
                continue
            masks = target["masks"][:, None].float()  # T, 1, H, W (a view)
            j = j.to(masks.device)
            grid = coords.new_zeros((masks.shape[0],) + coords.shape[1:])  # T, P, 2; unmatched targets unused
            grid[j] = coords[start:start + n]
            out.append(point_sample(masks, grid)[:, 0][j])  # n, P
            start += n
        return torch.cat(out)

    def _losses(self, outputs: dict, targets: list[dict], num_masks: float) -> dict[str, torch.Tensor]:
        indices = self.matcher(outputs, targets)
        loss_mask, loss_dice = self.loss_masks(outputs, targets, indices, num_masks)
        return {
            "loss_ce": self.loss_labels(outputs, targets, indices, num_masks),
            "loss_mask": loss_mask,
            "loss_dice": loss_dice,
        }

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """outputs of the transformer decoder; targets per image ``labels`` (T,), ``masks`` (T, H, W)."""
        device = outputs["pred_logits"].device
        num_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            # average over all ranks so every rank normalises by the same count
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        num_masks = max(float(num_masks.item()), 1.0)

        raw = self._losses(outputs, targets, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            raw.update({f"{k}_{i}": v for k, v in self._losses(aux, targets, num_masks).items()})
        weighted = {}
        for key, value in raw.items():
            base = key.rsplit("_", 1)[0] if key[-1].isdigit() else key
            weighted[key] = value * self.weights[base]
        return weighted
