import numpy as np
import pytest

from vlt_perception.labels import CITYSCAPES_PALETTE, palette_array
from vlt_perception.pipeline.postprocess import (
    colorize_labels, palette_lut, rescale_boxes, resize_confidence, resize_labels, select_detections)


@pytest.fixture
def labels():
    labels = np.random.default_rng(0).integers(0, 19, (12, 20), dtype=np.uint8)
    labels[0, 0] = 255
    return labels


def test_resize_labels_is_nearest(labels):
    big = resize_labels(labels, 36, 60)  # exact x3 upscaling: every source pixel becomes a 3x3 block
    assert big.shape == (36, 60) and big.dtype == np.uint8
    np.testing.assert_array_equal(big, np.repeat(np.repeat(labels, 3, 0), 3, 1))
    odd = resize_labels(labels, 1080 // 40, 1920 // 40)
    assert set(np.unique(odd)) <= set(np.unique(labels))  # no blended ids


def test_resize_labels_accepts_a_batch_of_one(labels):
    np.testing.assert_array_equal(resize_labels(labels[None], 24, 40), resize_labels(labels, 24, 40))


def test_colorize_matches_palette_lookup_at_full_size(labels):
    lut = palette_lut(CITYSCAPES_PALETTE)
    colour = colorize_labels(labels, lut, 27, 48)
    assert colour.shape == (27, 48, 3) and colour.dtype == np.uint8
    np.testing.assert_array_equal(colour, palette_array()[resize_labels(labels, 27, 48)])
    same = colorize_labels(labels, lut)
    assert tuple(same[0, 0]) == (0, 0, 0)  # 255 = ignore is black
    assert tuple(same[0, 1]) == CITYSCAPES_PALETTE[labels[0, 1]]


def test_colorize_rejects_a_bad_table(labels):
    with pytest.raises(ValueError, match="palette_lut"):
        colorize_labels(labels, palette_array())


def test_resize_confidence():
    conf = np.full((12, 20), 0.25, np.float32)
    conf[:, 10:] = 0.75
    big = resize_confidence(conf, 24, 40)
    assert big.shape == (24, 40) and big.dtype == np.float32
    assert big.min() >= 0.25 and big.max() <= 0.75
    np.testing.assert_allclose(big[:, :18], 0.25)
    np.testing.assert_allclose(big[:, 22:], 0.75)


def test_wrong_dtypes_are_explained(labels):
    with pytest.raises(ValueError, match="labels must be uint8"):
        resize_labels(labels.astype(np.int64), 4, 4)
    with pytest.raises(ValueError, match="confidence must be float32"):
        resize_confidence(np.zeros((4, 4)), 8, 8)
    with pytest.raises(ValueError, match=r"labels must be \(H, W\)"):
        resize_labels(np.zeros((2, 4, 4), np.uint8), 8, 8)


def test_rescale_boxes():
    boxes = np.array([[10, 20, 30, 40], [-5, 0, 1100, 600]], np.float32)  # network pixels of a 512x1024 input
    out = rescale_boxes(boxes, (512, 1024), (1080, 1920))
    np.testing.assert_allclose(out[0], [18.75, 42.1875, 56.25, 84.375])
    np.testing.assert_allclose(out[1], [0, 0, 1920, 1080])  # clipped to the image
    assert rescale_boxes(np.zeros((0, 4)), (8, 8), (16, 16)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"boxes must be \(K, 4\)"):
        rescale_boxes(np.zeros((3,)), (8, 8), (16, 16))


def test_select_detections():
    boxes = np.arange(12, dtype=np.float32).reshape(3, 4)
    scores = np.array([0.9, 0.0, 0.4], np.float32)
    labels = np.array([2, 0, 1])
    b, s, l = select_detections(boxes, scores, labels, 0.3)
    np.testing.assert_array_equal(b, boxes[[0, 2]])
    np.testing.assert_array_equal(l, [2, 1])
