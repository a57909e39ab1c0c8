"""Network outputs -> camera-resolution results with numpy + OpenCV (no torch).

Labels are resized with nearest neighbour (class ids must not blend); the colour image is looked up at network
resolution and then resized, which gives the same pixels as colouring the full-size labels at a quarter of the
cost for a 512x1024 model on 1080p.
"""

from __future__ import annotations

import numpy as np

from vlt_perception.labels import palette_array


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a runtime requirement
        raise ImportError("postprocessing needs OpenCV: pip install -r requirements/runtime.txt") from exc
    return cv2


def palette_lut(palette) -> np.ndarray:
    """A colour table for :func:`colorize_labels`: (1, 256, 3) uint8, black past the palette (255 = ignore)."""
    return palette_array(palette)[None]


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Labels (h, w) uint8 -> (height, width) uint8 with nearest neighbour (mono8 for ROS)."""
    return _resize_2d(labels, np.uint8, "labels", height, width, nearest=True)


def colorize_labels(labels: np.ndarray, lut: np.ndarray, height: int | None = None,
                    width: int | None = None) -> np.ndarray:
    """Labels (h, w) uint8 -> rgb8 colour image (height, width, 3) via the palette ``lut`` (see palette_lut)."""
    labels = _as_2d(labels, np.uint8, "labels")
    if lut.shape != (1, 256, 3) or lut.dtype != np.uint8:
        raise ValueError(f"lut must be uint8 (1, 256, 3) from palette_lut(), got {lut.dtype} {lut.shape}")
    cv2 = _cv2()
    # cv2.LUT applies the table per channel: grey -> 3 equal channels -> one palette entry per channel.
    colour = cv2.LUT(cv2.cvtColor(labels, cv2.COLOR_GRAY2RGB), lut)  # h, w, 3
    height = labels.shape[0] if height is None else height
    width = labels.shape[1] if width is None else width
    if colour.shape[:2] != (height, width):
        colour = cv2.resize(colour, (width, height), interpolation=cv2.INTER_NEAREST)
    return colour


def resize_confidence(confidence: np.ndarray, height: int, width: int) -> np.ndarray:
    """Confidence (h, w) float32 -> (height, width) float32, bilinear."""
    return _resize_2d(confidence, np.float32, "confidence", height, width, nearest=False)


def _resize_2d(array: np.ndarray, dtype, name: str, height: int, width: int, nearest: bool) -> np.ndarray:
    """A checked (h, w) ``dtype`` map -> (height, width), nearest neighbour or bilinear; as is at that size."""
    array = _as_2d(array, dtype, name)
    if array.shape == (height, width):
        return array
    cv2 = _cv2()
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def rescale_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Boxes (K, 4) x1, y1, x2, y2 in network pixels (from_size = (H, W)) -> image pixels (to_size = (H0, W0)).

    The input was resized without padding, so x and y scale independently; results are clipped to the image.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (K, 4), got {boxes.shape}")
    (h, w), (h0, w0) = from_size, to_size
    scale = np.array([w0 / w, h0 / h, w0 / w, h0 / h], dtype=np.float32)
    out = boxes * scale  # K, 4
    np.clip(out[:, 0::2], 0, w0, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h0, out=out[:, 1::2])
    return out


def select_detections(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                      score_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop padding and low-score rows of one image's (K, 4) / (K,) / (K,) detection outputs."""
    keep = np.asarray(scores) > score_threshold  # K
    return boxes[keep], scores[keep], labels[keep]


def _as_2d(array: np.ndarray, dtype, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:  # tolerate a batch of one
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name} must be (H, W), got {array.shape}")
    if array.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {array.dtype}")
    return np.ascontiguousarray(array)
