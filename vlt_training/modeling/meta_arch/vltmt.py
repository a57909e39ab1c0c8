"""VLTMT: VLTSeg and VLTDet on one backbone pass. One open_clip tower and one simple feature pyramid feed both
the Mask2Former segmentation head and ViTDet's two-stage detection head (Faster R-CNN, or Mask R-CNN with a mask
branch).

Data flow (patch 16, input H x W):

    images (B, 3, H, W) -> backbone: 4 block outputs (B, C, H/16, W/16)   [once, for both tasks]
        [text guidance (DenseCLIP): score maps concatenated to the stride-16 level's input, as in VLTSeg]
    -> simple feature pyramid: res2..res5 (B, D, H/4 .. H/32)
    -> Mask2Former (all four levels): semantic scores (B, K_seg, H, W)
    -> detection head (the ``det_levels`` coarsest levels [+ detail stem, + ``extra_levels`` max-pools]):
       RPN -> RoIAlign -> box head [-> mask head] -> (B, max_detections) boxes, scores, labels [, masks]
    -> train: ``seg_loss_weight`` x VLTSeg's loss dict (``seg_`` names) + ``det_loss_weight`` x VLTDet's
       (``det_`` names); eval: ``{"sem_seg": ..., "detections": [...]}``; export: both contracts in one graph.

Everything is VLTSeg's and VLTDet's own code: the model is a :class:`VLTSeg` (so a VLTSeg checkpoint's tensors
have the same names here: ``model.init_from`` a VLTSeg run with the segmentation prefixes starts the cheap route)
plus the detection head built by :func:`~vlt_training.modeling.meta_arch.vltdet.build_rcnn_head`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from vlt_perception.labels import CITYSCAPES_THING_CLASSES
from vlt_training.modeling.meta_arch.base import constructor_kwargs
from vlt_training.modeling.meta_arch.vltdet import (DetailStem, build_rcnn_head, check_detection_targets,
                                                     detection_levels, rcnn_head_defaults, unpad_detections)
from vlt_training.modeling.meta_arch.vltseg import VLTSeg
from vlt_training.modeling.registry import register_model

# What ``freeze`` may name: parts of the model -> their submodules (absent ones are skipped).
PARTS = {
    "backbone": ("backbone",),
    "neck": ("neck",),
    "segmentation": ("pixel_text", "pixel_decoder", "predictor"),
    "detection": ("detail_stem", "head"),
}
# The segmentation half's tensor prefixes: ``model.init_prefixes`` for starting from a VLTSeg checkpoint.
SEGMENTATION_PREFIXES = ("backbone.", "neck.", "pixel_text.", "pixel_decoder.", "predictor.")


class VLTMultiTask(VLTSeg):
    """Semantic segmentation and detection from one backbone pass.

    Args (besides :class:`VLTSeg`'s, which build the tower, the pyramid and the segmentation head):
        detection_class_names: the detection classes (default: the 8 Cityscapes thing classes); ``class_names``
            are the segmentation classes.
        det_levels: how many of the pyramid's coarsest levels feed the detection head (4: strides 4-32 as in
            ViTDet; 3: strides 8-32, the tiny VLTDet's).
        extra_levels: coarser detection levels by stride-2 max-pooling (ViTDet's P6).
        detail_stem_channels: VLTDet's detail stem on the finest detection level (0 = none).
        score_thresh, nms_thresh, pre_nms_topk, max_detections: detection decoding, as in :class:`VLTDet`.
        det_head: options of the Faster R-CNN head, :class:`VLTDetFasterRCNN`'s arguments (anchors, RPN, RoI
            sampling, ``mask_convs`` for Mask R-CNN ...); unset ones keep its defaults.
        seg_loss_weight, det_loss_weight: weights of the two heads' loss dicts in the training loss; a weight of 0
            skips that head in training (e.g. the detection head trained alone on a frozen VLTSeg tower).
        freeze: parts whose parameters do not train: ``backbone``, ``neck``, ``segmentation``, ``detection``.
    """

    task = "segmentation_detection"

    def __init__(
        self,
        detection_class_names: Optional[Sequence[str]] = None,
        det_levels: int = 4,
        extra_levels: int = 1,
        detail_stem_channels: int = 0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        pre_nms_topk: int = 1000,
        max_detections: int = 100,
        det_head: Optional[dict] = None,
        seg_loss_weight: float = 1.0,
        det_loss_weight: float = 1.0,
        freeze: Sequence[str] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.init_kwargs.update(constructor_kwargs(locals()))
        self.model_name = "vltmt"
        names = list(detection_class_names) if detection_class_names is not None else list(CITYSCAPES_THING_CLASSES)
        if not names:
            raise ValueError("detection_class_names is empty")
        if not 1 <= det_levels <= len(self.neck.scales):
            raise ValueError(f"det_levels must be in [1, {len(self.neck.scales)}], got {det_levels}")
        if max_detections < 1 or pre_nms_topk < max_detections:
            raise ValueError(f"need 1 <= max_detections ({max_detections}) <= pre_nms_topk ({pre_nms_topk})")
        if seg_loss_weight < 0 or det_loss_weight < 0 or seg_loss_weight + det_loss_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got {seg_loss_weight}, {det_loss_weight}")
        unknown_parts = sorted(set(freeze) - set(PARTS))
        if unknown_parts:
            raise ValueError(f"freeze: unknown parts {unknown_parts}; known: {sorted(PARTS)}")
        defaults = rcnn_head_defaults()
        unknown = sorted(set(det_head or {}) - set(defaults))
        if unknown:
            raise ValueError(f"det_head: unknown options {unknown}; known: {sorted(defaults)}")
        self.detection_class_names = names
        self.num_det_classes = len(names)
        self.seg_loss_weight, self.det_loss_weight = float(seg_loss_weight), float(det_loss_weight)
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.pre_nms_topk, self.max_detections = pre_nms_topk, max_detections
        self.det_levels, self.extra_levels = det_levels, extra_levels
        channels = int(self.init_kwargs["pyramid_channels"])
        patch = float(self.backbone.patch_size[0])
        strides = [patch / s for s in self.neck.scales[-det_levels:]]
        self.strides = strides + [strides[-1] * 2.0 ** (i + 1) for i in range(extra_levels)]
        self.detail_stem = DetailStem(detail_stem_channels, channels, strides[0]) if detail_stem_channels else None
        options = {**defaults, **(det_head or {})}
        self.head, self.det_head_weights = build_rcnn_head(
            channels, self.num_det_classes, self.strides, det_levels, score_thresh=score_thresh,
            nms_thresh=nms_thresh, max_detections=max_detections, pre_nms_topk=pre_nms_topk, **options)
        self.predicts_masks = self.head.has_masks
        self.freeze_modules([m for part in freeze for m in PARTS[part] if getattr(self, m, None) is not None])

    # ------------------------------------------------------------------ forward
    def detection_features(self, pyramid: dict, images: torch.Tensor) -> list[torch.Tensor]:
        """The detection head's levels from the shared pyramid (finest first)."""
        levels = list(pyramid.values())[-self.det_levels:]
        return detection_levels(levels, images, self.detail_stem, self.extra_levels)

    def forward(self, images: torch.Tensor, targets=None):
        """Train mode: the weighted losses of both heads (``seg_*`` and ``det_*``; their sum is the loss).
        Eval mode: ``{"sem_seg": (B, K, H, W), "detections": [per-image dicts]}`` (see VLTSeg and VLTDet).

        ``targets``: one dict per image with ``sem_seg`` (H, W), ``boxes`` (N, 4) xyxy and ``labels`` (N,)
        indexing ``detection_class_names`` (Mask R-CNN: and ``masks`` (N, H, W)); a head whose loss weight is 0
        needs no targets of its own.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if not self.training:
            sem, detections = self.predict_both(images)
            return {"sem_seg": sem, "detections": unpad_detections(detections)}
        if targets is None or isinstance(targets, dict):
            raise ValueError("VLTMT in train mode needs a list of per-image target dicts (sem_seg, boxes, labels)")
        size = (int(images.shape[-2]), int(images.shape[-1]))
        padded = None
        if self.seg_loss_weight > 0:
            padded = self.padded_sem_seg(targets, images)
            self.set_hook_labels(padded)  # FAMix mixes styles per labelled patch
        det_targets = (check_detection_targets(targets, images, self.num_det_classes, self.predicts_masks)
                       if self.det_loss_weight > 0 else None)
        pyramid, scores = self._features(images)  # one backbone pass for both heads
        losses = {}
        if padded is not None:
            seg = self.segmentation_losses(self.mask2former_outputs(pyramid), scores, padded)
            losses.update({f"seg_{k}": v * self.seg_loss_weight for k, v in seg.items()})
        if det_targets is not None:
            raw = self.head(self.detection_features(pyramid, images), size, det_targets)
            losses.update({f"det_{k}": v * self.det_head_weights[k] * self.det_loss_weight for k, v in raw.items()})
        return losses

    def predict_both(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Semantic scores (B, K, H, W) and fixed-size detections (boxes (B, N, 4), scores (B, N), labels (B, N)
        [, masks (B, N, M, M)]), N = ``max_detections``, from one backbone pass."""
        pyramid, _ = self._features(images)
        sem = self.semantic_scores(self.mask2former_outputs(pyramid), images)
        return sem, self._detect(pyramid, images)

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Detections only (the segmentation head is not run): see :meth:`VLTDet.predict`."""
        pyramid, _ = self._features(images)
        return self._detect(pyramid, images)

    def _detect(self, pyramid: dict, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.detection_features(pyramid, images)
        size = (int(images.shape[-2]), int(images.shape[-1]))  # static in exported graphs
        boxes, scores, labels = self.head.predict(features, size)
        if not self.predicts_masks:
            return boxes, scores, labels
        return boxes, scores, labels, self.head.predict_masks(features, boxes, labels)

    def task_view(self, task: str) -> nn.Module:
        """This model seen as a single-task model (``segmentation`` or ``detection``) by the evaluators: the
        view's ``class_names`` and eval outputs are that task's, and only that head runs."""
        if task == "segmentation":
            return SegmentationView(self)
        if task == "detection":
            return DetectionView(self)
        raise ValueError(f"unknown task {task!r}; expected 'segmentation' or 'detection'")

    def export_module(self) -> nn.Module:
        """An eval-mode module ``images -> {labels, confidence, det_boxes, det_scores, det_labels [, det_masks]}``
        (the multi-task graph contract of :class:`vlt_perception.metadata.ModelMetadata`)."""
        return MultiTaskExport(self).eval()


class _TaskView(nn.Module):
    """Shares the model's modules (no copy); normalisation and device follow the model."""

    def __init__(self, model: VLTMultiTask):
        super().__init__()
        self.model = model
        self.pixel_mean, self.pixel_std = model.pixel_mean, model.pixel_std
        self.model_name = model.model_name


class SegmentationView(_TaskView):
    def __init__(self, model: VLTMultiTask):
        super().__init__(model)
        self.class_names, self.num_classes, self.ignore_index = model.class_names, model.num_classes, \
            model.ignore_index

    def forward(self, images: torch.Tensor, targets=None):
        return {"sem_seg": self.model.semantic_inference(images)}


class DetectionView(_TaskView):
    def __init__(self, model: VLTMultiTask):
        super().__init__(model)
        self.class_names, self.num_classes = model.detection_class_names, model.num_det_classes
        self.max_detections, self.predicts_masks = model.max_detections, model.predicts_masks

    def forward(self, images: torch.Tensor, targets=None):
        return {"detections": unpad_detections(self.model.predict(images))}


class MultiTaskExport(nn.Module):
    """Deployment graph of VLTMT: both contracts from one backbone pass, detection outputs under ``det_*``."""

    def __init__(self, model: VLTMultiTask):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        sem, detections = self.model.predict_both(images)  # B, K, H, W / (B, N, 4), (B, N), (B, N) [, masks]
        top, labels = sem.max(dim=1)
        outputs = {"labels": labels.to(torch.uint8), "confidence": (top / sem.sum(dim=1).clamp_min(1e-6)).float(),
                   "det_boxes": detections[0].float(), "det_scores": detections[1].float(),
                   "det_labels": detections[2].to(torch.int64)}
        if len(detections) > 3:
            outputs["det_masks"] = detections[3].float()
        return outputs


# ---------------------------------------------------------------------------------------------- registry
# Names say the heads: ``vltmt_<tower>_mask2former_fasterrcnn`` / ``..._maskrcnn``.
def _vltmt(defaults: dict, overrides: dict) -> VLTMultiTask:
    merged = {**defaults, **overrides}
    if "det_head" in defaults and "det_head" in overrides:  # head options merge key by key
        merged["det_head"] = {**defaults["det_head"], **(overrides["det_head"] or {})}
    return VLTMultiTask(**merged)


# The tiny VLTSeg (vltseg_tiny_mask2former) and the tiny VLTDet's head (vltdet_tiny_fasterrcnn): its strides 8-32
# are the shared pyramid's three coarsest levels, fed by the same blocks as in VLTDet.
_TINY_SEG = dict(
    clip_model="vlt-tiny-vit", pyramid_channels=64, conv_dim=64, mask_dim=64, encoder_layers=2,
    encoder_ffn_dim=128, encoder_heads=4, hidden_dim=64, num_queries=20, nheads=4, dim_feedforward=128,
    dec_layers=3, train_num_points=784, context_decoder_width=64, context_decoder_heads=2, context_decoder_layers=1,
)
_TINY_DET_HEAD = dict(anchor_sizes=[[8.0, 16.0], [32.0, 48.0], [64.0, 96.0]], rpn_convs=1,
                      rpn_pre_nms_topk=[600, 300], rpn_post_nms_topk=[300, 300], rpn_batch_size=128, box_convs=0,
                      box_fc_dim=256, roi_batch_size=128)
_TINY = dict(_TINY_SEG, det_levels=3, extra_levels=0, pre_nms_topk=300, detail_stem_channels=32,
             det_head=_TINY_DET_HEAD)


@register_model
def vltmt_tiny_mask2former_fasterrcnn(**kwargs) -> VLTMultiTask:
    """Tiny random tower (``vlt-tiny-vit``) with the tiny VLTSeg's Mask2Former and the tiny VLTDet's Faster R-CNN
    on one pyramid, for CPU tests and the demo."""
    return _vltmt(_TINY, kwargs)


@register_model
def vltmt_tiny_mask2former_maskrcnn(**kwargs) -> VLTMultiTask:
    """``vltmt_tiny_mask2former_fasterrcnn`` with the tiny VLTDet's light mask head (2 convs of 64 channels)."""
    return _vltmt(dict(_TINY, det_head=dict(_TINY_DET_HEAD, mask_convs=2, mask_conv_dim=64)), kwargs)


@register_model
def vltmt_vit_s16_mask2former_fasterrcnn(**kwargs) -> VLTMultiTask:
    """OpenCLIP ViT-S/16."""
    return _vltmt(dict(clip_model="ViT-S-16", drop_path_rate=0.1), kwargs)


@register_model
def vltmt_vit_b16_mask2former_fasterrcnn(**kwargs) -> VLTMultiTask:
    """OpenAI / OpenCLIP ViT-B/16."""
    return _vltmt(dict(clip_model="ViT-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltmt_vit_b16_mask2former_maskrcnn(**kwargs) -> VLTMultiTask:
    """OpenAI / OpenCLIP ViT-B/16 with ViTDet-B's Mask R-CNN head."""
    return _vltmt(dict(clip_model="ViT-B-16", drop_path_rate=0.1, det_head=dict(mask_convs=4)), kwargs)


@register_model
def vltmt_eva02_l14_mask2former_fasterrcnn(**kwargs) -> VLTMultiTask:
    """EVA02-CLIP-L/14, VLTSeg's main tower; blocks 9, 14, 19, 23 feed the pyramid."""
    return _vltmt(dict(clip_model="EVA02-L-14", out_indices=[9, 14, 19, 23], drop_path_rate=0.15), kwargs)
