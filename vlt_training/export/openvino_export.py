"""OpenVINO int8: post-training quantisation of an exported fp32 ONNX with NNCF, into a self-describing IR.

    python -m vlt_training.cli.export --checkpoint runs/x --format openvino --precision int8 \
        --calib DIR_OR_BAG_OR_CONFIG --out model.xml

writes ``model.xml`` / ``model.bin`` (the int8 IR; the model's metadata in its ``rt_info``, precision ``int8``),
``model.onnx`` (the verified fp32 graph it was quantised from: the parity reference) and ``model.xml.parity.json``
(label agreement and confidence difference against that fp32 graph on ONNX Runtime, see
:mod:`vlt_perception.engines.parity`). ``create_engine("model.xml")`` loads it with the OpenVINO engine and
refuses it when its parity record failed.

Calibration images go through the deployment preprocessing (:mod:`vlt_perception.engines.calibration`, the reader
the TensorRT int8 calibrator uses too).

What is quantised (:class:`Int8Options`):

- ``transformer`` (default on): NNCF's ``ModelType.TRANSFORMER``, which keeps the softmax / LayerNorm / GELU paths
  and the residual additions in floating point and quantises the inputs of the matrix products; plain PTQ
  (``transformer=False``) also quantises element-wise operations, where ViT activation outliers cost accuracy.
- ``smooth_quant_alpha``: SmoothQuant migrates activation outliers into the weights of the following matmul
  (NNCF's default for transformers, 0.95 on matmuls); ``-1`` switches it off.
- ``fast_bias_correction`` (default on): NNCF's fast bias correction; off runs the full (slower) bias correction.
- the multi-scale deformable attention's sampling arithmetic always stays float: its gather form computes integer
  indices from float sampling positions (``Floor`` / ``Cast``), and its offsets and weights feed those positions,
  so only its value and output projections are quantised. Softmax and LayerNorm are ignored explicitly as well.
- ``float_scopes``: regular expressions of further node names to keep in float (mixed precision, e.g. the mask
  predictor: ``.*/predictor/.*``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlt_perception.engines.calibration import CalibrationBatches, calibration_items, source_kind
from vlt_perception.metadata import ModelMetadata
from vlt_perception.preprocess import Preprocessor

log = logging.getLogger(__name__)

RT_INFO_KEY = "vlt_perception_metadata"  # rt_info entry holding ModelMetadata.to_json() (read by the OpenVINO engine)
# Node names (regular expressions, matched whole by NNCF) that stay float in every int8 export:
# the deformable attention's sampling arithmetic: everything of an MSDeformAttn module but its value and output
# projections (the offsets and weights feed float positions that become gather indices).
DEFORM_ATTN_FLOAT = r".*pixel_decoder/layers\.\d+/self_attn/(?!value_proj/|output_proj/).*"
FLOAT_TYPES = ("Softmax", "MVN")  # OpenVINO's types for softmax and LayerNorm (LayerNormalization becomes MVN)


class OpenVINOExportError(RuntimeError):
    """NNCF is missing or quantisation failed; the message says which file and why."""


@dataclass
class Int8Options:
    """NNCF post-training quantisation settings (see the module docstring for what each does)."""

    max_images: int = 256  # calibration images used (NNCF's subset_size)
    transformer: bool = True
    smooth_quant_alpha: float | None = None  # None: NNCF's default for the model type; -1 switches it off
    fast_bias_correction: bool = True
    preset: str = "performance"  # "performance": symmetric activations; "mixed": asymmetric activations
    float_scopes: list[str] = field(default_factory=list)
    bag_stride: int = 1

    def __post_init__(self) -> None:
        if self.max_images < 1:
            raise ValueError(f"int8 calibration needs at least one image, got max_images={self.max_images}")
        if self.preset not in ("performance", "mixed"):
            raise ValueError(f"int8 preset must be 'performance' or 'mixed', got {self.preset!r}")
        if self.smooth_quant_alpha is not None and not (self.smooth_quant_alpha == -1
                                                        or 0 <= self.smooth_quant_alpha <= 1):
            raise ValueError(f"SmoothQuant alpha must be in [0, 1] or -1 (off), got {self.smooth_quant_alpha}")


def import_nncf():
    try:
        import nncf
    except ImportError as exc:
        raise OpenVINOExportError("int8 export needs NNCF: pip install -r requirements/train.txt (nncf)") from exc
    return nncf


def ignored_scope(nncf, options: Int8Options):
    """Nodes NNCF leaves in float: the deformable attention's sampling path, softmax, LayerNorm, user scopes."""
    return nncf.IgnoredScope(patterns=[DEFORM_ATTN_FLOAT, *options.float_scopes], types=list(FLOAT_TYPES),
                             validate=False)  # not every model has deformable attention


