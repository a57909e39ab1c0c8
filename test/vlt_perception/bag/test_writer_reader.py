"""Dataset records -> bag -> frames: images, labels, boxes, stamps and conditions come back as written."""

from __future__ import annotations

import numpy as np
import pytest

from vlt_perception.bag import BagError, BagTopics
from vlt_perception.bag.reader import BagFrameReader
from vlt_perception.bag.topics import CUSTOM_DATA_PREFIX
from vlt_perception.bag.writer import DEFAULT_START_NS, write_records_bag


def _write(fx, records, out, **kw):
    return write_records_bag(records, out, read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids, **kw)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("compressed", [None, "png"])
def test_round_trip_is_lossless(fx, tiny_cityscapes, tmp_path, storage, compressed):
    _, records = tiny_cityscapes
    summary = _write(fx, records, tmp_path / "bag", storage=storage, compressed=compressed, rate_hz=20.0)
    assert summary.frames == len(records)
    assert summary.conditions == ["clear", "fog"]
    with BagFrameReader(tmp_path / "bag") as reader:
        frames = list(reader.frames())
        assert reader.selected["image"].topic == ("/camera/image_raw/compressed" if compressed else "/camera/image_raw")
        assert not reader.issues.counts
        assert reader.custom_data[CUSTOM_DATA_PREFIX + "conditions"] == "clear,fog"
    assert [f.stamp_ns for f in frames] == [DEFAULT_START_NS + i * 50_000_000 for i in range(len(records))]
    assert [f.condition for f in frames] == [r["condition"] for r in records]
    for frame, record in zip(frames, records):
        np.testing.assert_array_equal(frame.image, record["expected_image"])
        np.testing.assert_array_equal(frame.labels, record["expected_labels"])
        np.testing.assert_allclose(frame.boxes["boxes"], [[0.0, 0.0, 4.0, 4.0]])
        assert frame.boxes["labels"].tolist() == [2]  # "car", written as a class name


def test_jpeg_round_trip_is_close(fx, tiny_cityscapes, tmp_path):
    _, records = tiny_cityscapes
    _write(fx, records[:2], tmp_path / "bag", compressed="jpeg")
    with BagFrameReader(tmp_path / "bag") as reader:
        frames = list(reader.frames())
    for i, frame in enumerate(frames):
        errors = [np.abs(frame.image.astype(int) - r["expected_image"].astype(int)).mean() for r in records[:2]]
        # Lossy (4x4 blocks of random colours are JPEG's worst case), but clearly its own picture.
        assert errors[i] < 25 and errors[i] < errors[1 - i] / 2


def test_custom_topics_and_condition_without_topic_default(fx, tiny_cityscapes, tmp_path):
    _, records = tiny_cityscapes
    topics = BagTopics(image="/cam/front", labels="/gt/sem", detections="/gt/boxes", condition="/weather")
    _write(fx, records, tmp_path / "bag", topics=topics)
    with pytest.raises(BagError, match="no camera topic /camera/image_raw"):
        BagFrameReader(tmp_path / "bag")
    with BagFrameReader(tmp_path / "bag", topics) as reader:
        assert [f.condition for f in reader.frames()] == ["clear", "clear", "fog", "fog"]


def test_writer_refuses_existing_output_and_names_bad_files(fx, tiny_cityscapes, tmp_path):
    _, records = tiny_cityscapes
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagError, match="exists already"):
        _write(fx, records, tmp_path / "exists")
    broken = dict(records[0], file_name=str(tmp_path / "missing.png"))
    with pytest.raises(BagError, match="missing.png: cannot read image"):
        _write(fx, [broken], tmp_path / "bag")
    assert not (tmp_path / "bag").exists()  # nothing half-written left behind
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
