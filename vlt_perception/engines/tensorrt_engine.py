"""TensorRT 10 engine: builds a serialized engine from an exported ONNX once, caches it, runs it with cuda-python.

Untested on the development machines (TensorRT cannot be installed there); written against the TensorRT 10 Python
API (``trt.Builder`` / ``OnnxParser`` / ``IBuilderConfig`` / ``IProgressMonitor`` / ``IInt8EntropyCalibrator2``,
``IExecutionContext.execute_async_v3``). Everything that does not need TensorRT itself (cache keys, cache hits,
calibration batches, error messages) is plain Python and tested everywhere.

Cache: an engine is only valid for one ONNX file (with its external-data files), TensorRT version, GPU model,
precision, input shape and, for int8, calibration images, so the key hashes exactly those. Files:
``<stem>.<precision>.<key>.engine`` plus a JSON sidecar (key, the engine's sha256, provenance and the model's
metadata) written after the engine, so a sidecar that matches means a complete engine.

An engine plan is code: deserialising one runs what its builder put in it. Cached engines therefore live in a
per-user folder (:func:`vlt_perception.engines.cache.cache_folder`: ``$XDG_CACHE_HOME/vlt_perception/tensorrt``
by default, 0700, refused when others can write it), and a cache hit needs the sidecar signed with this user's key
and the engine's bytes hashing to the sidecar's sha256, checked again on the bytes that are deserialised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vlt_perception.atomic import atomic_write_bytes  # noqa: F401 - re-exported
from vlt_perception.engines import cache as engine_cache
from vlt_perception.engines._common import check_images, read_onnx_metadata, require_file  # noqa: F401 - re-exported
from vlt_perception.engines.base import EngineError, EngineInfo, EngineUnavailableError, InferenceEngine
from vlt_perception.engines.calibration import file_sha256  # one hasher for engines, ONNX and calibration data
from vlt_perception.metadata import MetadataError, ModelMetadata

log = logging.getLogger(__name__)

TENSORRT_HINT = ("TensorRT requested but not installed: pip install tensorrt-cu12 (needs an NVIDIA GPU, driver and "
                 "NVIDIA's package index; on Jetson use JetPack's python3-libnvinfer)")
CUDA_HINT = "TensorRT inference needs cuda-python for device memory and streams: pip install cuda-python"
BUILD_PRECISIONS = ("fp32", "fp16", "int8")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineUnavailableError(TENSORRT_HINT) from exc
    return tensorrt


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise EngineUnavailableError(CUDA_HINT) from exc
    return cudart


def _cuda_call(cudart, result):
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on errors."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise EngineError(f"CUDA error: {err}")
    return values[0] if len(values) == 1 else values


def gpu_name(device: int = 0) -> str:
    """The CUDA device's name, or EngineUnavailableError when there is no usable GPU."""
    cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count <= device:
        raise EngineUnavailableError(f"TensorRT needs an NVIDIA GPU: none usable (cudaGetDeviceCount: {err})")
    props = _cuda_call(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name
    return (name.decode() if isinstance(name, bytes) else str(name)).strip("\x00 ")


@dataclass(frozen=True)
class BuildSettings:
    """What an engine is built for. Batch may range over [min_batch, max_batch]; H and W are fixed."""

    height: int
    width: int
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    workspace_mib: int = 4096
    calib_dir: str | None = None
    calib_batch_size: int = 4
    calib_max_images: int = 256
    calib_cache: str | None = None  # int8: where the calibrator keeps its cache (set by ensure_engine; None: none)

    def __post_init__(self) -> None:
        if self.precision not in BUILD_PRECISIONS:
            raise EngineError(f"TensorRT precision must be one of {BUILD_PRECISIONS}, got {self.precision!r} "
                              "(bf16 is for the torch engine)")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise EngineError(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                              f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.precision == "int8" and not self.calib_dir:
            raise EngineError("int8 needs calibration images: pass a calibration folder (--calib-dir)")


_LOCATION = b"\x0a\x08location\x12"  # protobuf StringStringEntryProto: key "location", then the value's tag


def external_data_sha256(onnx_path: Path, chunk: int = 1 << 20) -> dict[str, str]:
    """sha256 of each external-data file the ONNX names (``location`` entries of its tensors) that exists inside
    the ONNX's folder; the parser reads those bytes too, so they belong in the key.

    The entries are found in the protobuf bytes (no onnx package needed at run time): an entry is the bytes
    ``0a 08 "location" 12 <length> <name>``. Names outside the folder are left out: the runtimes refuse them.
    """
    names: set[str] = set()
    tail = b""
    with open(onnx_path, "rb") as f:
        while block := f.read(chunk):
            data = tail + block
            start = 0
            while (at := data.find(_LOCATION, start)) >= 0:
                length, end = _varint(data, at + len(_LOCATION))
                if end < 0 or end + length > len(data):
                    break  # runs into the next block: found again there
                names.add(data[end:end + length].decode("utf-8", "replace"))
                start = end + length
            tail = data[max(start, len(data) - 4096):]  # an entry (names up to ~4 KB) may straddle blocks
    folder = onnx_path.parent.resolve()
    out = {}
    for name in sorted(names):
        path = (onnx_path.parent / name).resolve()
        if path.is_relative_to(folder) and path.is_file():
            out[name] = file_sha256(path)
    return out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the protobuf varint at ``pos``; (0, -1) when it runs past ``data``."""
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return 0, -1


def calibration_sha256(settings: BuildSettings) -> str:
    """sha256 over the calibration images an int8 build would read (names and contents) and the batch size."""
    folder = Path(settings.calib_dir)
    if source_kind(folder) != "folder":  # a bag or a dataset config: its files' bytes
        return source_sha256(folder, settings.calib_max_images, settings.calib_batch_size)
    digest = hashlib.sha256(f"batch={settings.calib_batch_size}".encode())
    for path in calibration_files(folder, settings.calib_max_images):
        digest.update(f"\n{path.relative_to(folder)}:{file_sha256(path)}".encode())
    return digest.hexdigest()


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu: str, settings: BuildSettings,
                     inputs: dict | None = None) -> str:
    """Hash of everything an engine depends on: ONNX bytes, TensorRT version, GPU model, precision and shape,
    plus ``inputs`` (sha256 of the external-data files and, for int8, of the calibration images)."""
    fields = dataclasses.asdict(settings)
    fields.pop("workspace_mib")  # a build-time limit, not a property of the result
    fields.pop("calib_cache")  # where the calibration cache is kept, not what it holds
    if settings.precision != "int8":  # calibration only matters for int8 engines
        for name in ("calib_dir", "calib_batch_size", "calib_max_images"):
            fields.pop(name)
    payload = {"onnx_sha256": onnx_sha256, "tensorrt": trt_version, "gpu": gpu, **fields, **(inputs or {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def engine_paths(onnx_path: Path, key: str, precision: str, cache_dir: str | Path | None) -> tuple[Path, Path]:
    """(engine, sidecar) paths in the checked cache folder: ``cache_dir`` (``~`` expanded) or the per-user
    default (:func:`vlt_perception.engines.cache.cache_folder`)."""
    folder = engine_cache.cache_folder(cache_dir, "tensorrt")
    engine = folder / f"{onnx_path.stem}.{precision}.{key}.engine"
    return engine, sidecar_path(engine)


def sidecar_path(engine_path: Path) -> Path:
    return Path(f"{engine_path}.json")


def read_sidecar(engine_path: Path) -> dict:
    """The JSON sidecar of an engine, or EngineError naming the file and the problem."""
    path = sidecar_path(engine_path)
    if not path.exists():
        raise EngineError(f"{engine_path}: no metadata sidecar {path.name}; build engines with "
                          "`python -m vlt_training.cli.export --format tensorrt` or create_engine(<model.onnx>)")
    try:
        data = json.loads(path.read_text())
        ModelMetadata.from_dict(data["metadata"])
    except (json.JSONDecodeError, KeyError, TypeError, MetadataError) as exc:
        raise EngineError(f"{path}: corrupt engine sidecar: {exc}") from exc
    return data


def verified_engine_bytes(engine_path: Path, sidecar: dict) -> bytes:
    """The engine's bytes, once they hash to the sidecar's ``engine_sha256`` (checked on the very bytes that are
    deserialised). Sidecars from before that field load with a warning: the file was chosen by path."""
    data = engine_path.read_bytes()
    want = sidecar.get("engine_sha256")
    if want is None:
        log.warning("%s: sidecar has no engine_sha256 (an older build); loading it unchecked", engine_path)
    elif hashlib.sha256(data).hexdigest() != want:
        raise EngineError(f"{engine_path}: engine bytes do not match the sha256 in {sidecar_path(engine_path).name}"
                          " (changed after it was built); delete both to rebuild")
    return data


def cache_hit(engine_path: Path, key: str) -> bool:
    """True when a complete engine with this key, built by this user, exists: the sidecar has the key, the
    user's signature and the engine's size and sha256, and the engine file matches them. Anything else (a
    sidecar computed by someone else, a swapped engine, an old sidecar without sha256) is a miss: rebuilt."""
    try:
        data = json.loads(sidecar_path(engine_path).read_text())
        if data.get("key") != key or engine_path.stat().st_size != data.get("engine_bytes"):
            return False
        if not engine_cache.signed_by_this_user(data):
            log.warning("%s: not signed by this user's engine cache key; rebuilding", sidecar_path(engine_path))
            return False
        return file_sha256(engine_path) == data.get("engine_sha256")
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


BuildFn = Callable[[Path, BuildSettings], bytes]


def ensure_engine(onnx_path: str | Path, settings: BuildSettings, *, cache_dir: str | Path | None = None,
                  build_fn: BuildFn | None = None, trt_version: str | None = None,
                  gpu: str | None = None) -> Path:
    """Path of a serialized engine for this ONNX + settings, building it only when the cache has none.

    ``build_fn(onnx_path, settings) -> bytes`` defaults to :func:`build_serialized_engine`; ``trt_version`` and
    ``gpu`` default to the installed TensorRT and the current GPU (they are parameters so the cache logic can be
    tested without either).
    """
    onnx_path = require_file(onnx_path, "ONNX model")
    if trt_version is None:
        trt_version = import_tensorrt().__version__
    if gpu is None:
        gpu = gpu_name()
    onnx_sha = file_sha256(onnx_path)
    inputs = {"external_data": external_data_sha256(onnx_path)}
    if settings.precision == "int8":
        inputs["calibration"] = calibration_sha256(settings)
    key = engine_cache_key(onnx_sha, trt_version, gpu, settings, inputs)
    engine_path, sidecar = engine_paths(onnx_path, key, settings.precision, cache_dir)
    if settings.precision == "int8":  # the calibrator's cache, keyed like the engine, in the same private folder
        settings = dataclasses.replace(settings, calib_cache=str(engine_path.with_suffix(".calib.cache")))
    if cache_hit(engine_path, key):
        log.info("TensorRT engine cache hit: %s", engine_path)
        return engine_path
    metadata = read_onnx_metadata(onnx_path)
    metadata.extra = {**metadata.extra, "precision": settings.precision}
    log.info("building TensorRT engine %s (%s, %dx%d, batch %d-%d); this takes minutes",
             engine_path.name, settings.precision, settings.height, settings.width, settings.min_batch,
             settings.max_batch)
    start = time.perf_counter()
    data = bytes((build_fn or build_serialized_engine)(onnx_path, settings))
    if not data:
        raise EngineError(f"{onnx_path}: TensorRT build produced an empty engine")
    atomic_write_bytes(engine_path, data)
    info = {"key": key, "onnx": onnx_path.name, "onnx_sha256": onnx_sha, **inputs, "tensorrt_version": trt_version,
            "gpu": gpu, "settings": dataclasses.asdict(settings), "engine_bytes": len(data),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "build_seconds": round(time.perf_counter() - start, 1), "metadata": metadata.to_dict()}
    info["signature"] = engine_cache.sign(info)
    atomic_write_bytes(sidecar, json.dumps(info, indent=2, sort_keys=True).encode())
    log.info("TensorRT engine written: %s (%.1f MB, %.0f s)", engine_path, len(data) / 1e6, info["build_seconds"])
    return engine_path


# ----------------------------------------------------------------------------------------------------------------
# int8 calibration data: the shared reader (folder, bag or dataset config; numpy + OpenCV, testable without TensorRT)

from vlt_perception.engines.calibration import (  # noqa: E402,F401 - re-exported
    CalibrationBatches, calibration_files, calibration_items, read_rgb, source_kind, source_sha256)


# ----------------------------------------------------------------------------------------------------------------
# TensorRT proper (needs tensorrt, cuda-python and a GPU)


def _progress_monitor(trt):
    """An IProgressMonitor that logs phases (TensorRT >= 10 has the interface), or None."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class LogProgress(base):
        """Phase starts at info; steps at info at most every ``STEP_LOG_SECONDS`` (tactic selection runs thousands
        of steps, and a build that prints nothing for minutes looks hung)."""

        STEP_LOG_SECONDS = 10.0

        def __init__(self) -> None:
            base.__init__(self)
            self.steps: dict[str, int] = {}
            self.last_log = time.monotonic()

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.steps[phase_name] = num_steps
            log.info("TensorRT build: %s%s (%d steps)", f"{parent_phase} / " if parent_phase else "", phase_name,
                     num_steps)

        def step_complete(self, phase_name, step):
            now = time.monotonic()
            if now - self.last_log >= self.STEP_LOG_SECONDS:
                self.last_log = now
                log.info("TensorRT build: %s step %d of %d", phase_name, step + 1, self.steps.get(phase_name, 0))
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            self.steps.pop(phase_name, None)
            log.debug("TensorRT build: %s done", phase_name)

    return LogProgress()


def _entropy_calibrator(trt, batches: CalibrationBatches, cache_file: Path | None):
    cudart = import_cudart()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.nbytes = int(np.prod(batches.shape)) * 4
            self.device = _cuda_call(cudart, cudart.cudaMalloc(self.nbytes))

        def get_batch_size(self):
            return batches.batch_size

        def get_batch(self, names):
            try:
                batch = next(self.batches)  # B, 3, H, W float32
            except StopIteration:
                return None
            _cuda_call(cudart, cudart.cudaMemcpy(self.device, batch.ctypes.data, self.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file is not None and cache_file.exists() else None

        def write_calibration_cache(self, cache):
            if cache_file is not None:
                atomic_write_bytes(cache_file, bytes(cache))

        def __del__(self):
            cudart.cudaFree(self.device)

    return EntropyCalibrator()


def build_serialized_engine(onnx_path: Path, settings: BuildSettings) -> bytes:
    """Parse the ONNX and build a serialized engine with the TensorRT 10 builder."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    # ONNX RoiAlign (Faster R-CNN VLTDet) maps to the ROIAlign_TRT plugin: register the built-in plugins first
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    chw = (3, settings.height, settings.width)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, (settings.min_batch, *chw), (settings.opt_batch, *chw),
                      (settings.max_batch, *chw))
    config.add_optimization_profile(profile)
    if settings.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 engines fall back to fp16, not fp32, where int8 is missing
    if settings.precision == "int8":
        from vlt_perception.preprocess import Preprocessor

        metadata = read_onnx_metadata(onnx_path)
        items = calibration_items(settings.calib_dir, settings.calib_max_images)  # folder, bag or dataset config
        batches = CalibrationBatches(items, Preprocessor.from_metadata(metadata), settings.calib_batch_size)
        config.set_flag(trt.BuilderFlag.INT8)
        # Not beside the ONNX: that folder may be someone else's; ensure_engine keys it into the private cache.
        calib_cache = Path(settings.calib_cache) if settings.calib_cache else None
        config.int8_calibrator = _entropy_calibrator(trt, batches, calib_cache)
        config.set_calibration_profile(profile)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    return bytes(serialized)


def _np_dtype(trt, trt_dtype):
    table = {trt.float32: np.float32, trt.float16: np.float16, trt.int32: np.int32, trt.int64: np.int64,
             trt.int8: np.int8, trt.uint8: np.uint8, trt.bool: np.bool_}
    if trt_dtype not in table:
        raise EngineError(f"unsupported TensorRT tensor type {trt_dtype}")
    return table[trt_dtype]


class TensorRTEngine(InferenceEngine):
    """A serialized TensorRT engine (``.engine`` with its JSON sidecar) run with ``execute_async_v3``.

    Use :func:`vlt_perception.engines.factory.create_engine` with an ``.onnx`` to build (or reuse from the cache)
    and load in one step.
    """

    def __init__(self, engine_path: str | Path, *, device: int = 0) -> None:
        self.path = require_file(engine_path, "TensorRT engine")
        sidecar = read_sidecar(self.path)
        self.metadata = ModelMetadata.from_dict(sidecar["metadata"])
        trt = import_tensorrt()
        self.cudart = cudart = import_cudart()
        name = gpu_name(device)
        _cuda_call(cudart, cudart.cudaSetDevice(device))
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")  # engines with plugin layers (RoiAlign) deserialise only then
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(verified_engine_bytes(self.path, sidecar))
        if self.engine is None:
            raise EngineError(f"{self.path}: TensorRT cannot deserialise this engine (built with TensorRT "
                              f"{sidecar.get('tensorrt_version')} on {sidecar.get('gpu')}; this is "
                              f"{trt.__version__} on {name}): delete it to rebuild")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if self.inputs != ["images"]:
            raise EngineError(f"{self.path}: expected one input named 'images', found {self.inputs}")
        self.stream = _cuda_call(cudart, cudart.cudaStreamCreate())
        self._batch = 0
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        precision = sidecar.get("settings", {}).get("precision", "fp16")
        self.info = EngineInfo("tensorrt", precision, f"cuda:{device}", model_path=str(self.path))

    def _allocate(self, batch: int) -> None:
        """(Re)allocate host and device buffers for this batch size and bind their addresses."""
        self._free()
        self.context.set_input_shape("images", (batch, 3, self.metadata.input_height, self.metadata.input_width))
        for name in self.inputs + self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, dtype=_np_dtype(self.trt, self.engine.get_tensor_dtype(name)))
            ptr = _cuda_call(self.cudart, self.cudart.cudaMalloc(max(host.nbytes, 1)))
            self.context.set_tensor_address(name, int(ptr))
            self._host[name], self._device[name] = host, ptr
        self._batch = batch

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        cudart = self.cudart
        images = check_images(images, self.metadata, str(self.path))
        if images.shape[0] != self._batch:
            self._allocate(images.shape[0])
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_call(cudart, cudart.cudaMemcpyAsync(self._device["images"], images.ctypes.data, images.nbytes, h2d,
                                                  self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise EngineError(f"{self.path}: TensorRT execution failed")
        for name in self.outputs:
            host = self._host[name]
            _cuda_call(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._device[name], host.nbytes, d2h,
                                                      self.stream))
        _cuda_call(cudart, cudart.cudaStreamSynchronize(self.stream))
        return {name: self._host[name].copy() for name in self.outputs}

    def _free(self) -> None:
        for ptr in self._device.values():
            self.cudart.cudaFree(ptr)
        self._host, self._device, self._batch = {}, {}, 0

    def close(self) -> None:
        if getattr(self, "context", None) is None:
            return
        self._free()
        self.cudart.cudaStreamDestroy(self.stream)
        self.context = self.engine = None