def quantize_onnx(onnx_path: str | Path, metadata: ModelMetadata, calib: str | Path, out: str | Path,
                  options: Int8Options | None = None) -> tuple[Path, ModelMetadata]:
    """Quantise the fp32 ``onnx_path`` with NNCF on the images of ``calib`` and save the int8 IR at ``out``
    (``.xml`` + ``.bin``); returns (path, the metadata written into it)."""
    import openvino as ov

    nncf = import_nncf()
    options = options or Int8Options()
    out = Path(out)
    if out.suffix != ".xml":
        raise ValueError(f"{out}: an OpenVINO model is written as .xml (+ .bin); give --out MODEL.xml")
    items = calibration_items(calib, options.max_images, bag_stride=options.bag_stride)
    batches = CalibrationBatches(items, Preprocessor.from_metadata(metadata), 1)  # (1, 3, H, W) float32 each
    log.info("int8: quantising %s with NNCF %s on %d calibration images from %s", Path(onnx_path).name,
             nncf.__version__, len(batches), calib)
    model = ov.convert_model(str(onnx_path))
    advanced = nncf.AdvancedQuantizationParameters()
    if options.smooth_quant_alpha is not None:
        advanced.smooth_quant_alphas = nncf.AdvancedSmoothQuantParameters(matmul=options.smooth_quant_alpha)
    start = time.perf_counter()
    try:
        quantized = nncf.quantize(
            model, nncf.Dataset(batches), subset_size=len(batches),
            preset=nncf.QuantizationPreset.MIXED if options.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER if options.transformer else None,
            fast_bias_correction=options.fast_bias_correction, ignored_scope=ignored_scope(nncf, options),
            advanced_parameters=advanced)
    except Exception as exc:  # NNCF raises its own errors and RuntimeErrors from OpenVINO
        raise OpenVINOExportError(f"{onnx_path}: NNCF quantisation failed: {exc}") from exc
    seconds = time.perf_counter() - start
    metadata = dataclasses.replace(metadata, extra={
        **metadata.extra, "precision": "int8",
        "quantization": {"tool": f"nncf {nncf.__version__}", "options": dataclasses.asdict(options),
                         "calibration": {"source": source_kind(calib), "images": len(batches)},
                         "seconds": round(seconds, 1)}})
    quantized.set_rt_info(metadata.to_json(), RT_INFO_KEY)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.xml")
    ov.save_model(quantized, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(out.with_suffix(".bin"))
    tmp.replace(out)
    log.info("int8: wrote %s (%.0f s)", out, seconds)
    return out, metadata


def parity_frames(calib: str | Path, metadata: ModelMetadata, count: int,
                  verify_images: str | Path | None = None) -> tuple[np.ndarray, str]:
    """(K, 3, H, W) frames for the int8 model's parity gate: ``verify_images`` when given, else the calibration
    source's images spread evenly over it."""
    source = verify_images or calib
    items = calibration_items(source, count)
    frames = next(iter(CalibrationBatches(items, Preprocessor.from_metadata(metadata), len(items))))  # K, 3, H, W
    return frames, source_kind(source)


def gate_int8(model_path: Path, reference_onnx: Path, frames: np.ndarray, frame_source: str, *,
              allow_parity_failure: bool = False):
    """Compare the int8 model with the fp32 graph on ONNX Runtime, write ``<model>.parity.json`` and refuse a
    failed model unless ``allow_parity_failure``; returns the report."""
    from vlt_perception.engines import parity
    from vlt_perception.engines.openvino_engine import OpenVINOEngine

    engine = OpenVINOEngine(model_path)
    try:
        report = parity.check_engine_parity(engine, reference_onnx, frames, frame_source=frame_source)
    finally:
        engine.close()
    path = parity.write_record(model_path, report)
    log.info("int8 parity recorded in %s: %s", path, report.summary())
    parity.enforce(report, model_path, allow_parity_failure=allow_parity_failure)
    return report


def export_int8(onnx_path: Path, metadata: ModelMetadata, calib: str | Path, out: Path,
                options: Int8Options | None = None, *, verify_images: str | Path | None = None, num_verify: int = 4,
                allow_parity_failure: bool = False) -> dict:
    """Quantise, gate and record; returns the export report's OpenVINO part."""
    path, metadata = quantize_onnx(onnx_path, metadata, calib, out, options)
    frames, source = parity_frames(calib, metadata, num_verify, verify_images)
    report = gate_int8(path, onnx_path, frames, source, allow_parity_failure=allow_parity_failure)
    return {"openvino": str(path), "reference_onnx": str(onnx_path), "parity": report.to_dict(),
            "quantization": metadata.extra["quantization"]}
