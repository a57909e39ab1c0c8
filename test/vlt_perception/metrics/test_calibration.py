"""Calibration metrics against independent references: scikit-learn's ROC, a direct numpy ECE."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from vlt_perception.metrics.calibration import CalibrationAccumulator

IGNORE = 255


def _frames(seed, n_frames=3, shape=(24, 40), classes=5, grid=None):
    """Frames whose confidence tracks correctness loosely (a realistic, imperfect ranking)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_frames):
        target = rng.integers(0, classes, shape)
        target[rng.random(shape) < 0.1] = IGNORE
        correct = rng.random(shape) < 0.7
        pred = np.where(correct, target, (target + 1) % classes)
        conf = np.clip(rng.normal(np.where(correct, 0.75, 0.55), 0.15), 0.0, 1.0)
        if grid is not None:  # confidences on bin centres: the histogram ROC is then exact
            conf = (np.minimum(np.floor(conf * grid), grid - 1) + 0.5) / grid
        out.append((conf.astype(np.float32), pred.astype(np.uint8), target.astype(np.uint8)))
    return out


def _flat(frames):
    conf = np.concatenate([c.ravel() for c, _, _ in frames]).astype(np.float64)
    pred = np.concatenate([p.ravel() for _, p, _ in frames])
    target = np.concatenate([t.ravel() for _, _, t in frames])
    keep = target != IGNORE
    return conf[keep], (pred[keep] == target[keep]).astype(int)


def _numpy_ece(conf, correct, bins=15):
    """ECE written out directly: bin b = (b/15, (b+1)/15], confidence 0 in the first bin."""
    total, ece = len(conf), 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        in_bin = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.sum() / total * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return ece


def _fpr95(conf, correct):
    fpr, tpr, _ = roc_curve(correct, conf, drop_intermediate=False)
    return fpr[np.argmax(tpr >= 0.95)]


def _accumulate(frames, **kwargs):
    acc = CalibrationAccumulator(ignore_index=IGNORE, **kwargs)
    for conf, pred, target in frames:
        acc.update(conf, pred, target)
    return acc


def test_exact_on_bin_centres_against_sklearn():
    frames = _frames(0, grid=200)
    acc = _accumulate(frames, roc_bins=200)
    conf, correct = _flat(frames)
    assert acc.pixels == len(conf)
    assert acc.auroc() == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)
    assert acc.fpr_at_tpr(0.95) == pytest.approx(_fpr95(conf, correct), abs=1e-12)
    assert acc.ece() == pytest.approx(_numpy_ece(conf, correct), abs=1e-9)


def test_continuous_confidence_close_to_sklearn():
    frames = _frames(1)
    acc = _accumulate(frames)  # default 10000 ROC bins
    conf, correct = _flat(frames)
    assert acc.auroc() == pytest.approx(roc_auc_score(correct, conf), abs=2e-4)
    assert acc.fpr_at_tpr() == pytest.approx(_fpr95(conf, correct), abs=2e-3)
    assert acc.ece() == pytest.approx(_numpy_ece(conf, correct), abs=1e-6)


def test_merge_equals_one_pass_and_reliability_bins():
    frames = _frames(2, n_frames=4)
    whole = _accumulate(frames)
    a, b = _accumulate(frames[:1]), _accumulate(frames[1:])
    a.merge(b)
    assert a.summary() == whole.summary()
    rel = whole.reliability()
    conf, correct = _flat(frames)
    assert sum(rel["count"]) == len(conf) and len(rel["edges"]) == 16
    k = int(np.argmax(rel["count"]))
    lo, hi = rel["edges"][k], rel["edges"][k + 1]
    in_bin = (conf > lo) & (conf <= hi)
    assert rel["accuracy"][k] == pytest.approx(correct[in_bin].mean())
    assert rel["confidence"][k] == pytest.approx(conf[in_bin].mean())


def test_perfectly_separated_and_degenerate_cases():
    target = np.zeros((2, 4), np.uint8)
    pred = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)
    conf = np.array([[0.9, 0.8, 0.2, 0.1], [0.95, 0.85, 0.3, 0.15]], np.float32)
    acc = _accumulate([(conf, pred, target)])
    assert acc.auroc() == 1.0 and acc.fpr_at_tpr() == 0.0
    only_correct = _accumulate([(conf, target, target)])
    assert only_correct.summary()["auroc"] is None and only_correct.summary()["fpr95"] is None
    assert CalibrationAccumulator().summary()["ece"] is None
    with pytest.raises(ValueError, match="differ in shape"):
        acc.update(conf[:1], pred, target)
