"""Condition strings come from the bag: each distinct one gets a metrics group, report samples and a figure, so
their number is capped (``max_conditions``) with an error naming the bag."""

from __future__ import annotations

import numpy as np
import pytest

from vlt_perception.bag.matching import MAX_CONDITIONS, EvaluationAccumulator, Match, TooManyConditions
from vlt_perception.bag.offline import evaluate_bags
from vlt_perception.bag.writer import write_records_bag


def _match(stamp: int, condition: str) -> Match:
    gt = np.zeros((2, 3), np.uint8)
    return Match(stamp, condition, {"labels": gt}, {"labels": gt.copy()}, 1.0, image=np.zeros((2, 3, 3), np.uint8))


def test_distinct_conditions_are_capped():
    acc = EvaluationAccumulator(["a", "b"])
    for i in range(MAX_CONDITIONS):
        acc.add(_match(i, f"condition {i}"), "crafted")
    acc.add(_match(1000, "condition 0"), "crafted")  # a condition seen before is no new group
    with pytest.raises(TooManyConditions, match=rf"crafted: condition 'one more' would be distinct condition number "
                                                rf"{MAX_CONDITIONS + 1}, over max_conditions={MAX_CONDITIONS}"):
        acc.add(_match(2000, "one more"), "crafted")
    assert len(acc.summary()["conditions"]) == MAX_CONDITIONS and len(acc.samples) == MAX_CONDITIONS

    small = EvaluationAccumulator(["a", "b"], max_conditions=2)
    small.set_reference("source")
    small.add(_match(1, "clear"), "source")
    small.add(_match(2, "fog"), "target")
    with pytest.raises(TooManyConditions, match="target: condition 'night'.*max_conditions=2"):
        small.add(_match(3, "night"), "target")


def test_offline_evaluation_reports_a_bag_over_the_cap(fx, tiny_cityscapes, palette_onnx, tmp_path):
    """The bag that names too many conditions gets an error in the report; the evaluation itself completes."""
    _, records = tiny_cityscapes
    assert len({r["condition"] for r in records}) > 1
    write_records_bag(records, tmp_path / "target", read_image=fx.read_png_rgb,
                      read_sem_seg=fx.read_png_train_ids)
    report = evaluate_bags([tmp_path / "target"], palette_onnx, tmp_path / "report", max_conditions=1,
                           figures=False)
    assert "max_conditions=1" in report["bags"]["target"]["error"]
    assert len(report["conditions"]) == 1
