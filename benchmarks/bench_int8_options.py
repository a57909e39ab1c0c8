"""What each NNCF int8 option does to speed and accuracy, every variant beside OpenVINO bf16 in one run.

    # a trained model: speed, the parity gate's figures and mIoU per condition of the synthetic benchmark
    python benchmarks/bench_int8_options.py --onnx model.onnx --calib DATA/cityscapes/leftImg8bit/train \
        --calib-images 16 --data DATA --out int8_options.json
    # random weights at a deployment size: speed only
    python benchmarks/bench_int8_options.py --model vltseg_vit_s16_mask2former --height 512 --width 1024 \
        --calib-images 4 --iters 5 --workdir WORK --out int8_options.json

Each variant is quantised from the same fp32 graph (:func:`vlt_training.export.openvino_export.quantize_onnx`) on
the same calibration images and kept in ``--workdir`` (a later run reuses it). Then:

- **speed**: OpenVINO bf16 on the fp32 graph and every int8 variant, loaded together and timed interleaved (the
  order rotates every round), so all of them see the same machine; median, and speed-up over bf16 and over the
  default scheme;
- **parity**: the export's gate figures (label agreement, confidence difference against the fp32 graph on ONNX
  Runtime) on ``--num-verify`` calibration frames, and whether the gate passes;
- **accuracy** (with ``--data``, the rendered synthetic benchmark): mIoU per condition of fp32 on ONNX Runtime and
  of every variant, and each variant's worst change in points.

Variants (``--variants``, names below): the options of ``export --format openvino --precision int8``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engines import calibration_folder, export_stem, random_weight_model  # noqa: E402
from bench_report import finish, machine_info, time_interleaved  # noqa: E402

log = logging.getLogger("bench_int8_options")

# variant -> Int8Options fields, and what the variant is (the export flag that makes it)
VARIANTS: dict[str, tuple[dict, str]] = {
    "default": ({}, "transformer scheme, NNCF's SmoothQuant, fast bias correction"),
    "no_smoothquant": ({"smooth_quant_alpha": -1}, "--smooth-quant-alpha -1"),
    "full_bias_correction": ({"fast_bias_correction": False}, "--no-fast-bias-correction"),
    "mixed_preset": ({"preset": "mixed"}, "--int8-preset mixed (asymmetric activations)"),
    "float_predictor": ({"float_scopes": [r".*/predictor/.*"]}, "--float-scope '.*/predictor/.*' (mask predictor float)"),
    "plain": ({"transformer": False, "smooth_quant_alpha": -1}, "--no-transformer --smooth-quant-alpha -1"),
}


def fp32_graph(args, workdir: Path) -> Path:
    """``--onnx`` as given, or the random-weight export of ``--model`` at ``--height`` x ``--width``, kept in
    ``workdir`` under bench_engines.py's name for it (each script reuses the other's file)."""
    if args.onnx is not None:
        return args.onnx
    path = workdir / f"{export_stem(args.model, args.height, args.width)}.fp32.onnx"
    if path.exists():
        log.info("reusing %s", path)
        return path
    from vlt_training.export import export_onnx
    from vlt_training.export.model_metadata import metadata_for_model

    model = random_weight_model(args.model)
    export_onnx(model, metadata_for_model(model, args.height, args.width), path, precision="fp32",
                dynamic_batch=False)
    return path


def quantise_variants(onnx_path: Path, metadata, calib: Path, workdir: Path, names: list[str],
                      calib_images: int) -> dict[str, dict]:
    """name -> {"path", "seconds"}: each variant's int8 IR (quantised now, or reused from ``workdir``)."""
    from vlt_training.export.openvino_export import Int8Options, quantize_onnx

    out = {}
    for name in names:
        path = workdir / f"{onnx_path.name.split('.')[0]}.int8-{name}-calib{calib_images}.xml"
        seconds = None
        if not path.exists():
            start = time.perf_counter()
            quantize_onnx(onnx_path, metadata, calib, path,
                          Int8Options(max_images=calib_images, **VARIANTS[name][0]))
            seconds = time.perf_counter() - start
        out[name] = {"path": path, "quantise_seconds": seconds}
    return out


