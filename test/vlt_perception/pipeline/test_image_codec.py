"""Every encoding against an independent reference conversion, and every malformed input."""

from __future__ import annotations

import array
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vlt_perception.pipeline import image_codec as codec
from vlt_perception.pipeline.image_codec import ImageDecodeError, decode_compressed, decode_image

H, W = 6, 8


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _decode(encoding, arr, step=None, **kw):
    data = np.ascontiguousarray(arr).tobytes()
    h, w = arr.shape[:2]
    return decode_image(encoding, h, w, step if step is not None else len(data) // h, data, **kw)


@pytest.mark.parametrize(
    "encoding, make",
    [
        ("rgb8", lambda x: x),
        ("bgr8", lambda x: x[..., ::-1]),
        ("rgba8", lambda x: np.concatenate([x, np.full_like(x[..., :1], 7)], axis=2)),
        ("bgra8", lambda x: np.concatenate([x[..., ::-1], np.full_like(x[..., :1], 7)], axis=2)),
    ],
)
def test_colour_8bit(rgb, encoding, make):
    out = _decode(encoding, make(rgb))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8(rgb, encoding):
    gray = rgb[..., 0]
    np.testing.assert_array_equal(_decode(encoding, gray), np.stack([gray] * 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding, channels", [("mono16", 1), ("16UC1", 1), ("rgb16", 3), ("bgr16", 3),
                                                 ("rgba16", 4), ("bgra16", 4)])
def test_16bit_keeps_high_byte(rgb, encoding, channels, bigendian):
    rng = np.random.default_rng(1)
    high = rng.integers(0, 256, (H, W, channels), dtype=np.uint16)
    values = high * 256 + rng.integers(0, 256, high.shape, dtype=np.uint16)
    data = values.astype(">u2" if bigendian else "<u2").tobytes()
    out = decode_image(encoding, H, W, W * channels * 2, data, is_bigendian=bigendian)
    expected = high.astype(np.uint8)
    if channels == 1:
        expected = np.repeat(expected, 3, axis=2)
    elif encoding.startswith("bgr"):
        expected = expected[..., 2::-1]
    else:
        expected = expected[..., :3]
    np.testing.assert_array_equal(out, expected)


def _bt601(y, u, v):
    """Limited-range BT.601 YUV -> RGB (what cv_bridge / OpenCV use for yuv422)."""
    y, u, v = (np.asarray(a, dtype=np.float64) for a in (y, u, v))
    r = 1.164 * (y - 16) + 1.596 * (v - 128)
    g = 1.164 * (y - 16) - 0.813 * (v - 128) - 0.391 * (u - 128)
    b = 1.164 * (y - 16) + 2.018 * (u - 128)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255)


@pytest.mark.parametrize("encoding, order", [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"),
                                              ("yuyv", "yuyv")])
