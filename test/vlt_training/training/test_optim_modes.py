"""The optimiser's groups on the tiny VLTSeg in every mode, against the references' settings.

Each trainable parameter's group, lr and weight decay are derived here independently of ``optim.py``:
- VLTSeg (mmseg reimplementation): backbone at ``lr_mult=0.1``, heads at the base lr; no decay on norms, biases,
  position / class embeddings and the Mask2Former query and level embeddings (``query_feat``, ``query_embed``,
  ``level_embed``: ``decay_mult=0.0`` in mmseg's Mask2Former configs).
- Rein (w1oves/Rein, ``PEFTOptimWrapperConstructor``): every Rein parameter (tokens, scale, the token MLPs and the
  token-to-query maps) at the base lr (``lr_mult=1.0``), the tokens and scale with ``decay_mult=0.0``; the MLP
  weights keep the base weight decay.
- FAMix (astra-vision/FAMix): trainable tower blocks at a tenth of the head lr (0.01 vs 0.1).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlt_training.config import OptimConfig
from vlt_training.modeling import create_model
from vlt_training.training.optim import param_groups

LR, WD, BACKBONE_MULT = 1e-4, 0.05, 0.1
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.SyncBatchNorm)
# Embedding tables that no reference regularises (2-D, so the 1-D rule does not cover them).
EMBEDDINGS = {"backbone.positional_embedding", "predictor.query_feat.weight", "predictor.query_embed.weight",
              "predictor.level_embed.weight", "pixel_decoder.level_embed"}
REIN_NO_DECAY = {"backbone.block_hook.tokens_a", "backbone.block_hook.tokens_b", "backbone.block_hook.scale"}


def _model(mode):
    torch.manual_seed(0)
    return create_model("vltseg_tiny_mask2former", class_names=["road", "car", "sky"], mode=mode)


def _expected(model) -> dict[str, tuple[str, float, float]]:
    """``name -> (group, lr, weight decay)`` from the references' rules."""
    norm_params = {f"{m}.{p}" if m else p for m, mod in model.named_modules() if isinstance(mod, NORMS)
                   for p, _ in mod.named_parameters(recurse=False)}
    out = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("backbone.block_hook."):
            kind, lr = "adapter", LR
        elif name.startswith("backbone."):
            kind, lr = "backbone", LR * BACKBONE_MULT
        else:
            kind, lr = "head", LR
        no_decay = (name in norm_params or name.endswith("bias") or name in EMBEDDINGS or name in REIN_NO_DECAY
                    or param.ndim <= 1)
        out[name] = (kind + ("/no_decay" if no_decay else ""), lr, 0.0 if no_decay else WD)
    return out


def _actual(model) -> dict[str, tuple[str, float, float]]:
    groups = param_groups(model, OptimConfig(lr=LR, weight_decay=WD, backbone_lr_mult=BACKBONE_MULT))
    return {n: (g["group"], g["lr"], g["weight_decay"]) for g in groups for n in g["names"]}


@pytest.mark.parametrize("mode", ["full", "frozen", "rein", "famix"])
def test_every_parameter_lands_in_the_reference_group(mode):
    model = _model(mode)
    expected, actual = _expected(model), _actual(model)
    assert set(actual) == set(expected)
    wrong = {n: (actual[n], expected[n]) for n in expected
             if actual[n][0] != expected[n][0] or actual[n][1] != pytest.approx(expected[n][1])
             or actual[n][2] != expected[n][2]}
    assert not wrong, f"{mode}: (actual, expected) group/lr/wd: {wrong}"


def test_rein_trains_at_the_head_lr_with_undecayed_tokens():
    actual = _actual(_model("rein"))
    for name in ("backbone.block_hook.tokens_a", "backbone.block_hook.tokens_b", "backbone.block_hook.scale"):
        assert actual[name] == ("adapter/no_decay", pytest.approx(LR), 0.0), name
    for name in ("backbone.block_hook.token_to_feat.weight", "backbone.block_hook.delta.weight",
                 "backbone.block_hook.to_query.weight", "backbone.block_hook.merge.weight",
                 "backbone.block_hook.query_to_feat.weight"):
        assert actual[name] == ("adapter", pytest.approx(LR), WD), name
    assert not any(n.startswith("backbone.") and not n.startswith("backbone.block_hook.") for n in actual)


def test_query_and_level_embeddings_get_no_weight_decay():
    actual = _actual(_model("full"))
    for name in ("predictor.query_feat.weight", "predictor.query_embed.weight", "predictor.level_embed.weight",
                 "pixel_decoder.level_embed"):
        assert actual[name][0] == "head/no_decay" and actual[name][2] == 0.0, name
    assert actual["predictor.class_embed.weight"] == ("head", pytest.approx(LR), WD)
