"""VLTDet: the VLTSeg backbone (open_clip / EVA-CLIP ViT) + ViTDet simple feature pyramid + an FCOS detection head.

Data flow (patch 16, input H x W; the backbone pads H, W up to a multiple of the patch size):

    images (B, 3, H, W) -> backbone: 4 block outputs (B, C, H/16, W/16)
    -> simple feature pyramid: 4 levels (B, D, H/4 .. H/32) [+ ``extra_levels`` stride-2 max-pools: H/64 ...]
    -> FCOS head (torchvision): class logits (B, N, K), box distances (B, N, 4), centre-ness (B, N, 1)
    -> train: FCOS matching + focal / GIoU / centre-ness losses
    -> eval / export: static-shape decode + batched NMS -> (B, max_detections) boxes, scores, labels

The backbone and pyramid are the very modules VLTSeg uses (imported, not copied). See docs/detection.md.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlt_perception.labels import CITYSCAPES_THING_CLASSES
from vlt_training.modeling.backbone import CLIPVisionBackbone
from vlt_training.modeling.det_head import FCOSDetHead
from vlt_training.modeling.neck import SimpleFeaturePyramid
from vlt_training.modeling.registry import register_model


class VLTDet(nn.Module):
    """FCOS object detection on an open_clip vision tower.

    Args:
        clip_model: open_clip model config name (``ViT-B-16``, ``EVA02-L-14``, ``vlt-tiny-vit`` ...).
        pretrained: open_clip pretrained tag or local open_clip checkpoint (its own format); ``None``: random.
        class_names: detection classes, index = label (default: the 8 Cityscapes thing classes).
        out_indices, drop_path_rate, grad_checkpointing, vision_cfg_overrides, text_cfg_overrides:
            backbone settings, see :class:`CLIPVisionBackbone`.
        pyramid_channels: channels of every pyramid level (and of the head's conv towers).
        multi_level_pyramid: each intermediate block feeds one level (VLTSeg) instead of all from the last (ViTDet).
        pyramid_scales: resampling of each level relative to the patch grid (stride = patch / scale); with fewer
            than four levels the deepest block outputs feed them (``(2.0, 1.0, 0.5)``: strides 8 / 16 / 32 for
            patch 16, no stride-4 level: a quarter of the head's cost, for objects of 8 px and more).
        extra_levels: coarser levels added on top of the stride-2p level by stride-2 max-pooling (ViTDet's P6),
            for objects larger than the input's quarter.
        head_convs: depth of FCOS's classification and regression conv towers.
        norm_groups: GroupNorm groups in the towers (reduced to a divisor of ``pyramid_channels``).
        prior_probability: initial foreground probability of the classifier (focal-loss prior).
        center_sampling_radius: FCOS centre sampling, in strides.
        cls_weight, box_weight, ctrness_weight: weights of the focal, GIoU and centre-ness losses.
        score_thresh: detections below this score are dropped (padding, score 0) in eval and export.
        nms_thresh: IoU above which a lower-scored box of the same class is suppressed.
        pre_nms_topk: candidates (over all levels and classes) kept before NMS.
        max_detections: K, the fixed number of output slots per image (``ModelMetadata.max_detections``).
    """

    task = "detection"

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
        head_convs: int = 4,
        norm_groups: int = 32,
        prior_probability: float = 0.01,
        center_sampling_radius: float = 1.5,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        ctrness_weight: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        pre_nms_topk: int = 1000,
        max_detections: int = 100,
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
        # everything needed to rebuild this model: create_model(model_name, **init_kwargs)
        self.init_kwargs = {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items()
            if k not in ("self", "__class__")
        }
        self.model_name = "vltdet"
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.pre_nms_topk = pre_nms_topk
        self.max_detections = max_detections
        self.loss_weights = {"loss_cls": cls_weight, "loss_box": box_weight, "loss_ctrness": ctrness_weight}

        # No text guidance in VLTDet: without the projection every backbone parameter is trained.
        self.backbone = CLIPVisionBackbone(
            clip_model, pretrained=pretrained, out_indices=out_indices, drop_path_rate=drop_path_rate,
            grad_checkpointing=grad_checkpointing, keep_projection=False,
            vision_cfg_overrides=vision_cfg_overrides, text_cfg_overrides=text_cfg_overrides,
        )
        self.backbone.release_text_tower()
        # rebuilt with pretrained=None, the architecture must still be the pretrained folder's (its input size)
        self.init_kwargs.update(self.backbone.architecture_overrides)
        self.pixel_mean = self.backbone.pixel_mean
        self.pixel_std = self.backbone.pixel_std
        self.neck = SimpleFeaturePyramid(self.backbone.width, pyramid_channels, scales=tuple(pyramid_scales),
                                         multi_level=multi_level_pyramid)
        self.num_pyramid_levels = len(pyramid_scales)
        self.extra_levels = extra_levels
        patch = float(self.backbone.patch_size[0])
        # Nominal strides: patch / scale per pyramid level (4, 8, 16, 32 for patch 16), then x 2 per extra level.
        strides = [patch / s for s in pyramid_scales]
        strides += [strides[-1] * 2.0 ** (i + 1) for i in range(extra_levels)]
        self.head = FCOSDetHead(
            pyramid_channels, self.num_classes, strides, num_convs=head_convs, norm_groups=norm_groups,
            prior_probability=prior_probability, center_sampling_radius=center_sampling_radius,
        )

    # ------------------------------------------------------------------ forward
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Pyramid levels, finest first: [(B, D, Hp/4, Wp/4), ..., (B, D, Hp/32, Wp/32), extra ...] for patch 16
        and the default scales."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        blocks = self.backbone.forward_intermediates(images)  # 4 x (B, C, Hp/p, Wp/p)
        # The deepest blocks feed the levels when there are fewer than four (the last block always feeds one).
        levels = list(self.neck(blocks[len(blocks) - self.num_pyramid_levels:]).values())
        for _ in range(self.extra_levels):
            levels.append(F.max_pool2d(levels[-1], kernel_size=1, stride=2))  # ViTDet's LastLevelMaxPool
        return levels

    def forward(self, images: torch.Tensor, targets: Optional[list[dict]] = None):
        """Train mode: dict of weighted losses (``loss_cls``, ``loss_box``, ``loss_ctrness``; their sum is the loss).
        Eval mode: ``{"detections": [{"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,)}] * B}`` with
        boxes in input pixels, N <= ``max_detections``, scores > ``score_thresh``.

        ``targets``: one dict per image, ``{"boxes": (N, 4) float xyxy in input pixels, "labels": (N,) long}``.
        """
        if not self.training:
            boxes, scores, labels = self.predict(images)
            keep = scores > 0  # B, K: padding has score 0
            return {"detections": [{"boxes": b[k], "scores": s[k], "labels": l[k]}
                                   for b, s, l, k in zip(boxes, scores, labels, keep)]}
        targets = self._check_targets(targets, images)
        raw = self.head(self.features(images), targets)
        losses = {"loss_cls": raw["classification"], "loss_box": raw["bbox_regression"],
                  "loss_ctrness": raw["bbox_ctrness"]}
        return {name: value * self.loss_weights[name] for name, value in losses.items()}

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fixed-size detections: boxes (B, K, 4) float32 xyxy in input pixels, scores (B, K) float32 (0 for
        padding), labels (B, K) int64; K = ``max_detections``, sorted by score."""
        head_outputs, anchors = self.head(self.features(images))
        return self.head.decode(
            head_outputs, anchors, tuple(images.shape[-2:]), self.score_thresh, self.nms_thresh,
            self.pre_nms_topk, self.max_detections,
        )

    def _check_targets(self, targets, images: torch.Tensor) -> list[dict]:
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
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"target {i}: labels must be in [0, {self.num_classes}), got {labels.tolist()[:10]}")
            checked.append({"boxes": boxes, "labels": labels})
        return checked

    def export_module(self) -> nn.Module:
        """An eval-mode module ``images -> (boxes (B, K, 4) float32, scores (B, K) float32, labels (B, K) int64)``."""
        return DetectionExport(self).eval()


class DetectionExport(nn.Module):
    """Deployment graph of VLTDet: backbone -> pyramid -> head -> decode -> NMS -> top-K, one ONNX graph."""

    def __init__(self, model: VLTDet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, scores, labels = self.model.predict(images)
        return boxes.float(), scores.float(), labels.to(torch.int64)


# ---------------------------------------------------------------------------------------------- registry
def _vltdet(defaults: dict, overrides: dict) -> VLTDet:
    return VLTDet(**{**defaults, **overrides})


@register_model
def vltdet_tiny_fcos(**kwargs) -> VLTDet:
    """Tiny random tower (``vlt-tiny-vit``: 4 blocks of width 128, patch 16), strides 8 / 16 / 32 and a light head,
    for CPU tests."""
    return _vltdet(dict(clip_model="vlt-tiny-vit", pyramid_channels=64, pyramid_scales=[2.0, 1.0, 0.5],
                        head_convs=2, norm_groups=16, extra_levels=0, pre_nms_topk=300), kwargs)


@register_model
def vltdet_vit_s16_fcos(**kwargs) -> VLTDet:
    """OpenCLIP ViT-S/16."""
    return _vltdet(dict(clip_model="ViT-S-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_vit_b16_fcos(**kwargs) -> VLTDet:
    """OpenAI / OpenCLIP ViT-B/16."""
    return _vltdet(dict(clip_model="ViT-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_vit_l14_fcos(**kwargs) -> VLTDet:
    """OpenAI / OpenCLIP ViT-L/14."""
    return _vltdet(dict(clip_model="ViT-L-14", drop_path_rate=0.15), kwargs)


@register_model
def vltdet_eva02_b16_fcos(**kwargs) -> VLTDet:
    """EVA02-CLIP-B/16 (timm tower with RoPE)."""
    return _vltdet(dict(clip_model="EVA02-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltdet_eva02_l14_fcos(**kwargs) -> VLTDet:
    """EVA02-CLIP-L/14, as in VLTSeg; blocks 9, 14, 19, 23 feed the pyramid."""
    return _vltdet(dict(clip_model="EVA02-L-14", out_indices=[9, 14, 19, 23], drop_path_rate=0.15), kwargs)
