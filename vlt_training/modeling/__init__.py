"""Models of vlt_training: open_clip backbones, simple feature pyramid, Mask2Former, VLTDet head, registry.

    from vlt_training.modeling import create_model, list_models
    model = create_model("vltseg_tiny_mask2former", class_names=["road", "car"])
"""

from __future__ import annotations

import importlib
import importlib.util

from vlt_training.modeling.registry import create_model, is_model, list_models, register_model

# Model families whose factories register on import. Families that are not in the tree (yet) are skipped;
# an import error inside an existing family is raised, not hidden.
_FAMILIES = ("vlt_training.modeling.meta_arch.vltseg", "vlt_training.modeling.meta_arch.vltdet",
             "vlt_training.pretrain.models")
for _module in _FAMILIES:
    if importlib.util.find_spec(_module) is not None:
        importlib.import_module(_module)

__all__ = ["create_model", "is_model", "list_models", "register_model"]
