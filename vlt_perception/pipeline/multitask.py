"""Batched pipeline: frames of several cameras -> one engine call -> segmentation and detections per camera.

Runs segmentation, detection and multi-task (``segmentation_detection``) graphs: what the metadata's task says
the graph outputs is what comes back. Each frame is resized to the network input on its own, so the cameras may
have different resolutions; each camera's results are mapped back to its own frame size by the same
post-processing as the single-frame pipelines (:func:`~vlt_perception.pipeline.segmentation.segmentation_result`,
:func:`~vlt_perception.pipeline.detection.filter_detections`).

Exported graphs have a dynamic batch axis; an engine that accepts only batch 1 (a ``--static-batch`` export, a
TensorRT engine built for batch 1) fails on the first batch of two or more frames, and from then on the frames
go through it one at a time (:attr:`MultiTaskPipeline.batch_error` says why).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vlt_perception.engines.base import InferenceEngine
from vlt_perception.metadata import TASK_DETECTION, TASK_MULTITASK, TASK_SEGMENTATION
from vlt_perception.pipeline.detection import (DetectionFilter, Detections, batch_detections, filter_detections,
                                               make_filter)
from vlt_perception.pipeline.postprocess import palette_lut
from vlt_perception.pipeline.segmentation import (PipelineError, SegmentationOutputs, SegmentationResult,
                                                  batch_labels, batch_output, segmentation_result)
from vlt_perception.preprocess import Preprocessor

DETECTION_OUTPUTS = ("boxes", "scores", "labels")
MULTITASK_DETECTION_OUTPUTS = ("det_boxes", "det_scores", "det_labels")


@dataclass(frozen=True)
class FrameRequest:
    """What to compute for one frame: the segmentation outputs and whether to detect."""

    segmentation: SegmentationOutputs = SegmentationOutputs(labels=False, color=False)
    detections: bool = False

    def any(self) -> bool:
        return self.segmentation.any() or self.detections


@dataclass
class FrameResult:
    """One frame's results at its own resolution; None where not requested or not in the model."""

    segmentation: SegmentationResult | None = None
    detections: Detections | None = None


@dataclass
class BatchResult:
    frames: list[FrameResult] = field(default_factory=list)  # in the order of the input frames
    engine_ms: float = 0.0  # engine.infer alone, all calls of this batch
    total_ms: float = 0.0  # preprocessing + engine + postprocessing of the whole batch
    engine_calls: int = 0


@dataclass
class EngineBatch:
    """A batch on its way through :meth:`MultiTaskPipeline.prepare`, :meth:`~MultiTaskPipeline.infer` and
    :meth:`~MultiTaskPipeline.split`."""

    images: list[np.ndarray]
    requests: list[FrameRequest]
    filter: DetectionFilter | None
    result: BatchResult
    inputs: list[tuple[list[int], np.ndarray]] = field(default_factory=list)  # frame indices, B, 3, h, w float32
    chunks: list[tuple[list[int], dict[str, np.ndarray]]] = field(default_factory=list)  # frame indices, outputs


