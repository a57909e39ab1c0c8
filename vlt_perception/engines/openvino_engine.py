"""OpenVINO engine: runs an exported ``.onnx`` with OpenVINO on the CPU, in bf16 where the CPU has bf16 units.

Why a fourth engine: ONNX Runtime's CPU provider has no bf16 kernels, so on CPUs with AVX512-BF16 or AMX it
leaves half or more of the matrix throughput unused. OpenVINO compiles the same ONNX file (no conversion step,
no custom ops) and runs its matrix products, convolutions and fused attention in bf16 when asked. Measured on the
development machine (2 cores, AVX512-BF16), VLTSeg ViT-S/16 at 512x1024: ONNX Runtime fp32 3.2 s, OpenVINO fp32
2.6 s, OpenVINO bf16 1.7 s (docs/deployment.md).

It also runs int8 models: the OpenVINO IR (``model.xml`` + ``model.bin``) that
``python -m vlt_training.cli.export --format openvino --precision int8 --calib DIR_OR_BAG`` writes with NNCF. The
IR carries the model's metadata in its ``rt_info`` (precision ``int8``); its quantised matrix products run on the
CPU's int8 units (AVX512-VNNI / AMX) and what NNCF kept in float runs in bf16 where the CPU has it.

Compiling takes seconds to a minute for large models; ``cache_dir`` keeps OpenVINO's compiled-model cache so that
later starts skip it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vlt_perception.engines._common import check_images, read_onnx_metadata, require_file
from vlt_perception.engines.base import EngineError, EngineInfo, EngineUnavailableError, InferenceEngine
from vlt_perception.metadata import MULTITASK_DET_OUTPUTS, MetadataError, ModelMetadata

log = logging.getLogger(__name__)

# our precision names -> OpenVINO's INFERENCE_PRECISION_HINT
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
IR_SUFFIX = ".xml"  # an OpenVINO IR (int8 export); .onnx files are compiled as they are
RT_INFO_KEY = "vlt_perception_metadata"  # the IR's rt_info entry with ModelMetadata.to_json()
# the graph contract's output names (see ModelMetadata)
CONTRACT_OUTPUTS = {"labels", "confidence", "boxes", "scores", "masks", *MULTITASK_DET_OUTPUTS}


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise EngineUnavailableError("OpenVINO is not installed: pip install openvino "
                                     "(or pip install -r requirements/runtime.txt)") from exc
    return openvino


def default_precision(core, device: str) -> str:
    """bf16 on CPUs whose OpenVINO plugin reports BF16 (AVX512-BF16 / AMX), else fp32."""
    capabilities = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
    return "bf16" if device == "CPU" and "BF16" in capabilities else "fp32"


def read_ir_metadata(core, path: Path) -> ModelMetadata:
    """The ModelMetadata an int8 export stored in the IR's rt_info, or EngineError naming the file."""
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable / truncated IRs
        raise EngineError(f"{path}: not a readable OpenVINO model: {exc}") from exc
    if not model.has_rt_info(RT_INFO_KEY):
        raise EngineError(f"{path}: no '{RT_INFO_KEY}' in the model's rt_info; was it exported by "
                          "`python -m vlt_training.cli.export --format openvino`?")
    try:
        return ModelMetadata.from_json(model.get_rt_info(RT_INFO_KEY).astype(str))
    except MetadataError as exc:
        raise EngineError(f"{path}: {exc}") from exc


class OpenVINOEngine(InferenceEngine):
    """An exported ONNX model compiled by OpenVINO.

    ``precision``: fp32, bf16 or fp16 inference precision (None: bf16 where the CPU supports it, else fp32); for
    an int8 IR (``.xml``) the precision of what stays float (``int8`` or None: the default), reported as ``int8``;
    ``device``: OpenVINO device name (``CPU``; ``GPU`` / ``NPU`` for Intel accelerators, untested here);
    ``threads``: CPU inference threads (None = OpenVINO's default); ``cache_dir``: compiled-model cache.
    """

    def __init__(self, path: str | Path, *, precision: str | None = None, device: str = "CPU",
                 threads: int | None = None, metadata: ModelMetadata | None = None,
                 cache_dir: str | Path | None = None) -> None:
        ov = import_openvino()
        self.path = require_file(path, "OpenVINO model (.onnx or .xml)")
        core = ov.Core()
        if device not in core.available_devices:
            raise EngineUnavailableError(f"OpenVINO device {device!r} is not available here "
                                         f"(available: {core.available_devices})")
        if metadata is None:
            is_ir = self.path.suffix.lower() == IR_SUFFIX
            metadata = read_ir_metadata(core, self.path) if is_ir else read_onnx_metadata(self.path)
        self.metadata = metadata
        model_precision = metadata.extra.get("precision")
        if precision == "int8" and model_precision != "int8":
            raise EngineError(f"{self.path}: OpenVINO runs fp32, bf16 or fp16 on this model; int8 needs an int8 "
                              "model, quantised with `python -m "
                              "vlt_training.cli.export --format openvino --precision int8 --calib DIR_OR_BAG`")
        if model_precision == "int8" and precision == "int8":
            precision = None  # the float remainder of an int8 model: the CPU's default
        precision = precision or default_precision(core, device)
        if precision not in PRECISION_HINTS:
            raise EngineError(f"OpenVINO runs fp32, bf16 or fp16, not {precision!r}")
        if precision == "bf16" and device == "CPU" and default_precision(core, device) != "bf16":
            raise EngineUnavailableError("bf16 requested but this CPU has no bf16 units (AVX512-BF16 or AMX); "
                                         "use precision fp32")
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if cache_dir:  # compiled blobs are loaded as code: a private folder, as for TensorRT engines
            from vlt_perception.engines.cache import cache_folder

            config["CACHE_DIR"] = str(cache_folder(cache_dir))
        try:
            self.compiled = core.compile_model(str(self.path), device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with its own messages
            raise EngineError(f"{self.path}: OpenVINO cannot compile this model: {exc}") from exc
        inputs = self.compiled.inputs
        if len(inputs) != 1 or "images" not in inputs[0].get_names():
            raise EngineError(f"{self.path}: expected one input named 'images', found "
                              f"{[sorted(i.get_names()) for i in inputs]}")
        # a compiled output may carry several names (OpenVINO merges the producing node's, e.g. '/module/Div_output_0',
        # into the graph output's): report the contract's name
        self.output_names = [next(iter(sorted(out.get_names() & CONTRACT_OUTPUTS)), out.get_any_name())
                             for out in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()
        reported = "int8" if self.metadata.extra.get("precision") == "int8" else precision
        self.info = EngineInfo("openvino", reported, device.lower(), providers=[f"OpenVINO {ov.__version__}"],
                               model_path=str(self.path))
        log.info("OpenVINO %s on %s, %s: %s", ov.__version__, device,
                 precision if reported == precision else f"int8 (float parts {precision})", self.path)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = check_images(images, self.metadata, str(self.path))
        results = self.request.infer({"images": images})
        # The request's output tensors are reused by the next call: hand out copies.
        return {name: np.array(results[out]) for name, out in zip(self.output_names, self.compiled.outputs)}

    def close(self) -> None:
        self.request = None
        self.compiled = None
