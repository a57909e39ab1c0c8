"""Row padding (``step`` beyond a packed row) decodes exactly like the packed image, for every raw encoding."""

from __future__ import annotations

import numpy as np
import pytest

from vlt_perception.pipeline.image_codec import SUPPORTED_ENCODINGS, decode_image

HEIGHT, WIDTH = 6, 10  # even width: the YUV 4:2:2 encodings share U and V between two pixels
BYTES_PER_PIXEL = {"mono8": 1, "8UC1": 1, "mono16": 2, "16UC1": 2, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4,
                   "rgb16": 6, "bgr16": 6, "rgba16": 8, "bgra16": 8}


def packed_row_bytes(encoding: str) -> int:
    if encoding in BYTES_PER_PIXEL:
        return WIDTH * BYTES_PER_PIXEL[encoding]
    if encoding.startswith("bayer_"):
        return WIDTH * (2 if encoding.endswith("16") else 1)
    return WIDTH * 2  # yuv422 / uyvy / yuyv: 2 bytes per pixel


RAW_ENCODINGS = [e for e in SUPPORTED_ENCODINGS if e in BYTES_PER_PIXEL or e.startswith(("bayer_", "yuv", "uyvy", "yuyv"))]


def test_the_table_covers_the_common_encodings():
    assert {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"} <= set(RAW_ENCODINGS)


@pytest.mark.parametrize("encoding", RAW_ENCODINGS)
@pytest.mark.parametrize("padding", [1, 7])
def test_padded_rows_decode_like_packed_rows(encoding, padding):
    rng = np.random.default_rng(len(encoding) * 31 + padding)
    row_bytes = packed_row_bytes(encoding)
    packed = rng.integers(0, 256, size=(HEIGHT, row_bytes), dtype=np.uint8)
    expected = decode_image(encoding, HEIGHT, WIDTH, row_bytes, packed.tobytes())
    # The padding bytes are bright noise: reading them as pixels would change the picture.
    padded = np.concatenate([packed, rng.integers(128, 256, size=(HEIGHT, padding), dtype=np.uint8)], axis=1)
    out = decode_image(encoding, HEIGHT, WIDTH, row_bytes + padding, padded.tobytes())
    assert out.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(out, expected)
