"""Offline evaluation with a real ONNX model through ONNX Runtime and the deployment pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlt_perception.bag.offline import evaluate_bags
from vlt_perception.bag.writer import write_records_bag
from vlt_perception.labels import CITYSCAPES_PALETTE


def expected_miou(frames) -> float:
    """Independent of the code under test: nearest palette colour per pixel, IoU per class from numpy sets."""
    colours = np.asarray(CITYSCAPES_PALETTE, dtype=np.float64)  # C, 3
    ious = []
    preds, gts = [], []
    for image, labels in frames:
        dist = ((image[:, :, None, :].astype(np.float64) - colours) ** 2).sum(-1)  # H, W, C
        preds.append(dist.argmin(-1).ravel())
        gts.append(labels.ravel())
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    valid = gt != 255
    for c in range(len(colours)):
        inter = np.sum((pred == c) & (gt == c) & valid)
        union = np.sum(((pred == c) | (gt == c)) & valid)
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


@pytest.fixture
def bags(fx, tiny_cityscapes, tmp_path):
    _, records = tiny_cityscapes
    kw = dict(read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    write_records_bag([r for r in records if r["condition"] == "clear"], tmp_path / "source", **kw)
    write_records_bag(records, tmp_path / "target", compressed="png", storage="sqlite3", **kw)
    return tmp_path / "source", tmp_path / "target", records


def test_offline_report_numbers(bags, palette_onnx, tmp_path):
    source, target, records = bags
    report = evaluate_bags([target], palette_onnx, tmp_path / "report", engine="onnxruntime", reference=source)
    fog = [(r["expected_image"], r["expected_labels"]) for r in records if r["condition"] == "fog"]
    fog_miou = expected_miou(fog)
    assert 0.05 < fog_miou < 0.95  # the fixture really shifts the domain

    assert report["model"]["engine"] == "onnxruntime"
    assert report["reference"] == "source"
    assert report["bags"]["source"]["segmentation"]["mIoU"] == 1.0
    assert report["conditions"]["clear"]["segmentation"]["mIoU"] == 1.0
    assert report["conditions"]["fog"]["segmentation"]["mIoU"] == pytest.approx(fog_miou)
    assert report["conditions"]["fog"]["retention"]["mIoU"] == pytest.approx(fog_miou)
    assert report["bags"]["target"]["frames"] == 4
    assert report["bags"]["target"]["counts"]["matched"] == 4
    assert report["bags"]["target"]["counts"].get("unmatched_ground_truth", 0) == 0
    assert report["bags"]["target"]["latency_ms"]["count"] == 4

    on_disk = json.loads((tmp_path / "report" / "report.json").read_text())  # strict JSON (no NaN)
    assert on_disk["conditions"]["fog"]["segmentation"]["mIoU"] == pytest.approx(fog_miou)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| fog | 2 |" in markdown and f"{100 * fog_miou:.1f}" in markdown
    for figure in ("conditions.png", "confusion.png", "latency.png", "sample_fog_0.png"):
        path = tmp_path / "report" / "figures" / figure
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"figures/{figure}" in markdown


def test_max_frames_and_no_figures(bags, palette_onnx, tmp_path):
    _, target, _ = bags
    report = evaluate_bags([target], palette_onnx, tmp_path / "r", max_frames=2, figures=False)
    assert report["bags"]["target"]["frames"] == 2
    assert report["reference"] is None and "retention" not in report["conditions"]["clear"]
    assert not (tmp_path / "r" / "figures").exists()


def test_offline_detection_map(fx, bags, tmp_path):
    """Ground truth: one 'car' box [0, 0, 4, 4] per frame (fixture records). A model that finds it (plus a
    lower-scored false alarm) scores AP 1 on 'car'; the GT's 'person'-free frames leave 'person' out of the mean."""
    source, target, _ = bags
    good = fx.box_model(tmp_path / "good.onnx", [[0, 0, 4, 4], [10, 10, 14, 14]], [1, 0], [0.9, 0.5],
                        ["person", "car"])
    report = evaluate_bags([target], good, tmp_path / "good", reference=source, figures=False)
    assert report["model"]["task"] == "detection"
    assert report["conditions"]["fog"]["detection"]["mAP"] == pytest.approx(1.0)
    assert report["conditions"]["fog"]["detection"]["per_class_AP"]["car"] == pytest.approx(1.0)
    assert report["conditions"]["fog"]["retention"]["mAP"] == pytest.approx(1.0)
    # GT classes the model does not know (here: every class but 'person') are dropped and counted.
    person_only = fx.box_model(tmp_path / "person.onnx", [[0, 0, 4, 4]], [0], [0.9], ["person"])
    report = evaluate_bags([target], person_only, tmp_path / "person", figures=False)
    assert report["bags"]["target"]["counts"]["gt_boxes_of_unknown_class"] == 4
    # A box that misses: AP 0.
    wrong = fx.box_model(tmp_path / "wrong.onnx", [[12, 8, 16, 12]], [1], [0.9], ["person", "car"])
    report = evaluate_bags([target], wrong, tmp_path / "wrong", figures=False)
    assert report["overall"]["detection"]["mAP"] == pytest.approx(0.0)
