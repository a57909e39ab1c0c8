"""Decode the fields of ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` into RGB arrays, without rclpy.

Every decoder returns an (H, W, 3) uint8 RGB array. Raw images may come back as a read-only view of the message
buffer (``rgb8`` without row padding): callers must not write into the result. Malformed input raises
:class:`ImageDecodeError`, whose ``kind`` lets a node count and throttle errors per kind.

Conventions follow ``sensor_msgs/image_encodings.hpp`` and cv_bridge:
``yuv422`` is UYVY (``uyvy`` is accepted as an alias), ``yuv422_yuy2`` is YUYV (alias ``yuyv``); 16-bit encodings
are reduced to 8 bits by keeping the high byte (value / 256), honouring ``is_bigendian``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

# 8K UHD is 33 Mpx; anything far beyond is treated as corrupt or hostile (memory blow-up before the model).
DEFAULT_MAX_PIXELS = 50_000_000

# Error kinds (stable strings: used as diagnostics keys and log-throttle keys).
KIND_ENCODING = "unknown_encoding"
KIND_STEP = "bad_step"
KIND_SIZE = "data_size"
KIND_EMPTY = "zero_size"
KIND_TOO_LARGE = "too_large"
KIND_COMPRESSED = "corrupt_compressed"

# Strings from the wire (encoding, format) are quoted in error messages at most this long: a hostile or corrupt
# message must not turn one log line into kilobytes.
WIRE_TEXT_LIMIT = 64


def wire_text(value: str, limit: int = WIRE_TEXT_LIMIT) -> str:
    """``repr`` of a string taken from a message, cut to ``limit`` characters with the original length noted."""
    value = str(value)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


class ImageDecodeError(ValueError):
    """An image message cannot be decoded; ``kind`` is one of the ``KIND_*`` strings."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class _RawFormat:
    channels: int
    dtype: str  # "u1" or "u2"
    to_rgb: Callable[[np.ndarray], np.ndarray]


def _identity(img: np.ndarray) -> np.ndarray:
    return img


