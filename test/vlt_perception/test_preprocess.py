import cv2
import numpy as np
import pytest

from vlt_perception.metadata import ModelMetadata
from vlt_perception.preprocess import Preprocessor

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def reference(rgb, height, width, mean, std):
    """The textbook version: resize, scale to [0, 1], subtract mean, divide by std, HWC -> 1CHW (float64)."""
    resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float64) / 255.0
    return ((resized - np.array(mean)) / np.array(std)).transpose(2, 0, 1)[None]


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (54, 96, 3), dtype=np.uint8)


def test_matches_reference(rgb):
    pre = Preprocessor(24, 40, MEAN, STD)
    out = pre(rgb)
    assert out.shape == (1, 3, 24, 40) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, reference(rgb, 24, 40, MEAN, STD), atol=1e-5)


def test_channels_stay_in_rgb_order():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    out = Preprocessor(4, 4, [0, 0, 0], [1, 1, 1])(red)
    np.testing.assert_allclose(out[0, :, 0, 0], [1.0, 0.0, 0.0])


def test_from_metadata(rgb):
    md = ModelMetadata(mean=[0.1, 0.2, 0.3], std=[0.5, 0.6, 0.7], input_height=16, input_width=32)
    out = Preprocessor.from_metadata(md)(rgb)
    np.testing.assert_allclose(out, reference(rgb, 16, 32, md.mean, md.std), atol=1e-5)


def test_same_size_skips_the_resize(rgb):
    pre = Preprocessor(54, 96, MEAN, STD)
    assert pre.resize(rgb) is rgb
    np.testing.assert_allclose(pre(rgb), reference(rgb, 54, 96, MEAN, STD), atol=1e-5)


def test_out_buffer_is_reused(rgb):
    pre = Preprocessor(24, 40, MEAN, STD)
    buf = np.empty((1, 3, 24, 40), np.float32)
    assert pre(rgb, out=buf) is buf
    np.testing.assert_allclose(buf, reference(rgb, 24, 40, MEAN, STD), atol=1e-5)
    with pytest.raises(ValueError, match="out must be float32"):
        pre(rgb, out=np.empty((1, 3, 24, 41), np.float32))


def test_batch_equals_single_calls(rgb):
    """The frames of a batch go through parallel threads: each lands in its own slot, whatever its size."""
    pre = Preprocessor(24, 40, MEAN, STD)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(54, 96), (24, 40), (7, 9)] * 3]
    batch = pre.batch(frames)
    assert batch.shape == (9, 3, 24, 40)
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(batch[i : i + 1], pre(frame))
    np.testing.assert_array_equal(pre.batch([rgb]), pre(rgb))


def test_a_bad_frame_in_a_batch_is_explained(rgb):
    with pytest.raises(ValueError, match=r"expected an RGB image as uint8 \(H, W, 3\), got uint8 \(8, 8\)"):
        Preprocessor(24, 40, MEAN, STD).batch([rgb, np.zeros((8, 8), np.uint8), rgb])


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.float32), [[1, 2, 3]]])
def test_bad_images_are_explained(bad):
    with pytest.raises(ValueError, match=r"expected an RGB image as uint8 \(H, W, 3\)"):
        Preprocessor(4, 4, MEAN, STD)(bad)


def test_bad_parameters():
    with pytest.raises(ValueError, match="bad input size"):
        Preprocessor(0, 4, MEAN, STD)
    with pytest.raises(ValueError, match="std > 0"):
        Preprocessor(4, 4, MEAN, [0.1, 0.0, 0.1])
