"""ROS message <-> numpy conversions for the perception nodes (needs rclpy's message packages).

cv_bridge is not used: it is not installable from PyPI, and the decoding rules live in the torch- and
rclpy-free :mod:`vlt_perception.pipeline.image_codec`, where they are tested on plain arrays.
"""

from __future__ import annotations

import array
import math
from collections.abc import Mapping

import numpy as np

from vlt_perception.pipeline.detection import Detections
from vlt_perception.pipeline.image_codec import decode_compressed, decode_image
from vlt_perception.pipeline.serialized import check_output_image

try:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError("the perception nodes need ROS 2 message packages: source a ROS 2 distribution, or "
                      "pip install -r requirements/ros.txt and `source tools/env.sh`") from exc


def _vision_msgs():
    try:
        from vision_msgs import msg
    except ImportError as exc:
        raise ImportError("vision_msgs is missing: install ros-$ROS_DISTRO-vision-msgs, or build the local overlay "
                          "with `./vlt setup` and `source tools/env.sh`") from exc
    return msg


def header(sec: int, nanosec: int, frame_id: str) -> Header:
    """std_msgs/Header from its fields (for outputs of frames that arrived serialized)."""
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_to_rgb(msg: Image, max_pixels: int) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB; raises ImageDecodeError for malformed messages."""
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian),
                        max_pixels=max_pixels)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG / PNG) -> (H, W, 3) uint8 RGB; raises ImageDecodeError."""
    return decode_compressed(msg.format, msg.data, max_pixels=max_pixels)


def _byte_array(data: np.ndarray) -> array.array:
    # One memcpy into the array.array rclpy wants (array.array('B', bytes) would copy twice).
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(data).data)
    return out


def _new(msg_type):
    # With check_fields=True the generated `data` setter keeps an array.array('B') as it is; with the default
    # (False) it runs array.array('B', value), an element-wise copy: measured 11 ms for a 2 MB label image.
    return msg_type(check_fields=True)


def array_to_image(data: np.ndarray, encoding: str, header) -> Image:
    """(H, W) uint8 ``mono8``, (H, W, 3) uint8 ``rgb8`` or (H, W) float32 ``32FC1`` -> sensor_msgs/Image."""
    check_output_image(data, encoding, "array_to_image")
    msg = _new(Image)
    msg.header = header
    msg.height, msg.width = int(data.shape[0]), int(data.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(data.dtype.byteorder == ">")
    msg.step = int(data.shape[1] * data.dtype.itemsize * (data.shape[2] if data.ndim == 3 else 1))
    msg.data = _byte_array(data.view(np.uint8))
    return msg


def rgb_to_compressed(rgb: np.ndarray, header, fmt: str = "jpeg", quality: int = 90) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage (for fixture publishers and tools)."""
    import cv2

    ext = {"jpeg": ".jpg", "png": ".png"}[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cv2.imencode failed for {fmt}")
    msg = _new(CompressedImage)
    msg.header = header
    msg.format = fmt
    msg.data = _byte_array(buf)
    return msg


def label_info(class_names: list[str], header, threshold: float = 0.0):
    """vision_msgs/LabelInfo: class id -> name, the map that detections' class names and label images refer to."""
    vm = _vision_msgs()
    msg = vm.LabelInfo()
    msg.header = header
    msg.threshold = float(threshold)
    msg.class_map = [vm.VisionClass(class_id=i, class_name=name) for i, name in enumerate(class_names)]
    return msg


def detections_to_msg(detections: Detections, header):
    """Detections in input pixels -> vision_msgs/Detection2DArray (4.x layout).

    Each Detection2D has one ObjectHypothesisWithPose whose ``hypothesis.class_id`` is the class NAME (e.g.
    ``"car"``; ids with names are on ~/out/label_info) and ``hypothesis.score`` the score; ``bbox.center
    .position`` is the box centre and ``size_x``/``size_y`` its width/height, in pixels of the input image.
    """
    vm = _vision_msgs()
    out = vm.Detection2DArray()
    out.header = header
    for box, score, name in zip(detections.boxes.tolist(), detections.scores.tolist(), detections.class_names):
        x1, y1, x2, y2 = box
        det = vm.Detection2D()
        det.header = header
        det.bbox.center.position.x = (x1 + x2) / 2.0
        det.bbox.center.position.y = (y1 + y2) / 2.0
        det.bbox.size_x = x2 - x1
        det.bbox.size_y = y2 - y1
        hyp = vm.ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = name
        hyp.hypothesis.score = float(score)
        det.results = [hyp]
        out.detections.append(det)
    return out


def detection_msg_boxes(msg) -> list[tuple[str, float, tuple[float, float, float, float]]]:
    """Detection2DArray -> [(class name, score, (x1, y1, x2, y2))] (inverse of :func:`detections_to_msg`)."""
    out = []
    for det in msg.detections:
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        w, h = det.bbox.size_x, det.bbox.size_y
        hyp = det.results[0].hypothesis
        out.append((hyp.class_id, hyp.score, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
    return out


def _format(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


LEVEL_OK, LEVEL_WARN, LEVEL_ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def diagnostics(name: str, hardware_id: str, values: Mapping[str, object], level: bytes, message: str,
                stamp) -> DiagnosticArray:
    """One DiagnosticStatus (``level``: LEVEL_OK / LEVEL_WARN / LEVEL_ERROR) in a DiagnosticArray; values become
    KeyValue strings (floats with 3 decimals)."""
    status = DiagnosticStatus()
    status.level = level
    status.name = name
    status.message = message
    status.hardware_id = hardware_id
    status.values = [KeyValue(key=str(k), value=_format(v)) for k, v in values.items()]
    out = DiagnosticArray()
    out.header.stamp = stamp
    out.status = [status]
    return out


def diagnostic_values(msg: DiagnosticArray, name_contains: str = "") -> dict[str, str]:
    """The KeyValues of the first status whose name contains ``name_contains`` (for tests and tools)."""
    for status in msg.status:
        if name_contains in status.name:
            return {kv.key: kv.value for kv in status.values}
    return {}
