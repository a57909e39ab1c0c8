"""StampMatcher and EvaluationAccumulator: the logic shared by offline and online evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlt_perception.bag.matching import EvaluationAccumulator, Match, StampMatcher, latency_stats, remap_box_labels


def _labels(value: int, shape=(2, 3)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def test_matches_by_stamp_in_any_order_and_counts_the_rest():
    m = StampMatcher(["labels"], ["labels"])
    assert m.add_prediction(30, "labels", _labels(1), arrival_s=9.5) is None  # prediction first
    assert m.add_ground_truth(10, "labels", _labels(0), condition="fog", arrival_s=9.0) is None
    match = m.add_ground_truth(30, "labels", _labels(1), condition="night", arrival_s=10.0)
    assert match is not None and match.stamp_ns == 30 and match.condition == "night"
    assert match.latency_ms is None  # the prediction arrived before the ground truth: no honest latency
    match = m.add_prediction(10, "labels", _labels(0), arrival_s=9.25)
    assert match.latency_ms == pytest.approx(250.0)
    assert m.add_prediction(10, "labels", _labels(0)) is None  # duplicate of a matched stamp
    m.add_ground_truth(40, "labels", _labels(0), condition="fog")  # never predicted: a dropped frame
    m.add_prediction(50, "labels", _labels(0))  # never in the ground truth
    counts = m.finish()
    assert counts == {"matched": 2, "latency_unknown": 1, "duplicate_prediction": 1, "unmatched_ground_truth": 1,
                      "unmatched_predictions": 1}


def test_waits_for_every_part_and_uses_given_latency():
    m = StampMatcher(["labels", "boxes"], ["labels"])
    assert m.add_ground_truth(5, "labels", _labels(0), condition="rain") is None
    assert m.add_prediction(5, "labels", _labels(0), latency_ms=7.0) is None  # ground-truth boxes still missing
    assert m.add_prediction(5, "boxes", {}) is None  # the model predicts no boxes: ignored
    match = m.add_ground_truth(5, "boxes", {"boxes": np.zeros((0, 4))}, condition="rain")
    assert match.latency_ms == 7.0 and set(match.gt) == {"labels", "boxes"}


def test_pending_limit_drops_oldest_and_counts():
    m = StampMatcher(["labels"], ["labels"], max_pending=2)
    for stamp in range(5):
        m.add_ground_truth(stamp, "labels", _labels(0), condition="c")
    assert m.pending_ground_truth == 2
    assert m.finish()["unmatched_ground_truth"] == 5


def test_rejects_nothing_to_compare():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        StampMatcher(["labels"], ["boxes"])


def test_accumulator_metrics_conditions_and_retention():
    acc = EvaluationAccumulator(["a", "b"])
    acc.set_reference("src")
    gt = np.array([[0, 0, 1, 1]], dtype=np.uint8)
    acc.add(Match(1, "clear", {"labels": gt}, {"labels": gt.copy()}, 2.0), "src")  # perfect
    # Target: one of the two class-1 pixels predicted as 0 -> IoU(a) = 2/3, IoU(b) = 1/2.
    acc.add(Match(2, "fog", {"labels": gt}, {"labels": np.array([[0, 0, 0, 1]], np.uint8)}, 4.0), "tgt")
    # A prediction at a quarter of the size is resized (nearest) to the ground truth: all correct.
    acc.add(Match(3, "night", {"labels": np.zeros((4, 4), np.uint8)}, {"labels": np.zeros((2, 2), np.uint8)}), "tgt")
    acc.add_counts("tgt", {"unmatched_ground_truth": 3})
    summary = json.loads(json.dumps(acc.summary()))  # JSON-serialisable
    assert summary["bags"]["src"]["segmentation"]["mIoU"] == 1.0
    assert summary["conditions"]["fog"]["segmentation"]["mIoU"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert summary["conditions"]["fog"]["retention"]["mIoU"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert summary["conditions"]["night"]["segmentation"]["per_class_iou"] == {"a": 1.0, "b": None}
    assert set(summary["conditions"]) == {"fog", "night"}  # the reference is not a target condition
    assert summary["overall"]["frames"] == 2
    assert summary["bags"]["tgt"]["counts"] == {"unmatched_ground_truth": 3}
    assert summary["bags"]["tgt"]["latency_ms"]["count"] == 1  # frame 3 had no latency
    assert summary["resized_predictions"] == 1


def test_accumulator_detection_map_through_shared_metric():
    acc = EvaluationAccumulator(None, ["car", "person"])
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    gt = {"boxes": box, "labels": np.array([0]), "scores": np.ones(1)}
    hit = {"boxes": box, "labels": np.array([0]), "scores": np.array([0.9])}
    miss = {"boxes": box + 50, "labels": np.array([0]), "scores": np.array([0.9])}
    acc.add(Match(1, "clear", {"boxes": gt}, {"boxes": hit}), "a")
    acc.add(Match(2, "fog", {"boxes": gt}, {"boxes": miss}), "a")
    summary = acc.summary()
    assert summary["conditions"]["clear"]["detection"]["mAP"] == pytest.approx(1.0)
    assert summary["conditions"]["fog"]["detection"]["mAP"] == pytest.approx(0.0)
    assert 0.0 < summary["overall"]["detection"]["mAP"] < 1.0


def test_remap_box_labels_by_name():
    boxes = {"boxes": np.arange(12, dtype=float).reshape(3, 4), "labels": np.array([0, 1, 2]), "scores": np.ones(3)}
    out, dropped = remap_box_labels(boxes, ["person", "tram", "car"], ["car", "person"])
    assert out["labels"].tolist() == [1, 0] and dropped == 1
    np.testing.assert_array_equal(out["boxes"], boxes["boxes"][[0, 2]])


def test_latency_stats():
    stats = latency_stats([10.0, 20.0, 30.0, 40.0])
    assert stats["count"] == 4 and stats["mean"] == 25.0 and stats["p50"] == 25.0 and stats["max"] == 40.0
    assert latency_stats([]) == {"count": 0}


def test_retention_against_scores_from_elsewhere():
    """Online there is no reference bag: the source score comes from an offline report."""
    acc = EvaluationAccumulator(["a", "b"])
    acc.set_reference_scores({"mIoU": 0.8, "mAP": None}, "source (report.json)")
    gt = np.array([[0, 1]], dtype=np.uint8)
    acc.add(Match(1, "fog", {"labels": gt}, {"labels": np.array([[0, 0]], np.uint8)}), "online")
    summary = acc.summary()
    assert summary["conditions"]["fog"]["segmentation"]["mIoU"] == pytest.approx(0.25)  # a: 1/2, b: 0
    assert summary["conditions"]["fog"]["retention"] == {"mIoU": pytest.approx(0.25 / 0.8)}
    assert summary["reference"] == "source (report.json)" and summary["reference_scores"] == {"mIoU": 0.8}
