"""ConfusionMatrix against a plain per-pixel count: ignore label, out-of-range predictions, accuracy, absent classes."""

from __future__ import annotations

import numpy as np
import pytest

from vlt_perception.metrics.segmentation import ConfusionMatrix

IGNORE = 255


def reference_scores(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[list[float], float]:
    """Per-class IoU (NaN where the class is in neither map) and pixel accuracy, counted pixel by pixel.

    A ground-truth pixel whose prediction is not a class (255, >= C, < 0) is a miss for its class and is wrong
    for pixel accuracy; ignored ground truth does not count at all.
    """
    tp = [0] * num_classes
    gt = [0] * num_classes
    pred = [0] * num_classes
    correct = total = 0
    for p, t in zip(prediction.ravel().tolist(), target.ravel().tolist()):
        if t == IGNORE or not 0 <= t < num_classes:
            continue
        total += 1
        gt[t] += 1
        if 0 <= p < num_classes:
            pred[p] += 1
            if p == t:
                tp[t] += 1
                correct += 1
    ious = []
    for c in range(num_classes):
        union = gt[c] + pred[c] - tp[c]
        ious.append(tp[c] / union if union else float("nan"))
    return ious, (correct / total if total else float("nan"))


def test_matches_a_pixel_by_pixel_count_on_random_maps():
    rng = np.random.default_rng(0)
    num_classes = 5
    # Predictions include 255 and values >= C; targets include the ignore label.
    prediction = rng.choice([0, 1, 2, 3, 4, 7, 255], size=(6, 40, 50)).astype(np.int64)
    target = rng.choice([0, 1, 2, 3, IGNORE], size=(6, 40, 50)).astype(np.int64)
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE)
    matrix.update(prediction, target)
    ious, accuracy = reference_scores(prediction, target, num_classes)
    np.testing.assert_allclose(matrix.iou(), ious, equal_nan=True)
    assert matrix.pixel_accuracy() == pytest.approx(accuracy)
    assert matrix.miou() == pytest.approx(np.nanmean(ious))


def test_out_of_range_predictions_are_misses():
    matrix = ConfusionMatrix(3, ignore_index=IGNORE)
    target = np.array([[0, 0, 1, 1]])
    prediction = np.array([[0, 255, 1, 9]])  # half of each class predicted as "no class"
    matrix.update(prediction, target)
    np.testing.assert_allclose(matrix.iou()[:2], [0.5, 0.5])
    assert matrix.pixel_accuracy() == pytest.approx(0.5)


def test_ignored_ground_truth_counts_nowhere():
    matrix = ConfusionMatrix(2, ignore_index=IGNORE)
    matrix.update(np.array([[1, 1, 0]]), np.array([[IGNORE, IGNORE, 0]]))
    # The two pixels predicted as class 1 lie on ignored ground truth: class 1 is absent, class 0 is perfect.
    assert matrix.iou()[0] == pytest.approx(1.0)
    assert np.isnan(matrix.iou()[1])
    assert matrix.pixel_accuracy() == pytest.approx(1.0)
    assert matrix.miou() == pytest.approx(1.0)


def test_absent_classes_are_left_out_of_the_mean():
    matrix = ConfusionMatrix(4, ignore_index=IGNORE)
    matrix.update(np.array([[0, 1, 1, 1]]), np.array([[0, 1, 1, 0]]))
    ious = matrix.iou()
    assert np.isnan(ious[2]) and np.isnan(ious[3])
    # Class 0: tp 1, union 2; class 1: tp 2, union 3.
    assert matrix.miou() == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert matrix.as_dict(["a", "b", "c", "d"])["per_class_iou"]["c"] is None


def test_a_class_only_predicted_scores_zero_not_absent():
    matrix = ConfusionMatrix(3, ignore_index=IGNORE)
    matrix.update(np.array([[2, 0]]), np.array([[0, 0]]))
    assert matrix.iou()[2] == 0.0
    assert matrix.miou() == pytest.approx((0.5 + 0.0) / 2)


def test_merge_equals_one_matrix_over_all_frames():
    rng = np.random.default_rng(1)
    frames = [(rng.choice([0, 1, 2, 255], size=(20, 30)), rng.choice([0, 1, 2, IGNORE], size=(20, 30)))
              for _ in range(4)]
    whole = ConfusionMatrix(3, ignore_index=IGNORE)
    for prediction, target in frames:
        whole.update(prediction, target)
    first, second = ConfusionMatrix(3, ignore_index=IGNORE), ConfusionMatrix(3, ignore_index=IGNORE)
    for prediction, target in frames[:2]:
        first.update(prediction, target)
    for prediction, target in frames[2:]:
        second.update(prediction, target)
    first.merge(second)
    np.testing.assert_array_equal(first.matrix, whole.matrix)
    np.testing.assert_array_equal(first.missed, whole.missed)
    assert first.miou() == pytest.approx(whole.miou())
    assert first.pixel_accuracy() == pytest.approx(whole.pixel_accuracy())


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        ConfusionMatrix(2).update(np.zeros((2, 2)), np.zeros((2, 3)))
