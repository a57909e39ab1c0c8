"""Faster R-CNN head (ViTDet's two-stage detector) on torchvision's implementation, with a static-shape inference
path that exports to one batched ONNX graph.

Training runs torchvision's modules unchanged: ``RegionProposalNetwork`` (anchor matching, 256 sampled anchors,
objectness + box losses, proposal filtering) and ``RoIHeads`` (proposal matching, 512 sampled RoIs with 25 %
positives, classification + box losses), with ``RPNHead``, ``FastRCNNConvFCHead`` and ``FastRCNNPredictor``.
Two pieces are our own because torchvision's assume integer strides that divide the image:

* :class:`StrideAnchorGenerator`: torchvision's ``AnchorGenerator`` cell anchors, shifted by the pyramid's
  nominal strides (``image // feature`` in torchvision: wrong for patch-14 towers, whose strides are 3.5 / 7 ...).
* :class:`LevelRoIAlign`: RoIAlign on the level chosen by the FPN rule (torchvision's ``LevelMapper``), with
  ``spatial_scale = 1 / stride`` (torchvision's ``MultiScaleRoIAlign`` rounds the scale to a power of 2) and
  ViTDet's ``ROIAlignV2`` (``aligned=True``, adaptive sampling).

Inference does not use ``RegionProposalNetwork.filter_proposals`` or ``RoIHeads.postprocess_detections``: both
loop over images with data-dependent shapes. :meth:`FasterRCNNHead.predict` does the same maths with masks:
per-level top-k proposals, one NMS over every (image, level), the top proposals per image with a validity mask,
RoIAlign + box head, per-class decode, one NMS over every (image, class), top-``max_detections``.

With ``mask_convs`` set the head is Mask R-CNN's: torchvision's ``MaskRCNNHeads`` (ViTDet: 4 convs of 256 with
LayerNorm) and ``MaskRCNNPredictor`` on 14 x 14 RoIAlign features of the positive RoIs, trained by ``RoIHeads``'
``maskrcnn_loss`` (per-class sigmoid masks, 28 x 28, cross-entropy against the ground truth cropped to each RoI).
:meth:`FasterRCNNHead.predict_masks` runs it on the fixed ``K`` detections of :meth:`predict`. That loss is a mean
over the rank's own positive RoIs; :class:`PositiveCountingRoIHeads` counts them so that the head renormalises it to
the positives averaged over DDP ranks, as FCOS does (one process: unchanged).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.ops import clip_boxes_to_image
from torchvision.ops.poolers import LevelMapper

from vlt_training.modeling.det_head._distributed import all_reduce_num_positives
from vlt_training.modeling.det_head._postprocess import batched_nms_mask, top_detections
from vlt_training.modeling.det_head._roi_align import roi_align_train
from vlt_training.modeling.layers import LayerNorm2d

# torchvision's minimum proposal / detection side (RegionProposalNetwork.min_size, postprocess_detections).
_MIN_PROPOSAL_SIDE = 1e-3
_MIN_DETECTION_SIDE = 1e-2


class StrideAnchorGenerator(AnchorGenerator):
    """torchvision's anchors (``sizes[l]`` x ``aspect_ratios`` per cell of level ``l``, centred on the cell's
    top-left corner as in detectron2, offset 0) on levels of the given, possibly fractional, strides."""

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float], strides: Sequence[float]):
        if len(strides) != len(sizes):
            raise ValueError(f"{len(sizes)} anchor size lists for {len(strides)} pyramid levels")
        if len({len(s) for s in sizes}) != 1:
            raise ValueError(f"every level needs the same number of anchor sizes (one RPN head serves all levels), "
                             f"got {[list(s) for s in sizes]}")
        super().__init__(tuple(tuple(s) for s in sizes), (tuple(aspect_ratios),) * len(sizes))
        self.strides = tuple(float(s) for s in strides)

    def grid(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N, 4) xyxy anchors of every level, location-major then anchor (the order of the RPN's outputs)."""
        dtype, device = features[0].dtype, features[0].device
        anchors = []
        for feature, stride, cell in zip(features, self.strides, self.cell_anchors):
            h, w = feature.shape[-2:]
            ys = torch.arange(h, device=device, dtype=torch.float32) * stride  # h
            xs = torch.arange(w, device=device, dtype=torch.float32) * stride  # w
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")  # h, w
            shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)  # h*w, 1, 4
            anchors.append((shifts + cell.to(device).view(1, -1, 4)).reshape(-1, 4))  # h*w*A, 4
        return torch.cat(anchors).to(dtype)

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """torchvision's interface: one (N, 4) anchor tensor per image (all equal)."""
        anchors = self.grid(feature_maps)
        return [anchors] * len(image_list.image_sizes)


