"""Detection evaluation plumbing: resize / pad / scale-back of boxes, per-condition grouping, retention through
the evaluation runner on a COCO-json dataset. The detector is an oracle that finds red rectangles in its input,
so every number below is known exactly."""

import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from vlt_training.config import Config, DatasetConfig, EvalConfig
from vlt_training.evaluation.detection import evaluate_records, predict_boxes
from vlt_training.tasks.runner import evaluate, format_table

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class RedOracle(nn.Module):
    """Detects the bounding box of the red pixels of its (normalised) input as class ``label`` (0) with score 0.9."""

    task = "detection"

    def __init__(self):
        super().__init__()
        self.class_names = ["car", "person"]
        self.pixel_mean, self.pixel_std = MEAN, STD
        self.max_detections = 100
        self.label = 0
        self.seen_sizes = []

    def forward(self, images, targets=None):
        rgb = images * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)  # B, 3, H, W
        self.seen_sizes.append(tuple(images.shape[-2:]))
        out = []
        for img in rgb:
            ys, xs = torch.nonzero((img[0] > 0.8) & (img[1] < 0.3), as_tuple=True)
            if len(xs) == 0:
                out.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0).long()})
                continue
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()[None]
            out.append({"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([self.label])})
        return {"detections": out}


def _image(path, box, colour=(255, 0, 0), h=96, w=160):
    image = np.full((h, w, 3), 40, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image[..., ::-1])
    return image


def test_boxes_come_back_in_original_pixels_after_resize_and_padding(tmp_path):
    image = _image(tmp_path / "a.png", (20, 30, 84, 70))
    oracle = RedOracle().eval()
    # Resized keep-ratio to fit 60 x 100 (factor 0.625: 96 x 160 -> 60 x 100), then padded to 64 x 128.
    cfg = EvalConfig(resize=[60, 100], size_divisor=32)
    boxes, scores, labels = predict_boxes(oracle, image, cfg, MEAN, STD)
    assert oracle.seen_sizes[-1] == (64, 128)
    np.testing.assert_allclose(boxes, [[20, 30, 84, 70]], atol=1.7)  # one resized pixel = 1.6 original pixels
    assert labels.tolist() == [0] and scores.tolist() == pytest.approx([0.9])
    with pytest.raises(ValueError, match="whole"):
        predict_boxes(oracle, image, EvalConfig(mode="slide"), MEAN, STD)


def _record(tmp_path, name, box, condition, colour=(255, 0, 0), extra=()):
    _image(tmp_path / f"{name}.png", box, colour)
    anns = [{"bbox": list(box), "category_id": 0, "iscrowd": 0}] + list(extra)
    return {"file_name": str(tmp_path / f"{name}.png"), "image_id": name, "height": 96, "width": 160,
            "dataset": "t", "condition": condition, "annotations": anns}


def test_per_condition_metrics(tmp_path):
    records = [
        _record(tmp_path, "fog1", (10, 10, 60, 50), "fog"),
        _record(tmp_path, "fog2", (90, 40, 150, 90), "fog"),
        # At night the car is dark red: the oracle misses it.
        _record(tmp_path, "night1", (30, 20, 90, 80), "night", colour=(120, 0, 0)),
        # A crowd region that nobody detects is not a miss.
        _record(tmp_path, "fog3", (10, 10, 40, 40), "fog",
                extra=[{"bbox": [100, 50, 150, 90], "category_id": 1, "iscrowd": 1}]),
    ]
    cfg = Config(task="detection")
    result = evaluate_records(RedOracle(), records, cfg)
    assert result["num_images"] == 4
    assert result["conditions"]["fog"]["mAP"] == pytest.approx(1.0)
    assert result["conditions"]["fog"]["num_images"] == 3
    assert result["conditions"]["night"]["mAP"] == pytest.approx(0.0)
    # Overall: 3 of 4 cars found, all detections correct -> precision 1 up to recall 0.75: AP = 76 / 101.
    assert result["overall"]["mAP"] == pytest.approx(76 / 101)
    assert result["overall"]["per_class_AP"] == {"car": pytest.approx(76 / 101), "person": None}


def _coco_dataset(root, split, boxes, colour):
    images, anns = [], []
    for i, box in enumerate(boxes):
        _image(root / split / f"{i}.png", box, colour)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 96, "width": 160})
        x1, y1, x2, y2 = box
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 3, "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 3, "name": "car"}]}))


