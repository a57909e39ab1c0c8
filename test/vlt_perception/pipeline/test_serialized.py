"""Serialized (CDR) image messages through rosbags: the nodes' fast path, tested without rclpy."""

from __future__ import annotations

import numpy as np
import pytest

from vlt_perception.bag import messages
from vlt_perception.pipeline import serialized
from vlt_perception.pipeline.image_codec import ImageDecodeError, decode_compressed, decode_image
from vlt_perception.pipeline.malloc_tuning import keep_large_buffers_in_heap


class _Header:  # the attributes of std_msgs/Header, as rclpy and rosbags both have them
    class stamp:  # noqa: N801
        sec, nanosec = 12, 345
    frame_id = "camera_front"


def _rgb(h=6, w=10):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_camera_frame_decodes_to_the_same_pixels():
    store = serialized.typestore()
    raw = bytes(store.serialize_cdr(messages.image_msg(store, _rgb(), 12_000_000_345, "cam"), serialized.IMAGE))
    msg = serialized.decode(raw, serialized.IMAGE)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 345, "cam")
    rgb = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
    np.testing.assert_array_equal(rgb, _rgb())
    assert serialized.header_fields(msg.header) == (12, 345, "cam")


def test_compressed_frame_decodes():
    store = serialized.typestore()
    msg = messages.compressed_image_msg(store, _rgb(16, 16), 5, fmt="png")
    decoded = serialized.decode(bytes(store.serialize_cdr(msg, serialized.COMPRESSED_IMAGE)),
                                serialized.COMPRESSED_IMAGE)
    np.testing.assert_array_equal(decode_compressed(decoded.format, decoded.data), _rgb(16, 16))


@pytest.mark.parametrize("encoding, array", [
    ("mono8", np.arange(35, dtype=np.uint8).reshape(5, 7)),
    ("rgb8", _rgb(5, 7)),
    ("32FC1", np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7)),
])
def test_encoded_output_image_reads_back(encoding, array):
    msg = serialized.typestore().deserialize_cdr(serialized.encode_image(array, encoding, _Header), serialized.IMAGE)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 345, "camera_front")
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (5, 7, encoding, 0)
    assert msg.step == 7 * array.itemsize * (3 if array.ndim == 3 else 1)
    np.testing.assert_array_equal(msg.data.view(array.dtype).reshape(array.shape), array)


def test_encode_rejects_wrong_layouts():
    with pytest.raises(ValueError, match="mono8 needs uint8"):
        serialized.encode_image(np.zeros((4, 4), np.float32), "mono8", _Header)
    with pytest.raises(ValueError, match="unsupported encoding"):
        serialized.encode_image(np.zeros((4, 4), np.uint8), "bgr8", _Header)


@pytest.mark.parametrize("cut", [0, 3, 10, 30])
def test_truncated_bytes_are_a_decode_error(cut):
    raw = serialized.encode_image(_rgb(), "rgb8", _Header)
    with pytest.raises(ImageDecodeError) as info:
        serialized.decode(raw[:cut], serialized.IMAGE)
    assert info.value.kind == serialized.KIND_SERIALIZATION


def test_wrong_type_on_the_topic_is_a_decode_error():
    raw = bytes(serialized.typestore().serialize_cdr(messages.string_msg(serialized.typestore(), "hi"),
                                                     "std_msgs/msg/String"))
    with pytest.raises(ImageDecodeError):
        serialized.decode(raw, serialized.IMAGE)


def test_malloc_tuning_applies_on_glibc(monkeypatch):
    import platform

    if platform.libc_ver()[0] == "glibc":
        assert keep_large_buffers_in_heap() is True
    monkeypatch.setenv("VLT_MALLOC_TUNING", "0")
    assert keep_large_buffers_in_heap() is False
