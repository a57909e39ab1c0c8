"""Offline evaluation: read bags with rosbags, run any engine through the deployment pipelines, match predictions
to ground truth by stamp and report mIoU / per-class IoU, mAP, rPD against a reference bag, calibration (ECE,
AUROC, FPR95 of the per-pixel confidence, where the model exports it) and latency.

A bag that cannot be read is reported with its error while the other bags are still evaluated; frames the reader
skipped or could not match are counted in the report, never dropped silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vlt_perception.bag import BagError
from vlt_perception.bag.matching import MAX_CONDITIONS, EvaluationAccumulator, StampMatcher, remap_box_labels
from vlt_perception.bag.reader import BagFrameReader, Issues
from vlt_perception.bag.report import write_report
from vlt_perception.bag.topics import BagTopics
from vlt_perception.engines.base import EngineError
from vlt_perception.metadata import TASK_SEGMENTATION
from vlt_perception.pipeline.segmentation import PipelineError

log = logging.getLogger(__name__)
SAMPLE_MAX_WIDTH = 320  # samples kept for the report are shrunk: memory stays flat on long bags


def bag_names(paths: Sequence[str | Path]) -> list[str]:
    """Unique display names: the bag folder / file name, suffixed when two bags share a name."""
    names: list[str] = []
    for path in paths:
        name = Path(path).name or str(path)
        base, n = name, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.append(name)
    return names


class _Predictor:
    """Wraps the segmentation or detection pipeline: RGB in, ``(value, total_ms, confidence)`` out (confidence:
    the per-pixel (H, W) float32 the segmentation node would publish, None for detection or models without it)."""

    def __init__(self, engine, score_threshold: float) -> None:
        self.task = engine.metadata.task
        if self.task == TASK_SEGMENTATION:
            from vlt_perception.pipeline.segmentation import SegmentationOutputs, SegmentationPipeline

            self.pipeline = SegmentationPipeline(engine)
            self.outputs = SegmentationOutputs(labels=True, color=False, confidence=True)
        else:
            from vlt_perception.pipeline.detection import DetectionPipeline

            self.pipeline = DetectionPipeline(engine, score_threshold=score_threshold)

    @property
    def part(self) -> str:
        return "labels" if self.task == TASK_SEGMENTATION else "boxes"

    def __call__(self, rgb: np.ndarray):
        if self.task == TASK_SEGMENTATION:
            result = self.pipeline.process(rgb, self.outputs)
            return result.labels, result.total_ms, result.confidence
        det = self.pipeline.process(rgb)
        boxes = {"boxes": det.boxes.astype(np.float64), "scores": det.scores.astype(np.float64),
                 "labels": det.class_ids.astype(np.int64)}
        return boxes, det.total_ms, None


def evaluate_bags(
    bags: Sequence[str | Path],
    model: str | Path,
    out_dir: str | Path,
    *,
    engine: str = "auto",
    precision: str | None = None,
    reference: str | Path | None = None,
    topics: BagTopics = BagTopics(),
    max_frames: int | None = None,
    score_threshold: float = 0.0,
    samples_per_condition: int = 2,
    max_conditions: int = MAX_CONDITIONS,
    figures: bool = True,
    engine_factory: Callable | None = None,
    tta: bool = False,
) -> dict:
    """Evaluate ``bags`` (and the ``reference`` source-domain bag) with ``model``; writes the report to
    ``out_dir`` and returns it. ``precision`` goes to ``create_engine`` (torch: fp32 / bf16 / fp16, TensorRT:
    fp32 / fp16 / int8). ``engine_factory(model, engine=, precision=)`` replaces ``create_engine`` (tools).
    ``tta``: multi-scale + flip test-time augmentation (segmentation, torch engine); recorded in the report.
    A bag naming more than ``max_conditions`` distinct conditions stops there with an error in its report entry."""
    if engine_factory is None:
        from vlt_perception.engines.factory import create_engine as engine_factory
    # only passed when asked for, so factories that know nothing of TTA keep working
    runtime = engine_factory(model, engine=engine, precision=precision, **({"tta": True} if tta else {}))
    meta = runtime.metadata
    predictor = _Predictor(runtime, score_threshold)
    seg = meta.task == TASK_SEGMENTATION
    acc = EvaluationAccumulator(meta.class_names if seg else None, None if seg else meta.class_names,
                                meta.ignore_index, max(100, meta.max_detections), samples_per_condition,
                                max_conditions)
    paths = ([Path(reference)] if reference else []) + [Path(b) for b in bags]
    names = bag_names(paths)
    if reference:
        acc.set_reference(names[0])
    runtime.warmup(1)  # lazy initialisation must not land on the first frame's latency
    try:
        for path, name in zip(paths, names):
            try:
                _evaluate_bag(path, name, predictor, acc, topics, max_frames, meta.class_names)
            except BagError as exc:
                log.error("%s", exc)
                acc.set_bag_info(name, error=str(exc))
                acc.add_counts(name, {"bag_error": 1})
    finally:
        runtime.close()
    info = runtime.info
    extra = {
        "mode": "offline",
        "model": {"path": str(model), "task": meta.task, "model_name": meta.model_name, "engine": info.engine,
                  "precision": info.precision, "device": info.device, "providers": info.providers,
                  "tta": bool(getattr(runtime, "tta", False))},
        "bag_paths": {name: str(p) for name, p in zip(names, paths)},
    }
    return write_report(acc, out_dir, extra, palette=meta.palette, figures=figures)


def _evaluate_bag(path: Path, name: str, predictor: _Predictor, acc: EvaluationAccumulator, topics: BagTopics,
                  max_frames: int | None, class_names: Sequence[str]) -> None:
    """Run one bag through the pipeline; matches, counts and reader issues go into ``acc``."""
    with BagFrameReader(path, topics) as reader:
        gt_parts = [p for p, has in (("labels", reader.has_labels), ("boxes", reader.has_boxes)) if has]
        if predictor.part not in gt_parts:
            raise BagError(f"{path}: the model predicts {predictor.part} but the bag has no such ground truth "
                           f"({topics.labels if predictor.part == 'labels' else topics.detections} missing)")
        matcher = StampMatcher([predictor.part], [predictor.part])
        errors = Issues()
        dropped_boxes = 0
        for count, frame in enumerate(reader.frames()):
            if max_frames is not None and count >= max_frames:
                break
            gt = frame.labels if predictor.part == "labels" else frame.boxes
            if gt is None:  # an incomplete frame: the other ground truth only
                matcher.counts["no_ground_truth_for_task"] += 1
                continue
            if predictor.part == "boxes":
                gt, dropped = remap_box_labels(gt, reader.thing_classes, class_names)
                dropped_boxes += dropped
            start = time.perf_counter()
            try:
                value, total_ms, confidence = predictor(frame.image)
            except (PipelineError, EngineError, ValueError) as exc:  # one odd frame must not end the run
                errors.add("prediction_error", f"stamp {frame.stamp_ns}: {type(exc).__name__}: {exc}")
                continue
            sample = _shrink(frame.image) if acc.wants_sample(frame.condition, name) else None
            matcher.add_ground_truth(frame.stamp_ns, predictor.part, gt, condition=frame.condition, image=sample)
            match = matcher.add_prediction(frame.stamp_ns, predictor.part, value,
                                           latency_ms=total_ms or (time.perf_counter() - start) * 1e3)
            if match is not None:
                if confidence is not None:  # this frame's match: the ground truth was added just before
                    match.pred["confidence"] = confidence
                acc.add(match, name)
        counts = matcher.finish()
        counts.update({f"reader_{k}": v for k, v in reader.issues.counts.items()})
        counts.update(errors.counts)
        if dropped_boxes:
            counts["gt_boxes_of_unknown_class"] = dropped_boxes
        acc.add_counts(name, counts)
        acc.set_bag_info(name, issues={**reader.issues.as_dict(), **errors.as_dict()},
                         image_topic=reader.selected["image"].topic)
        if errors.counts and not counts.get("matched"):
            raise BagError(f"{path}: the model failed on every frame, e.g. {errors.examples['prediction_error'][0]}")


def _shrink(image: np.ndarray) -> np.ndarray:
    if image.shape[1] <= SAMPLE_MAX_WIDTH:
        return image
    import cv2

    scale = SAMPLE_MAX_WIDTH / image.shape[1]
    return cv2.resize(image, (SAMPLE_MAX_WIDTH, max(1, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
