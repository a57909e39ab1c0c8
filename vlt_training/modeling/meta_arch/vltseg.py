"""VLTSeg: an open_clip / EVA-CLIP ViT + ViTDet simple feature pyramid + Mask2Former
(Hümmer et al., "Strong but simple: A Baseline for Domain Generalized Dense Perception by CLIP-based Transfer
Learning", ACCV 2024), with optional DenseCLIP-style vision-language guidance.

Data flow (patch 16, input H x W):

    images (B, 3, H, W) -> backbone: 4 block outputs (B, C, H/16, W/16)
        [text guidance (DenseCLIP): score maps (B, K, H/16, W/16) concatenated to the stride-16 level's input]
    -> simple feature pyramid: res2..res5 (B, 256, H/4 .. H/32)
    -> MSDeformAttn pixel decoder: mask features (B, 256, H/4, W/4) + 3 levels (strides 32, 16, 8)
    -> masked-attention decoder: class logits (B, Q, K+1), mask logits (B, Q, H/4, W/4) per layer
    -> train: Hungarian matching + losses;  eval: semantic scores (B, K, H, W)
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlt_perception.labels import CITYSCAPES_CLASSES, IGNORE_INDEX
from vlt_training.modeling.criterion import HungarianMatcher, SetCriterion, batch_sem_seg_to_instances
from vlt_training.modeling.meta_arch.base import TowerArgs, TowerModel, constructor_kwargs
from vlt_training.modeling.pixel_decoder import MSDeformAttnPixelDecoder
from vlt_training.modeling.registry import register_model
from vlt_training.modeling.text_guidance import DEFAULT_PROMPT, DenseCLIPGuidance
from vlt_training.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder


class VLTSeg(TowerModel):
    """Mask2Former semantic segmentation on an open_clip vision tower.

    Args:
        clip_model: open_clip model config name (``ViT-B-16``, ``EVA02-L-14``, ``vlt-tiny-vit`` ...).
        pretrained: open_clip pretrained tag or local open_clip checkpoint (its own format); ``None``: random.
        class_names: class names, index = train ID (default: the 19 Cityscapes classes).
        out_indices, drop_path_rate, grad_checkpointing, vision_cfg_overrides, text_cfg_overrides:
            backbone settings, see :class:`CLIPVisionBackbone`.
        pyramid_channels: channels of the simple feature pyramid levels.
        multi_level_pyramid: each intermediate feeds one pyramid level (VLTSeg) instead of all from the last.
        conv_dim, mask_dim, encoder_layers, encoder_ffn_dim, encoder_heads, encoder_points: pixel decoder.
        hidden_dim, num_queries, nheads, dim_feedforward, dec_layers: transformer decoder.
        class_weight, mask_weight, dice_weight, no_object_weight: Mask2Former loss weights.
        train_num_points, oversample_ratio, importance_sample_ratio: point-sampled mask losses and matching.
        text_guidance: DenseCLIP's pixel-text score maps + auxiliary loss (:mod:`~vlt_training.modeling.text_guidance`);
            False turns the whole guidance off (no text tower, no score maps, no auxiliary loss).
        prompt_template: class prompt, ``{}`` = class name; used only with ``text_context_length=0``.
        pixel_text_weight: weight of the auxiliary pixel-text loss (DenseCLIP: 0.4).
        text_temperature: temperature of the pixel-text logits.
        concat_score_maps: concatenate the score maps to the stride-16 pyramid input (DenseCLIP's ViT setting).
        text_context_length: learnable CoOp context vectors (DenseCLIP: 8); 0 = fixed prompts.
        context_decoder_width, context_decoder_heads, context_decoder_layers: DenseCLIP's context decoder.
        ignore_index: label of ignored pixels.
        pixel_mean, pixel_std: input normalisation (RGB in [0, 1]); default: the open_clip tower's.
        quick_gelu: QuickGELU tower; ``None`` decides from the pretrained tag (OpenAI weights need it), see
            :func:`~vlt_training.modeling.backbone.clip_vit.resolve_quick_gelu`; recorded in ``init_kwargs``.
        mode: training mode ``full`` / ``frozen`` / ``rein`` / ``famix``, with ``mode_options`` (see
            :mod:`vlt_training.modeling.modes`).

    ``init_kwargs`` rebuilds the architecture with ``pretrained=None`` (weights come from the checkpoint,
    including the guidance's frozen text tower); ``pretrained_source`` remembers where the initial weights came from.
    """

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
        conv_dim: int = 256,
        mask_dim: int = 256,
        encoder_layers: int = 6,
        encoder_ffn_dim: int = 1024,
        encoder_heads: int = 8,
        encoder_points: int = 4,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        train_num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        text_guidance: bool = True,
        prompt_template: str = DEFAULT_PROMPT,
        pixel_text_weight: float = 0.4,
        text_temperature: float = 0.07,
        concat_score_maps: bool = True,
        text_context_length: int = 8,
        context_decoder_width: int = 256,
        context_decoder_heads: int = 4,
        context_decoder_layers: int = 3,
        ignore_index: int = IGNORE_INDEX,
        pixel_mean: Optional[Sequence[float]] = None,
        pixel_std: Optional[Sequence[float]] = None,
        quick_gelu: Optional[bool] = None,
        mode: str = "full",
        mode_options: Optional[dict] = None,
    ):
        super().__init__()
        class_names = list(class_names) if class_names is not None else list(CITYSCAPES_CLASSES)
        if not class_names:
            raise ValueError("class_names is empty")
        # everything needed to rebuild this model: create_model(model_name, **init_kwargs)
        self.init_kwargs = constructor_kwargs(locals())
        self.model_name = "vltseg"
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.ignore_index = ignore_index
        self.build_tower(TowerArgs.from_kwargs(self.init_kwargs), keep_projection=text_guidance,
                         pixel_mean=pixel_mean, pixel_std=pixel_std, pin_norm=True)
        self._build_guidance(text_guidance, concat_score_maps, pixel_text_weight, prompt_template,
                             text_context_length, context_decoder_width, context_decoder_heads,
                             context_decoder_layers, text_temperature)
        if mode != "famix":  # FAMix's style mining needs the text tower; the trainer releases it after mining
            self.backbone.release_text_tower()
        extra = self.num_classes if self.concat_score_maps else 0
        # which backbone map gets the score maps: the one feeding the stride-16 level (all levels share one map
        # in the single-level pyramid)
        self.score_map_index = 2 if multi_level_pyramid else 3
        self.build_pyramid(pyramid_channels, multi_level=multi_level_pyramid,
                           extra_in_channels=(0, 0, extra, 0) if multi_level_pyramid else (extra,) * 4)
        self._build_mask2former(
            pyramid_channels, conv_dim=conv_dim, mask_dim=mask_dim, encoder_layers=encoder_layers,
            encoder_ffn_dim=encoder_ffn_dim, encoder_heads=encoder_heads, encoder_points=encoder_points,
            hidden_dim=hidden_dim, num_queries=num_queries, nheads=nheads, dim_feedforward=dim_feedforward,
            dec_layers=dec_layers, class_weight=class_weight, mask_weight=mask_weight, dice_weight=dice_weight,
            no_object_weight=no_object_weight, train_num_points=train_num_points, oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio)
        self.apply_training_mode(mode, mode_options)

    def _build_guidance(self, text_guidance: bool, concat_score_maps: bool, pixel_text_weight: float,
                        prompt_template: str, text_context_length: int, context_decoder_width: int,
                        context_decoder_heads: int, context_decoder_layers: int, text_temperature: float) -> None:
        """DenseCLIP's pixel-text score maps (``self.pixel_text``), or nothing without text guidance."""
        self.text_guidance = text_guidance
        self.concat_score_maps = text_guidance and concat_score_maps
        self.pixel_text_weight = pixel_text_weight
        self.pixel_text = None
        if text_guidance:
            clip = self.backbone.open_clip_model()
            self.pixel_text = DenseCLIPGuidance(
                clip, clip.tokenizer, self.class_names, self.backbone.embed_dim, num_context=text_context_length,
                prompt_template=prompt_template, decoder_width=context_decoder_width,
                decoder_heads=context_decoder_heads, decoder_layers=context_decoder_layers,
                temperature=text_temperature,
            )

    def _build_mask2former(self, pyramid_channels: int, *, conv_dim, mask_dim, encoder_layers, encoder_ffn_dim,
                           encoder_heads, encoder_points, hidden_dim, num_queries, nheads, dim_feedforward,
                           dec_layers, class_weight, mask_weight, dice_weight, no_object_weight, train_num_points,
                           oversample_ratio, importance_sample_ratio) -> None:
        """The Mask2Former head on the four pyramid levels: pixel decoder, masked-attention decoder, criterion."""
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            [pyramid_channels] * 4, conv_dim=conv_dim, mask_dim=mask_dim, encoder_layers=encoder_layers,
            encoder_ffn_dim=encoder_ffn_dim, encoder_heads=encoder_heads, encoder_points=encoder_points,
        )
        self.predictor = MultiScaleMaskedTransformerDecoder(
            conv_dim, self.num_classes, hidden_dim=hidden_dim, num_queries=num_queries, nheads=nheads,
            dim_feedforward=dim_feedforward, dec_layers=dec_layers, mask_dim=mask_dim,
        )
        matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points=train_num_points)
        self.criterion = SetCriterion(
            self.num_classes, matcher, class_weight=class_weight, mask_weight=mask_weight, dice_weight=dice_weight,
            no_object_weight=no_object_weight, num_points=train_num_points, oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
        )

    # ------------------------------------------------------------------ forward
    def _features(self, images: torch.Tensor) -> tuple[dict, Optional[torch.Tensor]]:
        """Pyramid levels and (with text guidance) the pixel-text score maps (B, K, h, w)."""
        feats = self.backbone.forward_intermediates(images)  # 4 x (B, C, h, w)
        scores = None
        if self.pixel_text is not None:
            scores = self.pixel_text(self.backbone.project_dense(feats[-1]))  # B, K, h, w
            if self.concat_score_maps:
                i = self.score_map_index
                feats = list(feats)
                feats[i] = torch.cat([feats[i], scores], dim=1)  # B, C + K, h, w
        return self.neck(feats), scores

    def forward_outputs(self, images: torch.Tensor) -> tuple[dict, Optional[torch.Tensor]]:
        """Raw Mask2Former outputs (``pred_logits``, ``pred_masks``, ``aux_outputs``) and score maps."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        pyramid, scores = self._features(images)
        return self.mask2former_outputs(pyramid), scores

    def mask2former_outputs(self, pyramid: dict) -> dict:
        """The Mask2Former head on the pyramid levels ``res2`` .. ``res5``."""
        mask_features, multi_scale = self.pixel_decoder(pyramid)
        return self.predictor(multi_scale, mask_features, **self.decoder_queries())  # Rein's tokens as queries

    def forward(self, images: torch.Tensor, targets=None):
        """Train mode: dict of weighted losses (their sum is the loss). Eval mode: ``{"sem_seg": (B, K, H, W)}``.

        ``targets``: a list of per-image dicts ``{"sem_seg": (H, W) long}`` (255 = ignore), or one dict with a
        batched (B, H, W) ``sem_seg``.
        """
        if not self.training:
            return {"sem_seg": self.semantic_inference(images)}
        if targets is None:
            raise ValueError("VLTSeg in train mode needs targets with 'sem_seg'")
        padded = self.padded_sem_seg(targets, images)
        self.set_hook_labels(padded)  # FAMix mixes styles per labelled patch
        outputs, scores = self.forward_outputs(images)
        return self.segmentation_losses(outputs, scores, padded)

    def padded_sem_seg(self, targets, images: torch.Tensor) -> torch.Tensor:
        """The checked (B, H, W) labels, padded like the images (the backbone pads to a multiple of the patch
        size) with the ignore label."""
        sem_seg = self._stack_targets(targets, images)
        ph, pw = self.backbone.padded_size(*images.shape[-2:])
        return F.pad(sem_seg, (0, pw - sem_seg.shape[-1], 0, ph - sem_seg.shape[-2]), value=self.ignore_index)

    def segmentation_losses(self, outputs: dict, scores: Optional[torch.Tensor], padded: torch.Tensor) -> dict:
        """Mask2Former's weighted losses (+ DenseCLIP's pixel-text loss) against the padded labels (B, Hp, Wp)."""
        instances = batch_sem_seg_to_instances(padded, self.num_classes, self.ignore_index)
        losses = self.criterion(outputs, instances)
        if scores is not None and self.pixel_text_weight > 0:
            losses["loss_pixel_text"] = self.pixel_text.loss(scores, padded, self.ignore_index) * self.pixel_text_weight
        return losses

    def _stack_targets(self, targets, images: torch.Tensor) -> torch.Tensor:
        if isinstance(targets, dict):
            sem_seg = targets.get("sem_seg")
        else:
            try:
                sem_seg = torch.stack([t["sem_seg"] for t in targets])
            except (KeyError, TypeError) as exc:
                raise ValueError("targets must be a list of dicts with 'sem_seg' (H, W) or one dict") from exc
        if sem_seg is None or sem_seg.dim() != 3:
            raise ValueError("targets 'sem_seg' must be (H, W) per image / (B, H, W) batched")
        b, h, w = sem_seg.shape
        if (b, h, w) != (images.shape[0], images.shape[2], images.shape[3]):
            raise ValueError(f"target sem_seg {tuple(sem_seg.shape)} does not match images {tuple(images.shape)}")
        sem_seg = sem_seg.to(images.device).long()
        bad = (sem_seg != self.ignore_index) & ((sem_seg < 0) | (sem_seg >= self.num_classes))
        if bad.any():
            raise ValueError(f"target labels must be in [0, {self.num_classes}) or {self.ignore_index}, "
                             f"got {sorted(set(sem_seg[bad].unique().tolist()))[:10]}")
        return sem_seg

    def semantic_inference(self, images: torch.Tensor) -> torch.Tensor:
        """Semantic scores (B, K, H, W): softmax class scores (no-object dropped) x sigmoid masks."""
        outputs, _ = self.forward_outputs(images)
        return self.semantic_scores(outputs, images)

    def semantic_scores(self, outputs: dict, images: torch.Tensor) -> torch.Tensor:
        """Mask2Former outputs -> semantic scores (B, K, H, W) at the size of ``images``."""
        cls = outputs["pred_logits"].softmax(-1)[..., :-1]  # B, Q, K
        masks = outputs["pred_masks"].sigmoid()  # B, Q, h4, w4
        sem = torch.einsum("bqc,bqhw->bchw", cls, masks)  # B, K, h4, w4
        h, w = int(images.shape[-2]), int(images.shape[-1])  # static in exported graphs
        ph, pw = self.backbone.padded_size(h, w)
        sem = F.interpolate(sem, size=(ph, pw), mode="bilinear", align_corners=False)
        return sem[:, :, :h, :w]

    def export_module(self) -> nn.Module:
        """An eval-mode module ``images -> (labels uint8 (B, H, W), confidence float32 (B, H, W))``."""
        return SegmentationExport(self).eval()


class SegmentationExport(nn.Module):
    """Deployment graph of VLTSeg: argmax inside, so engines get labels without moving (B, K, H, W) scores.

    ``confidence`` is the winning class's share of the semantic scores (max / sum over classes, in [0, 1]);
    Mask2Former's raw scores are not normalised over classes.
    """

    def __init__(self, model: VLTSeg):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sem = self.model.semantic_inference(images)  # B, K, H, W
        top, labels = sem.max(dim=1)
        confidence = top / sem.sum(dim=1).clamp_min(1e-6)
        return labels.to(torch.uint8), confidence.float()


# ---------------------------------------------------------------------------------------------- registry
def _vltseg(defaults: dict, overrides: dict) -> VLTSeg:
    return VLTSeg(**{**defaults, **overrides})


@register_model
def vltseg_tiny_mask2former(**kwargs) -> VLTSeg:
    """Tiny random tower (``vlt-tiny-vit``: 4 blocks of width 128, patch 16) for CPU tests and demos.

    784 = 28 x 28 sampled mask points: Mask2Former's density (12544 points for the 128 x 256 stride-4 masks of
    512 x 1024 crops) for the 32 x 64 masks of 128 x 256 crops.
    """
    return _vltseg(dict(
        clip_model="vlt-tiny-vit", pyramid_channels=64, conv_dim=64, mask_dim=64, encoder_layers=2,
        encoder_ffn_dim=128, encoder_heads=4, hidden_dim=64, num_queries=20, nheads=4, dim_feedforward=128,
        dec_layers=3, train_num_points=784, context_decoder_width=64, context_decoder_heads=2, context_decoder_layers=1,
    ), kwargs)


@register_model
def vltseg_vit_s16_mask2former(**kwargs) -> VLTSeg:
    """OpenCLIP ViT-S/16."""
    return _vltseg(dict(clip_model="ViT-S-16", drop_path_rate=0.1), kwargs)


@register_model
def vltseg_vit_b16_mask2former(**kwargs) -> VLTSeg:
    """OpenAI / OpenCLIP ViT-B/16."""
    return _vltseg(dict(clip_model="ViT-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltseg_vit_l14_mask2former(**kwargs) -> VLTSeg:
    """OpenAI / OpenCLIP ViT-L/14."""
    return _vltseg(dict(clip_model="ViT-L-14", drop_path_rate=0.15), kwargs)


@register_model
def vltseg_eva02_b16_mask2former(**kwargs) -> VLTSeg:
    """EVA02-CLIP-B/16 (timm tower with RoPE)."""
    return _vltseg(dict(clip_model="EVA02-B-16", drop_path_rate=0.1), kwargs)


@register_model
def vltseg_eva02_l14_mask2former(**kwargs) -> VLTSeg:
    """EVA02-CLIP-L/14, the main VLTSeg model; blocks 9, 14, 19, 23 feed the pyramid."""
    return _vltseg(dict(clip_model="EVA02-L-14", out_indices=[9, 14, 19, 23], drop_path_rate=0.15), kwargs)
