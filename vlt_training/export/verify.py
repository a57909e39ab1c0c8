"""Every export checks itself: the exported engine against the PyTorch model on the same preprocessed images.

Images come from the checkpoint's evaluation dataset when it is reachable, else from a folder the user gives, else
synthetic noise (with a warning: noise exercises the graph but not the decision boundaries real images hit).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vlt_perception.engines.parity import (  # the comparison the runtime's parity gate makes
    DETECTION_SCORE_THRESHOLD, count_detections, detection_agreement, detection_outputs, folder_images)
from vlt_perception.metadata import TASK_DETECTION, TASK_MULTITASK, ModelMetadata
from vlt_perception.preprocess import Preprocessor

log = logging.getLogger(__name__)

FP32_MIN_AGREEMENT = 0.999


@dataclass
class ParityReport:
    """How closely an exported engine reproduces PyTorch on ``num_images`` images."""

    engine: str
    precision: str
    image_source: str
    num_images: int
    label_agreement: float  # segmentation: fraction of equal pixels; detection: fraction of matched detections
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    passed: bool = True
    threshold: float | None = None
    # detection: reference detections above the score threshold that the agreement was computed on (None: seg.)
    compared_detections: int | None = None
    # multi-task graphs: ``label_agreement`` is the segmentation's, this the detection outputs' (None otherwise)
    detection_agreement: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        diffs = ", ".join(f"{k} {v:.3g}" for k, v in self.max_abs_diff.items())
        verdict = "" if self.threshold is None else (" PASS" if self.passed else " FAIL") + f" (>= {self.threshold})"
        compared = "" if self.compared_detections is None else f" over {self.compared_detections} detections"
        if self.detection_agreement is not None:  # multi-task: label agreement is the segmentation's
            compared = f"; detection agreement {self.detection_agreement:.5f}{compared}"
        return (f"{self.engine} {self.precision} vs torch on {self.num_images} {self.image_source} images: label "
                f"agreement {self.label_agreement:.5f}{compared}{verdict}; max |diff| {diffs or 'n/a'}")


# ----------------------------------------------------------------------------------------------------------------
# Verification images


def images_from_checkpoint(checkpoint: str | Path | None, count: int) -> list[np.ndarray]:
    """Up to ``count`` RGB images of the first evaluation dataset in the checkpoint's config.yaml ([] if none)."""
    if checkpoint is None:
        return []
    import yaml

    checkpoint = Path(checkpoint)
    candidates = [checkpoint / "config.yaml", checkpoint.parent.parent / "config.yaml"]
    config_path = next((p for p in candidates if p.is_file()), None)
    if config_path is None:
        return []
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
        data = config.get("data") or {}
        datasets = (config.get("eval") or {}).get("datasets") or []
        if not datasets:
            return []
        ds = datasets[0]
        root = ds.get("root", "")
        if data.get("root") and not os.path.isabs(root):
            root = os.path.join(data["root"], root)
        from vlt_perception.datasets import get_dataset, read_image

        records = get_dataset(ds["name"], root, ds.get("split", "val"), **(ds.get("options") or {}))
        return [read_image(r) for r in records[:count]]
    except Exception as exc:  # an unreachable dataset is expected on deployment machines: fall back
        log.info("verification images: the checkpoint's eval dataset is not readable here (%s)", exc)
        return []


def images_from_folder(folder: str | Path, count: int) -> list[np.ndarray]:
    return folder_images(Path(folder), count, "verification image folder not found")


def verification_batch(metadata: ModelMetadata, *, checkpoint=None, image_dir=None, count: int = 4,
                       seed: int = 0) -> tuple[np.ndarray, str]:
    """(B, 3, H, W) float32 preprocessed images and where they came from ('dataset', 'folder' or 'noise')."""
    images, source = images_from_checkpoint(checkpoint, count), "dataset"
    if not images and image_dir is not None:
        images, source = images_from_folder(image_dir, count), "folder"
    if not images:
        log.warning("verifying on synthetic noise: give --verify-images DIR (real images) for a meaningful check")
        rng = np.random.default_rng(seed)
        images = [rng.integers(0, 256, (metadata.input_height, metadata.input_width, 3), dtype=np.uint8)
                  for _ in range(count)]
        source = "noise"
    return Preprocessor.from_metadata(metadata).batch(images), source


