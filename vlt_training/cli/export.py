"""Export a checkpoint to ONNX or a TensorRT engine, verifying the result against PyTorch.

    python -m vlt_training.cli.export --checkpoint runs/x --format onnx [--precision fp32|fp16]
        [--height H --width W] [--out model.onnx] [--verify-images DIR]
    python -m vlt_training.cli.export --checkpoint runs/x --format tensorrt --precision int8 --calib-dir DIR

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
    p.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16", "int8"), default=None,
                   help="onnx: fp32 (default) or fp16; tensorrt: fp16 (default), fp32 or int8; bf16: torch engine only")
    p.add_argument("--height", type=int, help="network input height (default: the checkpoint's)")
    p.add_argument("--width", type=int, help="network input width (default: the checkpoint's)")
    p.add_argument("--out", type=Path, help="output .onnx (default: <checkpoint>/model[.fp16].onnx)")
    p.add_argument("--calib-dir", type=Path, help="int8 calibration images (TensorRT)")
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
    if precision == "int8" and args.format != "tensorrt":
        raise ValueError("int8 is a TensorRT build flag: use --format tensorrt --precision int8 --calib-dir DIR")
    if precision == "int8" and not args.calib_dir:
        raise ValueError("--precision int8 needs --calib-dir DIR with calibration images")
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


def main(argv: list[str] | None = None) -> int:
    configure_cli_logging()
    args = build_parser().parse_args(argv)
    from vlt_perception.engines.base import EngineUnavailableError
    from vlt_training.training.checkpoint import CheckpointError

    try:
        return run(args)
    except (ValueError, EngineUnavailableError, CheckpointError) as exc:  # bad input: one line, as train/evaluate
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
