"""The online evaluator's calibration path without ROS: the 32FC1 confidence decoder, a stamp that completes only
with labels and confidence, and the accumulator's calibration from them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vlt_perception.bag import messages as M
from vlt_perception.bag.matching import EvaluationAccumulator, StampMatcher
from vlt_perception.metrics.calibration import CalibrationAccumulator


def _image_msg(array: np.ndarray, big_endian: bool = False, pad: int = 8):
    h, w = array.shape
    raw = array.astype(">f4" if big_endian else "<f4").tobytes()
    rows = [raw[i * w * 4:(i + 1) * w * 4] + b"\x00" * pad for i in range(h)]  # padded rows: step > width * 4
    return SimpleNamespace(encoding="32FC1", height=h, width=w, step=w * 4 + pad, data=b"".join(rows),
                           is_bigendian=big_endian)


@pytest.mark.parametrize("big_endian", [False, True])
def test_decode_confidence_honours_step_and_byte_order(big_endian):
    conf = np.random.default_rng(0).random((3, 5)).astype(np.float32)
    out = M.decode_confidence(_image_msg(conf, big_endian))
    assert out.dtype == np.float32 and np.array_equal(out, conf)
    with pytest.raises(M.MessageError, match="32FC1"):
        M.decode_confidence(SimpleNamespace(**{**vars(_image_msg(conf)), "encoding": "mono8"}))
    with pytest.raises(M.MessageError, match="too small"):
        M.decode_confidence(SimpleNamespace(**{**vars(_image_msg(conf)), "step": 4}))


def test_stamp_waits_for_confidence_and_calibration_is_reported():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 3, (8, 12)).astype(np.uint8)
    pred = np.where(rng.random((8, 12)) < 0.7, gt, (gt + 1) % 3).astype(np.uint8)
    conf = rng.random((8, 12)).astype(np.float32)
    matcher = StampMatcher(["labels"], ["labels", "confidence"])
    assert matcher.add_ground_truth(5, "labels", gt, condition="fog") is None
    assert matcher.add_prediction(5, "labels", pred) is None  # not complete without the confidence
    match = matcher.add_prediction(5, "confidence", conf)
    assert match is not None and set(match.pred) == {"labels", "confidence"}
    acc = EvaluationAccumulator(["road", "car", "sky"])
    acc.add(match, "online")
    cal = acc.summary()["conditions"]["fog"]["calibration"]
    expected = CalibrationAccumulator()
    expected.update(conf, pred, gt)
    assert cal["ece"] == pytest.approx(expected.ece()) and cal["pixels"] == gt.size


def test_confidence_only_with_predicted_labels():
    with pytest.raises(ValueError, match="confidence"):
        StampMatcher(["labels"], ["boxes", "confidence"])
    with pytest.raises(ValueError, match="confidence"):
        StampMatcher(["labels", "confidence"], ["labels"])
