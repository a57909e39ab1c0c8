"""A fixture publisher process: publishes a deterministic rgb8 Image and a Detection2DArray at a fixed rate.

Run as ``python test/helpers/fixture_publisher.py --width W --height H --rate HZ --count N``. Frame ``k`` has
pixel values ``(y * 7 + x * 3 + k) % 256`` in every channel, ``frame_id`` "camera", stamp sec=k+1, and one
detection whose bbox centre is (k, 2k) so the receiver can check that the data arrived intact.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def frame_pixels(height: int, width: int, k: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    mono = ((y * 7 + x * 3 + k) % 256).astype(np.uint8)
    return np.repeat(mono[:, :, None], 3, axis=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--count", type=int, default=0, help="0 = until interrupted")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    rclpy.init()
    node = rclpy.create_node("fixture_publisher")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(Image, "fixture/image", qos)
    det_pub = node.create_publisher(Detection2DArray, "fixture/detections", qos)
    sent = 0

    def publish() -> None:
        nonlocal sent
        image = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3)
        image.header.frame_id = "camera"
        image.header.stamp.sec = sent + 1
        image.data = frame_pixels(args.height, args.width, sent).tobytes()
        detections = Detection2DArray(header=image.header)
        det = Detection2D(header=image.header)
        det.bbox.center.position.x = float(sent)
        det.bbox.center.position.y = float(2 * sent)
        det.bbox.size_x, det.bbox.size_y = 10.0, 20.0
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = "car", 0.5
        det.results.append(hyp)
        detections.detections.append(det)
        image_pub.publish(image)
        det_pub.publish(detections)
        sent += 1
        if args.count and sent >= args.count:
            raise SystemExit(0)

    node.create_timer(1.0 / args.rate, publish)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
