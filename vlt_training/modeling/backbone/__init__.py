"""open_clip vision towers as dense multi-level backbones."""

from vlt_training.modeling.backbone.clip_vit import (
    CLIPVisionBackbone,
    build_open_clip,
    evenly_spaced_indices,
    interpolate_pos_embed,
    register_open_clip_configs,
    resolve_quick_gelu,
)

__all__ = [
    "CLIPVisionBackbone", "build_open_clip", "evenly_spaced_indices", "interpolate_pos_embed",
    "register_open_clip_configs", "resolve_quick_gelu",
]