class MultiTaskPipeline:
    """Runs a segmentation, detection or multi-task engine on batches of RGB frames.

    ``max_batch`` caps the frames per engine call (a larger batch is split). ``overlay_alpha``,
    ``score_threshold`` and ``classes`` mean what they mean for the single-task pipelines; the detection filter
    may be swapped while frames are processed (:meth:`configure`).
    """

    def __init__(self, engine: InferenceEngine, overlay_alpha: float = 0.5, score_threshold: float = 0.3,
                 classes: Iterable[str] | None = None, max_batch: int = 8) -> None:
        metadata = engine.metadata
        if metadata.task not in (TASK_SEGMENTATION, TASK_DETECTION, TASK_MULTITASK):
            raise PipelineError(f"{engine.info.model_path}: a {metadata.task!r} model cannot run on camera frames")
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.engine = engine
        self.metadata = metadata
        self.source = engine.info.model_path
        self.segments = metadata.task in (TASK_SEGMENTATION, TASK_MULTITASK)
        self.detects = metadata.task in (TASK_DETECTION, TASK_MULTITASK)
        # A multi-task graph's class_names are the segmentation classes; its detector has its own list.
        self.detection_class_names = list(metadata.detection_class_names if metadata.task == TASK_MULTITASK
                                          else metadata.class_names) if self.detects else []
        self._det_outputs = MULTITASK_DETECTION_OUTPUTS if metadata.task == TASK_MULTITASK else DETECTION_OUTPUTS
        self.overlay_alpha = overlay_alpha
        self.max_batch = max_batch
        self.batch_error: str | None = None  # why the engine runs one frame per call, if it does
        self._batched_once = False
        self.preprocess = Preprocessor.from_metadata(metadata)
        self._size = (metadata.input_height, metadata.input_width)
        self._lut = palette_lut(metadata.palette) if self.segments else None  # 1, 256, 3
        self.filter: DetectionFilter | None = make_filter(self.detection_class_names, score_threshold, classes) \
            if self.detects else None

    def configure(self, score_threshold: float | None = None, classes: Iterable[str] | None = None,
                  keep_classes: bool = False) -> None:
        """Change the detection threshold and/or class filter at run time (atomically, as DetectionPipeline)."""
        if self.filter is None:
            raise PipelineError(f"{self.source}: a {self.metadata.task!r} model has no detections to filter")
        current = self.filter
        threshold = current.score_threshold if score_threshold is None else score_threshold
        if keep_classes:
            classes = None if current.class_ids is None else \
                [self.detection_class_names[i] for i in sorted(current.class_ids)]
        self.filter = make_filter(self.detection_class_names, threshold, classes)

    def process(self, images: Sequence[np.ndarray], requests: Sequence[FrameRequest]) -> BatchResult:
        """Run the (H_i, W_i, 3) uint8 RGB ``images`` (one per camera, any sizes) through the engine together.

        One caller at a time. Equal to ``split(infer(prepare(...)))``.
        """
        return self.split(self.run_engine(images, requests))

    def run_engine(self, images: Sequence[np.ndarray], requests: Sequence[FrameRequest]) -> EngineBatch:
        """Preprocessing and the engine call(s) for a batch; :meth:`split` turns the outputs into results.

        Equal to ``infer(prepare(...))``. The three steps may run in three threads, each on a different batch:
        ``prepare`` of batch k+2 while ``infer`` runs batch k+1 and ``split`` batch k (a node overlaps the
        preprocessing, the engine and the post-processing and publishing that way). Each step takes one caller at a
        time; a batch owns its input buffers, so the steps never share one.
        """
        return self.infer(self.prepare(images, requests))

    def prepare(self, images: Sequence[np.ndarray], requests: Sequence[FrameRequest]) -> EngineBatch:
        """Preprocess the requested frames into network inputs, in chunks of at most ``max_batch`` frames."""
        if len(images) != len(requests):
            raise ValueError(f"{len(images)} images but {len(requests)} requests")
        start = time.perf_counter()
        job = EngineBatch(list(images), list(requests), self.filter,  # one filter read for the whole batch
                          BatchResult(frames=[FrameResult() for _ in images]))
        todo = [i for i, r in enumerate(requests) if r.any()]
        for first in range(0, len(todo), self.max_batch):
            chunk = todo[first : first + self.max_batch]
            job.inputs.append((chunk, self.preprocess.batch([images[i] for i in chunk])))  # B, 3, h, w float32
        job.result.total_ms = (time.perf_counter() - start) * 1e3
        return job

    def infer(self, job: EngineBatch) -> EngineBatch:
        """The engine call(s) of a prepared batch; the inputs are released once they have run."""
        start = time.perf_counter()
        while job.inputs:
            chunk, batch = job.inputs.pop(0)
            job.chunks.append((chunk, self._infer(batch, job.result)))
        job.result.total_ms += (time.perf_counter() - start) * 1e3
        return job

    def split(self, job: EngineBatch) -> BatchResult:
        """Each frame's results at its own resolution from the engine outputs of :meth:`run_engine`."""
        start = time.perf_counter()
        for chunk, raw in job.chunks:
            self._split(raw, [job.images[i] for i in chunk], [job.requests[i] for i in chunk], job.filter,
                        [job.result.frames[i] for i in chunk])
        job.result.total_ms += (time.perf_counter() - start) * 1e3
        return job.result

    def _infer(self, batch: np.ndarray, result: BatchResult) -> dict[str, np.ndarray]:
        """One engine call for the batch; frame by frame if the engine turns out to take batch 1 only."""
        if len(batch) == 1 or self.batch_error is None:
            try:
                return self._timed(batch, result)
            except Exception as exc:  # noqa: BLE001 - any engine's shape error; re-raised unless it is the batch
                if len(batch) == 1 or self._batched_once:
                    raise
                self.batch_error = f"the engine rejected a batch of {len(batch)}: {type(exc).__name__}: {exc}"
                self.max_batch = 1
        parts = [self._timed(batch[i : i + 1], result) for i in range(len(batch))]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _timed(self, batch: np.ndarray, result: BatchResult) -> dict[str, np.ndarray]:
        engine_start = time.perf_counter()
        raw = self.engine.infer(batch)
        result.engine_ms += (time.perf_counter() - engine_start) * 1e3
        result.engine_calls += 1
        if len(batch) > 1:
            self._batched_once = True
        return raw

    def _split(self, raw: dict[str, np.ndarray], images: list[np.ndarray], requests: list[FrameRequest],
               flt: DetectionFilter | None, out: list[FrameResult]) -> None:
        """Per-frame results from the batch outputs, each at its own frame's resolution."""
        batch = len(images)
        if self.segments:
            labels = batch_labels(raw, batch, self._size, self.source)  # B, h, w uint8
            confidence = batch_output(raw["confidence"], "confidence", batch, self._size, self.source) \
                if "confidence" in raw else None  # B, h, w float32
        if self.detects:
            boxes, scores, ids = batch_detections(raw, self._det_outputs, batch, len(self.detection_class_names),
                                                  self.source)  # B, K, 4 / B, K / B, K
        for i, (rgb, request) in enumerate(zip(images, requests)):
            if self.segments and request.segmentation.any():
                out[i].segmentation = segmentation_result(
                    rgb, labels[i], None if confidence is None else confidence[i], request.segmentation,
                    self._lut, self.overlay_alpha)
            if self.detects and request.detections:
                out[i].detections = filter_detections(boxes[i], scores[i], ids[i], flt, self.detection_class_names,
                                                      self._size, rgb.shape[:2])
