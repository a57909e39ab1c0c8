"""Parameter groups: backbone lr multiplier, layer-wise decay, no weight decay on norms/biases/embeddings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlt_training.config import OptimConfig
from vlt_training.training.optim import build_optimizer, param_groups


class Backbone(nn.Module):
    def __init__(self, depth=3, width=4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, width, 2)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, width))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width)) for _ in range(depth))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.query_embed = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 3)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def groups_by_name(groups):
    return {name: g for g in groups for name in g["names"]}


def test_backbone_multiplier_and_no_decay_sets():
    cfg = OptimConfig(lr=1e-4, weight_decay=0.05, backbone_lr_mult=0.1)
    by_name = groups_by_name(param_groups(Model(), cfg))
    assert by_name["head.weight"]["lr"] == pytest.approx(1e-4) and by_name["head.weight"]["weight_decay"] == 0.05
    assert by_name["head.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.blocks.0.1.weight"]["lr"] == pytest.approx(1e-5)
    assert by_name["backbone.blocks.0.1.weight"]["weight_decay"] == 0.05
    for name in ("backbone.pos_embed", "backbone.blocks.1.0.weight", "query_embed.weight", "backbone.blocks.2.1.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    assert "frozen.weight" not in by_name  # frozen parameters are not optimised


def test_layer_decay_scales_by_depth():
    cfg = OptimConfig(lr=1.0, backbone_lr_mult=0.5, layer_decay=0.8)
    by_name = groups_by_name(param_groups(Model(), cfg))
    # 3 blocks: ids patch_embed 0, block i -> i + 1, rest of backbone 4; multiplier 0.8 ** (4 - id)
    assert by_name["backbone.patch_embed.weight"]["lr"] == pytest.approx(0.5 * 0.8 ** 4)
    assert by_name["backbone.blocks.0.1.weight"]["lr"] == pytest.approx(0.5 * 0.8 ** 3)
    assert by_name["backbone.blocks.2.1.weight"]["lr"] == pytest.approx(0.5 * 0.8 ** 1)
    assert by_name["head.weight"]["lr"] == pytest.approx(1.0)  # heads are not decayed


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("lamb", None)])
def test_build_optimizer_covers_every_trainable_parameter(name, cls):
    model = Model()
    opt = build_optimizer(model, OptimConfig(name=name))
    if cls is not None:
        assert isinstance(opt, cls)
    else:
        from timm.optim import Lamb

        assert isinstance(opt, Lamb)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}
    model.head(torch.randn(2, 4)).sum().backward()
    before = model.head.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.head.weight)
