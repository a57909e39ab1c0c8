"""COCO-style detection metrics (mAP, AP50, AP75, per-class AP) through pycocotools, numpy only.

One implementation shared by ``vlt_training`` evaluation and the rosbag evaluator: both feed per-image ground truth
and predictions (xyxy boxes in the same pixel frame) into a :class:`DetectionEvaluator` and call ``compute()``.
The numbers are exactly pycocotools' ``COCOeval`` (``iouType="bbox"``, or ``"segm"`` for instance masks): AP averaged
over IoU 0.50:0.95 and the 101 recall points, classes without ground truth left out of the mean.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlt_perception.metrics.segmentation import retention

__all__ = ["DetectionEvaluator", "retention"]


def _as_boxes(boxes: Any, what: str, image_id: Any) -> np.ndarray:
    """(N, 4) float64 xyxy; raises naming the image when the shape or the order of corners is wrong."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"image {image_id!r}: {what} must be (N, 4) x1, y1, x2, y2; got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"image {image_id!r}: {what} contain NaN or infinite coordinates")
    if np.any(array[:, 2:] < array[:, :2]):
        bad = array[np.any(array[:, 2:] < array[:, :2], axis=1)][0].tolist()
        raise ValueError(f"image {image_id!r}: {what} must be x1, y1, x2, y2 with x2 >= x1, y2 >= y1; got {bad}")
    return array


def _as_vector(values: Any, length: int, what: str, image_id: Any, dtype) -> np.ndarray:
    array = np.asarray(values, dtype=dtype).reshape(-1)
    if array.shape[0] != length:
        raise ValueError(f"image {image_id!r}: {length} boxes but {array.shape[0]} {what}")
    return array


