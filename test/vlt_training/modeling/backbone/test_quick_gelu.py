"""QuickGELU for OpenAI weights: the decision from (config, tag) and the activation of the tower actually built.

Weights cannot be downloaded here, so the tag path is exercised with open_clip's own download step replaced by a
local file holding weights of the same (shrunk) architecture: everything else (tag lookup, config, loading) is
open_clip's real code.
"""

import warnings

import pytest
import torch
from open_clip.transformer import QuickGELU

from vlt_training.modeling import create_model
from vlt_training.modeling.backbone import CLIPVisionBackbone, build_open_clip, resolve_quick_gelu

# narrow, shallow towers: the activation, not the size, is under test (4 blocks: the backbone's 4 outputs)
SMALL = dict(vision_cfg_overrides={"layers": 4, "width": 128},
             text_cfg_overrides={"layers": 1, "width": 64, "heads": 2})


def _activations(module: torch.nn.Module) -> set[str]:
    return {type(m.mlp.gelu).__name__ for m in module.modules() if hasattr(m, "mlp") and hasattr(m.mlp, "gelu")}


@pytest.mark.parametrize("model_name, pretrained, expected", [
    ("ViT-B-16", "openai", True),
    ("ViT-L-14", "openai", True),
    ("ViT-L-14", "OpenAI", True),
    ("ViT-B-16", "laion2b_s34b_b88k", False),
    ("ViT-L-14", "datacomp_xl_s13b_b90k", False),
    ("ViT-B-16", None, False),
    ("ViT-B-16-quickgelu", None, True),   # the config itself asks for it
    ("ViT-B-16", "/weights/openai_b16.pt", False),  # a file says nothing: the caller must say quick_gelu=True
    ("vlt-tiny-vit", None, False),
])
def test_decision_follows_config_and_tag(model_name, pretrained, expected):
    assert resolve_quick_gelu(model_name, pretrained) is expected


def test_explicit_choice_wins():
    assert resolve_quick_gelu("ViT-B-16", "/weights/openai_b16.pt", quick_gelu=True) is True
    assert resolve_quick_gelu("ViT-B-16", "openai", quick_gelu=False) is False


@pytest.mark.parametrize("model_name, pretrained", [("ViT-B-16", "openai"), ("ViT-B-16", "laion2b_s34b_b88k"),
                                                    ("ViT-L-14", "openai")])
def test_built_tower_activation_matches_the_tag(model_name, pretrained):
    decided = resolve_quick_gelu(model_name, pretrained)
    backbone = CLIPVisionBackbone(model_name, pretrained=None, quick_gelu=decided, keep_projection=False, **SMALL)
    expected = "QuickGELU" if decided else "GELU"
    assert _activations(backbone) == {expected}
    assert _activations(backbone.__dict__["_clip"].transformer) == {expected}  # the text tower too
    assert backbone.quick_gelu is decided


def test_openai_tag_builds_quick_gelu_through_open_clip(tmp_path, monkeypatch):
    """The real tag path: open_clip looks the tag up and loads a checkpoint into a tower built with QuickGELU."""
    import open_clip.factory

    torch.manual_seed(0)
    reference = build_open_clip("ViT-B-16", None, quick_gelu=True, **SMALL)
    weights = tmp_path / "openai_b16_small.pt"
    torch.save(reference.state_dict(), weights)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: str(weights))
    with warnings.catch_warnings(record=True) as record:  # open_clip warns on a QuickGELU mismatch
        warnings.simplefilter("always")
        backbone = CLIPVisionBackbone("ViT-B-16", pretrained="openai", **SMALL)
    assert not [w for w in record if "QuickGELU" in str(w.message)]
    assert isinstance(backbone.resblocks[0].mlp.gelu, QuickGELU)
    torch.testing.assert_close(backbone.conv1.weight, reference.visual.conv1.weight)  # the weights did load


def test_rebuild_from_init_kwargs_keeps_the_activation():
    model = create_model("vltseg_tiny_mask2former", class_names=["a", "b"], quick_gelu=True)
    assert model.init_kwargs["quick_gelu"] is True
    assert _activations(model.backbone) == {"QuickGELU"}
    rebuilt = create_model("vltseg_tiny_mask2former", **model.init_kwargs)
    assert _activations(rebuilt.backbone) == {"QuickGELU"}
    det = create_model("vltdet_tiny_fcos", class_names=["car"])
    assert det.init_kwargs["quick_gelu"] is False and _activations(det.backbone) == {"GELU"}
