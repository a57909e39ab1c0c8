"""Training modes on the tiny VLTSeg: what is frozen, what trains, eval mode of frozen parts, parameter counts."""

import pytest
import torch

from vlt_training.config import OptimConfig
from vlt_training.training.optim import build_optimizer, param_groups, trainable_names
from vlt_training.modeling import create_model
from vlt_training.modeling.modes import MODES, default_freeze_blocks, parameter_counts

H, W = 32, 64
CLASSES = ["road", "car", "sky"]


def _model(mode, **kwargs):
    torch.manual_seed(0)
    return create_model("vltseg_tiny_mask2former", class_names=CLASSES, mode=mode, train_num_points=64,
                        drop_path_rate=0.2, **kwargs)


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, H, W, generator=g)
    sem = torch.randint(0, len(CLASSES), (2, H, W), generator=g)
    return images, [{"sem_seg": s} for s in sem]


def _frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("mode", ["frozen", "rein", "famix"])
def test_frozen_weights_bit_identical_after_training_steps(mode):
    model = _model(mode)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and trainable
    opt = build_optimizer(model, OptimConfig(lr=1e-2, weight_decay=0.05, backbone_lr_mult=1.0))
    model.train()
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        sum(model(*_batch(step)).values()).backward()
        opt.step()
    params = dict(model.named_parameters())
    for name, before in frozen.items():
        assert torch.equal(params[name], before), f"{mode}: frozen {name} changed"
        assert params[name].grad is None, f"{mode}: frozen {name} got a gradient"
    changed = [n for n, before in trainable.items() if not torch.equal(params[n], before)]
    assert len(changed) > 0.9 * len(trainable), f"{mode}: only {len(changed)} of {len(trainable)} trained"


def test_what_each_mode_freezes():
    # what the architecture itself keeps frozen in every mode (e.g. a guidance's frozen text tower)
    base = _frozen_names(_model("full"))
    assert not any(n.startswith("backbone.") for n in base)
    frozen = _model("frozen")
    assert _frozen_names(frozen) == base | {n for n, _ in frozen.named_parameters() if n.startswith("backbone.")}
    rein = _model("rein")
    assert {n for n, p in rein.named_parameters() if n.startswith("backbone.") and p.requires_grad} == {
        n for n, _ in rein.named_parameters() if n.startswith("backbone.block_hook.")}
    famix = _model("famix")
    n = default_freeze_blocks(famix.backbone.depth)
    assert n == 3  # 4-block tiny tower: 3 frozen, the last trains
    for name, p in famix.named_parameters():
        if name in base:
            continue
        early = any(name.startswith(f"backbone.resblocks.{i}.") for i in range(n)) or name in (
            "backbone.class_embedding", "backbone.positional_embedding") or name.startswith(
            ("backbone.conv1", "backbone.ln_pre"))
        assert p.requires_grad != early, name
    assert famix.criterion.label_smoothing == 0.1
    custom = _model("famix", mode_options={"freeze_blocks": 2, "style_block": 1})
    assert any(p.requires_grad for p in custom.backbone.resblocks[2].parameters())
    assert not any(p.requires_grad for p in custom.backbone.resblocks[1].parameters())


def test_frozen_parts_stay_in_eval_mode_while_training():
    for mode in ("frozen", "rein", "famix"):
        model = _model(mode).train()
        for name in model.frozen_modules:
            module = model.get_submodule(name)
            assert not any(m.training for m in module.modules()), f"{mode}: {name} in train mode"
        assert model.predictor.training and model.pixel_decoder.training
        model.eval()
        assert not any(m.training for m in model.modules())


def test_no_drop_path_in_frozen_blocks():
    """open_clip ViT blocks are dropped by the backbone: frozen (eval) blocks must run deterministically."""
    model = _model("frozen").train()
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        a, b = model.backbone(x), model.backbone(x)
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)
    full = _model("full").train()
    with torch.no_grad():
        outs = [full.backbone(x)[-1] for _ in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # the same drop path rate does act when trained


def test_optimiser_gets_only_trainable_parameters():
    model = _model("rein")
    groups = param_groups(model, OptimConfig())
    names = set(trainable_names(groups))
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("backbone.resblocks") for n in names)


def test_parameter_counts_and_init_kwargs():
    for mode in MODES:
        model = _model(mode)
        counts = parameter_counts(model)
        assert counts["total"] == sum(p.numel() for p in model.parameters())
        assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert model.init_kwargs["mode"] == mode
    trainable = {mode: parameter_counts(_model(mode))["trainable"] for mode in MODES}
    assert trainable["frozen"] < trainable["famix"] < trainable["full"]
    assert trainable["frozen"] < trainable["rein"] < trainable["full"]


def test_bad_mode_options_fail_at_build():
    with pytest.raises(ValueError, match="unknown mode"):
        _model("lora")
    with pytest.raises(ValueError, match="unknown mode_options"):
        _model("rein", mode_options={"tokens": 5})
    with pytest.raises(ValueError, match="style_block < freeze_blocks"):
        _model("famix", mode_options={"freeze_blocks": 1, "style_block": 1})
    with pytest.raises(ValueError, match="num_tokens == num_queries"):
        _model("rein", mode_options={"num_tokens": 7})
