"""Models of vlt_training: open_clip backbones, simple feature pyramid, Mask2Former, VLTDet head, registry.

    from vlt_training.modeling import create_model, list_models
    model = create_model("vltseg_tiny_mask2former", class_names=["road", "car"])
"""

from __future__ import annotations

from vlt_training.modeling.registry import create_model, is_model, list_models, model_norm, register_model

# The model families register their factories on import; plain imports, so the dependency is visible to the
# import contracts (setup.cfg [importlinter]).
from vlt_training.modeling.meta_arch import clip_pretrain, vltdet, vltseg  # noqa: F401

__all__ = ["create_model", "is_model", "list_models", "model_norm", "register_model"]
