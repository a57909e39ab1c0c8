"""VLTDet: the VLTSeg backbone (open_clip / EVA-CLIP ViT) + ViTDet simple feature pyramid + a detection head.

Data flow (patch 16, input H x W; the backbone pads H, W up to a multiple of the patch size):

    images (B, 3, H, W) -> backbone: 4 block outputs (B, C, H/16, W/16)
    -> simple feature pyramid: 4 levels (B, D, H/4 .. H/32) [+ ``extra_levels`` stride-2 max-pools: H/64 ...]
    -> head, one of
       Faster R-CNN (ViTDet's detector, the default): RPN -> proposals -> RoIAlign -> box head -> class boxes
       Mask R-CNN (ViTDet's detector with masks): Faster R-CNN + RoIAlign -> mask head -> a mask per detection
       FCOS (one-stage, anchor-free): class logits, box distances, centre-ness per cell
    -> train: the head's torchvision losses (a dict; their sum is the loss)
    -> eval / export: static-shape decode + batched NMS -> (B, max_detections) boxes, scores, labels
       [+ Mask R-CNN: masks (B, max_detections, 28, 28), probabilities in each box's frame]

The backbone and pyramid are the very modules VLTSeg uses (imported, not copied). See docs/detection.md.
"""

from __future__ import annotations

import inspect
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlt_perception.labels import CITYSCAPES_THING_CLASSES
from vlt_training.modeling.det_head import FasterRCNNHead, FCOSDetHead
from vlt_training.modeling.layers import LayerNorm2d
from vlt_training.modeling.meta_arch.base import TowerArgs, TowerModel, constructor_kwargs
from vlt_training.modeling.registry import register_model


def _kwargs(local_vars: dict) -> dict:
    """Constructor arguments from ``locals()`` (tuples as lists, as they come back from a checkpoint's JSON)."""
    return constructor_kwargs(local_vars, exclude=("head_kwargs",))


def _image_size(images: torch.Tensor) -> tuple[int, int]:
    """(H, W) as Python ints: the exported graph has a static H and W, and torchvision's box clipping copies
    traced sizes into new tensors (a warning per call) where it gets tensors."""
    return int(images.shape[-2]), int(images.shape[-1])


