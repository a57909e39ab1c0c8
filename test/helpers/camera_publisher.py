"""A camera stand-in process: publishes rgb8 frames of ``--width`` x ``--height`` on ``--topic`` at ``--rate`` Hz
with sensor-data QoS (best effort, keep last 1), as camera drivers do.

It starts sending once a subscriber has matched (waiting up to ``--wait`` s) and sends ``--count`` frames, or with
``--count 0`` until it is interrupted (SIGINT / SIGTERM); it then prints ``camera_publisher: sent N frames`` and
exits 0. Frame ``k`` has frame_id ``camera_k`` and stamp sec ``k + 1``. Best effort promises no delivery: a test
counts what the receiver got (and must not assume every frame arrives). Its middleware settings are whatever its
environment says (e.g. a Fast DDS profile).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--count", type=int, default=20, help="0 = until interrupted")
    parser.add_argument("--wait", type=float, default=60.0)
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("camera_publisher")
    pub = node.create_publisher(Image, args.topic, qos_profile_sensor_data)
    waited = 0.0
    while pub.get_subscription_count() == 0 and not stop.is_set():  # the discovery handshake
        if waited > args.wait:
            print(f"camera_publisher: no subscriber on {args.topic} after {args.wait} s", file=sys.stderr)
            return 1
        stop.wait(0.05)
        waited += 0.05
    pixels = np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), dtype=np.uint8).tobytes()
    sent = 0
    while not stop.is_set() and (args.count == 0 or sent < args.count):
        msg = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3)
        msg.header.frame_id = f"camera_{sent}"
        msg.header.stamp.sec = sent + 1
        msg.data = pixels
        pub.publish(msg)
        sent += 1
        stop.wait(1.0 / args.rate)  # the camera's frame rate
    node.destroy_node()
    rclpy.try_shutdown()
    print(f"camera_publisher: sent {sent} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
