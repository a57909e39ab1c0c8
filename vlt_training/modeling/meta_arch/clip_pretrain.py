"""Pretraining models for the trainer: open_clip's own CLIP with ``ClipLoss``, and a vision-only control.

Both hold a whole open_clip model (``self.clip``) built from an open_clip config (``vlt-tiny-clip``: the
``vlt-tiny-vit`` vision tower at the tiny models' 128 x 256 input, and a tiny text tower) and follow the trainer's
contract: ``forward(images, targets)`` returns a dict of losses in training. :func:`export_open_clip` writes
``self.clip`` as a folder that open_clip alone loads (``open_clip.create_model_and_transforms('local-dir:<out>')``).

- :class:`CLIPPretrain` (``clip_pretrain_tiny``): symmetric InfoNCE over the batch (``open_clip.loss.ClipLoss``)
  between normalised image and caption embeddings, with open_clip's learned temperature (capped at 100 as
  open_clip's trainer does after every step; here the cap is applied in the forward, so no optimiser hook is needed).
- :class:`VisionPretrain` (``vision_pretrain_tiny``): the same vision tower on the same images, trained with a
  multi-label BCE on the classes present plus the appearance attributes (the analogue of ImageNet-supervised
  pretraining). The text tower is frozen and stays at its random initialisation.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vlt_perception.labels import CITYSCAPES_CLASSES
from vlt_training.modeling.registry import register_model
from vlt_training.vocabulary import attribute_names

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
_MAX_LOGIT_SCALE = math.log(100.0)


def _open_clip():
    from vlt_training.modeling.backbone.clip_vit import _import_open_clip, register_open_clip_configs

    register_open_clip_configs()
    return _import_open_clip()


def model_config(clip_model: str) -> dict:
    """The open_clip config (``embed_dim``, ``vision_cfg``, ``text_cfg``) of ``clip_model``."""
    cfg = _open_clip().get_model_config(clip_model)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {clip_model!r}")
    return cfg


class _OpenClipHolder(nn.Module):
    def __init__(self, clip_model: str, vision_cfg_overrides: dict | None = None,
                 text_cfg_overrides: dict | None = None) -> None:
        super().__init__()
        from vlt_training.modeling.backbone.clip_vit import build_open_clip

        self.clip_model = clip_model
        self.cfg_overrides = {"vision_cfg": dict(vision_cfg_overrides or {}), "text_cfg": dict(text_cfg_overrides or {})}
        self.clip = build_open_clip(clip_model, None, vision_cfg_overrides, text_cfg_overrides)
        cfg = self.clip.visual.preprocess_cfg
        self.pixel_mean = tuple(float(v) for v in cfg["mean"])
        self.pixel_std = tuple(float(v) for v in cfg["std"])
        self.class_names = list(CITYSCAPES_CLASSES)  # the vocabulary's classes (metadata of the checkpoints)

    def open_clip_config(self) -> dict:
        """The open_clip config of ``self.clip`` (the named config with this model's overrides applied)."""
        import copy

        cfg = copy.deepcopy(model_config(self.clip_model))
        for key, overrides in self.cfg_overrides.items():
            cfg[key].update(overrides)
        return cfg

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B, D)."""
        return self.clip.encode_image(images, normalize=True)


class CLIPPretrain(_OpenClipHolder):
    """Contrastive image-text pretraining of an open_clip model; targets carry ``"caption"`` strings."""

    def __init__(self, clip_model: str = "vlt-tiny-clip", vision_cfg_overrides: dict | None = None,
                 text_cfg_overrides: dict | None = None) -> None:
        super().__init__(clip_model, vision_cfg_overrides, text_cfg_overrides)
        from open_clip.loss import ClipLoss

        self.init_kwargs = {"clip_model": clip_model, "vision_cfg_overrides": vision_cfg_overrides,
                            "text_cfg_overrides": text_cfg_overrides}
        self.criterion = ClipLoss()
        # the model owns its tokenizer (targets carry plain captions), with the model's own context length
        self.tokenizer = _open_clip().get_tokenizer(clip_model, context_length=self.clip.context_length)

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """L2-normalised caption embeddings (N, D)."""
        tokens = self.tokenizer(list(captions)).to(self.clip.logit_scale.device)  # N, L
        return self.clip.encode_text(tokens, normalize=True)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        image_features = self.encode_image(images)  # B, D
        if not self.training or targets is None:
            return {"image_features": image_features}
        text_features = self.encode_text([t["caption"] for t in targets])  # B, D
        scale = self.clip.logit_scale.clamp(max=_MAX_LOGIT_SCALE).exp()
        return {"loss_contrastive": self.criterion(image_features, text_features, scale)}


class VisionPretrain(_OpenClipHolder):
    """Supervised pretraining of the vision tower: a linear multi-label head on its embedding, BCE loss;
    targets carry ``"labels"`` (K,) in {0, 1}."""

    def __init__(self, clip_model: str = "vlt-tiny-clip", num_labels: int | None = None,
                 vision_cfg_overrides: dict | None = None, text_cfg_overrides: dict | None = None) -> None:
        super().__init__(clip_model, vision_cfg_overrides, text_cfg_overrides)
        if num_labels is None:
            num_labels = len(CITYSCAPES_CLASSES) + len(attribute_names())
        self.init_kwargs = {"clip_model": clip_model, "num_labels": int(num_labels),
                            "vision_cfg_overrides": vision_cfg_overrides, "text_cfg_overrides": text_cfg_overrides}
        for name, param in self.clip.named_parameters():
            if not name.startswith("visual."):
                param.requires_grad_(False)  # the text tower is not part of this objective
        self.head = nn.Linear(int(model_config(clip_model)["embed_dim"]), int(num_labels))

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        logits = self.head(self.clip.encode_image(images))  # B, K
        if not self.training or targets is None:
            return {"logits": logits}
        labels = torch.stack([t["labels"] for t in targets]).to(logits.dtype)  # B, K
        return {"loss_bce": F.binary_cross_entropy_with_logits(logits, labels)}


@register_model
def clip_pretrain_tiny(**kwargs) -> CLIPPretrain:
    """Contrastive pretraining of ``vlt-tiny-clip`` (the tiny VLTSeg / VLTDet tower and a tiny text tower)."""
    return CLIPPretrain(**{"clip_model": "vlt-tiny-clip", **kwargs})


@register_model
def vision_pretrain_tiny(**kwargs) -> VisionPretrain:
    """Supervised (classes present + appearance attributes) pretraining of the ``vlt-tiny-clip`` vision tower."""
    return VisionPretrain(**{"clip_model": "vlt-tiny-clip", **kwargs})


def export_open_clip(model: nn.Module, out: str | os.PathLike, fp16: bool = False,
                     provenance: dict | None = None) -> Path:
    """Write ``model.clip`` as ``out/open_clip_config.json`` + ``out/open_clip_model.safetensors``.

    ``fp16`` stores the weights in half precision (half the size; open_clip casts them back on load).
    ``provenance`` (config, seed, step ...) is stored in the config file under ``"vlt_provenance"``, which open_clip
    ignores. Both files are written to temporary names and renamed, so a crash leaves no half-written folder.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clip = model.clip
    cfg = model.open_clip_config()
    state = {k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in clip.state_dict().items()}
    size = clip.visual.image_size
    config = {
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": list(model.pixel_mean), "std": list(model.pixel_std),
                           "size": list(size) if isinstance(size, (tuple, list)) else size,
                           "interpolation": "bicubic", "resize_mode": "squash"},
        "vlt_provenance": {"open_clip_model": model.clip_model, "dtype": "float16" if fp16 else "float32",
                           **(provenance or {})},
    }
    with tempfile.NamedTemporaryFile(dir=out, suffix=".tmp", delete=False) as fh:
        tmp_weights = Path(fh.name)
    try:
        save_file(state, str(tmp_weights), metadata={"format": "pt"})
        os.replace(tmp_weights, out / OPEN_CLIP_WEIGHTS)
    finally:
        tmp_weights.unlink(missing_ok=True)
    from vlt_perception.atomic import atomic_write_text

    atomic_write_text(out / OPEN_CLIP_CONFIG, json.dumps(config, indent=2) + "\n")
    return out
