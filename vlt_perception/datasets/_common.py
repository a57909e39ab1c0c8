"""Shared helpers of the dataset readers: layout checks, image sizes, boxes from instance maps.

Datasets come from others, so what their annotation files say is bounded: image paths stay under the dataset root
(:func:`path_under`), images and label maps larger than ``max_pixels`` are refused from their header before they
are decoded, and an image may carry at most ``MAX_ANNOTATIONS_PER_IMAGE`` annotations, whose masks may take at most
``MAX_MASK_BYTES``.
"""

from __future__ import annotations

from pathlib import Path, PurePath

import numpy as np

from vlt_perception.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    CITYSCAPES_THING_CLASSES,
)
from vlt_perception.pipeline.image_codec import DEFAULT_MAX_PIXELS

# COCO has at most 93 objects per image and LVIS about 800; far more is a corrupt or hostile annotation file.
MAX_ANNOTATIONS_PER_IMAGE = 1000
# instance masks are N x H x W bytes: 1 GiB is 500 masks of a 2-megapixel image
MAX_MASK_BYTES = 1 << 30


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


def path_under(root: Path, name, dataset: str, source: Path, entry: str) -> Path:
    """``root / name`` for a relative path ``name`` taken from annotation file ``source``; a name that is not a
    non-empty string, is absolute or climbs out with ``..`` raises ``ValueError`` naming the file and the entry
    (otherwise the reader would load, and ``dataset_to_bag`` copy, any image on the machine)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"{dataset}: {source}: {entry}: image path {name!r} is not a file name")
    pure = PurePath(name)
    if pure.is_absolute() or pure.anchor or ".." in pure.parts:
        raise ValueError(f"{dataset}: {source}: {entry}: image path {name!r} leaves the dataset folder "
                         "(absolute or '..'); paths must be relative to the dataset root")
    return root / pure


def check_pixels(path, height: int, width: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse an image of more than ``max_pixels`` (the runtime's limit by default) from its header size."""
    if height * width > max_pixels:
        raise ValueError(f"{path}: {width}x{height} = {height * width} pixels exceeds max_pixels={max_pixels} "
                         "(corrupt or hostile file, or raise max_pixels)")


def image_size(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels; over ``max_pixels`` raises."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image header of {path}: {exc}") from exc
    check_pixels(path, height, width, max_pixels)
    return height, width


def read_png_array(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A label PNG as stored: (H, W) uint8 / uint16, palette PNGs as their indices (not colours). The header size
    is checked against ``max_pixels`` before the pixels are decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            check_pixels(path, height, width, max_pixels)
            array = np.array(im)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
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


def check_annotation_count(count: int, where: str, max_annotations: int = MAX_ANNOTATIONS_PER_IMAGE) -> None:
    """Refuse an image with more than ``max_annotations`` annotations (``where`` names the file and the image)."""
    if count > max_annotations:
        raise ValueError(f"{where}: {count} annotations exceed max_annotations={max_annotations} per image "
                         "(corrupt or hostile annotations, or raise max_annotations)")


def boxes_from_instance_ids(instance_ids: np.ndarray, source: str = "instance map",
                            max_annotations: int = MAX_ANNOTATIONS_PER_IMAGE) -> list[dict]:
    """Annotations from a Cityscapes-convention instance map (``labelId * 1000 + k`` on things).

    Boxes are tight around each instance's visible pixels, [x1, y1, x2, y2) with x2, y2 exclusive. Group regions
    of things (labelId without the ``* 1000``, e.g. "cars" too mixed to separate) become ``iscrowd`` 1. Each
    annotation keeps its ``instance_id`` (the map's value), from which :func:`instance_masks` reads its mask.
    """
    flat = instance_ids.ravel().astype(np.int64)
    label_ids = np.where(flat >= 1000, flat // 1000, flat)  # N
    thing_table = np.full(256, -1, dtype=np.int64)
    for label_id, thing in _THING_INDEX_OF_LABEL_ID.items():
        thing_table[label_id] = thing
    pixels = np.flatnonzero(thing_table[np.clip(label_ids, 0, 255)] >= 0)  # thing pixels only: a small fraction
    if len(pixels) == 0:
        return []
    values = flat[pixels]
    order = np.argsort(values, kind="stable")
    values, pixels = values[order], pixels[order]
    ys, xs = np.divmod(pixels, instance_ids.shape[1])
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])  # first pixel of each instance
    check_annotation_count(len(starts), str(source), max_annotations)
    x1, x2 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts) + 1
    y1, y2 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts) + 1
    annotations = []
    for i, value in enumerate(values[starts].tolist()):
        label_id = value // 1000 if value >= 1000 else value
        annotations.append({"bbox": [int(x1[i]), int(y1[i]), int(x2[i]), int(y2[i])],
                            "category_id": int(thing_table[label_id]), "iscrowd": 0 if value >= 1000 else 1,
                            "instance_id": int(value)})
    return annotations


def instance_masks(record: dict, annotations: list[dict] | None = None,
                   max_bytes: int = MAX_MASK_BYTES) -> np.ndarray | None:
    """(N, H, W) uint8 masks of ``annotations`` (default: the record's), in their order; ``None`` when the record
    has no mask source.

    Sources: an instance map (``record["instance_file_name"]``, Cityscapes convention, annotations with
    ``instance_id``; Cityscapes / ACDC layouts and the synthetic benchmark) or COCO ``segmentation`` (polygons,
    RLE, compressed RLE; decoded with pycocotools). Raises ``ValueError`` naming the image when the source does
    not match the annotations, or when the N x H x W bytes of the masks exceed ``max_bytes``.
    """
    anns = record.get("annotations") if annotations is None else annotations
    if anns is None:
        return None
    height, width = int(record["height"]), int(record["width"])
    name = record.get("file_name")
    if len(anns) * height * width > max_bytes:
        raise ValueError(f"{name}: {len(anns)} masks of {width}x{height} take {len(anns) * height * width} bytes, "
                         f"over max_bytes={max_bytes} (corrupt or hostile annotations, or raise max_bytes)")
    if not anns:
        return np.zeros((0, height, width), np.uint8)
    if record.get("instance_file_name") and all("instance_id" in a for a in anns):
        ids = read_png_array(record["instance_file_name"])
        if ids.shape != (height, width):
            raise ValueError(f"{record['instance_file_name']}: instance map is {ids.shape}, image {name} is "
                             f"{(height, width)}")
        return np.stack([ids == a["instance_id"] for a in anns]).astype(np.uint8)
    if all("segmentation" in a for a in anns):
        from pycocotools import mask as mask_utils

        masks = []
        for a in anns:
            segm = a["segmentation"]
            try:
                if isinstance(segm, list):  # polygons
                    rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
                elif isinstance(segm.get("counts"), list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(segm, height, width)
                else:
                    rle = segm
                masks.append(mask_utils.decode(rle))
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                raise ValueError(f"{name}: malformed COCO segmentation ({exc!r})") from exc
        return np.stack(masks).astype(np.uint8)
    return None
