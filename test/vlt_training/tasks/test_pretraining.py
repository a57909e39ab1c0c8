"""The pretraining tasks plug into the trainer's registry and config; bad settings fail at start-up."""

from __future__ import annotations

import pytest

from vlt_training.config import ConfigError, load_config
from vlt_training.tasks.registry import get_task, list_tasks

CONFIG = "config/pretrain/tiny_clip.yaml"


def test_tasks_are_registered_and_configs_resolve():
    assert {"clip_pretrain", "vision_pretrain"} <= set(list_tasks())
    hooks = get_task("clip_pretrain")
    assert hooks.metadata_task == "pretraining" and hooks.load_records is not None
    cfg = load_config(CONFIG)
    assert cfg.schedule.policy == "cosine" and cfg.pretrain.corpus.num_train > 0
    no_night = load_config("config/pretrain/tiny_clip_no_night.yaml")
    assert no_night.pretrain.corpus.exclude_dark and no_night.train.max_iters == cfg.train.max_iters
    vision = load_config("config/pretrain/tiny_vision.yaml")
    assert vision.task == "vision_pretrain" and vision.pretrain.corpus == cfg.pretrain.corpus  # same images, budget
    assert vision.train.max_iters == cfg.train.max_iters and vision.train.batch_size == cfg.train.batch_size


def test_records_are_pair_indices_and_sizes_must_agree():
    hooks = get_task("clip_pretrain")
    cfg = load_config(CONFIG, ["pretrain.corpus.num_train=5"])
    assert hooks.load_records(cfg) == [{"split": "train", "index": i} for i in range(5)]
    with pytest.raises(ValueError, match="data.crop_size"):
        hooks.load_records(load_config(CONFIG, ["data.crop_size=[64,128]"]))


def test_unknown_keys_and_schedules_fail_naming_the_key():
    with pytest.raises(ConfigError, match="pretrain.corpus.nmu_train"):
        load_config(CONFIG, ["pretrain.corpus.nmu_train=3"])
    with pytest.raises(ConfigError, match="schedule.policy"):
        load_config(CONFIG, ["schedule.policy=step"])


def test_the_pretrain_cli_refuses_a_segmentation_config(capsys):
    from vlt_training.cli.pretrain import main

    assert main(["--config", "config/train/tiny_cpu.yaml"]) == 2
    assert "clip_pretrain" in capsys.readouterr().err