def test_yuv422(encoding, order):
    rng = np.random.default_rng(2)
    y = rng.integers(16, 236, (H, W))
    u = rng.integers(16, 241, (H, W // 2))
    v = rng.integers(16, 241, (H, W // 2))
    packed = np.zeros((H, W // 2, 4), dtype=np.uint8)
    if order == "uyvy":
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
    else:
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, 0::2], u, y[:, 1::2], v
    out = decode_image(encoding, H, W, W * 2, packed.tobytes())
    expected = _bt601(y, np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1))
    assert np.abs(out.astype(np.float64) - expected).max() <= 3


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_uniform_colour(pattern):
    colour = {"r": 200, "g": 90, "b": 30}
    h, w = 8, 8
    mosaic = np.zeros((h, w), dtype=np.uint8)
    for i, ch in enumerate(pattern):  # 2x2 tile in row-major order
        mosaic[i // 2 :: 2, i % 2 :: 2] = colour[ch]
    out = decode_image(f"bayer_{pattern}8", h, w, w, mosaic.tobytes())
    interior = out[2:-2, 2:-2].reshape(-1, 3)
    assert np.abs(interior.astype(int) - [200, 90, 30]).max() <= 1


def test_row_padding(rgb):
    step = W * 3 + 5
    padded = np.zeros((H, step), dtype=np.uint8)
    padded[:, : W * 3] = rgb.reshape(H, -1)
    out = decode_image("rgb8", H, W, step, padded.tobytes())
    np.testing.assert_array_equal(out, rgb)
    out = decode_image("bgr8", H, W, step, padded.tobytes())
    np.testing.assert_array_equal(out, rgb[..., ::-1])


def test_rclpy_style_array_buffer(rgb):
    out = decode_image("rgb8", H, W, W * 3, array.array("B", rgb.tobytes()))
    np.testing.assert_array_equal(out, rgb)


def _pil_bytes(rgb, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_png_exact(rgb):
    out = decode_compressed("png", _pil_bytes(rgb, "PNG"))
    np.testing.assert_array_equal(out, rgb)


def test_png_with_alpha_and_gray(rgb):
    rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 9)], axis=2)
    np.testing.assert_array_equal(decode_compressed("png", _pil_bytes(rgba, "PNG")), rgb)
    gray = rgb[..., 1]
    np.testing.assert_array_equal(decode_compressed("png", _pil_bytes(gray, "PNG")), np.stack([gray] * 3, 2))


def test_jpeg_matches_pil_decode():
    smooth = np.linspace(0, 255, 64 * 48 * 3).reshape(48, 64, 3).astype(np.uint8)
    data = _pil_bytes(smooth, "JPEG", quality=95)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    out = decode_compressed("rgb8; jpeg compressed bgr8", array.array("B", data))
    assert out.shape == (48, 64, 3)
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 2


# --- malformed input: each raises ImageDecodeError with a kind and a message naming the problem ---------------


@pytest.mark.parametrize(
    "args, kind, text",
    [
        (("rgb9", H, W, W * 3, bytes(H * W * 3)), codec.KIND_ENCODING, "unsupported encoding"),
        (("rgb8", H, W, W * 3 - 1, bytes(H * (W * 3 - 1))), codec.KIND_STEP, "step"),
        (("rgb8", H, W, W * 3, bytes(H * W * 3 - 1)), codec.KIND_SIZE, "data has"),
        (("rgb8", H, W, W * 3, bytes(H * W * 3 + 3)), codec.KIND_SIZE, "expected"),
        (("mono16", H, W, W, bytes(H * W)), codec.KIND_STEP, "step"),
        (("rgb8", 0, W, W * 3, b""), codec.KIND_EMPTY, "zero-size"),
        (("rgb8", H, 0, 0, b""), codec.KIND_EMPTY, "zero-size"),
        (("rgb8", -1, W, W * 3, b""), codec.KIND_EMPTY, "zero-size"),
        (("yuv422", H, 7, 14, bytes(H * 14)), codec.KIND_STEP, "even"),
    ],
)
def test_raw_malformed(args, kind, text):
    with pytest.raises(ImageDecodeError, match=text) as err:
        decode_image(*args)
    assert err.value.kind == kind


def test_raw_too_large_is_rejected_before_reading_data():
    with pytest.raises(ImageDecodeError, match="max_pixels") as err:
        decode_image("rgb8", 100_000, 100_000, 300_000, b"")
    assert err.value.kind == codec.KIND_TOO_LARGE
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        decode_image("rgb8", H, W, W * 3, bytes(H * W * 3), max_pixels=H * W - 1)


def test_compressed_malformed(rgb):
    jpeg = _pil_bytes(rgb, "JPEG")
    png = _pil_bytes(rgb, "PNG")
    cases = [
        (b"", codec.KIND_EMPTY),
        (b"not an image at all", codec.KIND_COMPRESSED),
        (jpeg[: len(jpeg) // 2], codec.KIND_COMPRESSED),  # truncated jpeg
        (png[: len(png) // 2], codec.KIND_COMPRESSED),  # truncated png
        (png[:16] + b"\x00" * 40, codec.KIND_COMPRESSED),  # corrupt header
        (jpeg[:20] + bytes(200) + b"\xff\xd9", codec.KIND_COMPRESSED),  # garbage between valid markers
    ]
    for data, kind in cases:
        with pytest.raises(ImageDecodeError) as err:
            decode_compressed("jpeg", data)
        assert err.value.kind == kind, (data[:16], err.value)


def test_compressed_too_large(rgb):
    with pytest.raises(ImageDecodeError, match="max_pixels") as err:
        decode_compressed("png", _pil_bytes(rgb, "PNG"), max_pixels=H * W - 1)
    assert err.value.kind == codec.KIND_TOO_LARGE


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (a few dozen bytes, no pixel data)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_a_header_over_pils_bomb_limit_is_too_large():
    """PIL raises its own DecompressionBombError on headers over ~179 Mpx, before max_pixels is checked: it must
    come out as the codec's too_large kind (the node counts by kind; offline evaluation skips ValueErrors)."""
    bomb = _png_header_only(20_000, 10_000)  # 200 Mpx
    assert 20_000 * 10_000 > 2 * Image.MAX_IMAGE_PIXELS
    for max_pixels in (codec.DEFAULT_MAX_PIXELS, 10**9):
        with pytest.raises(ImageDecodeError) as err:
            decode_compressed("png", bomb, max_pixels=max_pixels)
        assert err.value.kind == codec.KIND_TOO_LARGE and "png image" in str(err.value)


def test_strings_from_the_wire_are_cut_in_error_messages():
    bogus = "x" * 1000
    with pytest.raises(ImageDecodeError) as raw:
        decode_image(bogus, 2, 2, 6, bytes(12))
    with pytest.raises(ImageDecodeError) as compressed:
        decode_compressed(bogus, b"not an image at all")
    for err in (raw.value, compressed.value):
        text = str(err)
        assert "x" * codec.WIRE_TEXT_LIMIT in text and "x" * (codec.WIRE_TEXT_LIMIT + 1) not in text
        assert "(1000 characters)" in text
        assert len(text) < 300
