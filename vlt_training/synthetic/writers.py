"""Writers of the official dataset layouts: Cityscapes, ACDC and COCO instance json (boxes and masks).

Every file is written to a temporary name in its folder and renamed into place, so a crash never leaves a
half-written PNG or json behind (a reader sees either no file or a complete one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from vlt_perception.labels import CITYSCAPES_THING_CLASSES, label_ids_to_train_ids

_SUPERCATEGORY = {"person": "human", "rider": "human"}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Atomically write (H, W) uint8/uint16 or (H, W, 3) uint8 RGB as PNG."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    _atomic_write_bytes(Path(path), buf.tobytes())


def write_json(path: str | Path, obj) -> None:
    """Atomically write ``obj`` as json."""
    _atomic_write_bytes(Path(path), json.dumps(obj, indent=1).encode())


def write_cityscapes_sample(root: str | Path, split: str, city: str, name: str, image: np.ndarray,
                            label_ids: np.ndarray, instance_ids: np.ndarray) -> dict[str, Path]:
    """Write one sample in the Cityscapes layout; returns the paths written.

    ``root/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png`` and ``root/gtFine/{split}/{city}/{name}_gtFine_``
    ``labelIds.png`` / ``labelTrainIds.png`` / ``instanceIds.png`` (uint16, ``labelId * 1000 + k`` on things).
    """
    root = Path(root)
    gt = root / "gtFine" / split / city
    paths = {
        "image": root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png",
        "label_ids": gt / f"{name}_gtFine_labelIds.png",
        "train_ids": gt / f"{name}_gtFine_labelTrainIds.png",
        "instance_ids": gt / f"{name}_gtFine_instanceIds.png",
    }
    write_png(paths["label_ids"], label_ids.astype(np.uint8))
    write_png(paths["train_ids"], label_ids_to_train_ids(label_ids))
    write_png(paths["instance_ids"], instance_ids.astype(np.uint16))
    write_png(paths["image"], image)  # last: an image present means its labels are complete
    return paths


def write_acdc_sample(root: str | Path, condition: str, split: str, seq: str, name: str, image: np.ndarray,
                      label_ids: np.ndarray, instance_ids: np.ndarray | None = None) -> dict[str, Path]:
    """Write one sample in the ACDC layout; returns the paths written.

    ``root/rgb_anon/{condition}/{split}/{seq}/{name}_rgb_anon.png`` and ``root/gt/{condition}/{split}/{seq}/``
    ``{name}_gt_labelIds.png`` / ``_gt_labelTrainIds.png``; ``_gt_instanceIds.png`` (Cityscapes convention) is an
    extension of the official layout, written when ``instance_ids`` is given.
    """
    root = Path(root)
    gt = root / "gt" / condition / split / seq
    paths = {
        "image": root / "rgb_anon" / condition / split / seq / f"{name}_rgb_anon.png",
        "label_ids": gt / f"{name}_gt_labelIds.png",
        "train_ids": gt / f"{name}_gt_labelTrainIds.png",
    }
    write_png(paths["label_ids"], label_ids.astype(np.uint8))
    write_png(paths["train_ids"], label_ids_to_train_ids(label_ids))
    if instance_ids is not None:
        paths["instance_ids"] = gt / f"{name}_gt_instanceIds.png"
        write_png(paths["instance_ids"], instance_ids.astype(np.uint16))
    write_png(paths["image"], image)
    return paths


def instance_rle(instance_ids: np.ndarray, instance_id: int) -> dict:
    """COCO compressed RLE (``{"size": [H, W], "counts": str}``, pycocotools' encoding) of one instance of an
    (H, W) Cityscapes instanceIds map, for a json ``segmentation``."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(instance_ids == instance_id, dtype=np.uint8))  # column-major input
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


class CocoBuilder:
    """Collects images, boxes and optional masks and writes a COCO instance json (categories = the Cityscapes
    things)."""

    def __init__(self, description: str = "") -> None:
        self.description = description
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add_image(self, file_name: str, height: int, width: int, objects: list[dict]) -> int:
        """Add an image (``file_name`` relative to the dataset root) and its ``objects`` (``bbox`` x1, y1, x2, y2
        exclusive, ``category_id`` index into the thing classes, ``area``, optional ``segmentation`` in COCO form);
        returns the COCO image id."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)})
        for obj in objects:
            x1, y1, x2, y2 = obj["bbox"]
            self.annotations.append({
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": int(obj["category_id"]) + 1,
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "area": float(obj.get("area", (x2 - x1) * (y2 - y1))),
                "iscrowd": 0,
                **({"segmentation": obj["segmentation"]} if "segmentation" in obj else {}),
            })
        return image_id

    def to_dict(self) -> dict:
        categories = [{"id": i + 1, "name": n, "supercategory": _SUPERCATEGORY.get(n, "vehicle")}
                      for i, n in enumerate(CITYSCAPES_THING_CLASSES)]
        return {"info": {"description": self.description, "version": "1.0"}, "licenses": [],
                "images": self.images, "annotations": self.annotations, "categories": categories}

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())
