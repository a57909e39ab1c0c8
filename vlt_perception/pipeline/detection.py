"""2D detection pipeline: RGB image -> engine -> boxes in input pixels, filtered by score and class.

The score threshold and the class filter may change while frames are processed (ROS parameters): both live in
one immutable :class:`DetectionFilter` that is swapped in a single assignment, so a frame always sees a
consistent pair.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from vlt_perception.engines.base import InferenceEngine
from vlt_perception.metadata import TASK_DETECTION
from vlt_perception.pipeline.postprocess import rescale_boxes
from vlt_perception.pipeline.segmentation import PipelineError
from vlt_perception.preprocess import Preprocessor


@dataclass(frozen=True)
class DetectionFilter:
    """Keep detections with ``score >= score_threshold`` whose class id is in ``class_ids`` (None = all)."""

    score_threshold: float = 0.3
    class_ids: frozenset[int] | None = None


@dataclass
class Detections:
    """Detections of one image in input pixels: boxes (N, 4) x1, y1, x2, y2; scores (N,); class ids (N,)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    class_names: list[str] = field(default_factory=list)  # one name per detection
    engine_ms: float = 0.0
    total_ms: float = 0.0

    def __len__(self) -> int:
        return len(self.scores)


class DetectionPipeline:
    """Runs a detection engine on single RGB frames; see :class:`DetectionFilter` for the run-time filter."""

    def __init__(self, engine: InferenceEngine, score_threshold: float = 0.3,
                 classes: Iterable[str] | None = None) -> None:
        metadata = engine.metadata
        if metadata.task != TASK_DETECTION:
            raise PipelineError(f"{engine.info.model_path}: a {metadata.task!r} model cannot run a detection pipeline")
        self.engine = engine
        self.metadata = metadata
        self.class_names = list(metadata.class_names)
        self.preprocess = Preprocessor.from_metadata(metadata)
        self._input = np.empty((1, 3, metadata.input_height, metadata.input_width), dtype=np.float32)
        self.filter = self.make_filter(score_threshold, classes)

    def make_filter(self, score_threshold: float, classes: Iterable[str] | None) -> DetectionFilter:
        """Validate a threshold and class-name list (empty or None = every class); raises ValueError."""
        return make_filter(self.class_names, score_threshold, classes)

    def configure(self, score_threshold: float | None = None, classes: Iterable[str] | None = None,
                  keep_classes: bool = False) -> None:
        """Change the threshold and/or the class filter at run time (atomically)."""
        current = self.filter
        threshold = current.score_threshold if score_threshold is None else score_threshold
        if keep_classes:
            names = None if current.class_ids is None else [self.class_names[i] for i in sorted(current.class_ids)]
        else:
            names = classes
        self.filter = self.make_filter(threshold, names)

    def process(self, rgb: np.ndarray) -> Detections:
        """Detect in one (H, W, 3) uint8 RGB image. Not thread-safe (reuses its input buffer)."""
        start = time.perf_counter()
        flt = self.filter  # one read: threshold and classes stay consistent for this frame
        batch = self.preprocess(rgb, out=self._input)  # 1, 3, h, w float32
        engine_start = time.perf_counter()
        raw = self.engine.infer(batch)
        engine_ms = (time.perf_counter() - engine_start) * 1e3
        boxes, scores, ids = batch_detections(raw, ("boxes", "scores", "labels"), 1, len(self.class_names),
                                              self.engine.info.model_path)  # 1, K, 4 / 1, K / 1, K
        detections = filter_detections(boxes[0], scores[0], ids[0], flt, self.class_names,
                                       (self.metadata.input_height, self.metadata.input_width), rgb.shape[:2])
        detections.engine_ms = engine_ms
        detections.total_ms = (time.perf_counter() - start) * 1e3
        return detections


def make_filter(class_names: list[str], score_threshold: float, classes: Iterable[str] | None) -> DetectionFilter:
    """Validate a threshold and a list of names from ``class_names`` (empty or None = every class); raises
    ValueError."""
    score_threshold = float(score_threshold)
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    names = list(classes or [])
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; the model has {class_names}")
    ids = frozenset(class_names.index(n) for n in names) if names else None
    return DetectionFilter(score_threshold, ids)


def batch_detections(raw: dict[str, np.ndarray], names: tuple[str, str, str], batch: int, num_classes: int,
                     source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (boxes, scores, labels) outputs called ``names`` of a detection (or multi-task) graph, checked:
    (batch, K, 4) float32, (batch, K) float32, (batch, K) int64 class ids (padding rows' ids set to 0)."""
    missing = set(names) - set(raw)
    if missing:
        raise PipelineError(f"{source}: detection outputs {sorted(missing)} missing (has {sorted(raw)})")
    boxes, scores, labels = (raw[n] for n in names)
    if boxes.ndim != 3 or boxes.shape[0] != batch or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2] \
            or labels.shape != boxes.shape[:2]:
        raise PipelineError(f"{source}: expected {names[0]} ({batch}, K, 4), {names[1]} ({batch}, K), {names[2]} "
                            f"({batch}, K); got {boxes.shape}, {scores.shape}, {labels.shape}")
    ids = labels.astype(np.int64)
    bad = (ids < 0) | (ids >= num_classes)
    if np.any(bad & (scores > 0)):
        raise PipelineError(f"{source}: class ids {sorted(set(ids[bad].tolist()))} outside the "
                            f"{num_classes} classes of the metadata")
    ids = np.where(bad, 0, ids)  # padding rows may carry any id; they are removed by the score test
    return boxes.astype(np.float32), scores.astype(np.float32), ids


def filter_detections(boxes: np.ndarray, scores: np.ndarray, ids: np.ndarray, flt: DetectionFilter,
                      class_names: list[str], network_size: tuple[int, int],
                      image_size: tuple[int, int]) -> Detections:
    """One image's (K, 4) / (K,) / (K,) network outputs -> the detections ``flt`` keeps, in image pixels."""
    keep = scores >= flt.score_threshold
    keep &= scores > 0  # 0 marks padding rows in the graph contract
    if flt.class_ids is not None:
        keep &= np.isin(ids, list(flt.class_ids))
    boxes = rescale_boxes(boxes[keep], network_size, image_size)
    ids = ids[keep]
    return Detections(boxes=boxes, scores=scores[keep], class_ids=ids, class_names=[class_names[i] for i in ids])


def draw_detections(rgb: np.ndarray, detections: Detections, palette: list[list[int]] | None = None,
                    thickness: int = 2) -> np.ndarray:
    """A copy of ``rgb`` with one rectangle and ``name score`` label per detection (for debug images)."""
    import cv2

    canvas = np.ascontiguousarray(rgb).copy()  # H, W, 3
    for box, score, cid, name in zip(detections.boxes, detections.scores, detections.class_ids,
                                     detections.class_names):
        colour = tuple(int(c) for c in palette[cid]) if palette and cid < len(palette) else (255, 255, 0)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        cv2.putText(canvas, f"{name} {score:.2f}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                    cv2.LINE_AA)
    return canvas
