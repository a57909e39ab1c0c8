"""The ROS-graph harness itself: isolation, and message round trips between separate processes."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from helpers.fixture_publisher import frame_pixels
from helpers.ros_graph import RosParticipant, start_process, wait_until


@pytest.mark.ros
def test_runs_in_private_network_namespace() -> None:
    assert [name for _, name in socket.if_nameindex()] == ["lo"]


@pytest.mark.ros
def test_image_and_detections_cross_processes_intact(tmp_path) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    images: list[Image] = []
    detections: list[Detection2DArray] = []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    with RosParticipant("harness_receiver") as participant:
        participant.node.create_subscription(Image, "fixture/image", images.append, qos)
        participant.node.create_subscription(Detection2DArray, "fixture/detections", detections.append, qos)
        args = ["test/helpers/fixture_publisher.py", "--width", "64", "--height", "48", "--rate", "20"]
        with start_process(args, log_path=tmp_path / "publisher.log") as proc:
            wait_until(lambda: len(images) >= 3 and len(detections) >= 3, 20, "3 images and detections", proc)

    image = images[-1]
    k = image.header.stamp.sec - 1
    assert (image.height, image.width, image.encoding, image.header.frame_id) == (48, 64, "rgb8", "camera")
    received = np.frombuffer(bytes(image.data), dtype=np.uint8).reshape(48, 64, 3)
    np.testing.assert_array_equal(received, frame_pixels(48, 64, k))

    by_stamp = {d.header.stamp.sec: d for d in detections}
    det = by_stamp[image.header.stamp.sec].detections[0]
    assert (det.bbox.center.position.x, det.bbox.center.position.y) == (float(k), float(2 * k))
    assert (det.bbox.size_x, det.bbox.size_y) == (10.0, 20.0)
    assert det.results[0].hypothesis.class_id == "car" and det.results[0].hypothesis.score == 0.5
