"""A camera stand-in process: publishes ``--count`` rgb8 frames of ``--width`` x ``--height`` on ``--topic`` at
``--rate`` Hz with sensor-data QoS (best effort, keep last 1), as camera drivers do.

It waits (up to ``--wait`` s) for a subscriber before the first frame, so that every frame can be counted on the
other side, then exits 0. Its middleware settings are whatever its environment says (e.g. a Fast DDS profile).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--wait", type=float, default=60.0)
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("camera_publisher")
    pub = node.create_publisher(Image, args.topic, qos_profile_sensor_data)
    deadline = time.monotonic() + args.wait
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print(f"camera_publisher: no subscriber on {args.topic} after {args.wait} s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    time.sleep(1.0)  # discovery of the reader's locators completes after the match is reported
    pixels = np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), dtype=np.uint8).tobytes()
    for k in range(args.count):
        msg = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3)
        msg.header.frame_id = f"camera_{k}"
        msg.header.stamp.sec = k + 1
        msg.data = pixels
        pub.publish(msg)
        time.sleep(1.0 / args.rate)
    time.sleep(0.5)  # let the last frame go out
    node.destroy_node()
    rclpy.try_shutdown()
    print(f"camera_publisher: sent {args.count} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
