"""Semantic-segmentation metrics from a confusion matrix (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlt_perception.labels import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix; rows are ground truth, columns predictions."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        # Ground-truth pixels whose prediction is outside the class range (e.g. 255): false negatives only.
        self.missed = np.zeros(num_classes, dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add one or more label maps of equal shape; ignored and out-of-range target pixels are skipped."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
        target = target.astype(np.int64).ravel()
        prediction = prediction.astype(np.int64).ravel()
        valid = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        # Predictions outside the class range (e.g. 255) count as wrong for their ground-truth class.
        prediction = np.where((prediction >= 0) & (prediction < self.num_classes), prediction, -1)
        valid_pred = valid & (prediction >= 0)
        self.matrix += np.bincount(
            target[valid_pred] * self.num_classes + prediction[valid_pred], minlength=self.num_classes**2
        ).reshape(self.num_classes, self.num_classes)
        self.missed += np.bincount(target[valid & (prediction < 0)], minlength=self.num_classes)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix
        self.missed += other.missed

    def iou(self) -> np.ndarray:
        """Per-class IoU (C,); NaN for classes absent from both ground truth and predictions."""
        true_pos = np.diag(self.matrix).astype(np.float64)
        gt_total = self.matrix.sum(axis=1) + self.missed
        pred_total = self.matrix.sum(axis=0)
        union = gt_total + pred_total - true_pos
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_pos / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes present in ground truth or predictions (Cityscapes convention)."""
        ious = self.iou()
        return float(np.nanmean(ious)) if np.any(~np.isnan(ious)) else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum() + self.missed.sum()
        return float(np.diag(self.matrix).sum() / total) if total else float("nan")

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict:
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        ious = self.iou()
        return {
            "mIoU": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, ious)},
        }


def retention(target_miou: float, source_miou: float) -> float:
    """Target score / source score (NaN when the source score is 0): rPD / 100, the fraction that reports keep
    under the key ``retention``; tables show rPD = 100 x this."""
    return float(target_miou / source_miou) if source_miou > 0 else float("nan")