class LevelRoIAlign(nn.Module):
    """Multi-level RoIAlign: each box is pooled from one level, chosen by the FPN rule
    ``floor(4 + log2(sqrt(area) / 224))`` clamped to the available levels.

    ``forward(features, boxes, image_shapes)`` has ``MultiScaleRoIAlign``'s interface (for ``RoIHeads``);
    :meth:`pool` takes (R, 5) ``[image index, x1, y1, x2, y2]`` rows (for the batched inference path).
    """

    def __init__(self, strides: Sequence[float], output_size: int = 7, sampling_ratio: int = 0,
                 canonical_size: int = 224, canonical_level: int = 4):
        super().__init__()
        self.strides = tuple(float(s) for s in strides)
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        # Level k has stride ~2^k (patch 14: 3.5 -> k = 2); levels must be consecutive.
        ks = [round(math.log2(s)) for s in self.strides]
        if ks != list(range(ks[0], ks[0] + len(ks))):
            raise ValueError(f"RoI pooling levels must have strides doubling level to level, got {self.strides}")
        self.mapper = LevelMapper(ks[0], ks[-1], canonical_scale=canonical_size, canonical_level=canonical_level)

    def pool(self, features: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) features of the (R, 5) ``rois``."""
        features = list(features)[: len(self.strides)]
        levels = self.mapper([rois[:, 1:]])  # R
        channels = features[0].shape[1]
        out = rois.new_zeros((rois.shape[0], channels, *self.output_size))  # R, C, S, S
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            index = torch.where(levels == level)[0]  # R_l
            # torchvision's op; with a gradient on the CPU its backward is the vectorised one (_roi_align.py)
            pooled = roi_align_train(feature, rois[index], self.output_size[0], spatial_scale=1.0 / stride,
                                     sampling_ratio=self.sampling_ratio, aligned=True)  # R_l, C, S, S
            out.index_put_((index,), pooled.to(out.dtype))
        return out

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)])  # R, 1
        return self.pool(list(features.values()), torch.cat([ids, torch.cat(boxes)], dim=1))


class PositiveCountingRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads``, remembering how many positive RoIs its last training call sampled.

    ``RoIHeads.forward`` trains the mask branch on exactly the sampled RoIs with a label > 0 and returns
    ``maskrcnn_loss``'s mean over them, but not their number; the DDP renormalisation needs it. Counting here, in
    the one method that produces those labels, keeps torchvision's forward and loss unchanged (no copy of either).
    """

    last_num_positive_rois: torch.Tensor | None = None

    def select_training_samples(self, proposals, targets):
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        self.last_num_positive_rois = sum((lab > 0).sum() for lab in labels).float()  # scalar: this rank's positives
        return proposals, matched_idxs, labels, regression_targets


