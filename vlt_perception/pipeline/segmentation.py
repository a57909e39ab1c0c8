"""Semantic segmentation pipeline: RGB image -> engine -> labels / colour / overlay / confidence at input size.

No rclpy here: the node converts messages and asks only for the outputs somebody subscribes to, so the cost of
resizing and colouring is paid only when used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from vlt_perception.engines.base import InferenceEngine
from vlt_perception.metadata import TASK_SEGMENTATION
from vlt_perception.pipeline.postprocess import colorize_labels, palette_lut, resize_confidence, resize_labels
from vlt_perception.preprocess import Preprocessor


class PipelineError(RuntimeError):
    """The model's outputs break the graph contract (wrong names, shapes or types)."""


@dataclass(frozen=True)
class SegmentationOutputs:
    """Which outputs to compute; everything not requested is skipped."""

    labels: bool = True
    color: bool = True
    overlay: bool = False
    confidence: bool = False

    def any(self) -> bool:
        return self.labels or self.color or self.overlay or self.confidence


@dataclass
class SegmentationResult:
    """Outputs at the input image's resolution; ``None`` where not requested (or, for confidence, not exported)."""

    labels: np.ndarray | None = None  # H, W uint8 train ids, ignore_index = ignore
    color: np.ndarray | None = None  # H, W, 3 uint8 RGB
    overlay: np.ndarray | None = None  # H, W, 3 uint8 RGB: image blended with colour
    confidence: np.ndarray | None = None  # H, W float32 in [0, 1]
    engine_ms: float = 0.0  # engine.infer alone
    total_ms: float = 0.0  # everything in process(): preprocessing, engine, postprocessing


class SegmentationPipeline:
    """Runs a segmentation engine on single RGB frames.

    ``overlay_alpha`` is the weight of the colour image in the overlay. Class names, palette, normalisation and
    input size come from ``engine.metadata``.
    """

    def __init__(self, engine: InferenceEngine, overlay_alpha: float = 0.5) -> None:
        metadata = engine.metadata
        if metadata.task != TASK_SEGMENTATION:
            raise PipelineError(f"{engine.info.model_path}: a {metadata.task!r} model cannot run a segmentation "
                                "pipeline")
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
        self.engine = engine
        self.metadata = metadata
        self.overlay_alpha = overlay_alpha
        self.preprocess = Preprocessor.from_metadata(metadata)
        self._lut = palette_lut(metadata.palette)  # 1, 256, 3
        self._input = np.empty((1, 3, metadata.input_height, metadata.input_width), dtype=np.float32)

    def process(self, rgb: np.ndarray, outputs: SegmentationOutputs = SegmentationOutputs()) -> SegmentationResult:
        """Segment one (H, W, 3) uint8 RGB image. Not thread-safe (reuses its input buffer): one caller at a time."""
        start = time.perf_counter()
        if not outputs.any():
            return SegmentationResult()
        batch = self.preprocess(rgb, out=self._input)  # 1, 3, h, w float32
        engine_start = time.perf_counter()
        raw = self.engine.infer(batch)
        engine_ms = (time.perf_counter() - engine_start) * 1e3
        labels = self._labels(raw)  # h, w uint8 at network size
        confidence = self._batch0(raw["confidence"], "confidence") if outputs.confidence and "confidence" in raw \
            else None
        result = segmentation_result(rgb, labels, confidence, outputs, self._lut, self.overlay_alpha)
        result.engine_ms = engine_ms
        result.total_ms = (time.perf_counter() - start) * 1e3
        return result

    def _batch0(self, array: np.ndarray, name: str) -> np.ndarray:
        return batch_output(array, name, 1, (self.metadata.input_height, self.metadata.input_width),
                            self.engine.info.model_path)[0]

    def _labels(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        size = (self.metadata.input_height, self.metadata.input_width)
        return batch_labels(raw, 1, size, self.engine.info.model_path)[0]


def batch_output(array: np.ndarray, name: str, batch: int, size: tuple[int, int], source: str) -> np.ndarray:
    """Check that the graph output ``name`` is (batch, H, W) with (H, W) = ``size``; returns it."""
    if array.ndim != 3 or array.shape[0] != batch or tuple(array.shape[1:]) != tuple(size):
        raise PipelineError(f"{source}: output {name!r} must be ({batch}, {size[0]}, {size[1]}), got {array.shape}")
    return array


def batch_labels(raw: dict[str, np.ndarray], batch: int, size: tuple[int, int], source: str) -> np.ndarray:
    """The ``labels`` output of a segmentation (or multi-task) graph, checked: (batch, H, W) uint8."""
    if "labels" not in raw:
        raise PipelineError(f"{source}: no 'labels' output (has {sorted(raw)})")
    labels = batch_output(raw["labels"], "labels", batch, size, source)
    if labels.dtype != np.uint8:
        raise PipelineError(f"{source}: 'labels' must be uint8, got {labels.dtype}")
    return labels


def segmentation_result(rgb: np.ndarray, labels: np.ndarray, confidence: np.ndarray | None,
                        outputs: SegmentationOutputs, lut: np.ndarray, overlay_alpha: float) -> SegmentationResult:
    """Network-size ``labels`` (h, w) uint8 and ``confidence`` (h, w) float32 (or None) -> the requested outputs at
    the size of ``rgb`` (H, W, 3) uint8, the camera frame they were computed from."""
    height, width = rgb.shape[:2]
    result = SegmentationResult()
    if outputs.labels:
        result.labels = resize_labels(labels, height, width)
    if outputs.color or outputs.overlay:
        color = colorize_labels(labels, lut, height, width)  # H, W, 3
        result.color = color if outputs.color else None
        if outputs.overlay:
            result.overlay = blend(rgb, color, overlay_alpha)
    if outputs.confidence and confidence is not None:
        result.confidence = resize_confidence(confidence, height, width)
    return result


def blend(rgb: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha) * image + alpha * colour, both (H, W, 3) uint8."""
    import cv2

    return cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)
