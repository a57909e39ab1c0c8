"""The Rein and FAMix recipes against their references (w1oves/Rein, astra-vision/FAMix), and the SGD optimiser the
FAMix recipe needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlt_training.config import OptimConfig, load_config
from vlt_training.modeling import create_model
from vlt_training.training.optim import build_optimizer

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "train"


def test_rein_recipe_follows_w1oves_rein():
    cfg = load_config(CONFIG_DIR / "rein_gta5_eva02_l14.yaml")
    assert cfg.model.mode == "rein" and cfg.model.overrides["text_guidance"] is False
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adamw", 1e-4, 0.05)
    assert (cfg.train.max_iters, cfg.train.batch_size, cfg.train.clip_grad_norm) == (40000, 4, None)
    assert (cfg.schedule.power, cfg.schedule.warmup_iters) == (0.9, 0)
    aug = cfg.data.augment
    # RandomChoiceResize: short edge 512 x 0.5 .. 2.0 (max 2048), crop 512 with cat_max_ratio 0.75
    assert (cfg.data.crop_size, aug.scale, aug.keep_ratio, aug.resize_ratio) == ([512, 512], [512, 2048], True,
                                                                                 [0.5, 2.0])
    assert (cfg.eval.mode, cfg.eval.crop_size, cfg.eval.stride) == ("slide", [512, 512], [341, 341])
    rein = cfg.model.mode_options.rein
    assert (rein.num_tokens, rein.rank, rein.scale_init, rein.link_queries) == (None, 16, 1e-3, True)


def test_famix_recipe_follows_astra_vision_famix():
    cfg = load_config(CONFIG_DIR / "famix_gta5_eva02_l14.yaml")
    assert cfg.model.mode == "famix" and cfg.model.overrides["text_guidance"] is False
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.backbone_lr_mult) == ("sgd", 0.1, 0.9, 1e-4, 0.1)
    assert (cfg.train.max_iters, cfg.train.batch_size, cfg.train.clip_grad_norm) == (40000, 8, None)
    assert (cfg.schedule.power, cfg.schedule.warmup_iters) == (0.9, 0)
    assert cfg.data.crop_size == [768, 768] and cfg.data.augment.scale is None
    f = cfg.model.mode_options.famix
    assert (f.grid, f.beta, f.label_smoothing, f.mine_images) == (3, 0.1, 0.1, None)
    assert (f.pin_optimizer, f.pin_lr, f.pin_momentum, f.pin_steps) == ("sgd", 1.0, 0.9, 100)


def test_sgd_groups_at_the_famix_rates():
    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former", class_names=["a", "b"], mode="famix")
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                                             backbone_lr_mult=0.1))
    assert isinstance(opt, torch.optim.SGD)
    lrs = {g["group"]: (g["lr"], g["weight_decay"], g["momentum"]) for g in opt.param_groups}
    assert lrs["backbone"] == (pytest.approx(0.01), 1e-4, 0.9) and lrs["head"] == (pytest.approx(0.1), 1e-4, 0.9)