class FasterRCNNHead(nn.Module):
    """Faster R-CNN on a list of pyramid levels (all with ``in_channels`` channels, strides ``strides``).

    ``forward(features, image_size, targets)`` returns torchvision's losses (``loss_objectness``,
    ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``); :meth:`predict` returns the fixed-size
    detections. Labels are ``0 .. num_classes - 1`` outside this module (torchvision's background 0 is internal).

    Args:
        in_channels: channels of every pyramid level.
        num_classes: object classes (without background).
        strides: nominal stride of every level, finest first.
        anchor_sizes: anchor side(s) per level (ViTDet: 32, 64, 128, 256, 512 on strides 4 .. 64).
        aspect_ratios: anchor height / width ratios, the same on every level.
        roi_levels: the finest levels used for RoI pooling (ViTDet: p2-p5, not the max-pooled p6).
        rpn_convs: 3x3 convs in the RPN head (ViTDet: 2).
        rpn_pre_nms_topk, rpn_post_nms_topk: proposals per level before NMS / per image after, (train, test).
        rpn_nms_thresh: IoU of the proposal NMS.
        rpn_batch_size, rpn_positive_fraction: anchors sampled per image for the RPN losses.
        rpn_iou_thresholds: (background below, foreground above) anchor IoU.
        box_convs, box_conv_dim, box_fc_dim: the box head (ViTDet: 4 convs of 256 with LayerNorm, one fc 1024).
        roi_output_size, roi_sampling_ratio: RoIAlign output side and samples per bin (0: adaptive).
        roi_batch_size, roi_positive_fraction, roi_iou_thresh: RoIs sampled per image for the box losses.
        score_thresh, nms_thresh, max_detections: test-time filtering (ViTDet: 0.05, 0.5, 100).
        pre_nms_topk: class-box candidates per image kept before the final NMS.
        mask_convs: ``None``: no mask branch (Faster R-CNN); else Mask R-CNN's mask head with this many 3x3 convs
            (ViTDet: 4) of ``mask_conv_dim`` channels (LayerNorm) on ``mask_roi_output_size`` RoIAlign features
            (ViTDet: 14), predicting one ``2 * mask_roi_output_size`` mask per class.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: Sequence[float],
        anchor_sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        roi_levels: int | None = None,
        rpn_convs: int = 2,
        rpn_pre_nms_topk: Sequence[int] = (2000, 1000),
        rpn_post_nms_topk: Sequence[int] = (1000, 1000),
        rpn_nms_thresh: float = 0.7,
        rpn_batch_size: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_iou_thresholds: Sequence[float] = (0.3, 0.7),
        box_convs: int = 4,
        box_conv_dim: int = 256,
        box_fc_dim: int = 1024,
        roi_output_size: int = 7,
        roi_sampling_ratio: int = 0,
        roi_batch_size: int = 512,
        roi_positive_fraction: float = 0.25,
        roi_iou_thresh: float = 0.5,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        max_detections: int = 100,
        pre_nms_topk: int = 1000,
        mask_convs: int | None = None,
        mask_conv_dim: int = 256,
        mask_roi_output_size: int = 14,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(float(s) for s in strides)
        self.max_detections = max_detections
        self.pre_nms_topk = pre_nms_topk
        self.rpn_test_topk = (int(rpn_pre_nms_topk[1]), int(rpn_post_nms_topk[1]))  # per level, per image
        roi_levels = len(self.strides) if roi_levels is None else roi_levels
        anchors = StrideAnchorGenerator(anchor_sizes, aspect_ratios, self.strides)
        rpn_head = RPNHead(in_channels, anchors.num_anchors_per_location()[0], conv_depth=rpn_convs)
        self.rpn = RegionProposalNetwork(
            anchors, rpn_head, fg_iou_thresh=rpn_iou_thresholds[1], bg_iou_thresh=rpn_iou_thresholds[0],
            batch_size_per_image=rpn_batch_size, positive_fraction=rpn_positive_fraction,
            pre_nms_top_n={"training": rpn_pre_nms_topk[0], "testing": rpn_pre_nms_topk[1]},
            post_nms_top_n={"training": rpn_post_nms_topk[0], "testing": rpn_post_nms_topk[1]},
            nms_thresh=rpn_nms_thresh,
        )
        pooler = LevelRoIAlign(self.strides[:roi_levels], roi_output_size, roi_sampling_ratio)
        box_head = FastRCNNConvFCHead((in_channels, roi_output_size, roi_output_size), [box_conv_dim] * box_convs,
                                      [box_fc_dim], norm_layer=LayerNorm2d)
        mask_modules = {}
        if mask_convs is not None:
            if mask_convs < 1:
                raise ValueError(f"mask_convs must be >= 1 (or None for no mask branch), got {mask_convs}")
            mask_modules = dict(
                mask_roi_pool=LevelRoIAlign(self.strides[:roi_levels], mask_roi_output_size, roi_sampling_ratio),
                mask_head=MaskRCNNHeads(in_channels, [mask_conv_dim] * mask_convs, 1, norm_layer=LayerNorm2d),
                mask_predictor=MaskRCNNPredictor(mask_conv_dim, mask_conv_dim, num_classes + 1),
            )
        self.roi_heads = PositiveCountingRoIHeads(
            pooler, box_head, FastRCNNPredictor(box_fc_dim, num_classes + 1),
            fg_iou_thresh=roi_iou_thresh, bg_iou_thresh=roi_iou_thresh, batch_size_per_image=roi_batch_size,
            positive_fraction=roi_positive_fraction, bbox_reg_weights=None, score_thresh=score_thresh,
            nms_thresh=nms_thresh, detections_per_img=max_detections, **mask_modules,
        )

    @property
    def has_masks(self) -> bool:
        return self.roi_heads.has_mask()

    @staticmethod
    def _named(features: Sequence[torch.Tensor]) -> OrderedDict:
        return OrderedDict((f"p{i}", f) for i, f in enumerate(features))

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int],
                targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Training losses (torchvision's, unweighted) for targets with labels ``0 .. num_classes - 1`` (with the
        mask branch also ``masks`` (N, H, W) uint8 at ``image_size``, and a ``loss_mask``)."""
        if len(features) != len(self.strides):
            raise ValueError(f"FasterRCNNHead got {len(features)} feature levels for {len(self.strides)} strides")
        named = self._named(features)
        sizes = [tuple(image_size)] * features[0].shape[0]
        # The RPN reads only ``image_sizes`` (clipping); our anchor generator does not look at the tensor.
        proposals, rpn_losses = self.rpn(ImageList(features[0], sizes), named, targets)
        if self.has_masks and not all("masks" in t for t in targets):
            raise ValueError("the Mask R-CNN head needs 'masks' (N, H, W) in every target: train it on records with "
                             "instance masks (instance maps or COCO segmentations)")
        shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1, **({"masks": t["masks"]} if self.has_masks else {})}
                   for t in targets]  # 0 = background
        _, roi_losses = self.roi_heads(named, proposals, sizes, shifted)
        if self.has_masks:
            roi_losses["loss_mask"] = roi_losses["loss_mask"] * self._mask_loss_scale(features[0].device)
        return {**rpn_losses, **roi_losses}

    def _mask_loss_scale(self, device: torch.device) -> torch.Tensor:
        """From ``maskrcnn_loss``'s mean over this rank's positive RoIs to a mean over the positives averaged over
        ranks: DDP's gradient mean then equals the gradient of one process's loss on the global batch (1 in one
        process). The other R-CNN losses divide by sampled counts, a fixed quota per image (docs/detection.md)."""
        local = self.roi_heads.last_num_positive_rois.to(device)
        return local.clamp_min(1.0) / all_reduce_num_positives(local, device)

    # ------------------------------------------------------------------ static-shape inference
    def proposals(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]) -> tuple[
            torch.Tensor, torch.Tensor]:
        """Test-time proposals: boxes (B, P, 4) and a (B, P) bool mask of the real ones, P = the RPN's test
        ``post_nms_top_n`` (or fewer candidates), sorted by objectness."""
        rpn = self.rpn
        objectness, deltas = rpn.head(list(features))  # per level: B, A, h, w / B, 4A, h, w
        anchors = rpn.anchor_generator.grid(features)  # N, 4
        batch = features[0].shape[0]
        per_level = [o.shape[1] * o.shape[2] * o.shape[3] for o in objectness]
        scores, deltas = concat_box_prediction_layers(objectness, deltas)  # B*N, 1 / B*N, 4
        scores = scores.reshape(batch, -1).float()  # B, N
        deltas = deltas.reshape(batch, -1, 4).float()  # B, N, 4
        anchors = anchors.float()  # N, 4

        # torchvision's filter_proposals, with masks: top-k per level, clip, drop tiny boxes, NMS per level.
        # Only the top-k anchors are decoded (torchvision decodes all of them first; decoding is per anchor, so
        # the boxes are the same): at 512 x 1024 that is 5k of 130k anchors.
        top_scores, top_deltas, top_anchors, top_levels, start = [], [], [], [], 0
        for level, n in enumerate(per_level):
            k = min(self.rpn_test_topk[0], n)
            s, i = scores[:, start:start + n].topk(k, dim=1)  # B, k
            top_scores.append(s)
            top_deltas.append(torch.gather(deltas[:, start:start + n], 1, i[..., None].expand(-1, -1, 4)))  # B, k, 4
            top_anchors.append(anchors[start:start + n][i])  # B, k, 4
            top_levels.append(torch.full_like(i, level))
            start += n
        prob = torch.sigmoid(torch.cat(top_scores, dim=1))  # B, K
        cand = rpn.box_coder.decode_single(torch.cat(top_deltas, dim=1).reshape(-1, 4),
                                           torch.cat(top_anchors, dim=1).reshape(-1, 4))  # B*K, 4
        cand = clip_boxes_to_image(cand.reshape(batch, -1, 4), image_size)  # B, K, 4
        levels = torch.cat(top_levels, dim=1)  # B, K
        # (no in-place &=: the TorchScript ONNX exporter has no aten::__iand_)
        valid = (_min_side(cand) >= _MIN_PROPOSAL_SIDE) & (prob >= rpn.score_thresh)
        valid = valid & batched_nms_mask(cand, prob, levels, len(per_level), rpn.nms_thresh)
        ranked = torch.where(valid, prob, torch.full_like(prob, -1.0))  # invalid ones sort last
        ranked, order = ranked.topk(min(self.rpn_test_topk[1], ranked.shape[1]), dim=1)  # B, P
        return torch.gather(cand, 1, order[..., None].expand(-1, -1, 4)), ranked >= 0

    def predict(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fixed-size detections: boxes (B, K, 4) xyxy in input pixels, scores (B, K) (0 for padding), labels
        (B, K) int64; K = ``max_detections``, sorted by score (torchvision's postprocess_detections, batched)."""
        heads = self.roi_heads
        proposals, valid = self.proposals(features, image_size)  # B, P, 4 / B, P
        batch, num_proposals = valid.shape
        image_index = torch.arange(batch, device=proposals.device, dtype=proposals.dtype)
        image_index = image_index[:, None, None].expand(-1, num_proposals, 1)  # B, P, 1
        rois = torch.cat([image_index, proposals], dim=2).reshape(-1, 5)  # B*P, 5
        pooled = heads.box_roi_pool.pool(features, rois)  # B*P, C, S, S
        logits, regression = heads.box_predictor(heads.box_head(pooled))  # B*P, C+1 / B*P, 4(C+1)
        classes = self.num_classes
        boxes = heads.box_coder.decode_single(regression.float(), rois[:, 1:])  # B*P, 4(C+1)
        boxes = boxes.reshape(batch, num_proposals, classes + 1, 4)[:, :, 1:]  # B, P, C, 4; drop background
        boxes = clip_boxes_to_image(boxes.reshape(batch, -1, 4), image_size)  # B, P*C, 4
        scores = F.softmax(logits.float(), dim=-1).reshape(batch, num_proposals, classes + 1)[..., 1:]  # B, P, C
        keep = valid[..., None] & (scores > heads.score_thresh)  # B, P, C
        scores = (scores * keep.to(scores.dtype)).reshape(batch, -1)  # B, P*C
        scores = scores * (_min_side(boxes) >= _MIN_DETECTION_SIDE).to(scores.dtype)
        labels = torch.arange(classes, device=boxes.device).repeat(num_proposals)[None].expand(batch, -1)  # B, P*C

        # Candidates for the final NMS: the best pre_nms_topk class boxes (torchvision keeps all above threshold).
        k = min(self.pre_nms_topk, scores.shape[1])
        scores, index = scores.topk(k, dim=1)  # B, k
        boxes = torch.gather(boxes, 1, index[..., None].expand(-1, -1, 4))  # B, k, 4
        labels = torch.gather(labels, 1, index)  # B, k
        kept = batched_nms_mask(boxes, scores, labels, classes, heads.nms_thresh)
        return top_detections(boxes, scores * kept.to(scores.dtype), labels, self.max_detections)


    def predict_masks(self, features: Sequence[torch.Tensor], boxes: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
        """Mask probabilities (B, K, M, M) float32 in each box's frame (M = 2 x the mask RoI size; torchvision's
        ``maskrcnn_inference``: the sigmoid of the labelled class's channel) for :meth:`predict`'s boxes (B, K, 4)
        and labels (B, K). Padding slots get a mask of their zero box; callers ignore them by score."""
        heads = self.roi_heads
        batch, k = labels.shape
        image_index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype)[:, None, None].expand(-1, k, 1)
        rois = torch.cat([image_index, boxes.to(image_index.dtype)], dim=2).reshape(-1, 4 + 1)  # B*K, 5
        logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool.pool(features, rois)))  # B*K, C+1, M, M
        size = logits.shape[-1]
        channel = (labels.reshape(-1) + 1)[:, None, None, None].expand(-1, 1, size, size)  # B*K, 1, M, M
        picked = torch.gather(logits.float(), 1, channel)  # B*K, 1, M, M
        return torch.sigmoid(picked).reshape(batch, k, size, size)


def _min_side(boxes: torch.Tensor) -> torch.Tensor:
    """min(width, height) of (..., 4) xyxy boxes."""
    return torch.minimum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])
