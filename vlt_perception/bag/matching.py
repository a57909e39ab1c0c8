"""Stamp matching and metric accumulation shared by the offline evaluator and the online evaluator node.

:class:`StampMatcher` pairs ground truth with predictions by header stamp (they may arrive in any order, in parts:
labels and boxes are separate topics); :class:`EvaluationAccumulator` feeds matched frames into the project's one
metric implementation (``vlt_perception.metrics``) per bag, per condition and overall, and keeps latencies and a
few samples for the report. No rclpy, no engine: both are plain data in, numbers out.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vlt_perception.bag import BagError
from vlt_perception.labels import IGNORE_INDEX
from vlt_perception.metrics.calibration import CalibrationAccumulator
from vlt_perception.metrics.segmentation import ConfusionMatrix, retention

PARTS = ("labels", "boxes", "confidence")  # confidence: a prediction part only (the per-pixel 32FC1 image)
REFERENCE = "reference"
# Every distinct condition string from a bag gets its own metrics group, report samples and figures.
MAX_CONDITIONS = 64


@dataclass
class Match:
    """Ground truth and prediction of one stamp. ``latency_ms`` is None when it could not be measured."""

    stamp_ns: int
    condition: str
    gt: dict = field(default_factory=dict)  # part -> value (labels (H, W) uint8 / boxes dict)
    pred: dict = field(default_factory=dict)  # also "confidence" (H, W) float32 where the model publishes it
    latency_ms: float | None = None
    image: np.ndarray | None = None  # H, W, 3 RGB when available (offline), for sample overlays


@dataclass
class _Pending:
    parts: dict = field(default_factory=dict)
    first_arrival_s: float | None = None
    last_arrival_s: float | None = None
    condition: str | None = None
    latency_ms: float | None = None
    image: np.ndarray | None = None


class StampMatcher:
    """Pairs ground truth and predictions that carry the same header stamp (integer nanoseconds).

    ``gt_parts`` / ``pred_parts``: which of ``labels`` / ``boxes`` make a side complete. ``add_*`` return the
    :class:`Match` when a stamp becomes complete on both sides. Latency is the prediction's ``latency_ms`` when
    given (offline: measured around the pipeline), else the time from the camera frame's arrival
    (:meth:`add_camera`), or failing that the first ground-truth message, to the complete prediction (online:
    end to end through the graph). At most ``max_pending`` stamps wait per side; older ones are dropped and counted.
    """

    def __init__(self, gt_parts: Sequence[str], pred_parts: Sequence[str], max_pending: int = 256) -> None:
        for part in (*gt_parts, *pred_parts):
            if part not in PARTS:
                raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
        if "confidence" in gt_parts or ("confidence" in pred_parts and "labels" not in pred_parts):
            raise ValueError("confidence is a prediction part that goes with predicted labels")
        common = set(gt_parts) & set(pred_parts)
        if not common:
            raise ValueError(f"nothing to evaluate: ground truth has {sorted(gt_parts)}, predictions "
                             f"{sorted(pred_parts)}")
        self.gt_parts, self.pred_parts = set(gt_parts), set(pred_parts)
        self.max_pending = max_pending
        self.counts: Counter = Counter()
        self._gt: OrderedDict[int, _Pending] = OrderedDict()
        self._pred: OrderedDict[int, _Pending] = OrderedDict()
        self._done: OrderedDict[int, None] = OrderedDict()  # recently matched stamps, to spot duplicates
        self._camera: OrderedDict[int, float] = OrderedDict()  # stamp -> camera frame arrival (online)

    def add_camera(self, stamp_ns: int, arrival_s: float) -> None:
        """The camera frame of ``stamp_ns`` arrived: end-to-end latency is measured from here when known."""
        self._camera.setdefault(stamp_ns, arrival_s)
        while len(self._camera) > 4 * self.max_pending:
            self._camera.popitem(last=False)

    def add_ground_truth(self, stamp_ns: int, part: str, value, *, condition: str, arrival_s: float | None = None,
                         image: np.ndarray | None = None) -> Match | None:
        entry = self._entry(self._gt, stamp_ns, part, value, arrival_s, "ground_truth")
        if entry is None:
            return None
        entry.condition = entry.condition or condition
        if image is not None:
            entry.image = image
        return self._try_match(stamp_ns)

    def add_prediction(self, stamp_ns: int, part: str, value, *, arrival_s: float | None = None,
                       latency_ms: float | None = None) -> Match | None:
        if part not in self.pred_parts:
            return None
        entry = self._entry(self._pred, stamp_ns, part, value, arrival_s, "prediction")
        if entry is None:
            return None
        if latency_ms is not None:
            entry.latency_ms = latency_ms
        return self._try_match(stamp_ns)

    def _entry(self, side: OrderedDict, stamp: int, part: str, value, arrival_s, what: str) -> _Pending | None:
        if stamp in self._done:
            self.counts[f"duplicate_{what}"] += 1
            return None
        entry = side.get(stamp)
        if entry is None:
            entry = side[stamp] = _Pending(first_arrival_s=arrival_s)
            self._evict(side, what)
        elif part in entry.parts:
            self.counts[f"duplicate_{what}"] += 1
            return None
        entry.parts[part] = value
        entry.last_arrival_s = arrival_s
        return entry

    def _evict(self, side: OrderedDict, what: str) -> None:
        while len(side) > self.max_pending:
            side.popitem(last=False)
            self.counts["unmatched_ground_truth" if what == "ground_truth" else "unmatched_predictions"] += 1

    def _try_match(self, stamp: int) -> Match | None:
        gt, pred = self._gt.get(stamp), self._pred.get(stamp)
        if gt is None or pred is None or not self.gt_parts <= set(gt.parts) or not self.pred_parts <= set(pred.parts):
            return None
        del self._gt[stamp], self._pred[stamp]
        self._done[stamp] = None
        if len(self._done) > 4 * self.max_pending:
            self._done.popitem(last=False)
        latency = pred.latency_ms
        start = self._camera.pop(stamp, None) or gt.first_arrival_s
        if latency is None and start is not None and pred.last_arrival_s is not None:
            latency = (pred.last_arrival_s - start) * 1e3
            if latency < 0:  # the prediction beat the ground truth: the clock says nothing about the model
                self.counts["latency_unknown"] += 1
                latency = None
        self.counts["matched"] += 1
        return Match(stamp, gt.condition or "unknown", gt.parts, pred.parts, latency, gt.image)

    @property
    def pending_ground_truth(self) -> int:
        return len(self._gt)

    def finish(self) -> dict[str, int]:
        """Count what never matched (dropped frames / stray predictions) and return all counts."""
        self.counts["unmatched_ground_truth"] += len(self._gt)
        self.counts["unmatched_predictions"] += len(self._pred)
        self._gt.clear()
        self._pred.clear()
        return dict(self.counts)


def remap_box_labels(boxes: dict, from_names: Sequence[str], to_names: Sequence[str]) -> tuple[dict, int]:
    """Re-index ground-truth box classes from the bag's class list to the model's by name.

    Returns the boxes of classes the model knows and how many were dropped (classes the model lacks).
    """
    index = {name: i for i, name in enumerate(to_names)}
    target = np.array([index.get(from_names[int(k)], -1) for k in boxes["labels"]], dtype=np.int64)
    keep = target >= 0
    out = {"boxes": boxes["boxes"][keep], "labels": target[keep], "scores": boxes["scores"][keep]}
    return out, int((~keep).sum())


class _Stats:
    """Metrics of one group of frames (a bag, a condition, everything)."""

    def __init__(self, num_classes: int, ignore_index: int, thing_classes, max_detections: int) -> None:
        self.frames = 0
        self.conditions: Counter = Counter()
        self.confusion = ConfusionMatrix(num_classes, ignore_index) if num_classes else None
        self.calibration = CalibrationAccumulator(ignore_index=ignore_index) if num_classes else None
        self.detection = None
        if thing_classes:
            from vlt_perception.metrics.detection import DetectionEvaluator

            self.detection = DetectionEvaluator(thing_classes, max_detections=max_detections)
        self.latencies_ms: list[float] = []

    def add(self, match: Match, image_id: str, frame_confusion: ConfusionMatrix | None,
            frame_calibration: CalibrationAccumulator | None = None) -> None:
        self.frames += 1
        self.conditions[match.condition] += 1
        if self.confusion is not None and frame_confusion is not None:
            self.confusion.merge(frame_confusion)
        if self.calibration is not None and frame_calibration is not None:
            self.calibration.merge(frame_calibration)
        if self.detection is not None and "boxes" in match.gt and "boxes" in match.pred:
            gt, pred = match.gt["boxes"], match.pred["boxes"]
            self.detection.add(image_id, gt["boxes"], gt["labels"], pred["boxes"], pred["scores"], pred["labels"])
        if match.latency_ms is not None:
            self.latencies_ms.append(match.latency_ms)

    def summary(self, class_names: Sequence[str]) -> dict:
        out: dict = {"frames": self.frames, "conditions": dict(self.conditions)}
        if self.confusion is not None and self.confusion.matrix.sum() + self.confusion.missed.sum() > 0:
            out["segmentation"] = {**self.confusion.as_dict(class_names),
                                   "confusion_matrix": self.confusion.matrix.tolist()}
        if self.calibration is not None and self.calibration.pixels:
            out["calibration"] = self.calibration.summary()  # ECE, AUROC, FPR95, reliability bins
        if self.detection is not None and len(self.detection):
            out["detection"] = self.detection.compute()
        out["latency_ms"] = latency_stats(self.latencies_ms)
        return out


def latency_stats(values_ms: Sequence[float]) -> dict:
    """count, mean, p50, p90, p99, max (ms) and the frame rate the mean allows; empty dict for no values."""
    if not len(values_ms):
        return {"count": 0}
    v = np.asarray(values_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {"count": int(v.size), "mean": float(v.mean()), "p50": float(p50), "p90": float(p90),
            "p99": float(p99), "max": float(v.max()), "fps_at_mean": float(1e3 / v.mean()) if v.mean() > 0 else None}


class TooManyConditions(BagError):
    """A bag names more distinct conditions than an evaluation groups (``max_conditions``)."""


class EvaluationAccumulator:
    """Metrics per bag, per condition (over non-reference bags) and overall, plus retention vs the reference bag.

    ``class_names``: segmentation classes (None for a detection-only evaluation); ``thing_classes``: detection
    classes of the predictions (None for segmentation-only). Ground-truth boxes must already index
    ``thing_classes`` (see :func:`remap_box_labels`). Keeps ``samples_per_condition`` matches for the report.
    At most ``max_conditions`` distinct condition strings are accepted (a bag names them, and each gets a group,
    samples and figures); one more raises :class:`TooManyConditions`.
    """

    def __init__(self, class_names: Sequence[str] | None, thing_classes: Sequence[str] | None = None,
                 ignore_index: int = IGNORE_INDEX, max_detections: int = 100, samples_per_condition: int = 2,
                 max_conditions: int = MAX_CONDITIONS) -> None:
        self.max_conditions = max_conditions
        self.seen_conditions: set[str] = set()
        self.class_names = list(class_names or [])
        self.thing_classes = list(thing_classes or [])
        self.ignore_index = ignore_index
        self._make = lambda: _Stats(len(self.class_names), ignore_index, self.thing_classes, max_detections)
        self.bags: dict[str, _Stats] = {}
        self.conditions: dict[str, _Stats] = {}
        self.overall = self._make()
        self.reference: str | None = None
        self.reference_scores: dict[str, float] | None = None
        self.samples: dict[str, list[Match]] = {}
        self.samples_per_condition = samples_per_condition
        self.counts: dict[str, Counter] = {}
        self.bag_info: dict[str, dict] = {}
        self.resized_predictions = 0

    def set_reference(self, bag: str) -> None:
        """Frames of ``bag`` count as the source domain: reported alone, not in the conditions or overall."""
        self.reference = bag

    def set_reference_scores(self, scores: dict[str, float], source: str) -> None:
        """Source-domain ``mIoU`` / ``mAP`` from elsewhere (e.g. an offline report), for retention online."""
        self.reference_scores = {k: v for k, v in scores.items() if v is not None}
        self.reference = self.reference or source

    def add(self, match: Match, bag: str) -> None:
        if match.condition not in self.seen_conditions:
            if len(self.seen_conditions) >= self.max_conditions:
                from vlt_perception.pipeline.image_codec import wire_text

                raise TooManyConditions(f"{bag}: condition {wire_text(match.condition)} would be distinct condition "
                                        f"number {len(self.seen_conditions) + 1}, over max_conditions="
                                        f"{self.max_conditions}")
            self.seen_conditions.add(match.condition)
        pred_labels = self._prediction_labels(match)
        frame_confusion = frame_calibration = None
        if pred_labels is not None and self.class_names:
            # One pass over the pixels per frame, merged into every group (bag, condition, overall).
            frame_confusion = ConfusionMatrix(len(self.class_names), self.ignore_index)
            frame_confusion.update(pred_labels, match.gt["labels"])
            confidence = self._prediction_confidence(match)
            if confidence is not None:
                frame_calibration = CalibrationAccumulator(ignore_index=self.ignore_index)
                frame_calibration.update(confidence, pred_labels, match.gt["labels"])
        image_id = f"{bag}:{match.stamp_ns}"
        groups = [self.bags.setdefault(bag, self._make())]
        if bag != self.reference:
            groups += [self.conditions.setdefault(match.condition, self._make()), self.overall]
        for stats in groups:
            stats.add(match, image_id, frame_confusion, frame_calibration)
        if self.wants_sample(match.condition, bag):
            self.samples.setdefault(self._sample_key(match.condition, bag), []).append(match)

    def _sample_key(self, condition: str, bag: str) -> str:
        return REFERENCE if bag == self.reference else condition

    def wants_sample(self, condition: str, bag: str) -> bool:
        """Whether the next frame of ``condition`` in ``bag`` would be kept as a report sample."""
        return len(self.samples.get(self._sample_key(condition, bag), ())) < self.samples_per_condition

    def _prediction_labels(self, match: Match) -> np.ndarray | None:
        """Predicted labels at the ground truth's size (nearest-neighbour resize, counted)."""
        if "labels" not in match.gt or "labels" not in match.pred:
            return None
        pred, gt = match.pred["labels"], match.gt["labels"]
        if pred.shape != gt.shape:
            import cv2

            self.resized_predictions += 1
            pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
        return pred

    def _prediction_confidence(self, match: Match) -> np.ndarray | None:
        """Predicted per-pixel confidence at the ground truth's size (bilinear, as the nodes resize it)."""
        conf = match.pred.get("confidence")
        if conf is None:
            return None
        gt = match.gt["labels"]
        if conf.shape != gt.shape:
            import cv2

            conf = cv2.resize(np.asarray(conf, np.float32), (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
        return conf

    def add_counts(self, bag: str, counts: dict[str, int]) -> None:
        """Matching / reading counts (unmatched, skipped ...) reported with the bag."""
        self.counts.setdefault(bag, Counter()).update(counts)

    def set_bag_info(self, bag: str, **info) -> None:
        """Extra per-bag fields for the report (reader issues with examples, topics, an ``error`` ...)."""
        self.bag_info.setdefault(bag, {}).update(info)

    def summary(self) -> dict:
        """Everything the report needs, JSON-serialisable."""
        bags = {name: {**stats.summary(self.class_names), "counts": dict(self.counts.get(name, {}))}
                for name, stats in self.bags.items()}
        for name in [*self.counts, *self.bag_info]:
            bags.setdefault(name, {"frames": 0, "counts": dict(self.counts.get(name, {}))})
            bags[name].update(self.bag_info.get(name, {}))
        out = {
            "bags": bags,
            "conditions": {c: s.summary(self.class_names) for c, s in sorted(self.conditions.items())},
            "overall": self.overall.summary(self.class_names),
            "reference": self.reference,
            "resized_predictions": self.resized_predictions,
        }
        self._add_retention(out)
        return out

    def _add_retention(self, out: dict) -> None:
        ref = out["bags"].get(self.reference) if self.reference else None
        if ref is not None:
            source = {"mIoU": (ref.get("segmentation") or {}).get("mIoU"),
                      "mAP": (ref.get("detection") or {}).get("mAP")}
        elif self.reference_scores:
            source = dict(self.reference_scores)
            out["reference_scores"] = source
        else:
            return
        for group in [*out["bags"].values(), *out["conditions"].values(), out["overall"]]:
            target = {"mIoU": (group.get("segmentation") or {}).get("mIoU"),
                      "mAP": (group.get("detection") or {}).get("mAP")}
            group["retention"] = {k: retention(target[k], source[k]) for k in source
                                  if source[k] is not None and target[k] is not None}