def run(args) -> dict:
    from bench_int8_accuracy import condition_records, miou

    from vlt_perception.engines import create_engine, parity
    from vlt_perception.engines._common import read_onnx_metadata
    from vlt_training.export.openvino_export import parity_frames

    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path = fp32_graph(args, workdir)
    metadata = read_onnx_metadata(onnx_path)
    calib = args.calib or calibration_folder(workdir, metadata, args.calib_images)
    variants = quantise_variants(onnx_path, metadata, calib, workdir, args.variants, args.calib_images)
    frames, frame_source = parity_frames(calib, metadata, max(args.num_verify, 1))

    engines = {"bf16": create_engine(onnx_path, engine="openvino", precision="bf16", threads=args.threads)}
    for name, variant in variants.items():  # measured whatever its gate says: a failed variant is a result too
        engines[name] = create_engine(variant["path"], threads=args.threads, allow_parity_failure=True)
    for name in variants:  # --num-verify 0: speed only (random weights make the gate's figures meaningless)
        variants[name]["parity"] = None if args.num_verify == 0 else parity.check_engine_parity(
            engines[name], onnx_path, frames, frame_source=frame_source).to_dict()
    images = frames[:1]
    times = time_interleaved({name: (lambda e=engine: e.infer(images)) for name, engine in engines.items()},
                             args.iters)
    median = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    rows = []
    for name, variant in variants.items():
        rows.append({"variant": name, "options": VARIANTS[name][0], "made_with": VARIANTS[name][1],
                     "model": str(variant["path"]), "quantise_seconds": variant["quantise_seconds"],
                     "median_ms": median[name], "times_ms": [t * 1e3 for t in times[name]],
                     "speedup_vs_openvino_bf16": median["bf16"] / median[name],
                     "speedup_vs_default": median.get("default", np.nan) / median[name],
                     "parity": variant["parity"]})
    result = {"fp32": str(onnx_path), "input": [metadata.input_height, metadata.input_width],
              "calibration": {"source": str(calib), "images": args.calib_images}, "iters": args.iters,
              "bf16": {"median_ms": median["bf16"], "times_ms": [t * 1e3 for t in times["bf16"]]},
              "variants": rows, "machine": machine_info()}
    if args.data is not None:
        reference = create_engine(onnx_path, engine="onnxruntime", providers=["CPUExecutionProvider"])
        conditions = condition_records(args.data)
        fp32_miou = {c: miou(reference, records) for c, records in conditions.items()}
        result["accuracy"] = {"data": str(args.data), "miou_fp32": fp32_miou,
                              "images": {c: len(r) for c, r in conditions.items()}}
        for row in rows:
            scores = {c: miou(engines[row["variant"]], records) for c, records in conditions.items()}
            row["miou"] = scores
            row["worst_change_points"] = min(scores[c] - fp32_miou[c] for c in conditions)
            row["worst_condition"] = min(conditions, key=lambda c: scores[c] - fp32_miou[c])
        reference.close()
    for engine in engines.values():
        engine.close()
    return result


def format_table(result: dict) -> str:
    accuracy = "accuracy" in result
    lines = [f"{result['fp32']} at {result['input'][0]}x{result['input'][1]}; OpenVINO bf16 median "
             f"{result['bf16']['median_ms']:.0f} ms; {result['iters']} interleaved rounds",
             f"{'variant':<22} {'median ms':>9} {'x bf16':>7} {'x default':>9} {'agree':>7} {'conf diff':>9} "
             f"{'gate':>5}" + (f" {'worst change':>12}  condition" if accuracy else "")]
    for r in result["variants"]:
        p = r["parity"] or {}
        agree, diff = p.get("label_agreement"), p.get("mean_confidence_diff")
        line = (f"{r['variant']:<22} {r['median_ms']:>9.0f} {r['speedup_vs_openvino_bf16']:>7.2f} "
                f"{r['speedup_vs_default']:>9.2f} {'' if agree is None else f'{agree:.4f}':>7} "
                f"{'' if diff is None else f'{diff:.4f}':>9} {'' if not p else 'pass' if p['passed'] else 'FAIL':>5}")
        if accuracy:
            line += f" {r['worst_change_points']:>+12.2f}  {r['worst_condition']}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--onnx", type=Path, help="an exported fp32 .onnx (export --format onnx)")
    source.add_argument("--model", help="a model factory name: random weights, exported at --height x --width")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--calib", type=Path, default=None,
                   help="calibration images (folder, bag or dataset config; default: smooth random images)")
    p.add_argument("--calib-images", type=int, default=8)
    p.add_argument("--num-verify", type=int, default=4,
                   help="parity gate frames (from the calibration source); 0: no gate figures (speed only)")
    p.add_argument("--data", type=Path, default=None, help="the rendered synthetic benchmark: mIoU per condition")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workdir", type=Path, default=Path("outputs/bench_int8_options"))
    p.add_argument("--out", type=Path, default=Path("int8_options.json"))
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    result["command"] = " ".join(sys.argv)
    return finish(args.out, result, format_table(result))


if __name__ == "__main__":
    sys.exit(main())
