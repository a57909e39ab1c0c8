"""Cityscapes and ACDC readers on folders written by the synthetic benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlt_perception.datasets import DatasetLayoutError, get_dataset, read_image, read_sem_seg
from vlt_perception.datasets._common import read_png_array

RECORD_KEYS = {"file_name", "image_id", "height", "width", "dataset", "condition"}


def test_cityscapes_records(synth_root):
    records = get_dataset("cityscapes", synth_root / "cityscapes", "train")
    assert len(records) == 2
    r = records[0]
    assert RECORD_KEYS <= set(r) and r["dataset"] == "cityscapes" and r["condition"] == "clear"
    assert (r["height"], r["width"]) == (48, 96)
    assert read_image(r).shape == (48, 96, 3) and read_image(r).dtype == np.uint8


def test_label_ids_round_trip_to_train_ids(synth_root):
    for r in get_dataset("cityscapes", synth_root / "cityscapes", "val"):
        assert r["sem_seg_format"] == "cityscapes_label_ids"
        train_ids_png = r["sem_seg_file_name"].replace("_labelIds.png", "_labelTrainIds.png")
        np.testing.assert_array_equal(read_sem_seg(r), read_png_array(train_ids_png))


def test_cityscapes_boxes_match_the_generated_coco(synth_root):
    records = get_dataset("cityscapes", synth_root / "cityscapes", "val")
    coco = get_dataset("coco", synth_root / "cityscapes", "val")
    by_file = {c["file_name"]: c for c in coco}
    for r in records:
        expected = sorted((tuple(a["bbox"]), a["category_id"]) for a in by_file[r["file_name"]]["annotations"])
        got = sorted((tuple(float(v) for v in a["bbox"]), a["category_id"]) for a in r["annotations"])
        assert got == expected and got


def test_acdc_per_condition(synth_root):
    records = get_dataset("acdc", synth_root / "acdc", "val")
    assert sorted({r["condition"] for r in records}) == ["fog", "night"]
    assert len(records) == 4
    fog = get_dataset("acdc", synth_root / "acdc", "val", conditions="fog")
    assert {r["condition"] for r in fog} == {"fog"} and len(fog) == 2
    source = get_dataset("cityscapes", synth_root / "cityscapes", "val")
    # Same scenes as source val: identical labels, different pixels.
    np.testing.assert_array_equal(read_sem_seg(fog[0]), read_sem_seg(source[0]))
    assert not np.array_equal(read_image(fog[0]), read_image(source[0]))
    assert fog[0]["annotations"] == source[0]["annotations"]


def test_coco_reader_on_acdc_condition_json(synth_root):
    records = get_dataset("coco", synth_root / "acdc", "night_val")
    assert len(records) == 2 and {r["condition"] for r in records} == {"night"}
    assert all(r["file_name"].endswith("_rgb_anon.png") for r in records)
    read_image(records[0])


def test_wrong_layout_names_the_missing_folder(synth_root, tmp_path):
    with pytest.raises(DatasetLayoutError, match=str(tmp_path / "leftImg8bit" / "train")):
        get_dataset("cityscapes", tmp_path, "train")
    with pytest.raises(DatasetLayoutError, match="leftImg8bit/test"):
        get_dataset("cityscapes", synth_root / "cityscapes", "test")
    with pytest.raises(DatasetLayoutError, match="rgb_anon/snow/val"):
        get_dataset("acdc", synth_root / "acdc", "val", conditions=["snow"])
    with pytest.raises(DatasetLayoutError, match="rgb_anon"):
        get_dataset("acdc", synth_root / "cityscapes", "val")  # a Cityscapes folder is not ACDC


def test_missing_label_file_is_named(tmp_path):
    (tmp_path / "leftImg8bit/val/c").mkdir(parents=True)
    (tmp_path / "gtFine/val/c").mkdir(parents=True)
    from vlt_training.synthetic.writers import write_png

    write_png(tmp_path / "leftImg8bit/val/c/c_000000_000000_leftImg8bit.png", np.zeros((4, 8, 3), np.uint8))
    with pytest.raises(DatasetLayoutError, match="c_000000_000000_gtFine_labelIds.png"):
        get_dataset("cityscapes", tmp_path, "val")
    records = get_dataset("cityscapes", tmp_path, "val", labels=False)
    assert "sem_seg_file_name" not in records[0]
    with pytest.raises(KeyError, match="no semantic labels"):
        read_sem_seg(records[0])


def test_manifest_names_the_readers(synth_root):
    manifest = json.loads((synth_root / "benchmark.json").read_text())
    for info in manifest["datasets"].values():
        kw = {"conditions": info["condition"]} if "condition" in info else {}
        split = info.get("split", "val")
        assert get_dataset(info["name"], synth_root / info["root"], split, **kw)


def test_boxes_from_instance_ids_by_hand():
    from vlt_perception.datasets import boxes_from_instance_ids

    inst = np.full((6, 8), 7, np.uint16)  # road
    inst[1:3, 2:5] = 26001  # car 1
    inst[4, 0] = 26002  # car 2, one pixel
    inst[3:6, 6:8] = 24  # a group of people (no instance id): crowd
    inst[0, 7] = 29001  # caravan: a labelId outside the thing classes
    boxes = sorted((tuple(b["bbox"]), b["category_id"], b["iscrowd"]) for b in boxes_from_instance_ids(inst))
    assert boxes == [((0, 4, 1, 5), 2, 0), ((2, 1, 5, 3), 2, 0), ((6, 3, 8, 6), 0, 1)]
    assert boxes_from_instance_ids(np.full((3, 3), 7, np.uint16)) == []
