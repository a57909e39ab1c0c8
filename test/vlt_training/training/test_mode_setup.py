"""Every training mode through the real trainer: config key -> model, parameter counts in the log and the
checkpoint, frozen weights unchanged, checkpoint round trip (load_model and the torch engine), FAMix's style
bank cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny_bench import tiny_bench

from vlt_perception.engines.torch_engine import TorchEngine
from vlt_training.config import ConfigError, load_config
from vlt_training.training.checkpoint import load_model, read_meta, resolve_checkpoint
from vlt_training.training.mode_setup import style_bank_path
from vlt_training.training.trainer import build_model, seed_everything, train

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return tiny_bench(tmp_path_factory.mktemp("bench"))


def mode_cfg(bench: Path, mode: str, *overrides: str):
    return load_config(REPO / "config/train/tiny_cpu.yaml", [
        f"data.root={bench}", "data.synthetic.enabled=false", "data.crop_size=[32,64]", f"model.mode={mode}",
        "model.overrides={train_num_points: 64}", "train.max_iters=2", "train.batch_size=2",
        "train.checkpoint_interval=2", "train.log_interval=1", "schedule.warmup_iters=1", "optim.lr=1e-2",
        "train.num_workers=0", "model.mode_options.famix.mine_images=2", "model.mode_options.famix.pin_steps=2",
        "model.mode_options.famix.grid=2",  # 32x64 crops: a 2x4 token grid
        *overrides])


@pytest.mark.parametrize("mode", ["full", "frozen", "rein", "famix"])
def test_train_then_load_gives_the_same_model(bench, tmp_path, mode, capsys):
    cfg = mode_cfg(bench, mode)
    result = train(cfg, tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    assert f"mode {mode}: " in out and "trainable of" in out

    model, metadata = load_model(tmp_path / "run")
    assert model.mode == mode and metadata.extra["mode"] == mode
    counts = (metadata.extra["trainable_params"], metadata.extra["total_params"])
    trained = result.model
    assert counts == (sum(p.numel() for p in trained.parameters() if p.requires_grad),
                      sum(p.numel() for p in trained.parameters()))
    assert counts[0] <= counts[1] and (counts[0] < counts[1] or mode == "full")
    assert read_meta(resolve_checkpoint(tmp_path / "run"))["model_kwargs"]["mode"] == mode
    # rebuilt from the checkpoint alone (strict loading inside load_model): same outputs
    trained.eval()
    x = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x)["sem_seg"], trained(x)["sem_seg"])
    engine = TorchEngine.from_checkpoint(tmp_path / "run", precision="fp32", device="cpu")
    labels = engine.infer(x.numpy())["labels"]
    np.testing.assert_array_equal(labels, trained.semantic_inference(x).argmax(1).to(torch.uint8).numpy())

    # frozen parameters are bit-identical to the freshly built (seeded) model after training
    seed_everything(cfg.train.seed)
    fresh = dict(build_model(cfg.model).named_parameters())
    for name, p in trained.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, fresh[name]), name


def test_famix_style_bank_is_cached_and_invalidated(bench, tmp_path, capsys):
    cache = tmp_path / "styles.safetensors"
    cfg = mode_cfg(bench, "famix", f"model.mode_options.famix.cache={cache}")
    train(cfg, tmp_path / "a", progress=False)
    assert "FAMix: mining styles" in capsys.readouterr().out and cache.is_file()
    assert style_bank_path(cfg, tmp_path / "a") == cache
    train(mode_cfg(bench, "famix", f"model.mode_options.famix.cache={cache}"), tmp_path / "b", progress=False)
    assert "is up to date" in capsys.readouterr().out
    train(mode_cfg(bench, "famix", f"model.mode_options.famix.cache={cache}",
                   "model.mode_options.famix.style_words=[rainy]"), tmp_path / "c", progress=False)
    assert "FAMix: mining styles" in capsys.readouterr().out  # other style words: mined again


def test_unknown_mode_is_a_config_error(bench):
    with pytest.raises(ConfigError, match="model.mode"):
        mode_cfg(bench, "lora")


def test_mode_on_a_model_without_modes_names_the_problem():
    cfg = load_config(REPO / "config/train/tiny_det_cpu.yaml", ["model.mode=rein"])
    with pytest.raises(ValueError, match="has no training modes"):
        build_model(cfg.model)
