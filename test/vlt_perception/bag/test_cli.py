"""The real commands: dataset_to_bag on Cityscapes / ACDC layouts read by vlt_perception.datasets, then bag_eval."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from vlt_perception.bag.reader import BagFrameReader

pytestmark = pytest.mark.cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


def test_dataset_to_bag_then_bag_eval(fx, tmp_path, palette_onnx):
    cityscapes = fx.write_cityscapes(tmp_path / "cs", {"clear": 2})
    acdc = fx.write_acdc(tmp_path / "acdc", {"fog": 2, "night": 1})
    done = run("vlt_perception.cli.dataset_to_bag", "--dataset", "cityscapes", "--root", str(tmp_path / "cs"),
               "--split", "val", "--out", str(tmp_path / "source"))
    assert done.returncode == 0, done.stderr
    done = run("vlt_perception.cli.dataset_to_bag", "--dataset", "acdc", "--root", str(tmp_path / "acdc"),
               "--split", "val", "--conditions", "fog", "--out", str(tmp_path / "fog"), "--storage", "sqlite3",
               "--compressed", "png", "--rate", "5")
    assert done.returncode == 0, done.stderr
    assert "wrote 2 frames (fog)" in done.stdout

    with BagFrameReader(tmp_path / "source") as reader:
        frames = list(reader.frames())
        assert reader.has_boxes  # from the instanceIds PNGs, via the dataset reader
    for frame, record in zip(frames, cityscapes):
        np.testing.assert_array_equal(frame.image, record["expected_image"])
        np.testing.assert_array_equal(frame.labels, record["expected_labels"])
        assert frame.condition == "clear" and len(frame.boxes["boxes"]) > 0
    with BagFrameReader(tmp_path / "fog") as reader:
        frames = list(reader.frames())
    assert [f.condition for f in frames] == ["fog", "fog"]
    assert frames[1].stamp_ns - frames[0].stamp_ns == 200_000_000  # 5 Hz
    np.testing.assert_array_equal(frames[0].labels, acdc[0]["expected_labels"])

    done = run("vlt_perception.cli.bag_eval", "--bag", str(tmp_path / "fog"), "--model", str(palette_onnx),
               "--reference", str(tmp_path / "source"), "--out", str(tmp_path / "report"), "--engine", "onnxruntime")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["bags"]["source"]["segmentation"]["mIoU"] == 1.0
    fog = report["conditions"]["fog"]
    assert 0 < fog["segmentation"]["mIoU"] < 1 and fog["retention"]["mIoU"] == fog["segmentation"]["mIoU"]
    assert f"fog: frames=2 mIoU={100 * fog['segmentation']['mIoU']:.1f}" in done.stdout


def test_cli_errors_are_clear(fx, tmp_path, palette_onnx):
    done = run("vlt_perception.cli.dataset_to_bag", "--dataset", "cityscapes", "--root", str(tmp_path / "none"),
               "--out", str(tmp_path / "b"))
    assert done.returncode == 1 and str(tmp_path / "none") in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "broken").mkdir()
    done = run("vlt_perception.cli.bag_eval", "--bag", str(tmp_path / "broken"), "--model", str(palette_onnx),
               "--out", str(tmp_path / "report"), "--no-figures")
    assert done.returncode == 1 and "broken" in done.stdout and "ERROR" in done.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text())  # written all the same
    assert "cannot open bag" in report["bags"]["broken"]["error"]


def test_coco_detection_bag_and_eval_in_process(fx, tmp_path, capsys):
    """COCO json -> bag with boxes only (no labels topic) -> bag_eval of a detection model: mAP per condition."""
    from vlt_perception.cli import bag_eval, dataset_to_bag

    root = tmp_path / "coco"
    (root / "fog_val").mkdir(parents=True)
    images, anns = [], []
    for i in range(3):
        image, _ = fx.synthetic_frame(i, "fog")
        cv2.imwrite(str(root / "fog_val" / f"{i}.png"), image[..., ::-1])
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": fx.HEIGHT, "width": fx.WIDTH})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 0})
    categories = [{"id": 1, "name": "pedestrian"}, {"id": 3, "name": "car"}, {"id": 7, "name": "traffic cone"}]
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_fog_val.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories}))

    assert dataset_to_bag.main(["--dataset", "coco", "--root", str(root), "--split", "fog_val",
                                "--out", str(tmp_path / "bag")]) == 0
    with BagFrameReader(tmp_path / "bag") as reader:
        frames = list(reader.frames())
        assert not reader.has_labels and reader.issues.counts["missing_topic"] == 1
    assert [f.condition for f in frames] == ["fog"] * 3
    assert [f.boxes["labels"].tolist() for f in frames] == [[2]] * 3  # "car" among the Cityscapes things

    model = fx.box_model(tmp_path / "det.onnx", [[0, 0, 4, 4]], [1], [0.8], ["person", "car"])
    capsys.readouterr()
    assert bag_eval.main(["--bag", str(tmp_path / "bag"), "--model", str(model), "--out", str(tmp_path / "r"),
                          "--no-figures"]) == 0
    assert "bag: frames=3 mIoU=n/a mAP=100.0" in capsys.readouterr().out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["conditions"]["fog"]["detection"]["per_class_AP"] == {"person": None, "car": 1.0}
