"""The parity gate: a built engine against the fp32 ONNX Runtime CPU reference, before anything runs it.

Every engine the package builds (a TensorRT engine, ONNX Runtime's TensorRT execution-provider cache, an OpenVINO
int8 model) can compute something other than the ONNX graph: a compiler bug (TensorRT 10.14 / 11.1 on
GridSample-based deformable attention, NVIDIA/TensorRT#4813), a bad calibration, a damaged file. So the build
compares the engine with ONNX Runtime on the CPU in fp32 on K frames:

- segmentation: the fraction of pixels with the same label and the mean / max confidence difference;
- detection: the fraction of reference detections the engine reproduces (same label, IoU >= 0.9 or every
  coordinate within half a pixel);
- multi-task graphs: both.

The figures are recorded beside the engine (in a TensorRT engine's signed sidecar, else in ``<model>.parity.json``)
and ``create_engine`` refuses a model whose record says it failed, unless ``allow_parity_failure`` is given, in
which case it loads with a warning. Check any model by hand with::

    python -m vlt_perception.engines.parity --reference model.onnx --model model.onnx --engine openvino \
        --images DIR_OR_BAG --frames 8

This module needs numpy (and OpenCV / the bag reader for frames from files), never torch: ``vlt_training``'s export
check uses the same comparison.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from vlt_perception.atomic import atomic_write_bytes
from vlt_perception.engines.base import EngineError, InferenceEngine
from vlt_perception.metadata import TASK_DETECTION, TASK_MULTITASK, ModelMetadata

log = logging.getLogger(__name__)

DETECTION_SCORE_THRESHOLD = 0.05  # the detections the comparison counts (the models' default test score)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
RECORD_SUFFIX = ".parity.json"


class ParityError(EngineError):
    """An engine failed its parity gate (or its record says so); the message names the model and the figures."""


# ----------------------------------------------------------------------------------------------------------------
# Thresholds


@dataclass(frozen=True)
class ParityThresholds:
    """Minimum agreement an engine needs against the fp32 reference; ``None`` switches a check off."""

    min_label_agreement: float | None = 0.99  # segmentation: fraction of equal pixels
    max_mean_confidence_diff: float | None = 0.02  # segmentation: mean |confidence - reference|
    min_detection_agreement: float | None = 0.95  # detection: fraction of reference detections matched

    @classmethod
    def for_precision(cls, precision: str) -> "ParityThresholds":
        """Defaults by the engine's precision: fp32 must reproduce the reference, reduced precision nearly so
        (fp16 / bf16 flip labels where classes are nearly tied; int8 more so)."""
        if precision == "fp32":
            return cls(0.999, 0.005, 0.99)
        if precision == "int8":
            return cls(0.97, 0.05, 0.90)
        return cls(0.99, 0.02, 0.95)


# ----------------------------------------------------------------------------------------------------------------
# The comparison (numpy only; shared with vlt_training's export check)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of xyxy boxes a (N, 4) and b (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # N, M, 2
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # N, M, 2
    inter = np.clip(rb - lt, 0, None).prod(-1)  # N, M
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def detection_agreement(ref: dict[str, np.ndarray], out: dict[str, np.ndarray],
                        score_threshold: float = DETECTION_SCORE_THRESHOLD,
                        iou_threshold: float = 0.9, pixel_tolerance: float = 0.5) -> float:
    """Fraction of reference detections (score > threshold) that the other output has with the same label and
    IoU >= iou_threshold or every coordinate within ``pixel_tolerance`` (degenerate zero-area boxes, common with
    untrained heads, have IoU 0 even with themselves); 1.0 when the reference has none."""
    matched = total = 0
    for b in range(ref["boxes"].shape[0]):
        keep_r = ref["scores"][b] > score_threshold
        keep_o = out["scores"][b] > score_threshold
        boxes_r, labels_r = ref["boxes"][b][keep_r], ref["labels"][b][keep_r]
        boxes_o, labels_o = out["boxes"][b][keep_o], out["labels"][b][keep_o]
        total += len(boxes_r)
        if len(boxes_r) and len(boxes_o):
            iou = _box_iou(boxes_r, boxes_o)  # N, M
            close = np.abs(boxes_r[:, None] - boxes_o[None]).max(-1) <= pixel_tolerance  # N, M
            same = labels_r[:, None] == labels_o[None, :]
            matched += int((((iou >= iou_threshold) | close) & same).any(axis=1).sum())
    return 1.0 if total == 0 else matched / total


def count_detections(outputs: dict[str, np.ndarray], score_threshold: float | None = None) -> int:
    """Detections above ``score_threshold`` (default: the comparison's) in a batch of detection outputs."""
    threshold = DETECTION_SCORE_THRESHOLD if score_threshold is None else score_threshold
    return int((outputs["scores"] > threshold).sum())


def detection_outputs(outputs: dict[str, np.ndarray], metadata: ModelMetadata) -> dict[str, np.ndarray]:
    """The detection outputs of a detection or multi-task graph under the detection contract's names."""
    if metadata.task != TASK_MULTITASK:
        return outputs
    return {name[len("det_"):]: value for name, value in outputs.items() if name.startswith("det_")}


def max_abs_diffs(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest |difference| of every float output; ValueError naming an output that is missing or mis-shaped."""
    missing = sorted(set(ref) - set(out))
    if missing:
        raise ValueError(f"engine outputs lack {missing} (has {sorted(out)})")
    diffs = {}
    for name, value in ref.items():
        if value.shape != out[name].shape and (np.issubdtype(value.dtype, np.floating) or name == "labels"):
            raise ValueError(f"output {name!r}: shape {out[name].shape} != reference {value.shape}")
        if np.issubdtype(value.dtype, np.floating):
            diffs[name] = float(np.max(np.abs(value.astype(np.float64) - out[name]))) if value.size else 0.0
    return diffs


@dataclass
class ParityReport:
    """How closely an engine reproduces the fp32 ONNX Runtime CPU reference on ``frames`` frames."""

    engine: str
    precision: str
    model: str
    reference: str
    task: str
    frames: int
    frame_source: str
    label_agreement: float | None = None  # segmentation / multi-task
    mean_confidence_diff: float | None = None
    max_confidence_diff: float | None = None
    detection_agreement: float | None = None  # detection / multi-task
    compared_detections: int | None = None
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    passed: bool = True
    model_sha256: str | None = None  # set where the record must follow a file that may change (the ONNX)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ParityReport":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def summary(self) -> str:
        parts = []
        if self.label_agreement is not None:
            parts.append(f"label agreement {self.label_agreement:.5f}, mean confidence diff "
                         f"{self.mean_confidence_diff:.3g}" if self.mean_confidence_diff is not None
                         else f"label agreement {self.label_agreement:.5f}")
        if self.detection_agreement is not None:
            parts.append(f"detection agreement {self.detection_agreement:.5f} over {self.compared_detections} "
                         "detections")
        verdict = "PASS" if self.passed else "FAIL (" + "; ".join(self.failures) + ")"
        return (f"{self.engine} {self.precision} vs {self.reference} on {self.frames} {self.frame_source} frames: "
                f"{', '.join(parts)}: {verdict}")


def compare_to_reference(expected: dict[str, np.ndarray], outputs: dict[str, np.ndarray], metadata: ModelMetadata,
                         thresholds: ParityThresholds, **fields) -> ParityReport:
    """The report of ``outputs`` against the reference's ``expected`` outputs (both (K, ...) batches);
    ``fields``: the report's engine, precision, model, reference, frames and frame_source."""
    reference = expected
    report = ParityReport(task=metadata.task, max_abs_diff=max_abs_diffs(reference, outputs),
                          thresholds=asdict(thresholds), **fields)
    if metadata.task != TASK_DETECTION:
        report.label_agreement = float(np.mean(reference["labels"] == outputs["labels"]))
        if "confidence" in reference:
            diff = np.abs(reference["confidence"].astype(np.float64) - outputs["confidence"])
            report.mean_confidence_diff, report.max_confidence_diff = float(diff.mean()), float(diff.max())
        _check(report, "label agreement", report.label_agreement, thresholds.min_label_agreement, at_least=True)
        _check(report, "mean confidence diff", report.mean_confidence_diff, thresholds.max_mean_confidence_diff,
               at_least=False)
    if metadata.task in (TASK_DETECTION, TASK_MULTITASK):
        ref_det, out_det = detection_outputs(reference, metadata), detection_outputs(outputs, metadata)
        report.detection_agreement = detection_agreement(ref_det, out_det)
        report.compared_detections = count_detections(ref_det)
        if report.compared_detections == 0:
            log.warning("parity: the reference has no detections above %.2f on these %d %s frames, so the boxes "
                        "were not compared; give frames with objects in them", DETECTION_SCORE_THRESHOLD,
                        report.frames, report.frame_source)
        _check(report, "detection agreement", report.detection_agreement, thresholds.min_detection_agreement,
               at_least=True)
    report.passed = not report.failures
    return report


def _check(report: ParityReport, name: str, value: float | None, limit: float | None, *, at_least: bool) -> None:
    if value is None or limit is None:
        return
    if not math.isfinite(value):  # NaN compares False with every limit: without this it would pass
        report.failures.append(f"{name} is {value} (the candidate's outputs are not finite)")
        return
    if (value < limit) if at_least else (value > limit):
        report.failures.append(f"{name} {value:.5g} {'<' if at_least else '>'} {limit}")


# ----------------------------------------------------------------------------------------------------------------
# Frames


def run_frames(engine: InferenceEngine, frames: np.ndarray) -> dict[str, np.ndarray]:
    """The engine's outputs on (K, 3, H, W) frames, one frame per call (engines built for batch 1 work too)."""
    parts = [engine.infer(frames[i : i + 1]) for i in range(frames.shape[0])]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def load_frames(source: str | Path | None, metadata: ModelMetadata, count: int = 4,
                seed: int = 0) -> tuple[np.ndarray, str]:
    """(K, 3, H, W) float32 frames preprocessed as deployment does, and where they came from.

    ``source``: an image folder (searched recursively), a rosbag (folder with ``metadata.yaml`` or ``.mcap`` /
    ``.db3`` file) or None for seeded noise (with a warning: noise exercises the graph but not the decision
    boundaries real images hit).
    """
    from vlt_perception.preprocess import Preprocessor

    if count < 1:
        raise ValueError(f"parity frames: count must be >= 1, got {count}")
    if source is None:
        log.warning("parity gate on synthetic noise: give calibration / verification images or a bag for a "
                    "meaningful check")
        rng = np.random.default_rng(seed)
        images = [rng.integers(0, 256, (metadata.input_height, metadata.input_width, 3), dtype=np.uint8)
                  for _ in range(count)]
        kind = "noise"
    else:
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f"{source}: parity frame source not found")
        if _is_bag(source):
            images, kind = _bag_images(source, count), "bag"
        else:
            images, kind = folder_images(source, count, "not an image folder or a rosbag"), "folder"
    return Preprocessor.from_metadata(metadata).batch(images), kind


def _is_bag(path: Path) -> bool:
    return path.suffix in (".mcap", ".db3") or (path.is_dir() and (path / "metadata.yaml").is_file())


def folder_images(folder: Path, count: int, missing: str = "image folder not found") -> list[np.ndarray]:
    """The first ``count`` images (RGB) of ``folder``, searched recursively in name order.

    Export verification and the parity gate read their frames through this one function.
    """
    import cv2

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {missing}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: unreadable image")
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images


def _bag_images(bag: Path, count: int) -> list[np.ndarray]:
    from vlt_perception.bag.reader import BagFrameReader

    images = []
    with BagFrameReader(bag) as reader:
        for frame in reader.frames():
            if frame.image is not None:
                images.append(frame.image)
            if len(images) == count:
                break
    if not images:
        raise ValueError(f"{bag}: no image frames")
    return images


# ----------------------------------------------------------------------------------------------------------------
# The gate


def reference_outputs(reference_onnx_path: str | Path, frames: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    """ONNX Runtime CPU outputs of the reference graph and a description of it."""
    from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine

    reference = OnnxRuntimeEngine(reference_onnx_path, providers=["CPUExecutionProvider"])
    precision = reference.metadata.extra.get("precision", "fp32")
    if precision != "fp32":
        log.warning("parity reference %s is a %s export: the gate compares against it, not against fp32",
                    reference_onnx_path, precision)
    try:
        return run_frames(reference, frames), f"onnxruntime {precision} cpu"
    finally:
        reference.close()


def check_engine_parity(candidate_engine: InferenceEngine, reference_onnx_path: str | Path, frames: np.ndarray,
                        thresholds: ParityThresholds | None = None, *, frame_source: str = "given") -> ParityReport:
    """Compare ``candidate_engine`` with ONNX Runtime (CPU, the graph's precision) on ``frames``.

    ``frames``: (K, 3, H, W) float32, preprocessed (see :func:`load_frames`). ``thresholds``: default by the
    candidate's precision (:meth:`ParityThresholds.for_precision`). Returns the report; raising is the caller's
    choice (see :func:`enforce`).
    """
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"parity frames must be (K >= 1, 3, H, W) float32, got {frames.shape}")
    thresholds = thresholds or ParityThresholds.for_precision(candidate_engine.info.precision)
    reference, reference_name = reference_outputs(reference_onnx_path, frames)
    outputs = run_frames(candidate_engine, frames)
    report = compare_to_reference(reference, outputs, candidate_engine.metadata, thresholds,
                                  engine=candidate_engine.info.engine, precision=candidate_engine.info.precision,
                                  model=str(candidate_engine.info.model_path), reference=reference_name,
                                  frames=frames.shape[0], frame_source=frame_source)
    log.info("parity gate: %s", report.summary())
    return report


def enforce(report: ParityReport, model: str | Path, *, allow_parity_failure: bool = False) -> None:
    """Raise :class:`ParityError` for a failed report, or warn when ``allow_parity_failure`` says to keep it."""
    if report.passed:
        return
    message = (f"{model}: failed its parity gate against the fp32 ONNX Runtime reference: {report.summary()}. "
               "The engine computes something other than the ONNX graph (a compiler bug, a bad calibration or a "
               "damaged file); rebuild it (another TensorRT version, fp16 instead of int8, other calibration "
               "images), or pass allow_parity_failure to run it anyway")
    if not allow_parity_failure:
        raise ParityError(message)
    log.warning("%s (kept: allow_parity_failure)", message)


def record_path(model_path: str | Path) -> Path:
    """Where the gate's figures for a model file live when it has no sidecar of its own: ``<model>.parity.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + RECORD_SUFFIX)


def write_record(model_path: str | Path, report: ParityReport) -> Path:
    """Write the report to ``<model>.parity.json`` (atomically)."""
    path = record_path(model_path)
    atomic_write_bytes(path, json.dumps({"parity": report.to_dict()}, indent=2, sort_keys=True).encode())
    return path


def record_in_sidecar(sidecar: str | Path, report: ParityReport) -> None:
    """Add the report to an engine's JSON sidecar under ``parity``; a signed sidecar is signed again."""
    sidecar = Path(sidecar)
    data = json.loads(sidecar.read_text())
    data["parity"] = report.to_dict()
    if "signature" in data:
        from vlt_perception.engines import cache as engine_cache

        data["signature"] = engine_cache.sign(data)
    atomic_write_bytes(sidecar, json.dumps(data, indent=2, sort_keys=True).encode())


def read_record(model_path: str | Path, sidecar: str | Path | None = None) -> ParityReport | None:
    """The gate's report for a model: from its sidecar's ``parity`` (TensorRT engines) or ``<model>.parity.json``;
    None when neither holds one. A record that cannot be read is an error (it may hide a failed gate)."""
    for path in ([Path(sidecar)] if sidecar else []) + [record_path(model_path)]:
        if not path.is_file():
            continue
        try:
            parity = json.loads(path.read_text()).get("parity")
            if parity is not None:
                return ParityReport.from_dict(parity)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ParityError(f"{path}: unreadable parity record ({exc}); delete it and run the gate again") from exc
    return None


def enforce_record(model_path: str | Path, *, sidecar: str | Path | None = None,
                   allow_parity_failure: bool = False) -> ParityReport | None:
    """Refuse (or, with ``allow_parity_failure``, warn about) a model whose recorded gate failed."""
    report = read_record(model_path, sidecar)
    if report is not None:
        enforce(report, model_path, allow_parity_failure=allow_parity_failure)
    return report


# ----------------------------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Compare an engine with the fp32 ONNX Runtime CPU reference and record "
                                            "the result beside the model (the parity gate, by hand).")
    p.add_argument("--reference", required=True, help="the fp32 .onnx the engine was built from")
    p.add_argument("--model", required=True, help="the model to check (.onnx for openvino/onnxruntime, .engine)")
    p.add_argument("--engine", default="auto", help="engine for --model (as create_engine)")
    p.add_argument("--precision", default=None)
    p.add_argument("--images", default=None, help="image folder or rosbag (default: noise, with a warning)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--no-record", action="store_true", help="print the report only, write nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from vlt_perception.engines.factory import create_engine

    engine = create_engine(args.model, args.engine, precision=args.precision, allow_parity_failure=True)
    frames, source = load_frames(args.images, engine.metadata, args.frames)
    report = check_engine_parity(engine, args.reference, frames, frame_source=source)
    if not args.no_record:
        if engine.info.engine == "tensorrt":
            from vlt_perception.engines.tensorrt_engine import sidecar_path

            record_in_sidecar(sidecar_path(Path(args.model)), report)
            print(f"recorded in {sidecar_path(Path(args.model))}")
        else:
            print(f"recorded in {write_record(args.model, report)}")
    print(json.dumps(report.to_dict(), indent=2))
    print(report.summary())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
