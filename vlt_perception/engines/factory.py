"""``create_engine``: pick and load an inference engine by model file type and what is installed.

| path | engine="auto" picks |
| --- | --- |
| ``*.onnx`` | TensorRT when it and a GPU are present, else ONNX Runtime (which itself may use CUDA); |
| | ``engine="openvino"`` runs it with OpenVINO (bf16 on CPUs with bf16 units: the fastest CPU path) |
| ``*.engine`` / ``*.plan`` | TensorRT (needs the JSON sidecar written at build time) |
| ``*.xml`` | OpenVINO (the int8 IR that ``export --format openvino --precision int8`` writes) |
| checkpoint or run folder, ``*.safetensors`` | the PyTorch engine (needs the trainer's requirements) |

Built engines pass a parity gate (:mod:`vlt_perception.engines.parity`): a TensorRT engine built here, and ONNX
Runtime's TensorRT execution-provider cache, are compared with the fp32 ONNX Runtime CPU reference on K frames when
they are built; the figures go into the engine's sidecar (``<cache>/<stem>.<precision>.parity.json`` for the execution
provider). Any model whose recorded gate failed (a sidecar's ``parity`` or ``<model>.parity.json``, as the OpenVINO
int8 export writes) is refused here unless ``allow_parity_failure`` is given, so a node never runs it silently.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Sequence

from vlt_perception.engines import parity
from vlt_perception.engines.base import EngineError, EngineUnavailableError, InferenceEngine

log = logging.getLogger(__name__)

ENGINES = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")
OPENVINO_SUFFIXES = (".xml",)


def model_kind(path: Path) -> str:
    """'onnx', 'tensorrt', 'openvino' or 'checkpoint' from the path, or EngineError naming the path."""
    if not path.exists():
        raise EngineError(f"{path}: model not found")
    if path.is_dir() or path.suffix == ".safetensors":
        return "checkpoint"
    if path.suffix.lower() in ONNX_SUFFIXES:
        return "onnx"
    if path.suffix.lower() in TENSORRT_SUFFIXES:
        return "tensorrt"
    if path.suffix.lower() in OPENVINO_SUFFIXES:
        return "openvino"
    raise EngineError(f"{path}: unknown model type {path.suffix!r}; expected .onnx, .engine/.plan, .xml (OpenVINO) "
                      "or a checkpoint folder")


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
                  tta: bool = False, allow_parity_failure: bool = False, parity_images: str | Path | None = None,
                  parity_frames: int = 4) -> InferenceEngine | Path:
    """Load ``path`` with the requested engine (see the module docstring for what "auto" picks).

    ``precision``: TensorRT fp32/fp16/int8 (default fp16), torch fp32/bf16/fp16 (default: bf16 on CPUs that have
    it), OpenVINO fp32/bf16/fp16 (default: bf16 on CPUs that have it); ONNX Runtime runs the precision the file
    was exported in. ``providers`` / ``threads`` go to ONNX
    Runtime (threads also to torch). ``cache_dir``: where TensorRT engines built from ONNX are kept (default:
    the per-user cache, see ``engines/cache.py``; refused when others can write it). ``build_only``: build (or
    find) the TensorRT engine and return its path without loading it.
    ``spin_wait``: ONNX Runtime's idle threads busy-wait (None: ONNX Runtime's default, which does).
    ``tta``: test-time augmentation (multi-scale + flip, segmentation), torch engine only.
    ``allow_parity_failure``: load an engine whose parity gate failed, with a warning, instead of refusing it.
    ``parity_images`` / ``parity_frames``: the image folder or bag and the number of frames a build's parity gate
    runs on (default: seeded noise, with a warning).
    """
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    path = Path(path)
    kind = model_kind(path)
    if engine == "auto":
        engine = {"checkpoint": "torch", "tensorrt": "tensorrt", "openvino": "openvino"}.get(kind) or (
            "tensorrt" if tensorrt_usable() and not providers else "onnxruntime")
        log.info("engine auto -> %s for %s", engine, path)
    if tta and engine != "torch":
        raise EngineError(f"test-time augmentation runs in the torch engine only (a training checkpoint), not {engine}")
    if build_only and engine != "tensorrt":
        raise EngineError("build_only builds TensorRT engines: pass engine='tensorrt' and an .onnx model")
    gate = _Gate(allow_parity_failure, parity_images, parity_frames)
    if kind in ("onnx", "openvino"):  # a gate run on this file (an int8 model, a hand check) that failed: refuse it
        parity.enforce_record(path, allow_parity_failure=allow_parity_failure)
    if engine == "onnxruntime":
        if kind != "onnx":
            raise EngineError(f"{path}: ONNX Runtime needs an .onnx file; export one with "
                              "`python -m vlt_training.cli.export --checkpoint CKPT --format onnx`")
        if precision not in (None, "fp32", "fp16"):
            raise EngineError(f"ONNX Runtime runs the precision the model was exported in; {precision} is not an "
                              "ONNX export precision (bf16: torch engine; int8: TensorRT)")
        from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine

        # fp32 files run the TensorRT EP in fp16 unless fp32 was asked for explicitly (as the TensorRT engine does).
        ort_engine = OnnxRuntimeEngine(path, providers=providers, require_gpu=require_gpu, intra_op_threads=threads,
                                       trt_fp16=precision != "fp32", cache_dir=cache_dir, spin_wait=spin_wait)
        if "TensorrtExecutionProvider" in ort_engine.info.providers:
            _gate_trt_provider(ort_engine, path, cache_dir, gate)
        return ort_engine
    if engine == "openvino":
        if kind not in ("onnx", "openvino"):
            raise EngineError(f"{path}: OpenVINO runs .onnx files and OpenVINO IRs (.xml); export one with "
                              "`python -m vlt_training.cli.export --checkpoint CKPT --format onnx`")
        from vlt_perception.engines.openvino_engine import OpenVINOEngine

        if require_gpu:
            raise EngineUnavailableError("require_gpu: the OpenVINO engine runs on the CPU here; use tensorrt or "
                                         "onnxruntime with a CUDA provider")
        return OpenVINOEngine(path, precision=precision, threads=threads, cache_dir=cache_dir)
    if engine == "tensorrt":
        return _create_tensorrt(path, kind, precision, cache_dir, max_batch, build_only, gate)
    # torch
    if kind != "checkpoint":
        raise EngineError(f"{path}: the torch engine loads training checkpoints (a folder), not {path.suffix} files")
    from vlt_perception.engines.torch_engine import TorchEngine

    torch_engine = TorchEngine.from_checkpoint(path, tta=tta, precision=precision, threads=threads)
    if require_gpu and not torch_engine.info.device.startswith("cuda"):
        raise EngineUnavailableError(f"{path}: a GPU was required but torch runs on {torch_engine.info.device}")
    return torch_engine


def _create_tensorrt(path: Path, kind: str, precision: str | None, cache_dir, max_batch: int, build_only: bool,
                     gate: "_Gate"):
    from vlt_perception.engines import tensorrt_engine as trt_engine

    trt_engine.import_tensorrt()  # fail early with the install hint
    if kind in ("checkpoint", "openvino"):
        raise EngineError(f"{path}: TensorRT builds from ONNX; export first with "
                          "`python -m vlt_training.cli.export --checkpoint CKPT --format tensorrt`")
    onnx_path = None
    if kind == "onnx":
        onnx_path = path
        metadata = trt_engine.read_onnx_metadata(path)
        settings = trt_engine.BuildSettings(metadata.input_height, metadata.input_width, precision or "fp16",
                                            max_batch=max_batch, opt_batch=1)
        path = trt_engine.ensure_engine(path, settings, cache_dir=cache_dir)
    sidecar = trt_engine.sidecar_path(path)
    recorded = parity.read_record(path, sidecar)
    if recorded is not None:
        parity.enforce(recorded, path, allow_parity_failure=gate.allow_failure)
    elif onnx_path is None:
        log.warning("%s: no parity record in %s (built by an older version?); check it against its ONNX with "
                    "`python -m vlt_perception.engines.parity --reference MODEL.onnx --model %s`", path, sidecar.name,
                    path)
    else:  # just built (or built before the gate existed): gate it now, before anything runs it
        engine = trt_engine.TensorRTEngine(path)
        try:
            report = gate.check(engine, onnx_path)
            parity.record_in_sidecar(sidecar, report)
            parity.enforce(report, path, allow_parity_failure=gate.allow_failure)
        except BaseException:
            engine.close()
            raise
        if not build_only:
            return engine
        engine.close()
    if build_only:
        return path
    return trt_engine.TensorRTEngine(path)


class _Gate:
    """The parity gate's settings for engines built by one ``create_engine`` call."""

    def __init__(self, allow_failure: bool, images: str | Path | None, frames: int) -> None:
        self.allow_failure, self.images, self.frames = allow_failure, images, frames

    def check(self, engine: InferenceEngine, reference_onnx: Path) -> "parity.ParityReport":
        log.info("parity gate: %s %s against ONNX Runtime fp32 on the CPU, %d frames", engine.info.engine,
                 engine.info.precision, self.frames)
        frames, source = parity.load_frames(self.images, engine.metadata, self.frames)
        return parity.check_engine_parity(engine, reference_onnx, frames, frame_source=source)


def _gate_trt_provider(engine: InferenceEngine, onnx_path: Path, cache_dir, gate: _Gate) -> None:
    """ONNX Runtime's TensorRT execution provider builds (or loads) its engine cache on the first frames: gate it
    once per ONNX file and precision, recorded in the cache folder, and refuse it when the gate failed."""
    from vlt_perception.engines.onnxruntime_engine import trt_cache_folder
    from vlt_perception.engines.tensorrt_engine import file_sha256

    record = trt_cache_folder(onnx_path, cache_dir) / f"{onnx_path.stem}.{engine.info.precision}"  # + .parity.json
    onnx_sha = file_sha256(onnx_path)
    report = parity.read_record(record)
    if report is None or report.model_sha256 != onnx_sha:
        log.info("ONNX Runtime's TensorRT execution provider builds its engine for %s on the first frame; this "
                 "takes minutes", onnx_path.name)
        report = gate.check(engine, onnx_path)
        report.model_sha256 = onnx_sha
        record.parent.mkdir(parents=True, exist_ok=True)
        parity.write_record(record, report)
    try:
        parity.enforce(report, f"{onnx_path} (TensorRT execution provider)", allow_parity_failure=gate.allow_failure)
    except parity.ParityError:
        engine.close()
        raise
