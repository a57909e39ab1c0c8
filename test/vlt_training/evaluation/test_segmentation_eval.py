"""Segmentation evaluation: mIoU against hand-computed confusion matrices, whole vs slide inference, retention,
JSON report. Data are tiny PNG folders in Cityscapes layout read by ``vlt_perception.datasets``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from vlt_perception.labels import CITYSCAPES_TRAIN_ID_TO_LABEL_ID
from vlt_training.config import Config, DatasetConfig, EvalConfig
from vlt_training.evaluation.segmentation import evaluate_records, slide_inference, whole_inference
from vlt_training.tasks.runner import evaluate, format_table, write_json

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


class ChannelArgmax(nn.Module):
    """Pointwise (so translation-equivariant) model: the scores of class c are input channel c."""

    model_name = "channel_argmax"
    init_kwargs: dict = {}
    class_names = ["road", "sidewalk", "building"]
    pixel_mean = (0.0, 0.0, 0.0)
    pixel_std = (1.0, 1.0, 1.0)

    def __init__(self, expect_size=None):
        super().__init__()
        self.expect_size = expect_size
        self.calls = 0

    def forward(self, images, targets=None):
        if self.expect_size is not None:
            assert tuple(images.shape[-2:]) == tuple(self.expect_size)
        self.calls += 1
        return {"sem_seg": images * 2.0 + 1.0}  # B, 3, H, W


def write_cityscapes(root: Path, split: str, frames: list[tuple[np.ndarray, np.ndarray]], city: str = "testcity"):
    """Write (RGB image, train-ID label map) pairs in the official Cityscapes layout."""
    to_label_id = np.zeros(256, np.uint8)  # 255 (ignore) -> labelId 0 'unlabeled'
    for train_id, label_id in CITYSCAPES_TRAIN_ID_TO_LABEL_ID.items():
        to_label_id[train_id] = label_id
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i, (image, train_ids) in enumerate(frames):
        name = f"{city}_000000_{i:06d}"
        cv2.imwrite(str(img_dir / f"{name}_leftImg8bit.png"), image[..., ::-1])
        cv2.imwrite(str(gt_dir / f"{name}_gtFine_labelIds.png"), to_label_id[train_ids])
        cv2.imwrite(str(gt_dir / f"{name}_gtFine_labelTrainIds.png"), train_ids)
        cv2.imwrite(str(gt_dir / f"{name}_gtFine_instanceIds.png"), to_label_id[train_ids].astype(np.uint16))
    return root


def colour_image(classes: np.ndarray) -> np.ndarray:
    """Image whose argmax channel is ``classes`` (0 red, 1 green, 2 blue)."""
    return np.array([RED, GREEN, BLUE], np.uint8)[classes]


def cfg_for(root: Path, **eval_kw) -> Config:
    cfg = Config()
    cfg.data.root = str(root)
    cfg.eval = EvalConfig(datasets=[DatasetConfig(name="cityscapes", root="source", split="val", label="source"),
                                    DatasetConfig(name="cityscapes", root="target", split="val", label="target")],
                          **eval_kw)
    return cfg


def test_miou_matches_hand_computed_confusion(tmp_path):
    # 2x4 frame. Predictions (from colours) vs ground truth:
    pred = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    gt = np.array([[0, 1, 1, 1], [2, 2, 255, 2]], np.uint8)
    # Confusion (rows gt, cols pred), ignoring the 255 pixel:
    #   gt0: [1, 0, 0]   gt1: [1, 2, 0]   gt2: [1, 0, 2]
    # IoU0 = 1 / (1 + 3 - 1) = 1/3, IoU1 = 2 / (3 + 2 - 2) = 2/3, IoU2 = 2 / (3 + 2 - 2) = 2/3
    write_cityscapes(tmp_path / "source", "val", [(colour_image(pred), gt)])
    write_cityscapes(tmp_path / "target", "val", [(colour_image(pred), gt)])
    cfg = cfg_for(tmp_path)
    from vlt_training.data.records import load_records

    records = load_records(cfg.eval.datasets[0], cfg.data)
    result = evaluate_records(ChannelArgmax(), records, cfg, progress=False)
    ious = result["overall"]["per_class_iou"]
    assert ious["road"] == pytest.approx(1 / 3)
    assert ious["sidewalk"] == pytest.approx(2 / 3)
    assert ious["building"] == pytest.approx(2 / 3)
    assert result["overall"]["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert result["overall"]["pixel_accuracy"] == pytest.approx(5 / 7)
    assert result["num_images"] == 1


def test_retention_report_and_json(tmp_path):
    gt = np.array([[0, 0, 1, 1], [2, 2, 2, 2]], np.uint8)
    perfect = colour_image(gt.astype(np.int64))
    wrong = perfect.copy()
    wrong[1, :2] = RED  # two building pixels predicted as road in the target domain
    write_cityscapes(tmp_path / "source", "val", [(perfect, gt), (perfect, gt)])
    write_cityscapes(tmp_path / "target", "val", [(perfect, gt), (wrong, gt)])
    report = evaluate(ChannelArgmax(), cfg_for(tmp_path))
    assert report["source"] == "source" and report["primary_metric"] == "mIoU"
    assert report["datasets"]["source"]["overall"]["mIoU"] == pytest.approx(1.0)
    # Target: gt0 4 px all right + 2 building px predicted road -> IoU0 4/6; IoU1 1; IoU2 6/8
    target = (4 / 6 + 1 + 6 / 8) / 3
    assert report["datasets"]["target"]["overall"]["mIoU"] == pytest.approx(target)
    assert report["retention"]["target"]["overall"] == pytest.approx(target / 1.0)
    table = format_table(report)
    assert "source" in table and "target" in table and "sidewalk" in table
    # rPD = 100 x target / source mIoU, shown under that one name
    assert "rPD" in table.splitlines()[0] and "retention" not in table
    target_row = next(line for line in table.splitlines() if line.startswith("target "))
    assert target_row.split()[-1] == f"{100 * target:.2f}"
    write_json(report, tmp_path / "out" / "report.json")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["retention"]["target"]["overall"] == \
        pytest.approx(target)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.json"]


def test_slide_equals_whole_for_pointwise_model():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 37, 53)
    whole = whole_inference(ChannelArgmax(), images, size_divisor=1)
    model = ChannelArgmax(expect_size=(16, 24))
    slide = slide_inference(model, images, crop_size=(16, 24), stride=(10, 14))
    assert torch.allclose(whole, slide, atol=1e-6)
    # ceil((37 - 16) / 10) + 1 = 4 rows (last aligned to the border), ceil((53 - 24) / 14) + 1 = 4 columns
    assert model.calls == 16


def test_slide_equals_whole_on_crop_sized_input_for_any_model():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 5, padding=2)  # not translation-equivariant at borders: padding matters

    class Conv(nn.Module):
        def forward(self, images, targets=None):
            return {"sem_seg": conv(images)}

    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        whole = whole_inference(Conv(), images, size_divisor=16)
        slide = slide_inference(Conv(), images, crop_size=(32, 48), stride=(20, 30))
    assert torch.allclose(whole, slide, atol=1e-6)


def test_slide_pads_images_smaller_than_the_window():
    images = torch.randn(1, 3, 10, 12)
    out = slide_inference(ChannelArgmax(expect_size=(16, 16)), images, crop_size=(16, 16), stride=(8, 8))
    assert out.shape == (1, 3, 10, 12)
    assert torch.allclose(out, images * 2 + 1)


def test_bad_source_or_duplicate_labels_fail_before_inference(tmp_path):
    model = ChannelArgmax()
    cfg = cfg_for(tmp_path)  # the dataset folders don't even exist: the check comes first
    cfg.eval.source = "elsewhere"
    with pytest.raises(ValueError, match="eval.source 'elsewhere' is not one of"):
        evaluate(model, cfg)
    cfg = cfg_for(tmp_path)
    cfg.eval.datasets[1].label = "source"
    with pytest.raises(ValueError, match="not unique"):
        evaluate(model, cfg)
    assert model.calls == 0
