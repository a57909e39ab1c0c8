"""The multitask task on the synthetic benchmark: one augmentation draw for every target, joint training with the
trainer, per-task evaluation per condition, the checkpoint's metadata, and the frozen-tower route from a VLTSeg run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny_bench import tiny_bench

from vlt_perception.labels import CITYSCAPES_CLASSES, CITYSCAPES_THING_CLASSES
from vlt_perception.metadata import TASK_MULTITASK
from vlt_training.config import load_config
from vlt_training.data.records import load_records, load_train_records
from vlt_training.tasks.multitask import MultiTaskTrainDataset, has_both
from vlt_training.tasks.registry import get_task
from vlt_training.training.checkpoint import load_model
from vlt_training.training.trainer import train

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "config/train/tiny_mt_cpu.yaml"
SMALL = ("data.crop_size=[32,64]", "train.max_iters=1", "train.checkpoint_interval=1", "train.batch_size=2",
         "train.num_workers=0", "model.overrides.train_num_points=64")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """4 training images of 32x64 and one validation scene under fog, from the synthetic benchmark generator."""
    return tiny_bench(tmp_path_factory.mktemp("bench"))


def _cfg(bench: Path, *overrides: str, path: Path = CONFIG):
    return load_config(path, [f"data.root={bench}", "data.synthetic.enabled=false", *SMALL, *overrides])


def test_one_draw_moves_label_map_boxes_and_masks_together(bench):
    """Every instance mask lies on label-map pixels of its own class, after resize, crop and flip."""
    cfg = _cfg(bench, "data.augment.resize_ratio=[0.8,1.6]", "data.augment.flip_prob=0.5",
               "data.augment.photometric=false", "data.crop_size=[24,40]")
    records = load_train_records(cfg.data, has_both)
    assert records
    dataset = MultiTaskTrainDataset(records, cfg.data.crop_size, cfg.data.augment, [0.0] * 3, [1.0] * 3,
                                    with_masks=True)
    checked = 0
    for seed in range(12):
        image, target = dataset[(seed % len(records), seed)]
        assert image.shape == (3, 24, 40) and target["sem_seg"].shape == (24, 40)
        for box, label, mask in zip(target["boxes"], target["labels"], target["masks"]):
            seg_id = CITYSCAPES_CLASSES.index(CITYSCAPES_THING_CLASSES[int(label)])
            on = mask.bool()
            if on.sum() < 4:
                continue
            agree = (target["sem_seg"][on] == seg_id).float().mean()
            name = CITYSCAPES_THING_CLASSES[int(label)]
            assert agree > 0.9, f"seed {seed}: the mask of a {name} sits on other labels"
            ys, xs = torch.nonzero(on, as_tuple=True)
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 1
            checked += 1
    assert checked >= 5


def test_joint_training_evaluates_both_tasks_per_condition_and_rebuilds(bench, tmp_path):
    result = train(_cfg(bench), tmp_path / "mt", progress=False)
    assert any(k.startswith("seg_") for k in result.last_losses)
    assert any(k.startswith("det_") for k in result.last_losses)
    model, metadata = load_model(result.checkpoint)
    assert metadata.task == TASK_MULTITASK
    assert metadata.detection_class_names == list(model.detection_class_names)
    assert metadata.class_names == list(model.class_names)

    cfg = _cfg(bench)
    hooks = get_task("multitask")
    acdc = next(ds for ds in cfg.eval.datasets if ds.display_name == "acdc")
    report = hooks.evaluate(model, load_records(acdc, cfg.data, hooks.record_filter), cfg, "cpu")
    fog = report["conditions"]["fog"]
    for key in ("mIoU", "mAP", "AP50"):
        assert isinstance(fog[key], float)
    assert "per_class_iou" in fog["segmentation"] and "per_class_AP" in fog["detection"]


def test_frozen_tower_route_trains_only_the_detection_head(bench, tmp_path):
    seg = train(load_config(REPO / "config/train/tiny_cpu.yaml", [
        f"data.root={bench}", "data.synthetic.enabled=false", *SMALL]), tmp_path / "seg", progress=False)
    frozen = _cfg(bench, f"model.init_from={tmp_path / 'seg'}",
                  "model.init_prefixes=[backbone.,neck.,pixel_text.,pixel_decoder.,predictor.]",
                  "model.overrides.seg_loss_weight=0.0", "model.overrides.freeze=[backbone,neck,segmentation]",
                  "train.max_iters=2")
    det = train(frozen, tmp_path / "det", progress=False)
    assert det.last_losses and all(k.startswith("det_") for k in det.last_losses)
    seg_state = seg.model.state_dict()
    for name, tensor in det.model.state_dict().items():
        if name.startswith(("backbone.", "neck.", "pixel_decoder.", "predictor.")):
            torch.testing.assert_close(tensor, seg_state[name], rtol=0, atol=0, msg=name)
    head = [p for n, p in det.model.named_parameters() if n.startswith("head.")]
    assert head and all(p.requires_grad for p in head)
    assert not any(p.requires_grad for n, p in det.model.named_parameters() if n.startswith("backbone."))


def test_task_is_registered_with_the_multitask_metadata():
    hooks = get_task("multitask")
    assert hooks.metadata_task == TASK_MULTITASK and hooks.primary_metric == "mIoU"
    assert not hooks.record_filter({"sem_seg_file_name": "a.png"})
    assert hooks.record_filter({"sem_seg_file_name": "a.png", "annotations": []})


def test_evaluate_refuses_a_single_task_model(bench):
    from vlt_training.modeling import create_model

    model = create_model("vltseg_tiny_mask2former")
    with pytest.raises(ValueError, match="multi-task model"):
        get_task("multitask").evaluate(model, [], _cfg(bench), "cpu")


def test_config_loads():
    cfg = load_config(CONFIG)
    assert cfg.task == "multitask" and cfg.model.name.startswith("vltmt_")
    assert np.isclose(cfg.model.overrides["seg_loss_weight"], 1.0)
