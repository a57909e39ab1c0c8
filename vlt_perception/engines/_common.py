"""Helpers shared by the engine implementations (numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlt_perception.engines.base import EngineError, EngineUnavailableError
from vlt_perception.metadata import MetadataError, ModelMetadata

GPU_PROVIDERS = (
    "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider", "CUDAExecutionProvider",
    "ROCMExecutionProvider", "MIGraphXExecutionProvider", "DmlExecutionProvider", "OpenVINOExecutionProvider",
)


def require_file(path: str | Path, what: str) -> Path:
    """The path as a Path, or EngineError naming it when it is missing or not a file."""
    path = Path(path)
    if not path.exists():
        raise EngineError(f"{path}: {what} not found")
    if not path.is_file():
        raise EngineError(f"{path}: expected a {what} file, found a directory")
    if path.stat().st_size == 0:
        raise EngineError(f"{path}: {what} is empty")
    return path


def check_images(images: np.ndarray, metadata: ModelMetadata, source: str) -> np.ndarray:
    """Validate an engine input batch against the metadata; returns it C-contiguous float32."""
    expected = (3, metadata.input_height, metadata.input_width)
    if not isinstance(images, np.ndarray) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        shape = getattr(images, "shape", None)
        raise EngineError(f"{source}: input must be (B, {expected[0]}, {expected[1]}, {expected[2]}), got {shape}")
    if images.dtype != np.float32:
        raise EngineError(f"{source}: input must be float32 (normalised RGB), got {images.dtype}")
    return np.ascontiguousarray(images)


def cpu_bf16_flags(cpuinfo: str | None = None) -> set[str]:
    """The bf16-related CPU flags (``amx_bf16``, ``avx512_bf16``) from /proc/cpuinfo; empty when unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return {flag for flag in line.split(":", 1)[1].split() if flag in ("amx_bf16", "avx512_bf16")}
    return set()


def import_onnxruntime():
    """The onnxruntime module, or EngineUnavailableError with the install hint."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineUnavailableError(
            "ONNX Runtime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA / TensorRT)"
        ) from exc
    return onnxruntime


def read_onnx_metadata(onnx_path: Path) -> ModelMetadata:
    """The ModelMetadata stored in an ONNX file's metadata_props (with onnx if installed, else ONNX Runtime)."""
    try:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    except ImportError:
        session = import_onnxruntime().InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        props = dict(session.get_modelmeta().custom_metadata_map)
    except Exception as exc:  # onnx raises DecodeError and friends for corrupt files
        raise EngineError(f"{onnx_path}: not a readable ONNX model: {exc}") from exc
    try:
        return ModelMetadata.from_onnx_props(props, source=str(onnx_path))
    except MetadataError as exc:
        raise EngineError(f"{onnx_path}: {exc}") from exc
