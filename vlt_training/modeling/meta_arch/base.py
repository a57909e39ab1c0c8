"""What every dense-prediction model of the family shares: an open_clip vision tower, its input normalisation, the
simple feature pyramid, the training mode with its block hook, and freezing.

VLTSeg, VLTDet and the multi-task VLTMT are :class:`TowerModel` subclasses; each adds only its heads. The tower's
constructor arguments are flat keyword arguments of every model (they are what a checkpoint's ``init_kwargs``
record, so they stay flat); :class:`TowerArgs` collects them in one place and builds the backbone.

The block hook (Rein's tokens, FAMix's style mixing) is reached through :meth:`TowerModel.decoder_queries` and
:meth:`TowerModel.set_hook_labels`, which dispatch on the hook's type: a hook that is neither gets neither call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from vlt_training.modeling.backbone import CLIPVisionBackbone
from vlt_training.modeling.famix import StyleMixHook
from vlt_training.modeling.modes import apply_mode, freeze, frozen_module_names
from vlt_training.modeling.neck import SimpleFeaturePyramid
from vlt_training.modeling.rein import Rein


def constructor_kwargs(local_vars: dict, exclude: Sequence[str] = ()) -> dict:
    """Constructor arguments from ``locals()`` (tuples as lists, as they come back from a checkpoint's JSON)."""
    skip = {"self", "__class__", "kwargs", *exclude}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in local_vars.items() if k not in skip}


@dataclass(frozen=True)
class TowerArgs:
    """The tower's constructor arguments, shared by every model (see :class:`CLIPVisionBackbone`)."""

    clip_model: str = "vlt-tiny-vit"
    pretrained: Optional[str] = None
    out_indices: Optional[Sequence[int]] = None
    drop_path_rate: float = 0.0
    grad_checkpointing: bool = False
    vision_cfg_overrides: Optional[dict] = None
    text_cfg_overrides: Optional[dict] = None
    quick_gelu: Optional[bool] = None

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "TowerArgs":
        return cls(**{k: kwargs[k] for k in asdict(cls()) if k in kwargs})

    def build(self, keep_projection: bool) -> CLIPVisionBackbone:
        return CLIPVisionBackbone(
            self.clip_model, pretrained=self.pretrained, out_indices=self.out_indices,
            drop_path_rate=self.drop_path_rate, grad_checkpointing=self.grad_checkpointing,
            keep_projection=keep_projection, vision_cfg_overrides=self.vision_cfg_overrides,
            text_cfg_overrides=self.text_cfg_overrides, quick_gelu=self.quick_gelu,
        )


class TowerModel(nn.Module):
    """Base of the model family: ``self.backbone``, ``self.pixel_mean`` / ``self.pixel_std``, ``self.init_kwargs``,
    the training mode's frozen modules (kept in eval mode by :meth:`train`) and the block-hook calls."""

    init_kwargs: dict
    backbone: CLIPVisionBackbone
    mode: str = "full"

    def __init__(self) -> None:
        super().__init__()
        self.frozen_modules: list[str] = []

    # ------------------------------------------------------------------ construction
    def build_tower(self, tower: TowerArgs, keep_projection: bool, pixel_mean: Optional[Sequence[float]] = None,
                    pixel_std: Optional[Sequence[float]] = None, pin_norm: bool = False) -> CLIPVisionBackbone:
        """Build ``self.backbone`` and record in ``init_kwargs`` what a rebuild with ``pretrained=None`` needs.

        ``pin_norm``: the normalisation (given, or the pretrained source's) goes into ``init_kwargs`` as
        ``pixel_mean`` / ``pixel_std``, for models that take those arguments.
        """
        self.pretrained_source = tower.pretrained
        self.backbone = tower.build(keep_projection)
        # a rebuild from init_kwargs (pretrained=None) must get the activation the weights were trained with
        self.init_kwargs["quick_gelu"] = self.backbone.quick_gelu
        self.pixel_mean = tuple(float(v) for v in (pixel_mean or self.backbone.pixel_mean))
        self.pixel_std = tuple(float(v) for v in (pixel_std or self.backbone.pixel_std))
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            raise ValueError(f"pixel_mean/pixel_std must be 3 values with std > 0: {pixel_mean} / {pixel_std}")
        if pin_norm:
            # A rebuilt model gets its weights from the checkpoint, not from the pretrained source (which may not
            # exist where the checkpoint is loaded); the normalisation of that source is pinned instead.
            self.init_kwargs.update(pretrained=None, pixel_mean=list(self.pixel_mean),
                                    pixel_std=list(self.pixel_std))
        # rebuilt with pretrained=None, the architecture must still be the pretrained folder's (its input size)
        self.init_kwargs.update(self.backbone.architecture_overrides)
        return self.backbone

    def build_pyramid(self, channels: int, scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5), multi_level: bool = True,
                      extra_in_channels: Optional[Sequence[int]] = None) -> SimpleFeaturePyramid:
        """``self.neck``: the simple feature pyramid on the tower's width."""
        extra = tuple(extra_in_channels) if extra_in_channels is not None else (0,) * len(scales)
        self.neck = SimpleFeaturePyramid(self.backbone.width, channels, scales=tuple(scales), multi_level=multi_level,
                                         extra_in_channels=extra)
        return self.neck

    def apply_training_mode(self, mode: str, options: Optional[dict]) -> None:
        """Freeze / extend the tower for a training mode (:mod:`vlt_training.modeling.modes`)."""
        self.mode = mode
        self.frozen_modules = apply_mode(self, mode, options)

    def freeze_modules(self, names: Sequence[str]) -> None:
        """Freeze the named submodules (``requires_grad=False``; kept in eval mode by :meth:`train`)."""
        for name in names:
            freeze(self.get_submodule(name))
        self.frozen_modules = frozen_module_names(self)

    def train(self, mode: bool = True):
        """Train / eval mode; frozen parts always stay in eval (no dropout, no drop path)."""
        super().train(mode)
        for name in self.frozen_modules:
            self.get_submodule(name).eval()
        return self

    # ------------------------------------------------------------------ block hook
    def decoder_queries(self) -> dict[str, torch.Tensor]:
        """Rein's tokens as Mask2Former queries (``query_embed``, ``query_feat``); ``{}`` for any other hook."""
        hook = self.backbone.block_hook
        return hook.decoder_queries() if isinstance(hook, Rein) else {}

    def set_hook_labels(self, labels: torch.Tensor) -> None:
        """Give the padded labels (B, H, W) to FAMix's style mixing (it mixes per labelled patch); no-op otherwise."""
        hook = self.backbone.block_hook
        if isinstance(hook, StyleMixHook):
            hook.set_labels(labels)
