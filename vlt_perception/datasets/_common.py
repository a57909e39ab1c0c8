"""Shared helpers of the dataset readers: layout checks, image sizes, boxes from instance maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlt_perception.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    CITYSCAPES_THING_CLASSES,
)


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder does not have the expected layout; the message names the missing path."""


def require_dir(path: Path, dataset: str, expected: str) -> Path:
    """Return ``path`` if it is a folder, else raise naming it and the layout that was expected."""
    if not path.is_dir():
        raise DatasetLayoutError(f"{dataset}: missing folder {path} (expected layout: {expected})")
    return path


def require_file(path: Path, dataset: str, what: str) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(f"{dataset}: missing {what} {path}")
    return path


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image header of {path}: {exc}") from exc
    return height, width


def read_png_array(path: str | Path) -> np.ndarray:
    """A label PNG as stored: (H, W) uint8 / uint16, palette PNGs as their indices (not colours)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            array = np.array(im)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read label image {path}: {exc}") from exc
    if array.ndim != 2:
        raise ValueError(f"label image {path} has shape {array.shape}; expected a single-channel (H, W) PNG")
    return array


# Cityscapes labelId of each thing class -> index into CITYSCAPES_THING_CLASSES.
_THING_INDEX_OF_LABEL_ID = {
    label_id: CITYSCAPES_THING_CLASSES.index(CITYSCAPES_CLASSES[train_id])
    for label_id, train_id in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items()
    if CITYSCAPES_CLASSES[train_id] in CITYSCAPES_THING_CLASSES
}


def boxes_from_instance_ids(instance_ids: np.ndarray) -> list[dict]:
    """Annotations from a Cityscapes-convention instance map (``labelId * 1000 + k`` on things).

    Boxes are tight around each instance's visible pixels, [x1, y1, x2, y2) with x2, y2 exclusive. Group regions
    of things (labelId without the ``* 1000``, e.g. "cars" too mixed to separate) become ``iscrowd`` 1.
    """
    annotations = []
    values = np.unique(instance_ids)
    for value in values.tolist():
        label_id, is_instance = (value // 1000, True) if value >= 1000 else (value, False)
        if label_id not in _THING_INDEX_OF_LABEL_ID:
            continue
        ys, xs = np.nonzero(instance_ids == value)
        annotations.append({
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
            "category_id": _THING_INDEX_OF_LABEL_ID[label_id],
            "iscrowd": 0 if is_instance else 1,
        })
    return annotations
