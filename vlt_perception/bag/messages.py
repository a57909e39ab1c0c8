"""numpy <-> ROS message conversion for evaluation bags.

Builders return rosbags message objects (for writing bags without ROS). Decoders only read attributes, so they take
rosbags messages and rclpy messages alike (same field names): the offline reader and the evaluator node share them.
Unexpected encodings raise :class:`MessageError` naming the encoding, so callers can count and report the frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlt_perception.bag.topics import COMPRESSED_IMAGE_TYPE, DETECTIONS_TYPE, IMAGE_TYPE, STRING_TYPE

NS_PER_S = 1_000_000_000

_LABEL_ENCODINGS = ("mono8", "8UC1")


class MessageError(ValueError):
    """A message cannot be decoded (unknown encoding, wrong size, unknown class ...)."""


# ----------------------------------------------------------------------------------------------------- stamps
def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (exact; used as the matching key)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_ns(msg) -> int:
    return stamp_to_ns(msg.header.stamp)


def _header(store, stamp_ns: int, frame_id: str):
    types = store.types
    stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


# --------------------------------------------------------------------------------------------------- builders
def image_msg(store, image: np.ndarray, stamp_ns: int, frame_id: str = "camera"):
    """RGB (H, W, 3) uint8 -> sensor_msgs/Image rgb8."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise MessageError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    return store.types[IMAGE_TYPE](
        header=_header(store, stamp_ns, frame_id), height=height, width=width, encoding="rgb8",
        is_bigendian=0, step=width * 3, data=np.ascontiguousarray(image).reshape(-1),
    )


def labels_msg(store, labels: np.ndarray, stamp_ns: int, frame_id: str = "camera"):
    """Train IDs (H, W) uint8 (255 = ignore) -> sensor_msgs/Image mono8."""
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise MessageError(f"expected (H, W) uint8 labels, got {labels.shape} {labels.dtype}")
    height, width = labels.shape
    return store.types[IMAGE_TYPE](
        header=_header(store, stamp_ns, frame_id), height=height, width=width, encoding="mono8",
        is_bigendian=0, step=width, data=np.ascontiguousarray(labels).reshape(-1),
    )


def compressed_image_msg(store, image: np.ndarray, stamp_ns: int, fmt: str = "jpeg", frame_id: str = "camera",
                         jpeg_quality: int = 95):
    """RGB (H, W, 3) uint8 -> sensor_msgs/CompressedImage (``jpeg`` or ``png``), as image_transport writes it."""
    import cv2

    if fmt not in ("jpeg", "png"):
        raise MessageError(f"compressed format must be jpeg or png, got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpeg" else []
    ok, buffer = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image[..., ::-1], params)  # cv2 wants BGR
    if not ok:
        raise MessageError(f"cv2 could not encode a {image.shape} image as {fmt}")
    return store.types[COMPRESSED_IMAGE_TYPE](
        header=_header(store, stamp_ns, frame_id), format=f"rgb8; {fmt} compressed bgr8",
        data=buffer.reshape(-1).astype(np.uint8),
    )


def detections_msg(store, boxes: np.ndarray, labels: Sequence[int], class_names: Sequence[str], stamp_ns: int,
                   scores: Sequence[float] | None = None, frame_id: str = "camera"):
    """Boxes (N, 4) xyxy pixels + class indices -> vision_msgs/Detection2DArray (class_id = class name)."""
    types = store.types
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, dtype=np.float64)
    header = _header(store, stamp_ns, frame_id)
    detections = []
    for (x1, y1, x2, y2), label, score in zip(boxes, labels, scores):
        hypothesis = types["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=types["vision_msgs/msg/ObjectHypothesis"](class_id=class_names[int(label)], score=float(score)),
            pose=_zero_pose(types),
        )
        center = types["vision_msgs/msg/Pose2D"](
            position=types["vision_msgs/msg/Point2D"](x=(x1 + x2) / 2, y=(y1 + y2) / 2), theta=0.0
        )
        bbox = types["vision_msgs/msg/BoundingBox2D"](center=center, size_x=x2 - x1, size_y=y2 - y1)
        detections.append(types["vision_msgs/msg/Detection2D"](header=header, results=[hypothesis], bbox=bbox, id=""))
    return types[DETECTIONS_TYPE](header=header, detections=detections)


