"""Generic COCO detection json reader (``annotations/instances_<split>.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from vlt_perception.datasets._common import (
    MAX_ANNOTATIONS_PER_IMAGE,
    DatasetLayoutError,
    check_annotation_count,
    path_under,
)
from vlt_perception.labels import CITYSCAPES_THING_CLASSES

COCO_LAYOUT = "<root>/annotations/instances_<split>.json; images at <root>/<file_name> or <root>/<split>/<file_name>"
# Category names of common driving datasets -> Cityscapes thing classes (names equal to a thing map to it).
THING_SYNONYMS = {"pedestrian": "person", "motorbike": "motorcycle", "motor": "motorcycle", "bike": "bicycle",
                  "cyclist": "rider"}
_CONDITIONS = ("clear", "fog", "night", "rain", "snow", "real_style")


def load_coco(root: str | Path, split: str = "val", *, annotation_file: str | Path | None = None,
              image_root: str | Path | None = None, map_to_things: bool = True,
              condition: str | None = None, max_annotations: int = MAX_ANNOTATIONS_PER_IMAGE) -> list[dict]:
    """Records of a COCO detection json, boxes converted from [x, y, w, h] to [x1, y1, x2, y2].

    Every ``file_name`` must be a relative path without ``..`` (images stay under the image folder), and an
    image may have at most ``max_annotations`` annotations; otherwise ``ValueError`` names the json and the entry.

    With ``map_to_things`` categories are matched by name onto the Cityscapes thing classes (plus
    ``THING_SYNONYMS``) and boxes of other categories are dropped; otherwise ``category_id`` is the index of the
    category in the json's categories sorted by id. ``condition`` defaults to the prefix of a split named
    ``<condition>_<split>`` (the synthetic benchmark's ``fog_val``), else ``clear``.
    """
    root = Path(root)
    ann_path = Path(annotation_file) if annotation_file else root / "annotations" / f"instances_{split}.json"
    if not ann_path.is_file():
        raise DatasetLayoutError(f"coco: missing annotation file {ann_path} (expected layout: {COCO_LAYOUT})")
    try:
        data = json.loads(ann_path.read_text())
        images, categories = data["images"], data["categories"]
        annotations = data.get("annotations", [])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"coco: {ann_path} is not a COCO detection json ({exc!r})") from exc
    category_map = _category_map(categories, map_to_things)
    if condition is None:
        prefix = split.rsplit("_", 1)[0] if "_" in split else ""
        condition = prefix if prefix in _CONDITIONS else "clear"
    for i, img in enumerate(images):
        path_under(root, img.get("file_name") if isinstance(img, dict) else None, "coco", ann_path,
                   f"images[{i}].file_name")
    image_dir = _image_dir(root, split, image_root, images)
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in images}
    for ann in annotations:
        category = category_map.get(ann["category_id"])
        if category is None or ann["image_id"] not in by_image:
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        entry = {"bbox": [x, y, x + w, y + h], "category_id": category, "iscrowd": int(ann.get("iscrowd", 0))}
        if ann.get("segmentation"):
            entry["segmentation"] = ann["segmentation"]  # instance masks for Mask R-CNN (instance_masks)
        by_image[ann["image_id"]].append(entry)
    for img in images:
        check_annotation_count(len(by_image[img["id"]]), f"coco: {ann_path}: image {img['id']!r}", max_annotations)
    return [{"file_name": str(image_dir / img["file_name"]), "image_id": str(img["id"]),
             "height": int(img["height"]), "width": int(img["width"]), "dataset": "coco", "condition": condition,
             "annotations": by_image[img["id"]]} for img in images]


def _category_map(categories: list[dict], map_to_things: bool) -> dict[int, int]:
    if not map_to_things:
        return {c["id"]: i for i, c in enumerate(sorted(categories, key=lambda c: c["id"]))}
    mapping = {}
    for c in categories:
        name = THING_SYNONYMS.get(c["name"], c["name"])
        if name in CITYSCAPES_THING_CLASSES:
            mapping[c["id"]] = CITYSCAPES_THING_CLASSES.index(name)
    return mapping


def _image_dir(root: Path, split: str, image_root, images: list[dict]) -> Path:
    if image_root is not None:
        return Path(image_root)
    if not images:
        return root
    for candidate in (root, root / split):
        if (candidate / images[0]["file_name"]).is_file():
            return candidate
    raise DatasetLayoutError(f"coco: image {images[0]['file_name']} not found under {root} or {root / split} "
                             "(pass image_root=...)")


