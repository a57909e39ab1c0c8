"""Serialized (CDR) image messages <-> numpy, through rosbags' type store: the nodes' fast path, without rclpy.

Why: rclpy converts a ``sensor_msgs/Image`` between its C and Python forms on every take and publish. A raw
subscription (``create_subscription(..., raw=True)``) hands over the CDR bytes instead; rosbags decodes them in
one copy, and ``Publisher.publish(bytes)`` sends bytes encoded here. Measured on the development machine for one
1920x1080 rgb8 frame (with the nodes' malloc settings): rclpy deserialize 1.2 ms / serialize 1.0 ms, these 0.2 ms
each. Without those malloc settings rclpy took ~10 ms each way (fresh pages for every 6 MB buffer). A malformed
payload becomes a counted and logged ``bad_serialization`` frame here; with typed subscriptions the middleware
drops it without a trace (checked with a truncated frame). The wire format is the same, so peers cannot tell
the difference.

Decoded messages are rosbags dataclasses with the ROS field names (``header.stamp.sec``, ``encoding``, ``data``
...), so :mod:`vlt_perception.pipeline.image_codec` decodes them exactly as it decodes rclpy messages.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from vlt_perception.pipeline.image_codec import ImageDecodeError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
KIND_SERIALIZATION = "bad_serialization"

_PIXEL_LAYOUT = {"mono8": (2, np.uint8), "rgb8": (3, np.uint8), "32FC1": (2, np.float32)}


@lru_cache(maxsize=1)
def typestore():
    """rosbags' ROS 2 Kilted type store (``sensor_msgs``, ``std_msgs`` and their dependencies).

    Not :func:`vlt_perception.bag.typestore.get_bag_typestore`: images need only the built-in types, and that
    store also parses the vision_msgs ``.msg`` files at every node start.
    """
    try:
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:  # pragma: no cover - rosbags is a runtime requirement
        raise ImportError("rosbags is missing: pip install -r requirements/runtime.txt") from exc
    return get_typestore(Stores.ROS2_KILTED)


def decode(raw: bytes, typename: str) -> Any:
    """CDR bytes -> rosbags message; raises :class:`ImageDecodeError` (kind ``bad_serialization``) when the bytes
    are not a valid ``typename`` (truncated, wrong type on the topic, unknown encapsulation)."""
    try:
        return typestore().deserialize_cdr(raw, typename)
    except Exception as exc:  # rosbags raises struct/Index/Value errors for malformed CDR; report one kind
        reason = f"{len(raw)} bytes are not a serialized {typename}: {type(exc).__name__}: {exc}"
        raise ImageDecodeError(KIND_SERIALIZATION, reason) from exc


def header_fields(header) -> tuple[int, int, str]:
    """(sec, nanosec, frame_id) of a ``std_msgs/Header`` from rclpy or rosbags."""
    return int(header.stamp.sec), int(header.stamp.nanosec), str(header.frame_id)


def check_output_image(data: np.ndarray, encoding: str, who: str) -> None:
    """Raise ValueError unless ``data`` is (H, W) uint8 ``mono8``, (H, W, 3) uint8 ``rgb8`` or (H, W) float32
    ``32FC1``: the output images the nodes publish (rclpy messages and serialized alike)."""
    if encoding not in _PIXEL_LAYOUT:
        raise ValueError(f"{who}: unsupported encoding {encoding!r}; expected one of {list(_PIXEL_LAYOUT)}")
    ndim, dtype = _PIXEL_LAYOUT[encoding]
    if data.ndim != ndim or data.dtype != dtype or (ndim == 3 and data.shape[2] != 3):
        raise ValueError(f"{who}: {encoding} needs {np.dtype(dtype).name} with {ndim} dims, got "
                         f"{data.dtype} {data.shape}")


def encode_image(data: np.ndarray, encoding: str, header) -> bytes:
    """(H, W) uint8 ``mono8``, (H, W, 3) uint8 ``rgb8`` or (H, W) float32 ``32FC1`` -> serialized
    ``sensor_msgs/Image`` with ``header``'s stamp and frame_id (``header`` from rclpy or rosbags)."""
    check_output_image(data, encoding, "encode_image")
    types = typestore().types
    sec, nanosec, frame_id = header_fields(header)
    ros_header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)
    data = np.ascontiguousarray(data)
    height, width = data.shape[:2]
    channels = data.shape[2] if data.ndim == 3 else 1
    empty = types[IMAGE](header=ros_header, height=height, width=width, encoding=encoding,
                         is_bigendian=int(data.dtype.byteorder == ">"), step=width * channels * data.itemsize,
                         data=np.empty(0, np.uint8))
    # rosbags writes everything but the pixels; `data` is the last field, a uint8 sequence = uint32 length
    # (little endian, rosbags' default encapsulation) + the bytes, so the pixels are appended in one copy
    # instead of serializing them into a buffer and copying that into `bytes` again.
    prefix = bytes(typestore().serialize_cdr(empty, IMAGE))
    if prefix[:2] != b"\x00\x01" or prefix[-4:] != bytes(4):  # CDR_LE, empty sequence
        raise RuntimeError(f"unexpected serialization of an empty {IMAGE} by rosbags: {prefix[:2].hex()}...")
    return prefix[:-4] + data.nbytes.to_bytes(4, "little") + memoryview(data.reshape(-1).view(np.uint8))