def test_runner_reports_map_and_retention_on_coco_json(tmp_path):
    # Source: 2 of 2 cars found; target ("fog_val"): 1 of 2 (the dark one is missed).
    _coco_dataset(tmp_path / "src", "val", [(10, 10, 60, 50), (80, 30, 140, 80)], (255, 0, 0))
    _coco_dataset(tmp_path / "tgt", "fog_val", [(10, 10, 60, 50)], (255, 0, 0))
    _coco_dataset(tmp_path / "tgt2", "fog_val", [(30, 30, 90, 70)], (100, 0, 0))
    cfg = Config(task="detection", eval=EvalConfig(datasets=[
        DatasetConfig(name="coco", root=str(tmp_path / "src"), split="val", label="source"),
        DatasetConfig(name="coco", root=str(tmp_path / "tgt"), split="fog_val", label="fog_found"),
        DatasetConfig(name="coco", root=str(tmp_path / "tgt2"), split="fog_val", label="fog_missed"),
    ]))
    oracle = RedOracle()
    oracle.class_names = ["person", "rider", "car"]  # the coco reader maps "car" onto thing index 2
    oracle.label = 2
    report = evaluate(oracle, cfg)
    assert report["primary_metric"] == "mAP" and report["source"] == "source"
    assert report["datasets"]["source"]["overall"]["mAP"] == pytest.approx(1.0)
    assert report["datasets"]["fog_missed"]["conditions"]["fog"]["mAP"] == pytest.approx(0.0)
    assert report["retention"]["fog_found"]["overall"] == pytest.approx(1.0)
    assert report["retention"]["fog_missed"]["overall"] == pytest.approx(0.0)
    table = format_table(report)
    assert "AP per class" in table and "fog_missed" in table
    car_row = next(line for line in table.splitlines() if line.startswith("car "))
    # Columns: source, source/clear, fog_found, fog_found/fog, fog_missed, fog_missed/fog.
    assert car_row.split()[1:] == ["100.00"] * 4 + ["0.00"] * 2


def test_label_outside_model_classes_names_the_file(tmp_path):
    record = _record(tmp_path, "a", (10, 10, 60, 50), "clear")
    record["annotations"][0]["category_id"] = 5
    with pytest.raises(ValueError, match="a.png.*category_id 5"):
        evaluate_records(RedOracle(), [record], Config(task="detection"))


class RedMaskOracle(RedOracle):
    """RedOracle plus a Mask R-CNN-style mask per detection: the red pixels inside its box, resampled to the box's
    28 x 28 frame (so a mask pasted in the wrong frame misses the object)."""

    predicts_masks = True

    def forward(self, images, targets=None):
        out = super().forward(images, targets)
        rgb = images * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
        for img, det in zip(rgb, out["detections"]):
            red = ((img[0] > 0.8) & (img[1] < 0.3)).float()  # H, W
            masks = []
            for x1, y1, x2, y2 in det["boxes"].round().int().tolist():
                crop = red[y1:y2, x1:x2][None, None]
                masks.append(torch.nn.functional.interpolate(crop, size=(28, 28), mode="bilinear")[0, 0])
            det["masks"] = torch.stack(masks) if masks else torch.zeros(0, 28, 28)
        return out


def test_masks_are_pasted_in_original_pixels_after_resize_and_padding(tmp_path):
    """The mask AP path: a red L-shape (not its box) seen at 0.625 x and padded comes back as the L in the original
    image, and mask AP50 is 1 against the instance map; predict_boxes skips the pasting."""
    from vlt_training.evaluation.detection import predict_detections

    image = np.full((96, 160, 3), 40, np.uint8)
    image[30:70, 20:44] = (255, 0, 0)
    image[50:70, 44:84] = (255, 0, 0)  # the L: 24 x 40 + 40 x 20 px inside a 64 x 40 box
    cv2.imwrite(str(tmp_path / "l.png"), image[..., ::-1])
    shape = (image[..., 0] == 255).astype(np.uint8)
    cfg = EvalConfig(resize=[60, 100], size_divisor=32)
    det = predict_detections(RedMaskOracle().eval(), image, cfg, MEAN, STD)
    assert det["masks"].shape == (1, 96, 160) and det["masks"].dtype == np.uint8
    iou = (det["masks"][0] & shape).sum() / (det["masks"][0] | shape).sum()
    assert iou > 0.9, iou
    assert "masks" not in predict_detections(RedMaskOracle().eval(), image, cfg, MEAN, STD, with_masks=False)

    ids = np.zeros((96, 160), np.uint16)
    ids[shape.astype(bool)] = 26001
    cv2.imwrite(str(tmp_path / "ids.png"), ids)
    record = {"file_name": str(tmp_path / "l.png"), "image_id": "l", "height": 96, "width": 160, "dataset": "t",
              "condition": "clear", "instance_file_name": str(tmp_path / "ids.png"),
              "annotations": [{"bbox": [20, 30, 84, 70], "category_id": 0, "iscrowd": 0, "instance_id": 26001}]}
    full = Config(task="detection")
    full.eval = cfg
    result = evaluate_records(RedMaskOracle(), [record], full)["overall"]
    assert result["AP50"] == pytest.approx(1.0) and result["mask_AP50"] == pytest.approx(1.0)
    assert "mask_AP50" not in evaluate_records(RedOracle(), [record], full)["overall"]