# ----------------------------------------------------------------------------------------------------------------
# Comparison


def compare_outputs(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], metadata: ModelMetadata) -> tuple[
        float, dict[str, float]]:
    """(label agreement, max |diff| per float output) of an engine's outputs against the PyTorch reference."""
    missing = sorted(set(ref) - set(out))
    if missing:
        raise ValueError(f"engine outputs lack {missing} (has {sorted(out)})")
    diffs = {}
    for name, value in ref.items():
        if np.issubdtype(value.dtype, np.floating):
            if value.shape != out[name].shape:
                raise ValueError(f"output {name!r}: shape {out[name].shape} != reference {value.shape}")
            diffs[name] = float(np.max(np.abs(value.astype(np.float64) - out[name]))) if value.size else 0.0
    if metadata.task == TASK_DETECTION:
        return detection_agreement(ref, out), diffs
    if metadata.task == TASK_MULTITASK:  # the segmentation half here; detection_outputs() gives the other half
        ref, out = {"labels": ref["labels"]}, {"labels": out["labels"]}
    if ref["labels"].shape != out["labels"].shape:
        raise ValueError(f"labels: shape {out['labels'].shape} != reference {ref['labels'].shape}")
    return float(np.mean(ref["labels"] == out["labels"])), diffs


def torch_reference(model, images: np.ndarray, metadata: ModelMetadata) -> dict[str, np.ndarray]:
    """The fp32 PyTorch export module's outputs, one image at a time (keeps peak memory low)."""
    from vlt_perception.engines.torch_engine import TorchEngine

    engine = TorchEngine(model.export_module(), metadata, precision="fp32", device="cpu")
    parts = [engine.infer(images[i : i + 1]) for i in range(images.shape[0])]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def verify_engine(engine, reference: dict[str, np.ndarray], images: np.ndarray, source: str,
                  metadata: ModelMetadata) -> ParityReport:
    """Run ``engine`` image by image and compare against the reference outputs."""
    parts = [engine.infer(images[i : i + 1]) for i in range(images.shape[0])]
    outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    agreement, diffs = compare_outputs(reference, outputs, metadata)
    precision = engine.info.precision
    threshold = FP32_MIN_AGREEMENT if precision == "fp32" else None
    det_agreement = None
    if metadata.task == TASK_MULTITASK:  # both halves must hold: pixels and detections
        det_agreement = detection_agreement(detection_outputs(reference, metadata),
                                            detection_outputs(outputs, metadata))
    passed = threshold is None or (agreement >= threshold and (det_agreement is None or det_agreement >= threshold))
    compared = None
    if metadata.task in (TASK_DETECTION, TASK_MULTITASK):
        compared = count_detections(detection_outputs(reference, metadata))
        if compared == 0:
            # detection_agreement is 1.0 when there is nothing to compare: say so rather than pass silently
            log.warning("%s parity: the PyTorch reference has no detections above %.2f on these %d %s images, so "
                        "the boxes were not compared; give --verify-images DIR with objects in them",
                        engine.info.engine, DETECTION_SCORE_THRESHOLD, images.shape[0], source)
    return ParityReport(engine.info.engine, precision, source, images.shape[0], agreement, diffs, passed, threshold,
                        compared, det_agreement)


def verify_onnx(onnx_path: str | Path, model, metadata: ModelMetadata, images: np.ndarray, source: str,
                providers=("CPUExecutionProvider",)) -> ParityReport:
    """ONNX Runtime on ``onnx_path`` vs the PyTorch model on the same images. fp32 must agree on >= 99.9% of
    labels (``passed``); reduced precision only reports the figure."""
    from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(onnx_path, providers=list(providers))
    reference = torch_reference(model, images, engine.metadata)
    return verify_engine(engine, reference, images, source, engine.metadata)