class DetectionEvaluator:
    """Accumulates ground truth and detections image by image, then runs pycocotools' COCOeval.

    ``class_names`` fixes the label space: labels are indices into it. ``max_detections`` is COCO's largest
    ``maxDets`` (100 by default; raise it for crowded driving scenes so that no true positive is cut off).
    ``min_area`` (pixels^2, default 0) evaluates only objects at least that large, the way COCO evaluates its
    area ranges: smaller ground truth is ignored (neither a miss nor matchable for a false positive) and so are
    unmatched detections below the size, like Cityscapes' minimum instance size or KITTI's minimum height.
    ``iou_type="segm"`` scores instance masks (mask IoU, mask areas), as COCO's mask AP: ``add`` then needs
    ``gt_masks`` and ``pred_masks``.
    """

    IOU_TYPES = ("bbox", "segm")

    def __init__(self, class_names: Sequence[str], max_detections: int = 100, min_area: float = 0.0,
                 iou_type: str = "bbox") -> None:
        if not class_names:
            raise ValueError("class_names is empty")
        if max_detections < 10:
            raise ValueError(f"max_detections must be >= 10 (COCO also reports maxDets 1 and 10), got {max_detections}")
        if min_area < 0:
            raise ValueError(f"min_area must be >= 0, got {min_area}")
        if iou_type not in self.IOU_TYPES:
            raise ValueError(f"iou_type must be one of {self.IOU_TYPES}, got {iou_type!r}")
        self.iou_type = iou_type
        self.class_names = list(class_names)
        self.max_detections = int(max_detections)
        self.min_area = float(min_area)
        self._images: list[Any] = []  # external image ids, in insertion order
        self._index: dict[Any, int] = {}
        self._gt: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # boxes, labels, iscrowd
        self._dt: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # boxes, scores, labels
        self._masks: list[tuple[list, list]] = []  # segm: COCO RLEs of (ground truth, predictions)

    def __len__(self) -> int:
        return len(self._images)

    def add(
        self,
        image_id: Any,
        gt_boxes: Any,
        gt_labels: Any,
        pred_boxes: Any,
        pred_scores: Any,
        pred_labels: Any,
        gt_iscrowd: Any = None,
        gt_masks: Any = None,
        pred_masks: Any = None,
    ) -> None:
        """Add one image: ground truth (N, 4) xyxy + (N,) labels [+ (N,) iscrowd], predictions (M, 4) + (M,) + (M,).

        Crowd ground truth (``iscrowd=1``) is neither a miss nor a false positive, as in COCO. ``iou_type="segm"``:
        ``gt_masks`` (N, H, W) and ``pred_masks`` (M, H, W) binary arrays (or lists of COCO RLEs) as well.
        """
        if image_id in self._index:
            raise ValueError(f"image {image_id!r} was added twice")
        gt_boxes = _as_boxes(gt_boxes, "ground-truth boxes", image_id)
        gt_labels = _as_vector(gt_labels, len(gt_boxes), "ground-truth labels", image_id, np.int64)
        crowd = np.zeros(len(gt_boxes), np.int64) if gt_iscrowd is None else gt_iscrowd
        crowd = _as_vector(crowd, len(gt_boxes), "iscrowd flags", image_id, np.int64)
        pred_boxes = _as_boxes(pred_boxes, "predicted boxes", image_id)
        pred_scores = _as_vector(pred_scores, len(pred_boxes), "scores", image_id, np.float64)
        pred_labels = _as_vector(pred_labels, len(pred_boxes), "predicted labels", image_id, np.int64)
        for what, labels in (("ground-truth", gt_labels), ("predicted", pred_labels)):
            if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise ValueError(
                    f"image {image_id!r}: {what} label {int(labels.max() if labels.max() >= 0 else labels.min())} "
                    f"outside 0..{len(self.class_names) - 1} ({len(self.class_names)} classes)"
                )
        masks = ([], [])
        if self.iou_type == "segm":
            masks = (_as_rles(gt_masks, len(gt_boxes), "ground-truth masks", image_id),
                     _as_rles(pred_masks, len(pred_boxes), "predicted masks", image_id))
        self._index[image_id] = len(self._images)
        self._masks.append(masks)
        self._images.append(image_id)
        self._gt.append((gt_boxes, gt_labels, crowd))
        self._dt.append((pred_boxes, pred_scores, pred_labels))

    def merge(self, other: "DetectionEvaluator") -> None:
        """Append another evaluator's images (e.g. gathered from other ranks); image ids must not overlap."""
        if other.class_names != self.class_names:
            raise ValueError("cannot merge evaluators with different class names")
        if (other.min_area, other.max_detections, other.iou_type) != (self.min_area, self.max_detections,
                                                                      self.iou_type):
            raise ValueError("cannot merge evaluators with different min_area / max_detections / iou_type")
        for image_id, gt, dt, (gt_masks, dt_masks) in zip(other._images, other._gt, other._dt, other._masks):
            self.add(image_id, *gt[:2], *dt, gt_iscrowd=gt[2], gt_masks=gt_masks, pred_masks=dt_masks)

    def _coco_objects(self):
        try:
            from pycocotools.coco import COCO
        except ImportError as exc:  # pragma: no cover - pycocotools is a runtime requirement
            raise ImportError("detection metrics need pycocotools: pip install -r requirements/runtime.txt") from exc

        images = [{"id": i + 1, "height": 0, "width": 0} for i in range(len(self._images))]
        # COCO category ids start at 1; category k + 1 is class_names[k].
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(self.class_names)]
        gt_anns, dt_anns = [], []
        segm = self.iou_type == "segm"
        for i, ((gt_boxes, gt_labels, crowd), (boxes, scores, labels), (gt_rles, dt_rles)) in enumerate(
                zip(self._gt, self._dt, self._masks)):
            for j, (box, label, is_crowd) in enumerate(zip(gt_boxes, gt_labels, crowd)):
                gt_anns.append(_annotation(len(gt_anns) + 1, i + 1, box, label, iscrowd=int(is_crowd),
                                           rle=gt_rles[j] if segm else None))
            for j, (box, score, label) in enumerate(zip(boxes, scores, labels)):
                dt_anns.append(_annotation(len(dt_anns) + 1, i + 1, box, label, score=float(score),
                                           rle=dt_rles[j] if segm else None))
        # Both sides are built as datasets directly: COCO.loadRes rejects an empty detection list.
        gt, dt = COCO(), COCO()
        gt.dataset = {"images": images, "categories": categories, "annotations": gt_anns}
        dt.dataset = {"images": images, "categories": categories, "annotations": dt_anns}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            gt.createIndex()
            dt.createIndex()
        return gt, dt

    def compute(self) -> dict[str, Any]:
        """COCO box metrics: ``mAP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APs``/``APm``/``APl``, ``AR`` (at
        ``max_detections``), ``per_class_AP`` (name -> AP or None without ground truth), ``per_class_AP50`` (the same
        at IoU 0.5) and counts.

        Metrics are NaN when no image has (non-crowd) ground truth.
        """
        from pycocotools.cocoeval import COCOeval

        num_gt = int(sum(int((crowd == 0).sum()) for _, _, crowd in self._gt))
        num_dt = int(sum(len(dt[0]) for dt in self._dt))
        result: dict[str, Any] = {"num_images": len(self._images), "num_gt": num_gt, "num_detections": num_dt}
        if not self._images:
            nan = float("nan")
            result.update(mAP=nan, AP50=nan, AP75=nan, APs=nan, APm=nan, APl=nan, AR=nan)
            result["per_class_AP"] = {name: None for name in self.class_names}
            result["per_class_AP50"] = {name: None for name in self.class_names}
            return result
        gt, dt = self._coco_objects()
        evaluator = COCOeval(gt, dt, iouType=self.iou_type)
        evaluator.params.maxDets = [1, 10, self.max_detections]
        # COCO's area ranges (all, small, medium, large) with their lower ends raised to min_area.
        evaluator.params.areaRng = [[max(lo, self.min_area), max(hi, self.min_area)]
                                    for lo, hi in evaluator.params.areaRng]
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
        precision = evaluator.eval["precision"]  # T IoUs, R recalls, K classes, A areas, M maxDets
        recall = evaluator.eval["recall"]  # T, K, A, M
        iou_thresholds = evaluator.params.iouThrs
        t50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
        t75 = int(np.argmin(np.abs(iou_thresholds - 0.75)))
        result.update(
            mAP=_mean_valid(precision[:, :, :, 0, -1]),
            AP50=_mean_valid(precision[t50, :, :, 0, -1]),
            AP75=_mean_valid(precision[t75, :, :, 0, -1]),
            APs=_mean_valid(precision[:, :, :, 1, -1]),
            APm=_mean_valid(precision[:, :, :, 2, -1]),
            APl=_mean_valid(precision[:, :, :, 3, -1]),
            AR=_mean_valid(recall[:, :, 0, -1]),
        )
        result["per_class_AP"] = self._per_class(precision[:, :, :, 0, -1])  # T, R, K
        result["per_class_AP50"] = self._per_class(precision[t50, :, :, 0, -1])  # R, K
        return result

    def _per_class(self, precision: np.ndarray) -> dict[str, float | None]:
        """Class name -> mean of the valid entries of ``precision`` (..., K); None for a class without ground truth."""
        means = {name: _mean_valid(precision[..., k]) for k, name in enumerate(self.class_names)}
        return {name: None if np.isnan(value) else value for name, value in means.items()}


