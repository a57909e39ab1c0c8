"""Message conversions of the nodes (rclpy message classes, no ROS graph)."""

from __future__ import annotations

import numpy as np
import pytest

from vlt_perception.nodes import conversions as conv
from vlt_perception.pipeline.detection import Detections
from vlt_perception.pipeline.image_codec import ImageDecodeError


def _header(frame_id="cam", sec=7):
    from std_msgs.msg import Header

    header = Header()
    header.frame_id, header.stamp.sec, header.stamp.nanosec = frame_id, sec, 99
    return header


def _roundtrip(msg):
    """Through CDR serialisation, as the message crosses DDS."""
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


def test_label_image_roundtrip():
    labels = np.random.default_rng(0).integers(0, 19, (5, 7), dtype=np.uint8)
    labels[0, 0] = 255
    msg = _roundtrip(conv.array_to_image(labels, "mono8", _header()))
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 7, "mono8")
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("cam", 7, 99)
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(5, 7), labels)
    # The node's own decoder reads it back as grey RGB.
    np.testing.assert_array_equal(conv.image_to_rgb(msg, 10_000)[..., 0], labels)


def test_rgb_and_float_images():
    rgb = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    msg = _roundtrip(conv.array_to_image(rgb, "rgb8", _header()))
    assert msg.step == 18
    np.testing.assert_array_equal(conv.image_to_rgb(msg, 10_000), rgb)
    conf = np.random.default_rng(2).random((4, 6), dtype=np.float32)
    msg = _roundtrip(conv.array_to_image(conf, "32FC1", _header()))
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("32FC1", 24, 0)
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.float32).reshape(4, 6), conf)


@pytest.mark.parametrize("array, encoding", [(np.zeros((4, 4), np.float32), "mono8"),
                                             (np.zeros((4, 4, 3), np.uint8), "mono8"),
                                             (np.zeros((4, 4), np.uint8), "rgb8"),
                                             (np.zeros((4, 4), np.uint8), "bgr8")])
def test_array_to_image_rejects_mismatches(array, encoding):
    with pytest.raises(ValueError, match=encoding):
        conv.array_to_image(array, encoding, _header())


def test_compressed_roundtrip_and_error():
    rgb = np.random.default_rng(3).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    msg = _roundtrip(conv.rgb_to_compressed(rgb, _header(), "png"))
    assert msg.format == "png"
    np.testing.assert_array_equal(conv.compressed_to_rgb(msg, 10_000), rgb)
    msg.data = b"\xff\xd8\xff\xe0 truncated"
    with pytest.raises(ImageDecodeError):
        conv.compressed_to_rgb(msg, 10_000)


def test_detections_message_layout():
    dets = Detections(boxes=np.array([[10, 20, 50, 80], [0, 0, 4, 2]], np.float32),
                      scores=np.array([0.75, 0.5], np.float32), class_ids=np.array([2, 0]),
                      class_names=["car", "person"])
    msg = _roundtrip(conv.detections_to_msg(dets, _header("cam", 3)))
    assert msg.header.frame_id == "cam" and len(msg.detections) == 2
    first = msg.detections[0]
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (30.0, 50.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (40.0, 60.0)
    assert len(first.results) == 1
    assert first.results[0].hypothesis.class_id == "car" and first.results[0].hypothesis.score == 0.75
    back = conv.detection_msg_boxes(msg)
    assert [(n, s) for n, s, _ in back] == [("car", 0.75), ("person", 0.5)]
    np.testing.assert_allclose([b for _, _, b in back], dets.boxes)
    assert len(conv.detections_to_msg(Detections(), _header()).detections) == 0


def test_label_info_and_diagnostics():
    info = _roundtrip(conv.label_info(["road", "car"], _header(), threshold=0.4))
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, "road"), (1, "car")]
    assert info.threshold == pytest.approx(0.4)
    diag = _roundtrip(conv.diagnostics("/seg: perception", "cpu", {"dropped": 3, "latency_median_ms": 12.3456,
                                                                   "inference_p90_ms": float("nan"),
                                                                   "providers": ["A", "B"]},
                                       conv.LEVEL_WARN, "2 bad frames", _header().stamp))
    assert diag.status[0].level == conv.LEVEL_WARN and diag.status[0].hardware_id == "cpu"
    values = conv.diagnostic_values(diag, "/seg:")
    assert values == {"dropped": "3", "latency_median_ms": "12.346", "inference_p90_ms": "nan", "providers": "A,B"}
    assert conv.diagnostic_values(diag, "/other:") == {}


@pytest.mark.parametrize("encoding, array", [
    ("mono8", np.arange(35, dtype=np.uint8).reshape(5, 7)),
    ("rgb8", np.arange(105, dtype=np.uint8).reshape(5, 7, 3)),
    ("32FC1", np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7)),
])
def test_serialized_output_images_equal_rclpy_messages(encoding, array):
    """The serialized fast path (rosbags) and rclpy agree on the wire format, both ways."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from vlt_perception.pipeline import serialized

    ours = deserialize_message(serialized.encode_image(array, encoding, _header()), Image)
    assert ours == conv.array_to_image(array, encoding, _header())
    theirs = serialized.decode(serialize_message(conv.array_to_image(array, encoding, _header())), serialized.IMAGE)
    assert (theirs.header.frame_id, theirs.header.stamp.sec, theirs.encoding, theirs.step) == \
        ("cam", 7, encoding, ours.step)
    assert bytes(theirs.data) == bytes(ours.data)
    assert conv.header(*serialized.header_fields(theirs.header)) == _header()
