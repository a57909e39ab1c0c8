"""Datasets from others: image paths stay under the dataset root, and sizes taken from files are capped.

A COCO ``file_name`` or a BDD100K ``name`` that climbs out with ``..`` or is absolute would make the reader load
(and ``dataset_to_bag`` copy) any image on the machine; the annotations per image, the masks they expand to and
the pixels an image header declares are bounded, each with an error naming the file and the entry.
"""

from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from vlt_perception.datasets import boxes_from_instance_ids, get_dataset, instance_masks, read_image, read_sem_seg
from vlt_perception.datasets._common import MAX_ANNOTATIONS_PER_IMAGE


def _image(path, h=6, w=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 100, np.uint8))
    return path


def _coco(root, file_names, annotations_per_image=0):
    images = [{"id": i + 1, "file_name": name, "height": 6, "width": 8} for i, name in enumerate(file_names)]
    anns = [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]} for k in range(annotations_per_image)]
    path = root / "annotations" / "instances_val.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "car"}]}))
    return path


@pytest.fixture
def outside(tmp_path):
    """An image outside the dataset root, which a traversing name would reach."""
    return _image(tmp_path / "private" / "secret.png")


@pytest.mark.parametrize("name", ["../private/secret.png", "ABSOLUTE"])
def test_coco_file_name_must_stay_under_the_root(tmp_path, outside, name):
    root = tmp_path / "coco"
    _image(root / "a.png")
    name = str(outside) if name == "ABSOLUTE" else name
    ann = _coco(root, ["a.png", name])
    with pytest.raises(ValueError, match=rf"{ann}: images\[1\]\.file_name: .*leaves the dataset folder"):
        get_dataset("coco", root, "val")


@pytest.mark.parametrize("name", ["../../../private/secret.png", "ABSOLUTE"])
def test_bdd100k_name_must_stay_under_the_root(tmp_path, outside, name):
    root = tmp_path / "bdd"
    _image(root / "images/100k/val/a.png")
    ann = root / "labels/det_20/det_val.json"
    ann.parent.mkdir(parents=True)
    name = str(outside) if name == "ABSOLUTE" else name
    ann.write_text(json.dumps([{"name": "a.png", "labels": []}, {"name": name, "labels": []}]))
    with pytest.raises(ValueError, match=rf"{ann}: frames\[1\]\.name: .*leaves the dataset folder"):
        get_dataset("bdd100k", root, "val", task="det")


def test_annotations_per_image_are_capped(tmp_path):
    root = tmp_path / "coco"
    _image(root / "a.png")
    ann = _coco(root, ["a.png"], annotations_per_image=MAX_ANNOTATIONS_PER_IMAGE + 1)
    with pytest.raises(ValueError, match=rf"{ann}: image 1: {MAX_ANNOTATIONS_PER_IMAGE + 1} annotations exceed "
                                         rf"max_annotations={MAX_ANNOTATIONS_PER_IMAGE}"):
        get_dataset("coco", root, "val")
    _coco(root, ["a.png"], annotations_per_image=6)
    assert len(get_dataset("coco", root, "val")[0]["annotations"]) == 6
    with pytest.raises(ValueError, match="6 annotations exceed max_annotations=5"):
        get_dataset("coco", root, "val", max_annotations=5)

    bdd = tmp_path / "bdd"
    _image(bdd / "images/100k/val/a.png")
    det = bdd / "labels/det_20/det_val.json"
    det.parent.mkdir(parents=True)
    box = {"category": "car", "box2d": {"x1": 0, "y1": 0, "x2": 2, "y2": 2}}
    det.write_text(json.dumps([{"name": "a.png", "labels": [box] * 4}]))
    with pytest.raises(ValueError, match=rf"{det}: frames\[0\] \('a.png'\): 4 annotations exceed max_annotations=3"):
        get_dataset("bdd100k", bdd, "val", task="det", max_annotations=3)

    instance_map = np.zeros((4, 6), np.int32)
    instance_map[0, :5] = 26000 + np.arange(5)  # five cars
    with pytest.raises(ValueError, match="gtFine_instanceIds.png: 5 annotations exceed max_annotations=4"):
        boxes_from_instance_ids(instance_map, source="x_gtFine_instanceIds.png", max_annotations=4)


def test_instance_masks_bytes_are_capped_before_decoding():
    """N x H x W bytes with N, H and W from the annotation file: refused before any mask is allocated."""
    polygon = [[0.0, 0.0, 3.0, 0.0, 3.0, 3.0]]
    record = {"file_name": "a.png", "height": 10, "width": 20,
              "annotations": [{"bbox": [0, 0, 3, 3], "category_id": 0, "segmentation": polygon}] * 6}
    assert instance_masks(record, max_bytes=1200).shape == (6, 10, 20)
    with pytest.raises(ValueError, match=r"a.png: 7 masks of 20x10 take 1400 bytes, over max_bytes=1200"):
        instance_masks({**record, "annotations": record["annotations"] + record["annotations"][:1]}, max_bytes=1200)
    huge = {**record, "height": 200_000, "width": 300_000, "annotations": record["annotations"][:1]}
    with pytest.raises(ValueError, match="over max_bytes"):
        instance_masks(huge)


def _png_claiming(path, width: int, height: int):
    """A small valid PNG whose header is rewritten to claim ``width`` x ``height`` (a decompression bomb's
    header without its payload)."""
    assert cv2.imwrite(str(path), np.zeros((2, 2), np.uint8))
    data = bytearray(path.read_bytes())
    ihdr = 8  # after the signature: length (4) + b"IHDR" (4) + width (4) + height (4) + ...
    assert data[ihdr + 4:ihdr + 8] == b"IHDR"
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", width, height)
    data[ihdr + 21:ihdr + 25] = struct.pack(">I", zlib.crc32(bytes(data[ihdr + 4:ihdr + 21])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("width, height", [(8000, 8000), (100_000, 100_000)])  # our limit; over PIL's bomb limit
def test_dataset_images_over_max_pixels_are_refused_from_their_header(tmp_path, width, height):
    bomb = _png_claiming(tmp_path / "bomb.png", width, height)
    with pytest.raises(ValueError, match=r"bomb.png: .*(max_pixels|exceeds)"):
        read_image({"file_name": str(bomb)})
    with pytest.raises(ValueError, match=r"bomb.png: .*(max_pixels|exceeds)"):
        read_sem_seg({"sem_seg_file_name": str(bomb), "sem_seg_format": "train_ids"})


def test_max_pixels_is_configurable(tmp_path):
    image = _image(tmp_path / "a.png", h=10, w=20)
    assert read_image({"file_name": str(image)}).shape == (10, 20, 3)
    with pytest.raises(ValueError, match=r"a.png: 20x10 = 200 pixels exceeds max_pixels=199"):
        read_image({"file_name": str(image)}, max_pixels=199)