def _as_rles(masks: Any, count: int, what: str, image_id: Any) -> list:
    """COCO RLEs of ``count`` masks given as (count, H, W) binary arrays or a list of compressed RLE dicts
    (uncompressed RLE needs the image size, which the evaluator does not keep: decode it first)."""
    if masks is None:
        raise ValueError(f"image {image_id!r}: iou_type='segm' needs {what}")
    if isinstance(masks, (list, tuple)) and all(isinstance(m, dict) for m in masks):
        rles = list(masks)
        if any(isinstance(m.get("counts"), list) for m in rles):
            raise ValueError(f"image {image_id!r}: {what}: uncompressed RLE (counts as a list); pass binary masks "
                             "or compressed RLE (pycocotools.mask.encode)")
    else:
        from pycocotools import mask as mask_utils

        array = np.asarray(masks)
        if array.ndim != 3 or array.shape[0] != count:
            raise ValueError(f"image {image_id!r}: {what} must be ({count}, H, W), got shape {array.shape}")
        if count == 0:
            return []
        rles = mask_utils.encode(np.asfortranarray(array.transpose(1, 2, 0).astype(np.uint8)))
    if len(rles) != count:
        raise ValueError(f"image {image_id!r}: {count} boxes but {len(rles)} {what}")
    return rles


def _annotation(ann_id: int, image_id: int, box: np.ndarray, label: int, iscrowd: int = 0, score=None,
                rle: dict | None = None) -> dict:
    x1, y1, x2, y2 = (float(v) for v in box)
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": int(label) + 1,
        "bbox": [x1, y1, x2 - x1, y2 - y1],  # COCO boxes are x, y, w, h
        "area": (x2 - x1) * (y2 - y1),
        "iscrowd": iscrowd,
    }
    if score is not None:
        ann["score"] = score
    if rle is not None:  # segm: COCOeval matches masks and ranges objects by mask area
        from pycocotools import mask as mask_utils

        ann["segmentation"] = rle
        ann["area"] = float(mask_utils.area(rle))
    return ann


def _mean_valid(values: np.ndarray) -> float:
    """Mean over entries > -1 (pycocotools marks absent classes/areas with -1); NaN when none."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")
