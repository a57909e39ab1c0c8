"""Shared pieces of the node graph tests: a recording participant, image messages, node start-up.

The node under test runs in its own process (``python -m vlt_perception.nodes.<node>``); the test process is the
fixture publisher and the listener (one rclpy participant with a private context).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import tiny_onnx

from helpers.ros_graph import RosParticipant, start_process, wait_until

__all__ = ["Listener", "start_node", "rgb_image", "raw_image", "stripes", "tiny_onnx", "wait_until"]


def stripes(height: int = 48, width: int = 96) -> np.ndarray:
    """Three vertical stripes red / green / blue: the tiny segmenter labels them 0 / 1 / 2."""
    rgb = np.full((height, width, 3), 40, dtype=np.uint8)
    third = width // 3
    for c in range(3):
        rgb[:, c * third : (c + 1) * third, c] = 220
    return rgb


def call_service(client, request, what: str, timeout: float = 10.0, attempts: int = 3):
    """Call an idempotent service, retrying when no response comes: under load the first response after
    discovery can be lost (the client's response reader may match after the request went out)."""
    assert client.wait_for_service(timeout_sec=30), f"{what}: service not available"
    for _ in range(attempts):
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        if future.done():
            return future.result()
    raise AssertionError(f"{what}: no response after {attempts} attempts")


def header(seq: int, frame_id: str = "camera"):
    from std_msgs.msg import Header

    h = Header()
    h.stamp.sec, h.stamp.nanosec, h.frame_id = 1000 + seq, 123, f"{frame_id}_{seq}"
    return h


def raw_image(encoding: str, height: int, width: int, step: int, data: bytes, seq: int):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header = header(seq)
    msg.encoding, msg.height, msg.width, msg.step = encoding, height, width, step
    msg.data = data
    return msg


def rgb_image(rgb: np.ndarray, seq: int):
    return raw_image("rgb8", rgb.shape[0], rgb.shape[1], rgb.shape[1] * 3, rgb.tobytes(), seq)


class Listener(RosParticipant):
    """Subscribes to topics and records what arrives; publishes fixture frames."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.messages: dict[str, list] = defaultdict(list)
        self.stamps: dict[str, list[float]] = defaultdict(list)  # monotonic arrival times
        self._lock = threading.Lock()
        self._publishers = {}

    def listen(self, topic: str, msg_type, latched: bool = False) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

        def record(msg, topic=topic):
            with self._lock:
                self.messages[topic].append(msg)
                self.stamps[topic].append(time.monotonic())

        self.node.create_subscription(msg_type, topic, record, qos)

    def got(self, topic: str) -> list:
        with self._lock:
            return list(self.messages[topic])

    def publish(self, topic: str, msg, msg_type=None) -> None:
        """Publish ``msg`` (a message, or serialized bytes of ``msg_type``) with sensor-data QoS."""
        from rclpy.qos import qos_profile_sensor_data

        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(msg_type or type(msg), topic,
                                                                 qos_profile_sensor_data)
        self._publishers[topic].publish(msg)

    def diagnostics(self, node_name: str) -> dict[str, str]:
        """The newest /diagnostics values of ``node_name`` ({} if none yet)."""
        from vlt_perception.nodes.conversions import diagnostic_values

        for msg in reversed(self.got("/diagnostics")):
            values = diagnostic_values(msg, f"/{node_name}:")
            if values:
                return values
        return {}

    def publish_until(self, topic: str, make_msg, done, timeout: float, what: str, proc=None,
                      period: float = 0.1) -> int:
        """Publish ``make_msg(seq)`` every ``period`` s until ``done()``; returns the next seq."""
        seq = 0
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            if proc is not None and proc.poll() is not None:
                log = getattr(proc, "log_path", None)
                output = log.read_text()[-4000:] if log is not None and log.exists() else ""
                raise AssertionError(f"node exited ({proc.returncode}) while waiting for {what}:\n{output}")
            self.publish(topic, make_msg(seq))
            seq += 1
            time.sleep(period)
        return seq


@contextlib.contextmanager
def start_node(node: str, log_path: Path, name: str | None = None, env: dict[str, str] | None = None, **params):
    """Context manager: ``python -m vlt_perception.nodes.<node> --ros-args [-r __node:=name] -p k:=v ...``,
    with ``env`` added to the process environment."""
    args = ["-m", f"vlt_perception.nodes.{node}", "--ros-args"]
    if name:
        args += ["-r", f"__node:={name}"]
    for key, value in params.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (list, tuple)):
            value = "[" + ",".join(str(v) for v in value) + "]"
        args += ["-p", f"{key}:={value}"]
    with start_process(args, log_path=log_path, **(env or {})) as proc:
        proc.log_path = log_path  # for failure messages
        yield proc
