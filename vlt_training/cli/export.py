"""Export a checkpoint to ONNX, a TensorRT engine or an OpenVINO int8 model, verifying the result.

    python -m vlt_training.cli.export --checkpoint runs/x --format onnx [--precision fp32|fp16]
        [--height H --width W] [--out model.onnx] [--verify-images DIR]
    python -m vlt_training.cli.export --checkpoint runs/x --format tensorrt --precision int8 --calib DIR_OR_BAG
    python -m vlt_training.cli.export --checkpoint runs/x --format openvino --precision int8 --calib DIR_OR_BAG \
        --out model.xml

``--calib``: calibration images for int8, read with the deployment preprocessing: an image folder (searched
recursively), a rosbag or a dataset config (.yaml). OpenVINO int8 is NNCF post-training quantisation of the verified
fp32 ONNX (kept beside as ``model.onnx``), gated against it on ONNX Runtime (``model.xml.parity.json``).

``--model NAME`` instead of ``--checkpoint`` exports a registered architecture with random weights (benchmarks,
smoke tests). Exit status: 0 exported and verified; 1 verification failed (fp32 label agreement < 99.9 %; the
unverified file is kept as ``*.unverified.onnx``); 2 bad arguments or a missing capability.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from vlt_perception.cli_logging import configure_cli_logging

log = logging.getLogger("vlt_training.export")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vlt_training.cli.export", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="checkpoint folder or run folder (newest checkpoint)")
    src.add_argument("--model", help="registered model name, random weights (for benchmarks and smoke tests)")
    p.add_argument("--format", choices=("onnx", "tensorrt", "openvino"), default="onnx")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16", "int8"), default=None,
                   help="onnx: fp32 (default) or fp16; tensorrt: fp16 (default), fp32 or int8; openvino: int8; "
                        "bf16: torch engine only")
    p.add_argument("--height", type=int, help="network input height (default: the checkpoint's)")
    p.add_argument("--width", type=int, help="network input width (default: the checkpoint's)")
    p.add_argument("--out", type=Path, help="output .onnx (default: <checkpoint>/model[.fp16].onnx); openvino: .xml")
    p.add_argument("--calib", "--calib-dir", dest="calib_dir", type=Path,
                   help="int8 calibration images: image folder (recursive), rosbag or dataset config (.yaml)")
    p.add_argument("--calib-images", type=int, default=256, help="int8: calibration images used at most")
    p.add_argument("--int8-preset", choices=("performance", "mixed"), default="performance",
                   help="openvino int8: NNCF preset (mixed: asymmetric activations)")
    p.add_argument("--no-transformer", action="store_true",
                   help="openvino int8: plain PTQ instead of NNCF's transformer scheme (quantises element-wise ops)")
    p.add_argument("--smooth-quant-alpha", type=float, default=None,
                   help="openvino int8: SmoothQuant alpha for matmuls (default: NNCF's; -1 switches it off)")
    p.add_argument("--no-fast-bias-correction", action="store_true",
                   help="openvino int8: full bias correction instead of the fast one (slower to export)")
    p.add_argument("--float-scope", action="append", default=[], metavar="REGEX",
                   help="openvino int8: node names to keep in float (mixed precision; repeatable)")
    p.add_argument("--verify-images", type=Path, help="images for the parity check when the dataset is unreachable")
    p.add_argument("--num-verify", type=int, default=4, help="number of parity-check images")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static-batch", action="store_true", help="fix the batch at 1 instead of a dynamic axis")
    p.add_argument("--max-batch", type=int, default=1, help="TensorRT optimisation profile's largest batch")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    p.add_argument("--cache-dir", type=Path,
                   help="TensorRT engine cache folder, yours alone (default: $XDG_CACHE_HOME/vlt_perception/tensorrt)")
    p.add_argument("--allow-parity-failure", action="store_true",
                   help="keep a built engine that fails its parity gate against ONNX Runtime (with a warning)")
    return p


def check_args(args: argparse.Namespace) -> str:
    """Resolve the precision for the format; raises ValueError with the reason for impossible combinations."""
    precision = args.precision or ("fp32" if args.format == "onnx" else "fp16")
    if precision == "bf16":
        raise ValueError("bf16 is for the torch engine only (create_engine(ckpt, engine='torch', precision='bf16'));"
                         " ONNX and TensorRT exports are fp32 / fp16 (/ int8 for TensorRT)")
    if args.format == "openvino":
        precision = args.precision or "int8"
        if precision != "int8":
            raise ValueError("--format openvino writes int8 models; OpenVINO runs the fp32 .onnx in fp32 / bf16 as it "
                             "is (create_engine(model.onnx, engine='openvino'))")
    if precision == "int8" and args.format == "onnx":
        raise ValueError("int8 is a TensorRT build flag or an OpenVINO quantisation: use --format tensorrt or "
                         "--format openvino with --precision int8 --calib DIR_OR_BAG")
    if precision == "int8" and not args.calib_dir:
        raise ValueError("--precision int8 needs --calib-dir / --calib DIR_OR_BAG with calibration images")
    if args.format == "openvino" and args.out is not None and args.out.suffix != ".xml":
        raise ValueError(f"--out {args.out}: an OpenVINO model is written as .xml (+ .bin)")
    if precision == "int8":  # a missing or unusable calibration source fails now, not after minutes of export
        from vlt_perception.engines.calibration import source_kind

        source_kind(args.calib_dir)
    if (args.height is None) != (args.width is None):
        raise ValueError("give both --height and --width, or neither")
    if args.num_verify < 1:
        raise ValueError("--num-verify must be at least 1")
    return precision


def load(args: argparse.Namespace):
    """(model, metadata, checkpoint folder or None)."""
    if args.checkpoint is not None:
        from vlt_training.training.checkpoint import load_model, resolve_checkpoint

        ckpt = resolve_checkpoint(args.checkpoint)
        model, metadata = load_model(ckpt)
        return model, metadata, ckpt
    from vlt_training.export.model_metadata import metadata_for_model
    from vlt_training.modeling import create_model

    model = create_model(args.model).eval()
    return model, metadata_for_model(model, args.height or 512, args.width or 1024), None


def default_out(args: argparse.Namespace, onnx_precision: str) -> Path:
    base = args.checkpoint if args.checkpoint is not None else Path(".")
    base = base if base.is_dir() else base.parent
    name = args.model or "model"
    return base / (f"{name}.onnx" if onnx_precision == "fp32" else f"{name}.{onnx_precision}.onnx")


def write_report(path: Path, report: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True))
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    from vlt_training.export.onnx_export import export_onnx
    from vlt_training.export.verify import verification_batch, verify_onnx

    precision = check_args(args)
    if args.format == "tensorrt":
        from vlt_perception.engines.tensorrt_engine import import_tensorrt

        import_tensorrt()  # fail before minutes of export when TensorRT is missing
    # TensorRT builds from the fp32 graph and lowers precision itself; ONNX fp16 is converted at export.
    onnx_precision = precision if args.format == "onnx" else "fp32"
    model, metadata, ckpt = load(args)
    out = args.out or default_out(args, onnx_precision)
    openvino_out = None
    if args.format == "openvino":  # the fp32 ONNX stays beside the IR: it is the int8 model's parity reference
        openvino_out = out if out.suffix == ".xml" else out.with_suffix(".int8.xml")
        out = out.with_suffix(".onnx")
    staging = out.with_name(out.stem + ".unverified.onnx")
    _, metadata = export_onnx(model, metadata, staging, height=args.height, width=args.width,
                              precision=onnx_precision, opset=args.opset, dynamic_batch=not args.static_batch,
                              exporter=args.exporter)
    images, source = verification_batch(metadata, checkpoint=ckpt, image_dir=args.verify_images,
                                        count=args.num_verify)
    parity = verify_onnx(staging, model, metadata, images, source)
    print(parity.summary())
    report = {"onnx": str(out), "metadata": metadata.to_dict(), "parity": [parity.to_dict()]}
    if not parity.passed:
        print(f"error: export verification failed; unverified model kept at {staging}", file=sys.stderr)
        return 1
    os.replace(staging, out)
    print(f"wrote {out}")
    if args.format == "tensorrt":
        report["engine"], trt_parity = build_tensorrt(out, metadata, precision, args, model, images, source)
        report["parity"].append(trt_parity)
    if openvino_out is not None:
        report.update(export_openvino_int8(out, metadata, openvino_out, args))
        print(f"wrote {openvino_out} ({report['parity_int8']['label_agreement']:.4f} label agreement with fp32)")
    write_report(out.with_suffix(".export.json"), report)
    return 0


def build_tensorrt(onnx_path: Path, metadata, precision: str, args, model, images, source):
    from vlt_perception.engines import parity as engine_parity
    from vlt_perception.engines import tensorrt_engine as trt_engine
    from vlt_training.export.verify import torch_reference, verify_engine

    trt_engine.import_tensorrt()
    settings = trt_engine.BuildSettings(
        metadata.input_height, metadata.input_width, precision, max_batch=max(1, args.max_batch),
        calib_dir=str(args.calib_dir) if args.calib_dir else None)
    engine_path = trt_engine.ensure_engine(onnx_path, settings, cache_dir=args.cache_dir)
    print(f"wrote {engine_path}")
    engine = trt_engine.TensorRTEngine(engine_path)
    # the runtime's gate (against ONNX Runtime on the CPU, recorded in the sidecar where create_engine reads it)
    gate = engine_parity.check_engine_parity(engine, onnx_path, images, frame_source=source)
    engine_parity.record_in_sidecar(trt_engine.sidecar_path(engine_path), gate)
    print(gate.summary())
    parity = verify_engine(engine, torch_reference(model, images, metadata), images, source, metadata)
    engine.close()
    engine_parity.enforce(gate, engine_path, allow_parity_failure=getattr(args, "allow_parity_failure", False))
    print(parity.summary())
    if not parity.passed:
        raise RuntimeError(f"{engine_path}: TensorRT fp32 engine disagrees with PyTorch ({parity.summary()})")
    return str(engine_path), parity.to_dict()


def export_openvino_int8(onnx_path: Path, metadata, out: Path, args) -> dict:
    from vlt_training.export.openvino_export import Int8Options, export_int8

    options = Int8Options(max_images=args.calib_images, transformer=not args.no_transformer,
                          smooth_quant_alpha=args.smooth_quant_alpha,
                          fast_bias_correction=not args.no_fast_bias_correction, preset=args.int8_preset,
                          float_scopes=list(args.float_scope))
    result = export_int8(onnx_path, metadata, args.calib_dir, out, options, verify_images=args.verify_images,
                         num_verify=args.num_verify, allow_parity_failure=args.allow_parity_failure)
    return {"openvino": result["openvino"], "parity_int8": result["parity"], "quantization": result["quantization"]}


def main(argv: list[str] | None = None) -> int:
    configure_cli_logging()
    args = build_parser().parse_args(argv)
    from vlt_perception.engines.base import EngineError, EngineUnavailableError
    from vlt_perception.engines.parity import ParityError
    from vlt_training.training.checkpoint import CheckpointError

    try:
        return run(args)
    except ParityError as exc:  # a built engine / int8 model that failed its gate: a verification failure
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except EngineError as exc:  # a calibration source or engine that cannot be used, named in the message
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, EngineUnavailableError, CheckpointError) as exc:  # bad input: one line, as train/evaluate
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
