"""The shared int8 calibration reader: image folders (recursive), rosbags and dataset configs, preprocessed as
deployment preprocesses camera frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vlt_perception.engines.base import EngineError
from vlt_perception.engines.calibration import (
    CalibrationBatches, calibration_files, calibration_items, source_kind, source_sha256)
from vlt_perception.preprocess import Preprocessor


def _frame(i: int) -> np.ndarray:
    """(12, 20, 3) uint8 RGB whose pixels all hold i (so a frame is recognisable after reading)."""
    return np.full((12, 20, 3), i * 10, dtype=np.uint8)


def _write(path, rgb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture
def nested_folder(tmp_path):
    """Six images in two sequences two folders deep, plus a text file."""
    root = tmp_path / "calib"
    for i in range(6):
        _write(root / f"seq{i // 3}" / "cam" / f"{i:03d}.png", _frame(i))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def bag(tmp_path):
    from vlt_perception.bag.writer import write_records_bag

    records = [{"file_name": f"frame{i}", "image_id": f"frame{i}", "height": 12, "width": 20} for i in range(5)]
    frames = {r["file_name"]: _frame(i) for i, r in enumerate(records)}
    write_records_bag(records, tmp_path / "drive", read_image=lambda r: frames[r["file_name"]])
    return tmp_path / "drive"


def test_folder_is_searched_recursively_and_spread_evenly(nested_folder):
    files = calibration_files(nested_folder, max_images=100)
    assert [p.name for p in files] == [f"{i:03d}.png" for i in range(6)]  # both sequences, sorted, no .txt
    spread = calibration_files(nested_folder, max_images=2)
    assert [p.name for p in spread] == ["000.png", "003.png"]  # one from each sequence, not the first two


def test_bag_frames_in_order_with_stride(bag):
    assert source_kind(bag) == "bag"
    frames = calibration_items(bag, max_images=10)
    assert [int(f[0, 0, 0]) for f in frames] == [0, 10, 20, 30, 40]
    strided = calibration_items(bag, max_images=2, bag_stride=2)
    assert [int(f[0, 0, 0]) for f in strided] == [0, 20]


def test_batches_are_the_deployment_preprocessing(nested_folder, bag):
    pre = Preprocessor(8, 16, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    for source in (nested_folder, bag):
        batches = list(CalibrationBatches(calibration_items(source, 4), pre, 2))
        assert len(batches) == 2 and batches[0].shape == (2, 3, 8, 16) and batches[0].dtype == np.float32
        # frame 1 (value 10): what the node's preprocessing makes of it
        np.testing.assert_allclose(batches[0][1], pre(_frame(1))[0], rtol=0, atol=1e-6)
        again = list(CalibrationBatches(calibration_items(source, 4), pre, 2))
        np.testing.assert_array_equal(again[1], batches[1])  # NNCF iterates more than once


def test_dataset_config_reads_the_named_split(tmp_path):
    city = tmp_path / "data" / "leftImg8bit" / "val" / "town"
    for i in range(3):
        _write(city / f"town_{i:06d}_000019_leftImg8bit.png", _frame(i + 1))
    config = tmp_path / "calib.yaml"
    config.write_text("data:\n  root: " + str(tmp_path) + "\neval:\n  datasets:\n  - name: cityscapes\n"
                      "    root: data\n    split: val\n    options: {labels: false}\n")
    frames = calibration_items(config, max_images=10)
    assert sorted(int(f[0, 0, 0]) for f in frames) == [10, 20, 30]


def test_hash_follows_the_images(nested_folder):
    before = source_sha256(nested_folder, 10)
    _write(nested_folder / "seq1" / "cam" / "005.png", _frame(9))
    assert source_sha256(nested_folder, 10) != before


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "calibration source not found"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no calibration images"),
    (lambda p: (p / "x.bin").write_bytes(b"x") and p / "x.bin", "not a calibration source"),
])
def test_bad_sources_are_named(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(EngineError, match=message) as info:
        calibration_items(path, 4)
    assert str(path) in str(info.value)
