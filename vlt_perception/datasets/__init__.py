"""Torch-free readers of the official dataset layouts, returning ``list[dict]`` records.

A record holds ``file_name``, ``image_id``, ``height``, ``width``, ``dataset``, ``condition`` and optionally
``sem_seg_file_name`` + ``sem_seg_format`` and ``annotations`` ([{"bbox": [x1, y1, x2, y2], "category_id": index
into the Cityscapes thing classes, "iscrowd": 0}]); see docs/architecture.md.

>>> records = get_dataset("cityscapes", "data/synth/cityscapes", "val")
>>> image, labels = read_image(records[0]), read_sem_seg(records[0])  # (H, W, 3) RGB, (H, W) train IDs
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vlt_perception.datasets._common import (
    MAX_ANNOTATIONS_PER_IMAGE,
    MAX_MASK_BYTES,
    DatasetLayoutError,
    boxes_from_instance_ids,
    check_pixels,
    instance_masks,
    read_png_array,
)
from vlt_perception.datasets.bdd100k import load_bdd100k
from vlt_perception.datasets.cityscapes import load_acdc, load_cityscapes
from vlt_perception.datasets.coco import load_coco
from vlt_perception.datasets.gta5 import load_gta5
from vlt_perception.datasets.mapillary import mapillary_lookup_table, load_mapillary
from vlt_perception.labels import CITYSCAPES_LABEL_ID_TO_TRAIN_ID, lookup_table
from vlt_perception.pipeline.image_codec import DEFAULT_MAX_PIXELS

_DATASETS: dict[str, Callable[..., list[dict]]] = {}


def register_dataset(name: str, loader: Callable[..., list[dict]]) -> None:
    """Register ``loader(root, split, **kw) -> list[dict]`` under ``name``."""
    _DATASETS[name] = loader


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def get_dataset(name: str, root: str | Path, split: str, **kwargs) -> list[dict]:
    """Records of dataset ``name`` at ``root`` for ``split``; ``kwargs`` go to the reader (e.g. ``conditions``
    for acdc, ``task`` for bdd100k, ``with_boxes`` for cityscapes)."""
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _DATASETS[name](root, split, **kwargs)


for _name, _loader in (("cityscapes", load_cityscapes), ("acdc", load_acdc), ("gta5", load_gta5),
                       ("bdd100k", load_bdd100k), ("mapillary", load_mapillary), ("coco", load_coco)):
    register_dataset(_name, _loader)

# sem_seg_format -> (256,) uint8 table from stored label values to train IDs.
_SEM_SEG_TABLES: dict[str, np.ndarray] = {
    "cityscapes_label_ids": lookup_table(CITYSCAPES_LABEL_ID_TO_TRAIN_ID),
    "mapillary": mapillary_lookup_table(),
}


def read_image(record: dict, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The record's image as (H, W, 3) uint8 RGB. Its header size is checked against ``max_pixels`` (the runtime's
    limit for camera frames by default) before the pixels are decoded."""
    import cv2
    from PIL import Image

    path = record["file_name"]
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except (OSError, SyntaxError) as exc:
        raise FileNotFoundError(f"cannot read image {path} (missing or not an image: {exc})") from exc
    check_pixels(path, height, width, max_pixels)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path} (missing or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_sem_seg(record: dict) -> np.ndarray:
    """The record's semantic labels as (H, W) uint8 train IDs, 255 ignore."""
    path = record.get("sem_seg_file_name")
    if path is None:
        raise KeyError(f"record {record.get('image_id')!r} of {record.get('dataset')!r} has no semantic labels")
    fmt = record.get("sem_seg_format", "train_ids")
    labels = read_png_array(path)
    if fmt == "train_ids":
        if labels.dtype != np.uint8:
            raise ValueError(f"{path}: train-ID labels must be 8-bit, got {labels.dtype}")
        return labels
    if fmt not in _SEM_SEG_TABLES:
        raise ValueError(f"{path}: unknown sem_seg_format {fmt!r}; known: train_ids, {', '.join(_SEM_SEG_TABLES)}")
    if labels.max(initial=0) > 255:
        raise ValueError(f"{path}: label values up to {labels.max()} do not fit the {fmt} table")
    return _SEM_SEG_TABLES[fmt][labels]


__all__ = ["DEFAULT_MAX_PIXELS", "MAX_ANNOTATIONS_PER_IMAGE", "MAX_MASK_BYTES", "DatasetLayoutError", "boxes_from_instance_ids", "get_dataset", "instance_masks", "list_datasets",
           "read_image", "read_sem_seg", "register_dataset"]