def _cvt(code: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda img: cv2.cvtColor(img, code)


def _bayer(new_name: str, legacy_name: str) -> Callable[[np.ndarray], np.ndarray]:
    # OpenCV 5 names Bayer patterns by their first row (BayerRGGB); OpenCV 4 by the second row (BayerBG for
    # RGGB, the mapping cv_bridge uses). Prefer the explicit name when the installed OpenCV has it.
    code = getattr(cv2, new_name, None)
    return _cvt(code if code is not None else getattr(cv2, legacy_name))


def _drop_alpha(img: np.ndarray) -> np.ndarray:
    return img[..., :3]


def _bgra_to_rgb(img: np.ndarray) -> np.ndarray:
    return img[..., 2::-1]


def _gray_to_rgb(img: np.ndarray) -> np.ndarray:
    # H, W -> H, W, 3 (a broadcast view would be read-only and non-contiguous; models copy anyway).
    return np.repeat(img[..., None], 3, axis=2)


_FORMATS: dict[str, _RawFormat] = {
    "rgb8": _RawFormat(3, "u1", _identity),
    "bgr8": _RawFormat(3, "u1", _cvt(cv2.COLOR_BGR2RGB)),
    "rgba8": _RawFormat(4, "u1", _drop_alpha),
    "bgra8": _RawFormat(4, "u1", _cvt(cv2.COLOR_BGRA2RGB)),
    "mono8": _RawFormat(1, "u1", _gray_to_rgb),
    "8UC1": _RawFormat(1, "u1", _gray_to_rgb),
    "rgb16": _RawFormat(3, "u2", _identity),
    "bgr16": _RawFormat(3, "u2", lambda img: img[..., ::-1]),
    "rgba16": _RawFormat(4, "u2", _drop_alpha),
    "bgra16": _RawFormat(4, "u2", _bgra_to_rgb),
    "mono16": _RawFormat(1, "u2", _gray_to_rgb),
    "16UC1": _RawFormat(1, "u2", _gray_to_rgb),
    "yuv422": _RawFormat(2, "u1", _cvt(cv2.COLOR_YUV2RGB_UYVY)),
    "uyvy": _RawFormat(2, "u1", _cvt(cv2.COLOR_YUV2RGB_UYVY)),
    "yuv422_yuy2": _RawFormat(2, "u1", _cvt(cv2.COLOR_YUV2RGB_YUY2)),
    "yuyv": _RawFormat(2, "u1", _cvt(cv2.COLOR_YUV2RGB_YUY2)),
    "bayer_rggb8": _RawFormat(1, "u1", _bayer("COLOR_BayerRGGB2RGB", "COLOR_BayerBG2RGB")),
    "bayer_bggr8": _RawFormat(1, "u1", _bayer("COLOR_BayerBGGR2RGB", "COLOR_BayerRG2RGB")),
    "bayer_gbrg8": _RawFormat(1, "u1", _bayer("COLOR_BayerGBRG2RGB", "COLOR_BayerGR2RGB")),
    "bayer_grbg8": _RawFormat(1, "u1", _bayer("COLOR_BayerGRBG2RGB", "COLOR_BayerGB2RGB")),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_FORMATS)
SUPPORTED_COMPRESSED: tuple[str, ...] = ("jpeg", "png")


def _check_size(height: int, width: int, max_pixels: int, what: str) -> None:
    if height <= 0 or width <= 0:
        raise ImageDecodeError(KIND_EMPTY, f"{what}: zero-size image {width}x{height}")
    if height * width > max_pixels:
        raise ImageDecodeError(
            KIND_TOO_LARGE, f"{what}: {width}x{height} = {height * width} pixels exceeds max_pixels={max_pixels}"
        )


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data,
    is_bigendian: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode raw ``sensor_msgs/Image`` fields to (H, W, 3) uint8 RGB.

    ``data`` is anything exposing the buffer protocol (``bytes``, ``array.array('B')`` as rclpy delivers it,
    a numpy array). Row padding (``step`` larger than a packed row) is allowed; the data size must be exactly
    ``step * height``.
    """
    fmt = _FORMATS.get(encoding)
    if fmt is None:
        raise ImageDecodeError(
            KIND_ENCODING,
            f"unsupported encoding {wire_text(encoding)}; supported: {', '.join(SUPPORTED_ENCODINGS)}",
        )
    _check_size(height, width, max_pixels, f"{encoding} image")
    itemsize = 2 if fmt.dtype == "u2" else 1
    row_bytes = width * fmt.channels * itemsize
    if step < row_bytes:
        raise ImageDecodeError(KIND_STEP, f"{encoding} image {width}x{height}: step {step} is smaller than a "
                                          f"packed row ({row_bytes} bytes)")
    if fmt.channels == 2 and width % 2:
        raise ImageDecodeError(KIND_STEP, f"{encoding} image: width {width} must be even (2 pixels share U and V)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size != step * height:
        raise ImageDecodeError(
            KIND_SIZE,
            f"{encoding} image {width}x{height}: data has {buffer.size} bytes, expected step*height = {step * height}",
        )
    rows = buffer.reshape(height, step)[:, :row_bytes]  # H, row_bytes (a view, no copy)
    if itemsize == 2:
        # High byte of each 16-bit value (value >> 8), taken as a byte view; contiguous for cv2.
        high = 0 if is_bigendian else 1
        pixels = np.ascontiguousarray(rows.reshape(height, width * fmt.channels, 2)[..., high])  # H, W*C
    else:
        pixels = rows
    img = pixels.reshape(height, width, fmt.channels)  # H, W, C (a view; rows may be padded)
    if fmt.channels == 1:
        img = img[..., 0]  # H, W
    rgb = fmt.to_rgb(img)  # H, W, 3
    # Always hand out C-contiguous arrays (no copy when the view already is one, e.g. packed rgb8).
    return np.ascontiguousarray(rgb)


def _compressed_kind(fmt: str, data: bytes) -> str:
    """Which codec the bytes are, from their magic number (the format string is often wrong or vague)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if "compressedDepth" in fmt:
        raise ImageDecodeError(KIND_ENCODING, f"compressed format {wire_text(fmt)} (depth images) is not supported")
    raise ImageDecodeError(
        KIND_COMPRESSED, f"compressed format {wire_text(fmt)}: data is neither JPEG nor PNG (starts with {data[:8].hex()})"
    )


def _header_size(data: bytes, kind: str) -> tuple[int, int]:
    """(width, height) from the JPEG/PNG header, read before decoding so a huge image never gets allocated."""
    from PIL import Image, UnidentifiedImageError  # pillow: runtime dependency, header parsing only

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL refuses a header over 2 * Image.MAX_IMAGE_PIXELS (about 179 Mpx; the warning above about 89 Mpx
        # becomes an error under -W error) before our max_pixels check sees the size: the same "too large" frame.
        raise ImageDecodeError(KIND_TOO_LARGE, f"{kind} image: header over PIL's pixel limit: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(KIND_COMPRESSED, f"{kind} data has a corrupt header: {exc}") from exc


def decode_compressed(fmt: str, data, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``sensor_msgs/CompressedImage`` (JPEG or PNG) to (H, W, 3) uint8 RGB.

    The codec is detected from the data; ``fmt`` (e.g. ``"jpeg"``, ``"rgb8; jpeg compressed bgr8"``) only
    feeds error messages. Truncated JPEGs (no end-of-image marker) are rejected instead of being decoded
    half grey, which is what libjpeg does silently.
    """
    raw = bytes(data) if not isinstance(data, bytes) else data
    if not raw:
        raise ImageDecodeError(KIND_EMPTY, f"compressed image ({wire_text(fmt)}) has no data")
    kind = _compressed_kind(fmt, raw)
    width, height = _header_size(raw, kind)
    _check_size(height, width, max_pixels, f"{kind} image")
    if kind == "jpeg" and not raw.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageDecodeError(KIND_COMPRESSED, f"jpeg image {width}x{height} is truncated (no end-of-image marker)")
    bgr = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_COLOR)  # H, W, 3 BGR
    if bgr is None:
        raise ImageDecodeError(KIND_COMPRESSED, f"{kind} image {width}x{height} could not be decoded (corrupt data)")
    if bgr.shape[:2] != (height, width):
        raise ImageDecodeError(
            KIND_COMPRESSED, f"{kind} image decoded to {bgr.shape[1]}x{bgr.shape[0]}, header says {width}x{height}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