class VLTDet(TowerModel):
    """The detection family: backbone + simple feature pyramid + a head (a subclass builds ``self.head``).

    Args:
        clip_model: open_clip model config name (``ViT-B-16``, ``EVA02-L-14``, ``vlt-tiny-vit`` ...).
        pretrained: open_clip pretrained tag or local open_clip checkpoint (its own format); ``None``: random.
        class_names: detection classes, index = label (default: the 8 Cityscapes thing classes).
        out_indices, drop_path_rate, grad_checkpointing, vision_cfg_overrides, text_cfg_overrides:
            backbone settings, see :class:`CLIPVisionBackbone`.
        pyramid_channels: channels of every pyramid level (and of the head).
        multi_level_pyramid: each intermediate block feeds one level (VLTSeg) instead of all from the last (ViTDet).
        pyramid_scales: resampling of each level relative to the patch grid (stride = patch / scale); with fewer
            than four levels the deepest block outputs feed them (``(2.0, 1.0, 0.5)``: strides 8 / 16 / 32 for
            patch 16, no stride-4 level: a quarter of the head's cost, for objects of 8 px and more).
        extra_levels: coarser levels added on top of the stride-2p level by stride-2 max-pooling (ViTDet's P6),
            for objects larger than the input's quarter.
        score_thresh: detections below this score are dropped (padding, score 0) in eval and export.
        nms_thresh: IoU above which a lower-scored box of the same class is suppressed.
        pre_nms_topk: candidates (over all classes) kept per image before the final NMS.
        max_detections: K, the fixed number of output slots per image (``ModelMetadata.max_detections``).
        quick_gelu: QuickGELU tower; ``None`` decides from the pretrained tag (OpenAI weights need it), see
            :func:`~vlt_training.modeling.backbone.clip_vit.resolve_quick_gelu`; recorded in ``init_kwargs``.
    """

    task = "detection"
    head: nn.Module
    predicts_masks = False  # Mask R-CNN: eval / export also give a mask per detection

    def __init__(
        self,
        clip_model: str = "vlt-tiny-vit",
        pretrained: Optional[str] = None,
        class_names: Optional[Sequence[str]] = None,
        out_indices: Optional[Sequence[int]] = None,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
        vision_cfg_overrides: Optional[dict] = None,
        text_cfg_overrides: Optional[dict] = None,
        pyramid_channels: int = 256,
        multi_level_pyramid: bool = True,
        pyramid_scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        extra_levels: int = 1,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        pre_nms_topk: int = 1000,
        max_detections: int = 100,
        quick_gelu: Optional[bool] = None,
        detail_stem_channels: int = 0,
    ):
        super().__init__()
        class_names = list(class_names) if class_names is not None else list(CITYSCAPES_THING_CLASSES)
        if not class_names:
            raise ValueError("class_names is empty")
        if max_detections < 1 or pre_nms_topk < max_detections:
            raise ValueError(f"need 1 <= max_detections ({max_detections}) <= pre_nms_topk ({pre_nms_topk})")
        if extra_levels < 0:
            raise ValueError(f"extra_levels must be >= 0, got {extra_levels}")
        if not 1 <= len(pyramid_scales) <= 4 or list(pyramid_scales) != sorted(pyramid_scales, reverse=True):
            raise ValueError(f"pyramid_scales must be 1 to 4 decreasing factors, got {list(pyramid_scales)}")
        # everything needed to rebuild this model: create_model(model_name, **init_kwargs); subclasses add theirs
        self.init_kwargs = _kwargs(locals())
        self.model_name = "vltdet"
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms_topk = pre_nms_topk
        self.max_detections = max_detections

        # No text guidance in VLTDet: without the projection every backbone parameter is trained.
        self.build_tower(TowerArgs.from_kwargs(self.init_kwargs), keep_projection=False)
        self.backbone.release_text_tower()
        self.build_pyramid(pyramid_channels, scales=pyramid_scales, multi_level=multi_level_pyramid)
        self.pyramid_channels = pyramid_channels
        self.num_pyramid_levels = len(pyramid_scales)
        self.extra_levels = extra_levels
        patch = float(self.backbone.patch_size[0])
        # Nominal strides: patch / scale per pyramid level (4, 8, 16, 32 for patch 16), then x 2 per extra level.
        strides = [patch / s for s in pyramid_scales]
        self.strides = strides + [strides[-1] * 2.0 ** (i + 1) for i in range(extra_levels)]
        # Not in ViTDet: a conv stem on the image, added to the finest level (see DetailStem).
        self.detail_stem = (DetailStem(detail_stem_channels, pyramid_channels, strides[0])
                            if detail_stem_channels else None)

    # ------------------------------------------------------------------ forward
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Pyramid levels, finest first: [(B, D, Hp/4, Wp/4), ..., (B, D, Hp/32, Wp/32), extra ...] for patch 16
        and the default scales."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        blocks = self.backbone.forward_intermediates(images)  # 4 x (B, C, Hp/p, Wp/p)
        # The deepest blocks feed the levels when there are fewer than four (the last block always feeds one).
        levels = list(self.neck(blocks[len(blocks) - self.num_pyramid_levels:]).values())
        return detection_levels(levels, images, self.detail_stem, self.extra_levels)

    def forward(self, images: torch.Tensor, targets: Optional[list[dict]] = None):
        """Train mode: dict of weighted losses (their sum is the loss; names depend on the head).
        Eval mode: ``{"detections": [{"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,)}] * B}`` with
        boxes in input pixels, N <= ``max_detections``, scores > ``score_thresh``; with masks (Mask R-CNN) also
        ``"masks": (N, M, M)`` probabilities in each box's frame (paste with ``paste_masks_in_image``).

        ``targets``: one dict per image, ``{"boxes": (N, 4) float xyxy in input pixels, "labels": (N,) long}``
        (Mask R-CNN: and ``"masks": (N, H, W)`` uint8 at the input's size).
        """
        if not self.training:
            return {"detections": unpad_detections(self.predict(images))}
        targets = self._check_targets(targets, images)
        return self.losses(self.features(images), targets, _image_size(images))

    def losses(self, features: list[torch.Tensor], targets: list[dict], image_size: tuple[int, int]) -> dict:
        """The head's weighted training losses."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fixed-size detections: boxes (B, K, 4) float32 xyxy in input pixels, scores (B, K) float32 (0 for
        padding), labels (B, K) int64; K = ``max_detections``, sorted by score."""
        raise NotImplementedError

    def _check_targets(self, targets, images: torch.Tensor) -> list[dict]:
        return check_detection_targets(targets, images, self.num_classes, self.predicts_masks)

    def export_module(self) -> nn.Module:
        """An eval-mode module ``images -> (boxes (B, K, 4) float32, scores (B, K) float32, labels (B, K) int64)``
        [+ Mask R-CNN: ``masks (B, K, M, M) float32``]."""
        return DetectionExport(self).eval()


