"""Calibration and failure detection from per-pixel confidence (numpy only, streaming, bounded memory).

The segmentation nodes publish a confidence per pixel (the top class probability). Under domain shift the field
reports, besides mIoU, how far that confidence can be trusted (as dataset benchmarks such as BRAVO do):

- **ECE** (expected calibration error, 15 equal-width bins): ``sum_b n_b / N * |accuracy_b - confidence_b|``
  over labelled pixels, where ``accuracy_b`` is the fraction of correctly classified pixels in bin ``b`` and
  ``confidence_b`` their mean confidence (Guo et al. 2017).
- **AUROC**: how well confidence separates correct from misclassified pixels (1 = every correct pixel is more
  confident than every wrong one, 0.5 = chance). Correct pixels are the positives, confidence the score.
- **FPR95**: the fraction of misclassified pixels still accepted when the confidence threshold keeps 95% of the
  correct ones (lower is better; Hendrycks & Gimpel 2017).

Everything is accumulated in histograms, so a long bag costs a fixed amount of memory: ECE from sums per
calibration bin (exact), AUROC / FPR95 from counts of correct and wrong pixels per confidence bin
(``roc_bins`` equal-width bins over [0, 1]). The ROC metrics are exact for confidences that fall on bin
centres and otherwise treat pixels within one bin (width ``1 / roc_bins``) as tied.
"""

from __future__ import annotations

import numpy as np

from vlt_perception.labels import IGNORE_INDEX

ECE_BINS = 15
ROC_BINS = 10000
TPR_LEVEL = 0.95


class CalibrationAccumulator:
    """Accumulates per-pixel (confidence, correct) statistics over frames; :meth:`summary` gives the metrics.

    Args:
        num_bins: calibration bins of the ECE and the reliability diagram.
        roc_bins: confidence bins of the AUROC / FPR95 histograms (memory: 2 x ``roc_bins`` counters).
        ignore_index: ground-truth label that is not scored.
    """

    def __init__(self, num_bins: int = ECE_BINS, roc_bins: int = ROC_BINS, ignore_index: int = IGNORE_INDEX) -> None:
        if num_bins < 1 or roc_bins < 1:
            raise ValueError(f"num_bins and roc_bins must be >= 1, got {num_bins}, {roc_bins}")
        self.num_bins, self.roc_bins, self.ignore_index = num_bins, roc_bins, ignore_index
        self.count = np.zeros(num_bins, dtype=np.int64)  # pixels per calibration bin
        self.confidence_sum = np.zeros(num_bins, dtype=np.float64)
        self.correct_sum = np.zeros(num_bins, dtype=np.int64)
        self.roc_correct = np.zeros(roc_bins, dtype=np.int64)  # correct pixels per confidence bin
        self.roc_wrong = np.zeros(roc_bins, dtype=np.int64)

    def update(self, confidence: np.ndarray, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add one or more frames: ``confidence`` (float, [0, 1]), ``prediction`` and ``target`` label maps of
        the same shape. Pixels whose target is ``ignore_index`` are skipped."""
        if not confidence.shape == prediction.shape == target.shape:
            raise ValueError(f"confidence {confidence.shape}, prediction {prediction.shape} and target "
                             f"{target.shape} differ in shape")
        target = target.ravel()
        valid = target != self.ignore_index
        conf = np.clip(np.asarray(confidence, dtype=np.float64).ravel()[valid], 0.0, 1.0)
        if not np.all(np.isfinite(conf)):
            raise ValueError("confidence has non-finite values")
        correct = prediction.ravel()[valid].astype(np.int64) == target[valid].astype(np.int64)
        # bin b holds (b / n, (b + 1) / n]; confidence 0 goes to bin 0 (as torchmetrics / Guo et al. bucketise)
        cal = np.clip(np.ceil(conf * self.num_bins).astype(np.int64) - 1, 0, self.num_bins - 1)
        self.count += np.bincount(cal, minlength=self.num_bins)
        self.confidence_sum += np.bincount(cal, weights=conf, minlength=self.num_bins)
        self.correct_sum += np.bincount(cal[correct], minlength=self.num_bins)
        roc = np.minimum((conf * self.roc_bins).astype(np.int64), self.roc_bins - 1)
        self.roc_correct += np.bincount(roc[correct], minlength=self.roc_bins)
        self.roc_wrong += np.bincount(roc[~correct], minlength=self.roc_bins)

    def merge(self, other: "CalibrationAccumulator") -> None:
        if (other.num_bins, other.roc_bins) != (self.num_bins, self.roc_bins):
            raise ValueError("cannot merge calibration accumulators with different bins")
        for name in ("count", "confidence_sum", "correct_sum", "roc_correct", "roc_wrong"):
            getattr(self, name).__iadd__(getattr(other, name))

    @property
    def pixels(self) -> int:
        return int(self.count.sum())

    def ece(self) -> float:
        """Expected calibration error in [0, 1]; NaN without pixels."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        gap = np.abs(self.correct_sum - self.confidence_sum)  # n_b * |acc_b - conf_b|
        return float(gap.sum() / total)

    def _roc(self) -> tuple[np.ndarray, np.ndarray]:
        """TPR and FPR (with a leading 0) for thresholds at every bin, from the most confident bin down."""
        pos = np.cumsum(self.roc_correct[::-1])
        neg = np.cumsum(self.roc_wrong[::-1])
        tpr = np.concatenate([[0.0], pos / pos[-1]])
        fpr = np.concatenate([[0.0], neg / neg[-1]])
        return tpr, fpr

    def auroc(self) -> float:
        """Area under the ROC of confidence for correct (positive) vs misclassified pixels; NaN when either set is
        empty. Pixels in one bin are ties (half credit), as ``sklearn.metrics.roc_auc_score`` scores ties."""
        if self.roc_correct.sum() == 0 or self.roc_wrong.sum() == 0:
            return float("nan")
        tpr, fpr = self._roc()
        return float(np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr))

    def fpr_at_tpr(self, level: float = TPR_LEVEL) -> float:
        """Fraction of misclassified pixels at or above the highest threshold that accepts ``level`` of the correct
        ones; NaN when either set is empty."""
        if self.roc_correct.sum() == 0 or self.roc_wrong.sum() == 0:
            return float("nan")
        tpr, fpr = self._roc()
        return float(fpr[int(np.searchsorted(tpr, level, side="left"))])

    def reliability(self) -> dict:
        """Per calibration bin: edges, pixel count, mean confidence and accuracy (None for empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = self.confidence_sum / self.count
            acc = self.correct_sum / self.count
        as_list = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731
        return {"edges": np.linspace(0.0, 1.0, self.num_bins + 1).tolist(), "count": self.count.tolist(),
                "confidence": as_list(conf), "accuracy": as_list(acc)}

    def summary(self) -> dict:
        """``{"pixels", "ece", "auroc", "fpr95", "reliability"}`` (JSON-serialisable; NaN -> None)."""
        clean = lambda v: None if v != v else v  # noqa: E731
        return {"pixels": self.pixels, "ece": clean(self.ece()), "auroc": clean(self.auroc()),
                "fpr95": clean(self.fpr_at_tpr()), "reliability": self.reliability()}
