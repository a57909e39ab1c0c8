"""``create_engine``: pick and load an inference engine by model file type and what is installed.

| path | engine="auto" picks |
| --- | --- |
| ``*.onnx`` | TensorRT when it and a GPU are present, else ONNX Runtime (which itself may use CUDA); |
| | ``engine="openvino"`` runs it with OpenVINO (bf16 on CPUs with bf16 units: the fastest CPU path) |
| ``*.engine`` / ``*.plan`` | TensorRT (needs the JSON sidecar written at build time) |
| checkpoint or run folder, ``*.safetensors`` | the PyTorch engine (needs the trainer's requirements) |
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Sequence

from vlt_perception.engines.base import EngineError, EngineUnavailableError, InferenceEngine

log = logging.getLogger(__name__)

ENGINES = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")


def model_kind(path: Path) -> str:
    """'onnx', 'tensorrt' or 'checkpoint' from the path, or EngineError naming the path."""
    if not path.exists():
        raise EngineError(f"{path}: model not found")
    if path.is_dir() or path.suffix == ".safetensors":
        return "checkpoint"
    if path.suffix.lower() in ONNX_SUFFIXES:
        return "onnx"
    if path.suffix.lower() in TENSORRT_SUFFIXES:
        return "tensorrt"
    raise EngineError(f"{path}: unknown model type {path.suffix!r}; expected .onnx, .engine/.plan or a checkpoint "
                      "folder")


def tensorrt_usable() -> bool:
    """TensorRT and cuda-python importable and a GPU visible."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        from vlt_perception.engines.tensorrt_engine import gpu_name

        gpu_name()
    except (EngineError, ImportError):
        return False
    return True


def create_engine(path: str | Path, engine: str = "auto", *, precision: str | None = None,
                  providers: Sequence[str] | None = None, require_gpu: bool = False, threads: int | None = None,
                  cache_dir: str | Path | None = None, max_batch: int = 1,
                  build_only: bool = False, spin_wait: bool | None = None,
                  tta: bool = False) -> InferenceEngine | Path:
    """Load ``path`` with the requested engine (see the module docstring for what "auto" picks).

    ``precision``: TensorRT fp32/fp16/int8 (default fp16), torch fp32/bf16/fp16 (default: bf16 on CPUs that have
    it), OpenVINO fp32/bf16/fp16 (default: bf16 on CPUs that have it); ONNX Runtime runs the precision the file
    was exported in. ``providers`` / ``threads`` go to ONNX
    Runtime (threads also to torch). ``cache_dir``: where TensorRT engines built from ONNX are kept (default:
    the per-user cache, see ``engines/cache.py``; refused when others can write it). ``build_only``: build (or
    find) the TensorRT engine and return its path without loading it.
    ``spin_wait``: ONNX Runtime's idle threads busy-wait (None: ONNX Runtime's default, which does).
    ``tta``: test-time augmentation (multi-scale + flip, segmentation), torch engine only.
    """
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    path = Path(path)
    kind = model_kind(path)
    if engine == "auto":
        engine = {"checkpoint": "torch", "tensorrt": "tensorrt"}.get(kind) or (
            "tensorrt" if tensorrt_usable() and not providers else "onnxruntime")
        log.info("engine auto -> %s for %s", engine, path)
    if tta and engine != "torch":
        raise EngineError(f"test-time augmentation runs in the torch engine only (a training checkpoint), not {engine}")
    if build_only and engine != "tensorrt":
        raise EngineError("build_only builds TensorRT engines: pass engine='tensorrt' and an .onnx model")
    if engine == "onnxruntime":
        if kind != "onnx":
            raise EngineError(f"{path}: ONNX Runtime needs an .onnx file; export one with "
                              "`python -m vlt_training.cli.export --checkpoint CKPT --format onnx`")
        if precision not in (None, "fp32", "fp16"):
            raise EngineError(f"ONNX Runtime runs the precision the model was exported in; {precision} is not an "
                              "ONNX export precision (bf16: torch engine; int8: TensorRT)")
        from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine

        # fp32 files run the TensorRT EP in fp16 unless fp32 was asked for explicitly (as the TensorRT engine does).
        return OnnxRuntimeEngine(path, providers=providers, require_gpu=require_gpu, intra_op_threads=threads,
                                 trt_fp16=precision != "fp32", cache_dir=cache_dir, spin_wait=spin_wait)
    if engine == "openvino":
        if kind != "onnx":
            raise EngineError(f"{path}: OpenVINO runs .onnx files; export one with "
                              "`python -m vlt_training.cli.export --checkpoint CKPT --format onnx`")
        from vlt_perception.engines.openvino_engine import OpenVINOEngine

        if require_gpu:
            raise EngineUnavailableError("require_gpu: the OpenVINO engine runs on the CPU here; use tensorrt or "
                                         "onnxruntime with a CUDA provider")
        return OpenVINOEngine(path, precision=precision, threads=threads, cache_dir=cache_dir)
    if engine == "tensorrt":
        return _create_tensorrt(path, kind, precision, cache_dir, max_batch, build_only)
    # torch
    if kind != "checkpoint":
        raise EngineError(f"{path}: the torch engine loads training checkpoints (a folder), not {path.suffix} files")
    from vlt_perception.engines.torch_engine import TorchEngine

    torch_engine = TorchEngine.from_checkpoint(path, tta=tta, precision=precision, threads=threads)
    if require_gpu and not torch_engine.info.device.startswith("cuda"):
        raise EngineUnavailableError(f"{path}: a GPU was required but torch runs on {torch_engine.info.device}")
    return torch_engine


def _create_tensorrt(path: Path, kind: str, precision: str | None, cache_dir, max_batch: int, build_only: bool):
    from vlt_perception.engines import tensorrt_engine as trt_engine

    trt_engine.import_tensorrt()  # fail early with the install hint
    if kind == "checkpoint":
        raise EngineError(f"{path}: TensorRT builds from ONNX; export first with "
                          "`python -m vlt_training.cli.export --checkpoint CKPT --format tensorrt`")
    if kind == "onnx":
        metadata = trt_engine.read_onnx_metadata(path)
        settings = trt_engine.BuildSettings(metadata.input_height, metadata.input_width, precision or "fp16",
                                            max_batch=max_batch, opt_batch=1)
        path = trt_engine.ensure_engine(path, settings, cache_dir=cache_dir)
    if build_only:
        return path
    return trt_engine.TensorRTEngine(path)
