"""BDD100K readers: semantic segmentation (10K images) and detection (100K images, ``det_20`` json)."""

from __future__ import annotations

import json
from pathlib import Path

from vlt_perception.datasets._common import (
    MAX_ANNOTATIONS_PER_IMAGE,
    DatasetLayoutError,
    check_annotation_count,
    image_size,
    path_under,
    require_dir,
    require_file,
)
from vlt_perception.labels import CITYSCAPES_THING_CLASSES

BDD_SEG_LAYOUT = "<root>/images/10k/<split>/*.jpg + <root>/labels/sem_seg/masks/<split>/*.png (train IDs)"
BDD_DET_LAYOUT = "<root>/images/100k/<split>/*.jpg + <root>/labels/det_20/det_<split>.json"

# BDD100K detection categories -> Cityscapes thing classes; others (traffic light / sign, other vehicle,
# other person, trailer) are dropped.
BDD_DET_TO_THING = {"pedestrian": "person", "person": "person", "rider": "rider", "car": "car", "truck": "truck",
                    "bus": "bus", "train": "train", "motorcycle": "motorcycle", "motor": "motorcycle",
                    "bicycle": "bicycle", "bike": "bicycle"}


def load_bdd100k(root: str | Path, split: str = "val", *, task: str = "sem_seg",
                 max_annotations: int = MAX_ANNOTATIONS_PER_IMAGE) -> list[dict]:
    """Records of BDD100K ``split`` (``train`` / ``val``) for ``task`` ``sem_seg`` or ``det``.

    Segmentation masks already hold Cityscapes train IDs (``sem_seg_format`` ``train_ids``); detection boxes
    (x1, y1, x2, y2 in pixels) are mapped onto the thing classes (see ``BDD_DET_TO_THING``), crowd-free. A
    detection frame's ``name`` must be a relative path without ``..`` and may list at most ``max_annotations``
    labels; otherwise ``ValueError`` names the json and the frame.
    """
    if task == "sem_seg":
        return _load_seg(Path(root), split)
    if task == "det":
        return _load_det(Path(root), split, max_annotations)
    raise ValueError(f"bdd100k: unknown task {task!r}; use 'sem_seg' or 'det'")


def _load_seg(root: Path, split: str) -> list[dict]:
    image_dir = require_dir(root / "images" / "10k" / split, "bdd100k", BDD_SEG_LAYOUT)
    mask_dir = require_dir(root / "labels" / "sem_seg" / "masks" / split, "bdd100k", BDD_SEG_LAYOUT)
    records = []
    for path in sorted(image_dir.glob("*.jpg")):
        mask = mask_dir / f"{path.stem}.png"
        if not mask.is_file():
            raise DatasetLayoutError(f"bdd100k: missing mask {mask} for image {path}")
        height, width = image_size(path)
        records.append({"file_name": str(path), "image_id": path.stem, "height": height, "width": width,
                        "dataset": "bdd100k", "condition": "clear", "sem_seg_file_name": str(mask),
                        "sem_seg_format": "train_ids"})
    if not records:
        raise DatasetLayoutError(f"bdd100k: no *.jpg images under {image_dir} (expected layout: {BDD_SEG_LAYOUT})")
    return records


def _load_det(root: Path, split: str, max_annotations: int = MAX_ANNOTATIONS_PER_IMAGE) -> list[dict]:
    image_dir = require_dir(root / "images" / "100k" / split, "bdd100k", BDD_DET_LAYOUT)
    ann_path = require_file(root / "labels" / "det_20" / f"det_{split}.json", "bdd100k", "detection json")
    try:
        frames = json.loads(ann_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"bdd100k: {ann_path} is not valid json: {exc}") from exc
    if not isinstance(frames, list):
        raise ValueError(f"bdd100k: {ann_path} should hold a list of frames, got {type(frames).__name__}")
    records = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise ValueError(f"bdd100k: {ann_path}: frames[{i}] is not a mapping")
        path = path_under(image_dir, frame.get("name"), "bdd100k", ann_path, f"frames[{i}].name")
        if not path.is_file():
            raise DatasetLayoutError(f"bdd100k: image {path} listed in {ann_path} is missing")
        height, width = image_size(path)
        labels = frame.get("labels") or []
        check_annotation_count(len(labels), f"bdd100k: {ann_path}: frames[{i}] ({frame['name']!r})", max_annotations)
        annotations = []
        for label in labels:
            thing = BDD_DET_TO_THING.get(label.get("category", ""))
            box = label.get("box2d")
            if thing is None or box is None:
                continue
            annotations.append({"bbox": [float(box["x1"]), float(box["y1"]), float(box["x2"]), float(box["y2"])],
                                "category_id": CITYSCAPES_THING_CLASSES.index(thing), "iscrowd": 0})
        timeofday = (frame.get("attributes") or {}).get("timeofday", "")
        records.append({"file_name": str(path), "image_id": path.stem, "height": height, "width": width,
                        "dataset": "bdd100k", "condition": "night" if timeofday == "night" else "clear",
                        "annotations": annotations})
    return records
