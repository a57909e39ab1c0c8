"""Cityscapes (``leftImg8bit`` + ``gtFine``) and ACDC (``rgb_anon`` + ``gt``) readers."""

from __future__ import annotations

from pathlib import Path

from vlt_perception.datasets._common import (
    DatasetLayoutError,
    boxes_from_instance_ids,
    image_size,
    read_png_array,
    require_dir,
)

CITYSCAPES_LAYOUT = "<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png + <root>/gtFine/<split>/<city>/*_gtFine_labelIds.png"
ACDC_LAYOUT = "<root>/rgb_anon/<condition>/<split>/<seq>/*_rgb_anon.png + <root>/gt/<condition>/<split>/<seq>/*_gt_labelIds.png"
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


def load_cityscapes(root: str | Path, split: str = "train", *, labels: bool = True, with_boxes: bool = True,
                    condition: str = "clear") -> list[dict]:
    """Records of a Cityscapes split (``train``, ``val``, ``test``), sorted by file name.

    Semantic labels come from ``*_gtFine_labelIds.png`` (``sem_seg_format`` ``cityscapes_label_ids``, mapped to
    train IDs by :func:`read_sem_seg`). With ``with_boxes`` the things' boxes are read from
    ``*_gtFine_instanceIds.png`` (one PNG read per image). ``labels=False`` reads images only (e.g. the test
    split, whose public labels are empty).
    """
    root = Path(root)
    image_dir = require_dir(root / "leftImg8bit" / split, "cityscapes", CITYSCAPES_LAYOUT)
    gt_dir = require_dir(root / "gtFine" / split, "cityscapes", CITYSCAPES_LAYOUT) if labels else None
    records = []
    for path in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        stem = path.name[: -len("_leftImg8bit.png")]
        record = _record(path, stem, "cityscapes", condition)
        if gt_dir is not None:
            gt = gt_dir / path.parent.name
            _attach_labels(record, gt / f"{stem}_gtFine_labelIds.png", gt / f"{stem}_gtFine_instanceIds.png",
                           with_boxes, "cityscapes")
        records.append(record)
    if not records:
        raise DatasetLayoutError(f"cityscapes: no *_leftImg8bit.png images under {image_dir}/<city>/ "
                                 f"(expected layout: {CITYSCAPES_LAYOUT})")
    return records


def load_acdc(root: str | Path, split: str = "val", *, conditions: str | list[str] | None = None,
              labels: bool = True, with_boxes: bool = True) -> list[dict]:
    """Records of ACDC ``split`` for each condition (default: every condition folder present, ``*_ref`` excluded).

    The record's ``condition`` is the folder name (``fog``, ``night``, ``rain``, ``snow``, ...). Boxes are read
    from ``*_gt_instanceIds.png`` where present (the synthetic benchmark writes them; official ACDC keeps
    instances in its separate panoptic release).
    """
    root = Path(root)
    rgb_root = require_dir(root / "rgb_anon", "acdc", ACDC_LAYOUT)
    if conditions is None:
        conditions = sorted(p.name for p in rgb_root.iterdir() if p.is_dir() and not p.name.endswith("_ref"))
    elif isinstance(conditions, str):
        conditions = [c for c in conditions.split(",") if c]
    records = []
    for condition in conditions:
        image_dir = require_dir(rgb_root / condition / split, "acdc", ACDC_LAYOUT)
        gt_dir = require_dir(root / "gt" / condition / split, "acdc", ACDC_LAYOUT) if labels else None
        found = sorted(image_dir.glob("*/*_rgb_anon.png"))
        if not found:
            raise DatasetLayoutError(f"acdc: no *_rgb_anon.png images under {image_dir}/<seq>/ "
                                     f"(expected layout: {ACDC_LAYOUT})")
        for path in found:
            stem = path.name[: -len("_rgb_anon.png")]
            record = _record(path, f"{condition}/{stem}", "acdc", condition)
            if gt_dir is not None:
                gt = gt_dir / path.parent.name
                _attach_labels(record, gt / f"{stem}_gt_labelIds.png", gt / f"{stem}_gt_instanceIds.png",
                               with_boxes, "acdc", instances_optional=True)
            records.append(record)
    if not records:
        raise DatasetLayoutError(f"acdc: no condition folders under {rgb_root} (expected layout: {ACDC_LAYOUT})")
    return records


def _record(path: Path, image_id: str, dataset: str, condition: str) -> dict:
    height, width = image_size(path)
    return {"file_name": str(path), "image_id": image_id, "height": height, "width": width, "dataset": dataset,
            "condition": condition}


def _attach_labels(record: dict, label_path: Path, instance_path: Path, with_boxes: bool, dataset: str,
                   instances_optional: bool = False) -> None:
    if not label_path.is_file():
        raise DatasetLayoutError(f"{dataset}: missing label file {label_path} for image {record['file_name']}")
    record["sem_seg_file_name"] = str(label_path)
    record["sem_seg_format"] = "cityscapes_label_ids"
    if not with_boxes:
        return
    if instance_path.is_file():
        record["annotations"] = boxes_from_instance_ids(read_png_array(instance_path), source=str(instance_path))
        record["instance_file_name"] = str(instance_path)  # the masks (instance_masks), for Mask R-CNN
    elif not instances_optional:
        raise DatasetLayoutError(f"{dataset}: missing instance file {instance_path} (pass with_boxes=False to "
                                 "read semantic labels only)")
