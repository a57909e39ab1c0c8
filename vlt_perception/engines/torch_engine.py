"""PyTorch engine: runs a training checkpoint directly (CUDA or CPU), for bf16 on CPUs and for debugging exports.

This is the one place where vlt_perception imports torch and vlt_training, lazily, so the runtime stays torch-free
for ONNX / TensorRT models.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from vlt_perception.engines._common import check_images, cpu_bf16_flags
from vlt_perception.engines.base import EngineError, EngineInfo, EngineUnavailableError, InferenceEngine
from vlt_perception.metadata import ModelMetadata

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")


def import_torch():
    try:
        import torch
    except ImportError as exc:
        raise EngineUnavailableError(
            "the torch engine needs PyTorch and the trainer: pip install -r requirements/train.txt") from exc
    return torch


def default_precision(device: str, cpuinfo: str | None = None) -> str:
    """bf16 on CPUs with AMX / AVX512-BF16 (matrix products run several times faster), else fp32."""
    if device.startswith("cpu") and cpu_bf16_flags(cpuinfo):
        return "bf16"
    return "fp32"


class TorchEngine(InferenceEngine):
    """A model's ``export_module()`` in eval mode under ``torch.inference_mode``.

    ``precision``: fp32, bf16 (autocast, CPU or CUDA) or fp16 (autocast, CUDA only); None picks bf16 on CPUs with
    bf16 instructions, else fp32. ``device``: "cuda", "cpu" or None (CUDA when available).
    """

    def __init__(self, module, metadata: ModelMetadata, *, precision: str | None = None, device: str | None = None,
                 threads: int | None = None, model_path: str = "") -> None:
        torch = import_torch()
        if threads:
            torch.set_num_threads(int(threads))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailableError("torch engine: CUDA requested but torch sees no GPU")
        precision = precision or default_precision(device)
        if precision not in PRECISIONS:
            raise EngineError(f"torch engine: precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "fp16" and not device.startswith("cuda"):
            raise EngineError("torch engine: fp16 runs on CUDA only; use bf16 on the CPU")
        self.torch = torch
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.metadata = metadata
        self.precision = precision
        self.info = EngineInfo("torch", precision, str(self.device), model_path=model_path)
        self.tta = False  # set by from_checkpoint(tta=True)

    @classmethod
    def from_checkpoint(cls, path: str | Path, tta: bool = False, **kwargs) -> "TorchEngine":
        """Load a checkpoint folder or run folder with ``vlt_training.training.inference.load_export_module``.

        ``tta``: segmentation labels from multi-scale (0.5-1.75) + flip averaged scores
        (``vlt_training.evaluation.tta``), about 12 times the cost of one pass; for offline evaluation.
        """
        import_torch()
        path = Path(path)
        if not path.exists():
            raise EngineError(f"{path}: checkpoint not found")
        try:
            # The one import of vlt_training in vlt_perception (docs/architecture.md, "Layers").
            from vlt_training.training.inference import load_export_module
        except ImportError as exc:
            raise EngineUnavailableError(
                "the torch engine needs vlt_training (pip install -r requirements/train.txt)") from exc
        try:
            module, metadata = load_export_module(path, tta=tta)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # CheckpointError is a RuntimeError
            raise EngineError(f"{path}: cannot load checkpoint: {exc}") from exc
        engine = cls(module, metadata, model_path=str(path), **kwargs)
        engine.tta = tta
        return engine

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = self.torch.bfloat16 if self.precision == "bf16" else self.torch.float16
        return self.torch.autocast(device_type=self.device.type, dtype=dtype)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        images = check_images(images, self.metadata, self.info.model_path or "torch engine")
        with torch.inference_mode(), self._autocast():
            outputs = self.module(torch.from_numpy(images).to(self.device))
        return outputs_to_numpy(outputs, self.metadata)

    def close(self) -> None:
        self.module = None
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


def output_names(metadata: ModelMetadata) -> tuple[str, ...]:
    """Graph output names in contract order (segmentation: labels, confidence; detection: boxes, scores, labels
    and, from Mask R-CNN only, masks)."""
    if metadata.task == "detection":
        return ("boxes", "scores", "labels", "masks")
    return ("labels", "confidence")


_DTYPES = {"labels": None, "confidence": np.float32, "boxes": np.float32, "scores": np.float32, "masks": np.float32}


def outputs_to_numpy(outputs, metadata: ModelMetadata) -> dict[str, np.ndarray]:
    """An export module's outputs (dict, tuple or tensor) -> dict of numpy arrays with the contract's dtypes."""
    if isinstance(outputs, dict):
        items = list(outputs.items())
    else:
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        items = list(zip(output_names(metadata), outputs))
    result = {}
    for name, value in items:
        array = value.detach().float().cpu().numpy() if value.is_floating_point() else value.cpu().numpy()
        if name == "labels":
            array = array.astype(np.uint8 if metadata.task != "detection" else np.int64, copy=False)
        elif _DTYPES.get(name) is not None:
            array = array.astype(_DTYPES[name], copy=False)
        result[name] = array
    return result