def check_detection_targets(targets, images: torch.Tensor, num_classes: int, with_masks: bool) -> list[dict]:
    """The per-image detection targets, checked and on the images' device: ``{"boxes": (N, 4) float32 xyxy,
    "labels": (N,) int64}`` [+ ``"masks": (N, H, W) uint8`` when ``with_masks``]."""
    if targets is None or isinstance(targets, dict) or len(targets) != images.shape[0]:
        raise ValueError(f"VLTDet in train mode needs a list of {images.shape[0]} target dicts with 'boxes', "
                         f"'labels'; got {type(targets).__name__}")
    checked = []
    for i, target in enumerate(targets):
        if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"target {i}: expected a dict with 'boxes' (N, 4) and 'labels' (N,), got "
                             f"{sorted(target) if isinstance(target, dict) else type(target).__name__}")
        boxes = torch.as_tensor(target.get("boxes"), dtype=torch.float32, device=images.device)
        labels = torch.as_tensor(target.get("labels"), dtype=torch.int64, device=images.device)
        boxes = boxes.reshape(-1, 4) if boxes.numel() == 0 else boxes
        if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != (boxes.shape[0],):
            raise ValueError(f"target {i}: boxes must be (N, 4) and labels (N,), got {tuple(boxes.shape)} and "
                             f"{tuple(labels.shape)}")
        if (boxes[:, 2:] <= boxes[:, :2]).any():
            raise ValueError(f"target {i}: degenerate box (x2 <= x1 or y2 <= y1) in {boxes.tolist()[:5]}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"target {i}: labels must be in [0, {num_classes}), got {labels.tolist()[:10]}")
        checked.append({"boxes": boxes, "labels": labels})
        if with_masks:
            checked[-1]["masks"] = _check_masks(target, i, boxes.shape[0], images)
    return checked


def _check_masks(target: dict, i: int, count: int, images: torch.Tensor) -> torch.Tensor:
    if "masks" not in target:
        raise ValueError(f"target {i}: Mask R-CNN needs 'masks' (N, H, W) besides 'boxes' and 'labels': train it "
                         "on records with instance masks (instance maps or COCO segmentations)")
    masks = torch.as_tensor(target["masks"], device=images.device)
    if masks.shape != (count, *images.shape[-2:]):
        raise ValueError(f"target {i}: masks must be ({count}, {images.shape[-2]}, {images.shape[-1]}) (one per "
                         f"box, at the input's size), got {tuple(masks.shape)}")
    return masks.to(torch.uint8)


def detection_levels(levels: list[torch.Tensor], images: torch.Tensor, detail_stem: Optional[nn.Module],
                     extra_levels: int) -> list[torch.Tensor]:
    """Pyramid levels (finest first) -> the detection head's levels: the detail stem added to the finest one,
    then ``extra_levels`` stride-2 max-pools of the coarsest (ViTDet's LastLevelMaxPool)."""
    levels = list(levels)
    if detail_stem is not None:
        levels[0] = levels[0] + detail_stem(images, levels[0].shape[-2:])
    for _ in range(extra_levels):
        levels.append(F.max_pool2d(levels[-1], kernel_size=1, stride=2))
    return levels


def unpad_detections(outputs: tuple[torch.Tensor, ...]) -> list[dict]:
    """Fixed-size (boxes, scores, labels [, masks]) -> one dict per image without the padding (score 0) slots."""
    boxes, scores, labels = outputs[:3]
    keep = scores > 0  # B, K: padding has score 0
    detections = [{"boxes": b[k], "scores": s[k], "labels": l[k]} for b, s, l, k in zip(boxes, scores, labels, keep)]
    if len(outputs) > 3:
        for det, masks, k in zip(detections, outputs[3], keep):
            det["masks"] = masks[k]
    return detections


class DetailStem(nn.Module):
    """Strided 3x3 convs on the normalised image down to the finest pyramid level's stride, projected to the
    pyramid's channels by a zero-initialised 1x1 conv and added to that level (so training starts from plain
    ViTDet). Not part of ViTDet: it is ViT-Adapter's spatial-prior idea in its smallest form, for objects narrower
    than a patch (the tiny benchmark's pedestrians are 12 px wide under a 16 px patch)."""

    def __init__(self, channels: int, out_channels: int, stride: float):
        super().__init__()
        steps = round(math.log2(stride))
        if steps < 1 or 2 ** steps != stride:
            raise ValueError(f"detail stem: the finest level's stride must be a power of 2, got {stride}")
        layers: list[nn.Module] = []
        in_ch = 3
        for _ in range(steps):
            layers += [nn.Conv2d(in_ch, channels, kernel_size=3, stride=2, padding=1, bias=False),
                       LayerNorm2d(channels), nn.GELU()]
            in_ch = channels
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(channels, out_channels, kernel_size=1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.proj(self.convs(images))  # B, D, H / stride, W / stride (rounded up)
        return x[..., : size[0], : size[1]]


class VLTDetFCOS(VLTDet):
    """VLTDet with an FCOS head (torchvision's towers, matching and losses; our static-shape decode).

    Args (besides :class:`VLTDet`'s):
        head_convs: depth of FCOS's classification and regression conv towers.
        norm_groups: GroupNorm groups in the towers (reduced to a divisor of ``pyramid_channels``).
        prior_probability: initial foreground probability of the classifier (focal-loss prior).
        center_sampling_radius: FCOS centre sampling, in strides.
        cls_weight, box_weight, ctrness_weight: weights of the focal, GIoU and centre-ness losses.
    """

    def __init__(
        self,
        head_convs: int = 4,
        norm_groups: int = 32,
        prior_probability: float = 0.01,
        center_sampling_radius: float = 1.5,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        ctrness_weight: float = 1.0,
        nms_thresh: float = 0.6,
        **kwargs,
    ):
        super().__init__(nms_thresh=nms_thresh, **kwargs)
        self.init_kwargs.update(_kwargs({k: v for k, v in locals().items() if k != "kwargs"}))
        self.loss_weights = {"loss_cls": cls_weight, "loss_box": box_weight, "loss_ctrness": ctrness_weight}
        self.head = FCOSDetHead(
            self.pyramid_channels, self.num_classes, self.strides, num_convs=head_convs, norm_groups=norm_groups,
            prior_probability=prior_probability, center_sampling_radius=center_sampling_radius,
        )

    def losses(self, features, targets, image_size):
        raw = self.head(features, targets)
        losses = {"loss_cls": raw["classification"], "loss_box": raw["bbox_regression"],
                  "loss_ctrness": raw["bbox_ctrness"]}
        return {name: value * self.loss_weights[name] for name, value in losses.items()}

    def predict(self, images):
        head_outputs, anchors = self.head(self.features(images))
        return self.head.decode(
            head_outputs, anchors, _image_size(images), self.score_thresh, self.nms_thresh,
            self.pre_nms_topk, self.max_detections,
        )


class VLTDetFasterRCNN(VLTDet):
    """VLTDet with ViTDet's two-stage detector: torchvision's Faster R-CNN (RPN + RoI heads) on the pyramid.

    Defaults are ViTDet's (detectron2 ``projects/ViTDet``, ``mask_rcnn_vitdet_b``): anchors 8 x stride (32 .. 512
    on strides 4 .. 64), ratios 0.5 / 1 / 2, a 2-conv RPN head, 2000 / 1000 proposals per level before NMS
    (train / test) and 1000 after, RPN NMS 0.7, a 4-conv + 1-fc box head with LayerNorm, RoIAlignV2 7 x 7 on
    p2-p5, 512 RoIs per image with 25 % positives, test score 0.05, NMS 0.5, 100 detections.

    Args (besides :class:`VLTDet`'s): see :class:`FasterRCNNHead`; ``anchor_sizes`` ``None`` = 8 x each stride,
    ``roi_levels`` ``None`` = the pyramid levels without ``extra_levels``. ``rpn_weight`` / ``roi_weight`` scale
    the RPN's two losses and the box head's two losses. ``mask_convs`` ``None``: no mask branch (see
    :class:`VLTDetMaskRCNN`); ``mask_weight`` scales ``loss_mask``.
    """

    def __init__(
        self,
        anchor_sizes: Optional[Sequence[Sequence[float]]] = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        roi_levels: Optional[int] = None,
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
        rpn_weight: float = 1.0,
        roi_weight: float = 1.0,
        mask_convs: Optional[int] = None,
        mask_conv_dim: int = 256,
        mask_roi_output_size: int = 14,
        mask_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        options = _kwargs({k: v for k, v in locals().items() if k != "kwargs"})
        self.init_kwargs.update(options)
        self.head, self.loss_weights = build_rcnn_head(
            self.pyramid_channels, self.num_classes, self.strides, self.num_pyramid_levels,
            score_thresh=self.score_thresh, nms_thresh=self.nms_thresh, max_detections=self.max_detections,
            pre_nms_topk=self.pre_nms_topk, **options)
        self.predicts_masks = self.head.has_masks

    def losses(self, features, targets, image_size):
        raw = self.head(features, image_size, targets)
        return {name: value * self.loss_weights[name] for name, value in raw.items()}

    def predict(self, images):
        """boxes, scores, labels (see :meth:`VLTDet.predict`) [+ masks (B, K, M, M) with the mask branch]."""
        features = self.features(images)
        boxes, scores, labels = self.head.predict(features, _image_size(images))
        if not self.predicts_masks:
            return boxes, scores, labels
        return boxes, scores, labels, self.head.predict_masks(features, boxes, labels)


def rcnn_head_defaults() -> dict:
    """The Faster R-CNN / Mask R-CNN head options with their defaults: :class:`VLTDetFasterRCNN`'s own arguments
    (one list of defaults for VLTDet and the multi-task model)."""
    params = inspect.signature(VLTDetFasterRCNN.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def build_rcnn_head(channels: int, num_classes: int, strides: Sequence[float], num_levels: int, *,
                    score_thresh: float, nms_thresh: float, max_detections: int, pre_nms_topk: int,
                    anchor_sizes=None, aspect_ratios=(0.5, 1.0, 2.0), roi_levels=None, rpn_weight=1.0,
                    roi_weight=1.0, mask_weight=1.0, **options) -> tuple[FasterRCNNHead, dict[str, float]]:
    """ViTDet's two-stage head on pyramid levels of ``channels`` at ``strides`` (``num_levels`` of them without
    the extra levels) and the weights of its losses; ``options`` are :class:`FasterRCNNHead`'s."""
    if anchor_sizes is None:
        anchor_sizes = [[8.0 * s] for s in strides]
    loss_weights = {"loss_objectness": rpn_weight, "loss_rpn_box_reg": rpn_weight,
                    "loss_classifier": roi_weight, "loss_box_reg": roi_weight, "loss_mask": mask_weight}
    head = FasterRCNNHead(
        channels, num_classes, strides, anchor_sizes, aspect_ratios,
        roi_levels=num_levels if roi_levels is None else roi_levels, score_thresh=score_thresh,
        nms_thresh=nms_thresh, max_detections=max_detections, pre_nms_topk=pre_nms_topk, **options)
    return head, loss_weights


class VLTDetMaskRCNN(VLTDetFasterRCNN):
    """VLTDet with ViTDet's Mask R-CNN: :class:`VLTDetFasterRCNN` plus torchvision's mask head (``MaskRCNNHeads``,
    ``MaskRCNNPredictor``, ``maskrcnn_loss``) on 14 x 14 RoIAlign features. ViTDet's mask head: 4 convs of 256 with
    LayerNorm, a 2x deconvolution to 28 x 28, one sigmoid mask per class. Trains on targets with ``masks``
    (records with instance maps or COCO segmentations); eval and export add the masks of the K detections.
    """

    def __init__(self, mask_convs: Optional[int] = 4, **kwargs):
        if mask_convs is None:
            raise ValueError("VLTDetMaskRCNN needs a mask head (mask_convs >= 1); use a *_fasterrcnn model without")
        super().__init__(mask_convs=mask_convs, **kwargs)


class DetectionExport(nn.Module):
    """Deployment graph of VLTDet: backbone -> pyramid -> head -> decode -> NMS -> top-K, one ONNX graph."""

    def __init__(self, model: VLTDet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """boxes, scores, labels [, masks] (the contract's order and dtypes)."""
        outputs = self.model.predict(images)
        boxes, scores, labels = outputs[:3]
        return (boxes.float(), scores.float(), labels.to(torch.int64), *(m.float() for m in outputs[3:]))


# ---------------------------------------------------------------------------------------------- registry
# Names say the head: ``*_fasterrcnn`` (ViTDet's detector, the default) or ``*_fcos``.
_TINY = dict(clip_model="vlt-tiny-vit", pyramid_channels=64, pyramid_scales=[2.0, 1.0, 0.5], extra_levels=0)


def _fcos(defaults: dict, overrides: dict) -> VLTDetFCOS:
    return VLTDetFCOS(**{**defaults, **overrides})


def _fasterrcnn(defaults: dict, overrides: dict) -> VLTDetFasterRCNN:
    return VLTDetFasterRCNN(**{**defaults, **overrides})


def _maskrcnn(defaults: dict, overrides: dict) -> VLTDetMaskRCNN:
    return VLTDetMaskRCNN(**{**defaults, **overrides})


_TINY_RCNN = dict(_TINY, anchor_sizes=[[8.0, 16.0], [32.0, 48.0], [64.0, 96.0]], rpn_convs=1,
                  rpn_pre_nms_topk=[600, 300], rpn_post_nms_topk=[300, 300], rpn_batch_size=128, box_convs=0,
                  box_fc_dim=256, roi_batch_size=128, pre_nms_topk=300, detail_stem_channels=32)


@register_model
def vltdet_tiny_fasterrcnn(**kwargs) -> VLTDetFasterRCNN:
    """Tiny random tower (``vlt-tiny-vit``: 4 blocks of width 128, patch 16), strides 8 / 16 / 32, for CPU tests
    and the demo. ViTDet's head scaled to the synthetic benchmark at 128 x 256 (objects of 4-70 px): two anchor
    sizes per level, 1 and 2 x stride (8+16 / 32+48 / 64+96: AP50 +3.7 at 600 and +5.5 at 1800 iterations over one
    size of 2 x stride, docs/detection.md), one RPN conv, a fc-only box head (256; as accurate as 2 convs on the
    4-image overfit, at two thirds of the step time), 128 sampled anchors and RoIs per image, 300 proposals.
    Not ViTDet: a 32-channel detail stem (:class:`DetailStem`) on the stride-8 level, because the benchmark's
    pedestrians are narrower than a 16 px patch (held-out AP50 38.4 -> 47.9 at 900 iterations, person 6.2 -> 20.9,
    for 10 % more step time, docs/detection.md)."""
    return _fasterrcnn(_TINY_RCNN, kwargs)


@register_model
def vltdet_vit_s16_fasterrcnn(**kwargs) -> VLTDetFasterRCNN:
    """OpenCLIP ViT-S/16."""
    return _fasterrcnn(dict(clip_model="ViT-S-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_vit_b16_fasterrcnn(**kwargs) -> VLTDetFasterRCNN:
    """OpenAI / OpenCLIP ViT-B/16 (ViTDet-B: drop path 0.1)."""
    return _fasterrcnn(dict(clip_model="ViT-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_vit_l14_fasterrcnn(**kwargs) -> VLTDetFasterRCNN:
    """OpenAI / OpenCLIP ViT-L/14; strides 3.5 .. 56, anchors 28 .. 448."""
    return _fasterrcnn(dict(clip_model="ViT-L-14", drop_path_rate=0.15), kwargs)


@register_model
def vltdet_eva02_b16_fasterrcnn(**kwargs) -> VLTDetFasterRCNN:
    """EVA02-CLIP-B/16 (timm tower with RoPE)."""
    return _fasterrcnn(dict(clip_model="EVA02-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_eva02_l14_fasterrcnn(**kwargs) -> VLTDetFasterRCNN:
    """EVA02-CLIP-L/14, as in VLTSeg; blocks 9, 14, 19, 23 feed the pyramid."""
    return _fasterrcnn(dict(clip_model="EVA02-L-14", out_indices=[9, 14, 19, 23], drop_path_rate=0.15), kwargs)


@register_model
def vltdet_tiny_fcos(**kwargs) -> VLTDetFCOS:
    """Tiny random tower, strides 8 / 16 / 32 and a light FCOS head, for CPU tests."""
    return _fcos(dict(_TINY, head_convs=2, norm_groups=16, pre_nms_topk=300), kwargs)


@register_model
def vltdet_vit_s16_fcos(**kwargs) -> VLTDetFCOS:
    """OpenCLIP ViT-S/16."""
    return _fcos(dict(clip_model="ViT-S-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_vit_b16_fcos(**kwargs) -> VLTDetFCOS:
    """OpenAI / OpenCLIP ViT-B/16."""
    return _fcos(dict(clip_model="ViT-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_vit_l14_fcos(**kwargs) -> VLTDetFCOS:
    """OpenAI / OpenCLIP ViT-L/14."""
    return _fcos(dict(clip_model="ViT-L-14", drop_path_rate=0.15), kwargs)


@register_model
def vltdet_eva02_b16_fcos(**kwargs) -> VLTDetFCOS:
    """EVA02-CLIP-B/16 (timm tower with RoPE)."""
    return _fcos(dict(clip_model="EVA02-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_eva02_l14_fcos(**kwargs) -> VLTDetFCOS:
    """EVA02-CLIP-L/14, as in VLTSeg; blocks 9, 14, 19, 23 feed the pyramid."""
    return _fcos(dict(clip_model="EVA02-L-14", out_indices=[9, 14, 19, 23], drop_path_rate=0.15), kwargs)


# Mask R-CNN: the Faster R-CNN factories' settings plus ViTDet's mask head (4 convs of 256, LayerNorm, 14 -> 28).
@register_model
def vltdet_tiny_maskrcnn(**kwargs) -> VLTDetMaskRCNN:
    """``vltdet_tiny_fasterrcnn`` with a light mask head (2 convs of 64 channels) for CPU tests."""
    return _maskrcnn(dict(_TINY_RCNN, mask_convs=2, mask_conv_dim=64), kwargs)


@register_model
def vltdet_vit_s16_maskrcnn(**kwargs) -> VLTDetMaskRCNN:
    """OpenCLIP ViT-S/16."""
    return _maskrcnn(dict(clip_model="ViT-S-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_vit_b16_maskrcnn(**kwargs) -> VLTDetMaskRCNN:
    """OpenAI / OpenCLIP ViT-B/16 (ViTDet-B's Mask R-CNN)."""
    return _maskrcnn(dict(clip_model="ViT-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_vit_l14_maskrcnn(**kwargs) -> VLTDetMaskRCNN:
    """OpenAI / OpenCLIP ViT-L/14."""
    return _maskrcnn(dict(clip_model="ViT-L-14", drop_path_rate=0.15), kwargs)


@register_model
def vltdet_eva02_b16_maskrcnn(**kwargs) -> VLTDetMaskRCNN:
    """EVA02-CLIP-B/16 (timm tower with RoPE)."""
    return _maskrcnn(dict(clip_model="EVA02-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_eva02_l14_maskrcnn(**kwargs) -> VLTDetMaskRCNN:
    """EVA02-CLIP-L/14, as in VLTSeg; blocks 9, 14, 19, 23 feed the pyramid."""
    return _maskrcnn(dict(clip_model="EVA02-L-14", out_indices=[9, 14, 19, 23], drop_path_rate=0.15), kwargs)
