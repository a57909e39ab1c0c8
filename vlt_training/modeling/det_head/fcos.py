"""FCOS detection head on torchvision's implementation, with a static-shape decode that exports to ONNX.

Training reuses torchvision's FCOS pieces unchanged: ``FCOSClassificationHead`` / ``FCOSRegressionHead`` (the
conv towers), the centre-sampling / scale-range matching of ``FCOS.compute_loss`` and the focal + GIoU +
centre-ness losses of ``FCOSHead.compute_loss``. The per-cell "anchors" (a stride-sized square per feature cell,
which is all FCOS needs) are built here at the cell *centres*, as in the FCOS paper; torchvision's
``AnchorGenerator`` puts them on the cells' top-left corners, half a stride away from the pixels a ViT patch sees.

Inference does *not* use ``FCOS.postprocess_detections``: it thresholds and takes a per-level top-k with
data-dependent shapes inside a Python loop over images, which neither exports as one batched ONNX graph nor gives
the fixed ``(B, K)`` outputs of the graph contract. :meth:`FCOSDetHead.decode` does the same maths with static
shapes: one top-k over all levels and classes, box decode, clip, a single NMS call over every image
and class at once (image and class folded into the NMS group id; exported as ONNX ``NonMaxSuppression``), then
a top-``max_detections`` per image whose suppressed / below-threshold entries carry score 0.
The same function serves PyTorch evaluation and the exported graph, so evaluated mAP is the deployed model's
(the NMS and top-K steps are shared with the Faster R-CNN head: ``_postprocess.py``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models.detection import fcos as tv_fcos
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.ops import clip_boxes_to_image

from vlt_training.modeling.det_head._distributed import all_reduce_num_positives
from vlt_training.modeling.det_head._postprocess import batched_nms_mask, top_detections


def _norm_groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is <= ``groups`` (GroupNorm(32) needs channels % 32 == 0)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


class _TorchvisionFCOSHead(tv_fcos.FCOSHead):
    """torchvision's ``FCOSHead`` with the tower depth, GroupNorm groups and prior exposed (its own
    constructor hard-codes GroupNorm(32) and the 0.01 prior)."""

    def __init__(
        self, in_channels: int, num_classes: int, num_convs: int, norm_groups: int, prior_probability: float
    ) -> None:
        nn.Module.__init__(self)
        norm = partial(nn.GroupNorm, _norm_groups(in_channels, norm_groups))
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.classification_head = tv_fcos.FCOSClassificationHead(
            in_channels, 1, num_classes, num_convs, prior_probability, norm_layer=norm
        )
        self.regression_head = tv_fcos.FCOSRegressionHead(in_channels, 1, num_convs, norm_layer=norm)
        # Start with boxes one stride from the cell centre on each side, as the FCOS paper's exp(0) = 1 does.
        # torchvision's zero bias starts from zero-size boxes behind a ReLU: half the outputs get no gradient and
        # every untrained detection is degenerate (no IoU to compare exports by).
        nn.init.constant_(self.regression_head.bbox_reg.bias, 1.0)

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs) -> dict[str, torch.Tensor]:
        """torchvision's losses, renormalised from this process's positives to the positives averaged over DDP
        ranks (:func:`~vlt_training.modeling.det_head._distributed.all_reduce_num_positives`); unchanged in one process."""
        losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        device = head_outputs["cls_logits"].device
        local = torch.stack([(m >= 0).sum() for m in matched_idxs]).sum().float().to(device)  # torchvision's count
        scale = local.clamp_min(1.0) / all_reduce_num_positives(local, device)
        return {name: value * scale for name, value in losses.items()}


class FCOSDetHead(nn.Module):
    """FCOS on a list of pyramid levels (all with ``in_channels`` channels, strides ``strides``).

    ``forward(features, targets=None)`` returns the loss dict (unweighted: ``classification``,
    ``bbox_regression``, ``bbox_ctrness``) when targets are given, else the raw head outputs and anchors for
    :meth:`decode`. Each level handles objects of a size range set by its stride (FCOS: 4-8 x stride).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: tuple[float, ...] | list[float],
        num_convs: int = 4,
        norm_groups: int = 32,
        prior_probability: float = 0.01,
        center_sampling_radius: float = 1.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(float(s) for s in strides)
        self.center_sampling_radius = center_sampling_radius  # read by torchvision's FCOS.compute_loss
        self.head = _TorchvisionFCOSHead(in_channels, num_classes, num_convs, norm_groups, prior_probability)
        self.box_coder = BoxLinearCoder(normalize_by_size=True)

    def anchors(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(N, 4) xyxy squares, one per feature cell of every level (N = sum of H_l * W_l), level by level.

        The square's side is the level's nominal stride: ``FCOS.compute_loss`` derives each level's object-size
        range (4-8 x side) from it. Centres sit at the cell centres ``(i + 0.5) * step``, where the step is the
        level's real stride on each axis (the finest level's extent / the level's size): with patch 14 or odd
        patch grids the pooled levels are not exact multiples.
        """
        extent_h = features[0].shape[-2] * self.strides[0]
        extent_w = features[0].shape[-1] * self.strides[0]
        anchors = []
        for feature, stride in zip(features, self.strides):
            h, w = feature.shape[-2:]
            ys = (torch.arange(h, device=feature.device, dtype=torch.float32) + 0.5) * (extent_h / h)  # h
            xs = (torch.arange(w, device=feature.device, dtype=torch.float32) + 0.5) * (extent_w / w)  # w
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # h, w
            centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 4)  # h*w, 4
            half = torch.tensor([-0.5, -0.5, 0.5, 0.5], device=feature.device) * stride
            anchors.append(centres + half)
        return torch.cat(anchors)  # N, 4

    def forward(
        self,
        features: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ):
        if len(features) != len(self.strides):
            raise ValueError(f"FCOSDetHead got {len(features)} feature levels for {len(self.strides)} strides")
        head_outputs = self.head(features)  # cls_logits B,N,C; bbox_regression B,N,4; bbox_ctrness B,N,1
        anchors = self.anchors(features)
        if targets is None:
            return head_outputs, anchors
        num_anchors_per_level = [f.shape[2] * f.shape[3] for f in features]
        # torchvision's matching (centre sampling + per-level size ranges) then its FCOSHead losses; the method
        # only reads ``self.head`` and ``self.center_sampling_radius``, which this module provides.
        batch_anchors = [anchors] * len(targets)
        return tv_fcos.FCOS.compute_loss(self, targets, head_outputs, batch_anchors, num_anchors_per_level)

    def decode(
        self,
        head_outputs: dict[str, torch.Tensor],
        anchors: torch.Tensor,
        image_size: tuple[int, int],
        score_thresh: float,
        nms_thresh: float,
        pre_nms_topk: int,
        max_detections: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Static-shape post-processing: (boxes (B, K, 4) xyxy, scores (B, K), labels (B, K) int64).

        Entries past the real detections are padding with score 0 (and box 0, label 0). ``anchors`` (N, 4) are the
        same for every image of the batch.
        """
        cls_logits = head_outputs["cls_logits"].float()  # B, N, C
        regression = head_outputs["bbox_regression"].float()  # B, N, 4
        ctrness = head_outputs["bbox_ctrness"].float()  # B, N, 1
        _, num_anchors, num_classes = cls_logits.shape
        # FCOS score: geometric mean of class probability and centre-ness.
        scores = torch.sqrt(torch.sigmoid(cls_logits) * torch.sigmoid(ctrness)).flatten(1)  # B, N*C
        k = min(pre_nms_topk, num_anchors * num_classes)
        top_scores, top_index = scores.topk(k, dim=1)  # B, k
        anchor_index = torch.div(top_index, num_classes, rounding_mode="floor")  # B, k
        labels = top_index % num_classes  # B, k
        rel = torch.gather(regression, 1, anchor_index[..., None].expand(-1, -1, 4))  # B, k, 4
        boxes = self.box_coder.decode(rel, anchors[anchor_index])  # B, k, 4
        boxes = clip_boxes_to_image(boxes, image_size)

        keep = batched_nms_mask(boxes, top_scores, labels, num_classes, nms_thresh)  # B, k
        final = top_scores * (keep & (top_scores > score_thresh)).to(top_scores.dtype)  # B, k
        return top_detections(boxes, final, labels, max_detections)