def _zero_pose(types):
    point = types["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0)
    quat = types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
    return types["geometry_msgs/msg/PoseWithCovariance"](
        pose=types["geometry_msgs/msg/Pose"](position=point, orientation=quat), covariance=np.zeros(36)
    )


def string_msg(store, text: str):
    return store.types[STRING_TYPE](data=text)


# --------------------------------------------------------------------------------------------------- decoders
def _buffer(data) -> np.ndarray:
    """Message ``data`` (numpy array from rosbags, array.array / bytes / list from rclpy) -> flat uint8 array."""
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def _raw_pixels(msg, channels: int) -> np.ndarray:
    """(H, W, C) view of an 8-bit Image honouring ``step`` (rows may be padded)."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = _buffer(msg.data)
    if step < width * channels or data.size < step * height:
        raise MessageError(
            f"{msg.encoding} image {width}x{height}: step {step} / {data.size} bytes is too small for the size"
        )
    return data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)


def decode_image(msg) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> RGB (H, W, 3) uint8, via the pipeline's validating decoder."""
    from vlt_perception.pipeline.image_codec import decode_compressed, decode_image as decode_raw

    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return decode_compressed(str(msg.format), _buffer(msg.data))
    return decode_raw(str(msg.encoding), int(msg.height), int(msg.width), int(msg.step), _buffer(msg.data),
                      bool(msg.is_bigendian))


def decode_confidence(msg) -> np.ndarray:
    """sensor_msgs/Image 32FC1 (the segmentation node's confidence) -> (H, W) float32, honouring ``step`` and
    ``is_bigendian``."""
    if str(msg.encoding) != "32FC1":
        raise MessageError(f"confidence image encoding {msg.encoding!r}; expected '32FC1'")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = _buffer(msg.data)
    if step < width * 4 or data.size < step * height:
        raise MessageError(f"32FC1 image {width}x{height}: step {step} / {data.size} bytes is too small for the size")
    rows = data[: step * height].reshape(height, step)[:, : width * 4]
    dtype = np.dtype(">f4" if bool(msg.is_bigendian) else "<f4")
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(np.float32)


def decode_labels(msg) -> np.ndarray:
    """sensor_msgs/Image mono8 / 8UC1 of train IDs -> (H, W) uint8."""
    if str(msg.encoding) not in _LABEL_ENCODINGS:
        raise MessageError(f"label image encoding {msg.encoding!r}; expected one of {_LABEL_ENCODINGS}")
    return np.ascontiguousarray(_raw_pixels(msg, 1)[..., 0])


def _class_index(class_id: str, class_names: Sequence[str]) -> int:
    if class_id in class_names:
        return list(class_names).index(class_id)
    if class_id.strip().lstrip("-").isdigit() and 0 <= int(class_id) < len(class_names):
        return int(class_id)
    raise MessageError(f"unknown class_id {class_id!r}; expected a name or index of {list(class_names)}")


def decode_detections(msg, class_names: Sequence[str], skip_unknown: bool = False) -> dict:
    """vision_msgs/Detection2DArray -> ``boxes`` (N, 4) xyxy float64, ``scores`` (N,), ``labels`` (N,) int64.

    Each detection's best hypothesis gives its class (a class name, or an index into ``class_names``) and score.
    Unknown classes raise, or with ``skip_unknown`` are left out and counted in ``unknown_class`` (ground truth
    of classes a model was not trained on).
    """
    boxes, scores, labels, unknown = [], [], [], 0
    for det in msg.detections:
        if not det.results:
            raise MessageError("a Detection2D without results (no class)")
        best = max(det.results, key=lambda r: r.hypothesis.score)
        try:
            label = _class_index(str(best.hypothesis.class_id), class_names)
        except MessageError:
            if not skip_unknown:
                raise
            unknown += 1
            continue
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        w, h = det.bbox.size_x, det.bbox.size_y
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        scores.append(best.hypothesis.score)
        labels.append(label)
    return {
        "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        "scores": np.asarray(scores, dtype=np.float64),
        "labels": np.asarray(labels, dtype=np.int64),
        "unknown_class": unknown,
    }
