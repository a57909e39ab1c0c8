"""The shipped training recipes (config/train/*.yaml) against the reference settings (docs/models.md).

Every file must load; the reference recipes must carry the reimplementation's values, and every value where a
recipe deliberately differs must say why in a comment on that line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlt_training.config import load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "train"
ALL = sorted(CONFIG_DIR.glob("*.yaml"))
# CPU-sized configs for tests and the demo: not reproductions of a paper setting
TINY = {"tiny_cpu.yaml", "tiny_det_cpu.yaml", "tiny_mt_cpu.yaml"}


def _datasets(cfg):
    return {d.display_name: d for d in cfg.eval.datasets}


def test_every_config_loads():
    assert len(ALL) >= 5
    for path in ALL:
        load_config(path)


@pytest.mark.parametrize("path", [p for p in ALL if p.name not in TINY], ids=lambda p: p.name)
def test_reference_recipes_use_poly_09(path):
    assert load_config(path).schedule.power == 0.9


@pytest.mark.parametrize("path", [p for p in ALL if p.name in TINY], ids=lambda p: p.name)
def test_tiny_configs_say_why_they_differ(path):
    line = next(l for l in path.read_text().splitlines() if l.strip().startswith("power:"))
    assert "differs" in line


def test_eva02_l_recipes_use_drop_path_02():
    eva = [p for p in ALL if "eva02_l14" in p.name]
    assert eva
    for path in eva:
        cfg = load_config(path)
        assert cfg.model.name.startswith("vltseg_eva02_l14") and cfg.model.overrides["drop_path_rate"] == 0.2


def test_gta5_fixed_resize_then_crop_512():
    cfg = load_config(CONFIG_DIR / "gta5_eva02_l14.yaml")
    aug = cfg.data.augment
    assert (aug.scale, aug.keep_ratio, aug.resize_ratio) == ([720, 1280], False, [1.0, 1.0])
    assert cfg.data.crop_size == [512, 512]
    # synthetic-to-real evaluation at 1024x512 keep-ratio (reference test/synth2{cityscapes,bdd100k,mapillary}.py,
    # commit 126afc4: Resize(scale=(1024, 512), keep_ratio=True)), slide 512 / 426
    ds = _datasets(cfg)
    assert ds["cityscapes"].resize == ds["bdd100k"].resize == ds["mapillary"].resize == [512, 1024]
    assert (cfg.eval.mode, cfg.eval.crop_size, cfg.eval.stride) == ("slide", [512, 512], [426, 426])
    # the reference's constant-then-poly schedule: PolyLR(begin=500)
    assert (cfg.schedule.warmup_iters, cfg.schedule.warmup_ratio) == (500, 1.0)


def test_cityscapes_crop_1024_and_acdc_eval_1080p_slide_1024_768():
    cfg = load_config(CONFIG_DIR / "cityscapes_acdc_eva02_l14.yaml")
    assert cfg.data.crop_size == [1024, 1024]
    # reference train/cityscapes_1024x1024.py: Resize(scale=(2048, 1024)) (keep_ratio=False), no scale jitter
    aug = cfg.data.augment
    assert (aug.scale, aug.keep_ratio, aug.resize_ratio) == ([1024, 2048], False, [1.0, 1.0])
    assert (cfg.eval.mode, cfg.eval.crop_size, cfg.eval.stride) == ("slide", [1024, 1024], [768, 768])
    ds = _datasets(cfg)
    assert ds["acdc"].resize == [1080, 1920] and ds["cityscapes"].resize == [1024, 2048]


def test_synthetic_to_cityscapes_detection_eval_at_1024x512():
    cfg = load_config(CONFIG_DIR / "det_synthetic_to_cityscapes_vit_b16.yaml")
    assert cfg.eval.resize == [512, 1024]
    # ViTDet-B's detector is Mask R-CNN, and the benchmark's Cityscapes layout has the instance maps it needs
    assert cfg.model.name == "vltdet_vit_b16_maskrcnn" and cfg.data.train[0].name == "cityscapes"
    assert all(d.resize is None for d in cfg.eval.datasets)  # every dataset at that scale


def test_dataset_resize_reaches_the_task_evaluator(tmp_path, monkeypatch):
    """``eval.datasets[i].resize`` replaces ``eval.resize`` for that dataset only."""
    from vlt_training.tasks import registry as tasks
    from vlt_training.tasks import runner

    seen = {}

    def fake_evaluate(model, records, cfg, device, amp):
        seen[records[0]] = cfg.eval.resize
        return {"overall": {"mIoU": 0.5}, "conditions": {}, "num_images": 1}

    hooks = tasks.TaskHooks("recipe_probe", "semantic_segmentation", None, fake_evaluate, "mIoU")
    monkeypatch.setitem(tasks._TASKS, "recipe_probe", hooks)
    monkeypatch.setattr(runner, "load_records", lambda ds, data, flt: [ds.display_name])
    cfg = load_config(CONFIG_DIR / "cityscapes_acdc_eva02_l14.yaml", ["task=segmentation"])
    cfg.task = "recipe_probe"
    cfg.eval.resize = [64, 128]
    cfg.eval.datasets[0].resize = None
    runner.evaluate(None, cfg)
    assert seen == {"cityscapes": [64, 128], "acdc": [1080, 1920]}
