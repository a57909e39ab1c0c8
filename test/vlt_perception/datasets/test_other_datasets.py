"""GTA5, BDD100K, Mapillary and COCO readers on small hand-made folders; the registry."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from vlt_perception.datasets import DatasetLayoutError, get_dataset, list_datasets, read_image, read_sem_seg
from vlt_perception.datasets.mapillary import MAPILLARY_V12_CLASSES, mapillary_lookup_table
from vlt_perception.labels import CITYSCAPES_CLASSES, CITYSCAPES_THING_CLASSES


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), array)
    assert ok


def test_registry():
    assert set(list_datasets()) >= {"cityscapes", "acdc", "gta5", "bdd100k", "mapillary", "coco"}
    with pytest.raises(KeyError, match="unknown dataset 'kitti'"):
        get_dataset("kitti", "/nowhere", "val")


def test_gta5(tmp_path):
    write(tmp_path / "images/00001.png", np.full((6, 10, 3), 90, np.uint8))
    label = np.zeros((6, 10), np.uint8)
    label[:2], label[2:4], label[4:] = 7, 26, 0  # road, car, unlabeled
    write(tmp_path / "labels/00001.png", label)
    [r] = get_dataset("gta5", tmp_path, "all")
    assert (r["height"], r["width"], r["dataset"]) == (6, 10, "gta5")
    sem = read_sem_seg(r)
    assert sem[0, 0] == CITYSCAPES_CLASSES.index("road") and sem[3, 0] == CITYSCAPES_CLASSES.index("car")
    assert sem[5, 0] == 255
    (tmp_path / "labels/00001.png").unlink()
    with pytest.raises(DatasetLayoutError, match="labels/00001.png"):
        get_dataset("gta5", tmp_path, "all")
    with pytest.raises(DatasetLayoutError, match="split.mat"):
        get_dataset("gta5", tmp_path, "train")


def test_bdd100k_sem_seg(tmp_path):
    write(tmp_path / "images/10k/val/a.jpg", np.zeros((8, 12, 3), np.uint8))
    mask = np.full((8, 12), 255, np.uint8)
    mask[4:] = 13
    write(tmp_path / "labels/sem_seg/masks/val/a.png", mask)
    [r] = get_dataset("bdd100k", tmp_path, "val")
    assert r["sem_seg_format"] == "train_ids" and (r["height"], r["width"]) == (8, 12)
    np.testing.assert_array_equal(read_sem_seg(r), mask)
    assert read_image(r).shape == (8, 12, 3)


def test_bdd100k_det(tmp_path):
    write(tmp_path / "images/100k/val/b.jpg", np.zeros((20, 30, 3), np.uint8))
    frames = [{"name": "b.jpg", "attributes": {"timeofday": "night"}, "labels": [
        {"category": "pedestrian", "box2d": {"x1": 1, "y1": 2, "x2": 5.5, "y2": 9}},
        {"category": "traffic sign", "box2d": {"x1": 1, "y1": 1, "x2": 2, "y2": 2}},
        {"category": "bus", "box2d": {"x1": 10, "y1": 3, "x2": 29, "y2": 19}},
    ]}]
    (tmp_path / "labels/det_20").mkdir(parents=True)
    (tmp_path / "labels/det_20/det_val.json").write_text(json.dumps(frames))
    [r] = get_dataset("bdd100k", tmp_path, "val", task="det")
    assert r["condition"] == "night"
    assert [(a["bbox"], CITYSCAPES_THING_CLASSES[a["category_id"]]) for a in r["annotations"]] == [
        ([1.0, 2.0, 5.5, 9.0], "person"), ([10.0, 3.0, 29.0, 19.0], "bus")]
    (tmp_path / "images/100k/train").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="det_20/det_train.json"):
        get_dataset("bdd100k", tmp_path, "train", task="det")
    with pytest.raises(ValueError, match="unknown task"):
        get_dataset("bdd100k", tmp_path, "val", task="pan")


def test_mapillary_palette_labels(tmp_path):
    assert len(MAPILLARY_V12_CLASSES) == 66
    write(tmp_path / "validation/images/m.jpg", np.zeros((4, 6, 3), np.uint8))
    index = np.zeros((4, 6), np.uint8)
    road, car, sign_back, unlabeled = (MAPILLARY_V12_CLASSES.index(n) for n in (
        "construction--flat--road", "object--vehicle--car", "object--traffic-sign--back", "void--unlabeled"))
    index[0], index[1], index[2], index[3] = road, car, sign_back, unlabeled
    label = Image.frombytes("P", (6, 4), index.tobytes())  # a palette PNG, like the release
    label.putpalette([v for i in range(256) for v in ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)])
    (tmp_path / "validation/labels").mkdir(parents=True)
    label.save(tmp_path / "validation/labels/m.png")
    [r] = get_dataset("mapillary", tmp_path, "val")
    sem = read_sem_seg(r)
    assert sem[:, 0].tolist() == [CITYSCAPES_CLASSES.index("road"), CITYSCAPES_CLASSES.index("car"), 255, 255]
    table = mapillary_lookup_table()
    mapped = {CITYSCAPES_CLASSES[t] for t in table[:66] if t != 255}
    assert mapped == set(CITYSCAPES_CLASSES)  # every Cityscapes class has a source
    with pytest.raises(DatasetLayoutError, match="training/images"):
        get_dataset("mapillary", tmp_path, "train")


def test_coco_generic(tmp_path):
    write(tmp_path / "val2017/1.jpg", np.zeros((10, 10, 3), np.uint8))
    data = {"images": [{"id": 1, "file_name": "1.jpg", "height": 10, "width": 10}],
            "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 11, "name": "fire hydrant"},
                           {"id": 4, "name": "motorbike"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 11, "bbox": [0, 0, 1, 1], "iscrowd": 0},
                            {"id": 3, "image_id": 1, "category_id": 4, "bbox": [5, 5, 2, 2], "iscrowd": 1}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val2017.json").write_text(json.dumps(data))
    [r] = get_dataset("coco", tmp_path, "val2017")
    assert r["file_name"].endswith("val2017/1.jpg") and r["condition"] == "clear"
    assert [(a["bbox"], CITYSCAPES_THING_CLASSES[a["category_id"]], a["iscrowd"]) for a in r["annotations"]] == [
        ([1.0, 2.0, 4.0, 6.0], "car", 0), ([5.0, 5.0, 7.0, 7.0], "motorcycle", 1)]
    [raw] = get_dataset("coco", tmp_path, "val2017", map_to_things=False)
    assert [a["category_id"] for a in raw["annotations"]] == [1, 3, 2]  # index in categories sorted by id
    (tmp_path / "annotations/instances_bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="instances_bad.json"):
        get_dataset("coco", tmp_path, "bad")
    with pytest.raises(DatasetLayoutError, match="instances_test.json"):
        get_dataset("coco", tmp_path, "test")


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(FileNotFoundError, match="x.png"):
        read_image({"file_name": str(bad)})
    with pytest.raises(ValueError, match="x.png"):
        read_sem_seg({"sem_seg_file_name": str(bad), "sem_seg_format": "train_ids"})


def test_instance_masks_from_coco_segmentations_and_instance_maps(tmp_path):
    """COCO polygons / uncompressed / compressed RLE and Cityscapes instance maps all give (N, H, W) masks in the
    annotations' order; the COCO reader keeps the segmentation."""
    from pycocotools import mask as mask_utils

    from vlt_perception.datasets import instance_masks

    square = np.zeros((10, 12), np.uint8)
    square[2:6, 3:9] = 1
    compressed = mask_utils.encode(np.asfortranarray(square))
    compressed["counts"] = compressed["counts"].decode()  # as it is stored in json
    uncompressed = {"size": [10, 12], "counts": [int(v) for v in _uncompressed_counts(square)]}
    polygon = [[3.0, 2.0, 9.0, 2.0, 9.0, 6.0, 3.0, 6.0]]
    record = {"file_name": "x.png", "height": 10, "width": 12,
              "annotations": [{"segmentation": s} for s in (compressed, uncompressed, polygon)]}
    masks = instance_masks(record)
    assert masks.shape == (3, 10, 12) and masks.dtype == np.uint8
    assert np.array_equal(masks[0], square) and np.array_equal(masks[1], square)
    assert abs(int(masks[2].sum()) - int(square.sum())) <= 12  # polygon rasterisation: the square within an edge
    assert instance_masks({"height": 10, "width": 12, "annotations": [{"bbox": [0, 0, 1, 1]}]}) is None
    with pytest.raises(ValueError, match="x.png: malformed COCO segmentation"):
        instance_masks({**record, "annotations": [{"segmentation": {"size": [10, 12]}}]})

    ids = np.zeros((10, 12), np.uint16)
    ids[square.astype(bool)] = 26003
    write(tmp_path / "inst.png", ids)
    from_map = {"file_name": "y.png", "height": 10, "width": 12, "instance_file_name": str(tmp_path / "inst.png"),
                "annotations": [{"instance_id": 26003}, {"instance_id": 26004}]}
    masks = instance_masks(from_map)
    assert np.array_equal(masks[0], square) and not masks[1].any()
    with pytest.raises(ValueError, match="instance map is"):
        instance_masks({**from_map, "height": 5})

    write(tmp_path / "val2017/1.jpg", np.zeros((10, 12, 3), np.uint8))
    data = {"images": [{"id": 1, "file_name": "1.jpg", "height": 10, "width": 12}],
            "categories": [{"id": 3, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [3, 2, 6, 4], "iscrowd": 0,
                             "segmentation": polygon}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val2017.json").write_text(json.dumps(data))
    [coco] = get_dataset("coco", tmp_path, "val2017")
    assert coco["annotations"][0]["segmentation"] == polygon


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE (column-major run lengths, starting with zeros)."""
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return counts
