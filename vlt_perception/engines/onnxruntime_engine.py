"""ONNX Runtime engine: runs an exported ``.onnx`` with TensorRT / CUDA / CPU execution providers, no torch.

onnxruntime-gpu lists GPU providers as available even on machines without a GPU and then silently runs on the
CPU, so the engine reads ``session.get_providers()`` to learn what really runs, reports it in ``info`` and
fails when ``require_gpu`` is set and no GPU provider survived session creation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from vlt_perception.engines._common import GPU_PROVIDERS, check_images, import_onnxruntime, require_file
from vlt_perception.engines.base import EngineError, EngineInfo, EngineUnavailableError, InferenceEngine
from vlt_perception.metadata import MetadataError, ModelMetadata

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def resolve_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The requested providers (default: TensorRT, CUDA, CPU) that this onnxruntime build has, in order.

    Unknown names raise; requested-but-unavailable ones are dropped with a log line. CPU is always kept last so
    that a session can be created.
    """
    wanted = list(requested) if requested else list(DEFAULT_PROVIDERS)
    unknown = [p for p in wanted if not p.endswith("ExecutionProvider")]
    if unknown:
        raise EngineError(f"unknown ONNX Runtime providers {unknown}; names look like 'CUDAExecutionProvider'")
    chosen = [p for p in wanted if p in available]
    dropped = [p for p in wanted if p not in available]
    if dropped and requested:
        log.warning("ONNX Runtime providers %s are not in this build (available: %s)", dropped, list(available))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def trt_cache_folder(model_path: Path, cache_dir: str | Path | None) -> Path:
    """The TensorRT execution provider's engine cache: ``cache_dir`` or ``<stem>.ort_trt_cache`` beside the model."""
    return Path(cache_dir) if cache_dir else model_path.parent / f"{model_path.stem}.ort_trt_cache"


def provider_options(providers: Sequence[str], model_path: Path, cache_dir: str | Path | None,
                     fp16: bool) -> list:
    """Providers with options: the TensorRT EP caches its engines (it builds for minutes otherwise on every start)
    beside the model or in ``cache_dir`` and builds fp16 when asked; other providers keep their defaults."""
    out = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            cache = trt_cache_folder(model_path, cache_dir)
            out.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                               "trt_timing_cache_enable": True, "trt_fp16_enable": bool(fp16)}))
        else:
            out.append(name)
    return out


class OnnxRuntimeEngine(InferenceEngine):
    """An exported ONNX model in an ``onnxruntime.InferenceSession``.

    ``providers``: execution provider names in order of preference (default TensorRT, CUDA, CPU);
    ``intra_op_threads`` / ``inter_op_threads``: thread pools (None = ONNX Runtime's default);
    ``require_gpu``: raise unless a GPU provider really runs; ``metadata`` overrides the file's own;
    ``trt_fp16`` / ``cache_dir``: TensorRT execution provider precision and engine cache folder;
    ``spin_wait``: whether idle pool threads busy-wait (None = ONNX Runtime's default, which spins).
    """

    def __init__(self, path: str | Path, *, providers: Sequence[str] | None = None, require_gpu: bool = False,
                 intra_op_threads: int | None = None, inter_op_threads: int | None = None,
                 metadata: ModelMetadata | None = None, trt_fp16: bool = True,
                 cache_dir: str | Path | None = None, spin_wait: bool | None = None) -> None:
        ort = import_onnxruntime()
        self.path = require_file(path, "ONNX model")
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads is not None:
            options.inter_op_num_threads = int(inter_op_threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if spin_wait is not None:
            # Busy-waiting pool threads shave a little off the engine time but keep the cores busy between
            # operators and after each run, which the node's own threads and other processes then wait for.
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin_wait else "0")
        chosen = resolve_providers(providers, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options,
                providers=provider_options(chosen, self.path, cache_dir, trt_fp16))
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            raise EngineError(f"{self.path}: ONNX Runtime cannot load this model: {exc}") from exc
        running = list(self.session.get_providers())
        gpu = [p for p in running if p in GPU_PROVIDERS]
        if require_gpu and not gpu:
            raise EngineUnavailableError(
                f"{self.path}: a GPU was required but ONNX Runtime runs only {running} (asked for {chosen}); "
                "install onnxruntime-gpu with a matching CUDA / cuDNN and check that a GPU is visible")
        self.metadata = metadata or self._read_metadata()
        self.input_name = self._check_graph()
        self.output_names = [o.name for o in self.session.get_outputs()]
        precision = str(self.metadata.extra.get("precision", "fp32"))
        device = "cuda:0" if gpu else "cpu"
        self.info = EngineInfo("onnxruntime", precision, device, providers=running, model_path=str(self.path))

    def _read_metadata(self) -> ModelMetadata:
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            return ModelMetadata.from_onnx_props(props, source=str(self.path))
        except MetadataError as exc:
            raise EngineError(f"{self.path}: bad model metadata: {exc}") from exc

    def _check_graph(self) -> str:
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != "images":
            names = [i.name for i in inputs]
            raise EngineError(f"{self.path}: expected one input named 'images', found {names}")
        return inputs[0].name

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = check_images(images, self.metadata, str(self.path))
        outputs = self.session.run(self.output_names, {self.input_name: images})
        return dict(zip(self.output_names, outputs))

    def close(self) -> None:
        self.session = None
