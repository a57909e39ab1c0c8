"""Engine latency and efficiency on this machine: one model, several engines and precisions, random weights.

    python benchmarks/bench_engines.py --model vltseg_vit_s16_mask2former --height 512 --width 1024 \
        --engines torch,onnxruntime --precisions fp32,bf16 --iters 5 --out bench.json

For every available engine x precision: median / p90 / p99 latency, FPS, the model's GFLOPs (counted with
``torch.utils.flop_counter.FlopCounterMode`` on the PyTorch export module: 2 FLOPs per multiply-add), achieved
GFLOP/s, and the share of this device's matmul peak measured in the same run: fp32 and bf16 ``torch.matmul``, and
``torch._int_mm`` when int8 is benchmarked, of square matrices of ``--peak-size`` (default 4096), best of
``--peak-reps`` (at 2048 the figure swung from 407 to 715 GFLOP/s between runs on a 2-core development machine).
Figures from different machines therefore compare as ratios. Every figure is printed against that peak, with the
load average when it was taken. Combinations an engine cannot run (ONNX Runtime bf16, TensorRT without a GPU ...)
are listed with the reason.

``openvino`` ``int8`` quantises the fp32 export with NNCF (``vlt_training.export.openvino_export``) on
``--calib`` (an image folder, bag or dataset config; default: ``--calib-images`` smooth random images, enough for
speed, not for accuracy) and reports its label agreement with torch fp32 and its speed against OpenVINO bf16
measured in the same run. ``--profile`` adds OpenVINO's per-layer counters (``PERF_COUNT``), summed by layer
type and kernel, for every OpenVINO combination: where the time goes and which kernels run below the peak.

    python benchmarks/bench_engines.py --model vltseg_vit_s16_mask2former --engines openvino \
        --precisions bf16,int8 --iters 5 --profile --out bench.json

``--workdir DIR`` keeps the exported ONNX and the int8 model in DIR and reuses them in later runs (the weights are
seeded, so the same model and size give the same files). Large models need it under a memory cap: NNCF's
statistics pass keeps the inputs of every quantised layer as model outputs, and quantising VLTSeg ViT-B/16 at
512x1024 peaked at 14.7 GB resident and asked for more than 20 GB of address space. Quantise in one run
(``--precisions int8``), then time the precisions side by side in the next.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import cpu_name, finish  # noqa: E402

log = logging.getLogger("bench_engines")
ENGINES = ("torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def matmul_peak(dtype_name: str, size: int, reps: int = 5) -> float | None:
    """Best GFLOP/s of ``size`` x ``size`` torch.matmul in this dtype over ``reps`` runs on the CPU (or the GPU when
    there is one). The best, not the median: on a shared machine every slower run is slower for reasons outside the
    kernel; and a large size, because small products are dominated by thread start-up and cache effects.

    ``int8`` multiplies int8 matrices into int32 with ``torch._int_mm`` (oneDNN's VNNI kernels on the CPU), in
    GOP/s; None where this torch build has no such kernel."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype_name == "int8":
        a = torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device)
        b = torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device)
        product = torch._int_mm
        try:
            product(a, b)
        except RuntimeError:
            return None
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        product = torch.matmul
    product(a, b)  # warm-up: thread pools, oneDNN kernels
    best = float("inf")
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        product(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def random_weight_model(name: str):
    """``name`` with seeded random weights, in eval mode: every run (and every benchmark) builds the same model, so
    the files a ``--workdir`` keeps stay valid."""
    import torch

    from vlt_training.modeling import create_model

    torch.manual_seed(0)
    return create_model(name).eval()


def export_stem(model: str, height: int, width: int) -> str:
    """The file stem of a model's exports in a ``--workdir`` (``<stem>.fp32.onnx``, ``<stem>.int8-....xml``)."""
    return f"{model}_{height}x{width}"


def count_gflops(module, height: int, width: int) -> float:
    """FLOPs of one forward (2 per multiply-add) with ``torch.utils.flop_counter``, attention included.

    Two blind spots of FlopCounterMode are closed here (measured on VLTSeg ViT-B/16 at 512x1024, where they hid
    271 of 750 GFLOPs): in inference mode ``nn.MultiheadAttention`` takes its fused fast path
    (``aten._native_multi_head_attention``), which has no FLOP formula, so the QKV / output projections and the
    attention products went uncounted; and the CPU kernel of ``scaled_dot_product_attention``
    (``aten._scaled_dot_product_flash_attention_for_cpu``) is not in the registry either. Counting runs with the
    fast path off (the same products, as ``linear`` + SDPA) and with torch's own SDPA formula for the CPU op.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention}
    counter = FlopCounterMode(display=False, custom_mapping=custom)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode(), counter:
            module(torch.zeros(1, 3, height, width))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() / 1e9


def time_engine(engine, images: np.ndarray, iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        engine.infer(images)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        engine.infer(images)
        times.append(time.perf_counter() - start)
    return times


def summarise(times: list[float], gflops: float, peaks: dict[str, float | None], precision: str) -> dict:
    median = float(np.median(times))
    achieved = gflops / median
    # the peak of the precision the engine computes in; fp16 is held against the other half-precision peak, bf16
    own_peak = {"fp32": peaks["fp32"], "int8": peaks.get("int8")}.get(precision) or peaks["bf16"]
    return {"median_ms": median * 1e3, "p90_ms": float(np.percentile(times, 90)) * 1e3,
            "p99_ms": float(np.percentile(times, 99)) * 1e3, "min_ms": float(np.min(times)) * 1e3,
            "fps": 1.0 / median, "achieved_gflops_per_s": achieved,
            "efficiency_vs_own_precision_peak": achieved / own_peak, "efficiency_vs_bf16_peak": achieved / peaks["bf16"],
            "iters": len(times), "load_avg_1m": os.getloadavg()[0]}


def calibration_folder(workdir: Path, metadata, count: int) -> Path:
    """``count`` smooth random RGB images at the model size (speed runs only: the ranges are not a camera's)."""
    import cv2

    folder = workdir / f"calib_{metadata.input_height}x{metadata.input_width}_{count}"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.resize(small, (metadata.input_width, metadata.input_height)))
    return folder


def quantised_model(onnx_path: Path, metadata, workdir: Path, calib: dict) -> Path:
    """The NNCF int8 IR of the fp32 export (quantised once per run)."""
    from vlt_training.export.openvino_export import Int8Options, quantize_onnx

    out = workdir / f"{onnx_path.name.split('.')[0]}.int8-calib{calib['images']}.xml"
    if not out.exists():
        source = calib["source"] or calibration_folder(workdir, metadata, calib["images"])
        start = time.perf_counter()
        quantize_onnx(onnx_path, metadata, source, out, Int8Options(max_images=calib["images"], **calib["options"]))
        log.info("quantised %s in %.0f s", out.name, time.perf_counter() - start)
    return out


def openvino_profile(engine, images: np.ndarray, top: int = 12) -> dict:
    """OpenVINO's per-layer counters for one inference, summed by (layer type, kernel): milliseconds, share of the
    total and layer count, largest first; recompiles the engine's model with ``PERF_COUNT``."""
    import openvino as ov

    core = ov.Core()
    config = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    hint = engine.compiled.get_property("INFERENCE_PRECISION_HINT")
    config["INFERENCE_PRECISION_HINT"] = hint
    compiled = core.compile_model(str(engine.path), "CPU", config)
    request = compiled.create_infer_request()
    request.infer({"images": images})  # warm-up
    request.infer({"images": images})
    groups: dict[tuple[str, str], list[float]] = {}
    for info in request.get_profiling_info():
        if info.status != info.Status.EXECUTED:
            continue
        key = (info.node_type, info.exec_type)
        ms = info.real_time.total_seconds() * 1e3
        groups.setdefault(key, [0.0, 0])
        groups[key][0] += ms
        groups[key][1] += 1
    total = sum(v[0] for v in groups.values())
    rows = sorted(({"layer_type": k[0], "kernel": k[1], "ms": v[0], "share": v[0] / total if total else 0.0,
                    "layers": v[1]} for k, v in groups.items()), key=lambda r: -r["ms"])
    return {"total_ms": total, "by_type_and_kernel": rows[:top]}


def make_engine(kind: str, precision: str, model, metadata, workdir: Path, threads: int | None, onnx_cache: dict,
                calib: dict | None = None):
    """An engine for this combination, or raises with the reason it cannot run here."""
    from vlt_perception.engines.base import EngineError

    if kind == "torch":
        from vlt_perception.engines.torch_engine import TorchEngine

        return TorchEngine(model.export_module(), metadata, precision=precision, threads=threads)
    no_bf16 = precision == "bf16" and kind in ("onnxruntime", "tensorrt")
    if no_bf16 or (precision == "int8" and kind not in ("tensorrt", "openvino")):
        raise EngineError(f"{kind} has no {precision} path (bf16: torch and openvino; int8: TensorRT and OpenVINO)")
    onnx_precision = precision if kind == "onnxruntime" else "fp32"
    cached = workdir / f"{onnx_cache['stem']}.{onnx_precision}.onnx"
    if onnx_precision not in onnx_cache and cached.exists():
        log.info("reusing %s", cached)
        onnx_cache[onnx_precision] = cached
    if onnx_precision not in onnx_cache:
        from vlt_training.export import export_onnx

        start = time.perf_counter()
        # batch fixed at 1, as benchmarked: no shape arithmetic for a dynamic batch in the graph
        path, _ = export_onnx(model, metadata, cached, precision=onnx_precision, dynamic_batch=False)
        log.info("exported %s in %.0f s", path.name, time.perf_counter() - start)
        onnx_cache[onnx_precision] = path
    from vlt_perception.engines import create_engine

    if kind == "onnxruntime":
        return create_engine(onnx_cache[onnx_precision], engine="onnxruntime", threads=threads)
    if kind == "openvino" and precision == "int8":
        return create_engine(quantised_model(onnx_cache["fp32"], metadata, workdir, calib), threads=threads)
    if kind == "openvino":
        return create_engine(onnx_cache["fp32"], engine="openvino", precision=precision, threads=threads)
    return create_engine(onnx_cache["fp32"], engine="tensorrt", precision=precision, cache_dir=workdir)


def run(args) -> dict:
    import torch

    from vlt_perception.engines._common import cpu_bf16_flags
    from vlt_training.export.model_metadata import metadata_for_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_weight_model(args.model)
    metadata = metadata_for_model(model, args.height, args.width)
    gflops = count_gflops(model.export_module(), args.height, args.width)
    log.info("%s at %dx%d: %.1f GFLOPs", args.model, args.height, args.width, gflops)
    peaks = {p: matmul_peak(p, args.peak_size, args.peak_reps) for p in ("fp32", "bf16")}
    if "int8" in args.precisions:
        peaks["int8"] = matmul_peak("int8", args.peak_size, args.peak_reps)
    log.info("matmul peak %d^3 (best of %d): %s (load %.1f)", args.peak_size, args.peak_reps,
             ", ".join(f"{p} {v:.0f}" for p, v in peaks.items() if v), os.getloadavg()[0])
    images = np.random.default_rng(0).standard_normal((1, 3, args.height, args.width)).astype(np.float32)
    reference = _reference_outputs(model, metadata, images)
    results, onnx_cache = [], {"stem": export_stem(args.model, args.height, args.width)}
    calib = {"source": args.calib, "images": args.calib_images, "options": {}}
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_engines_"))
        else:
            tmp = args.workdir
            tmp.mkdir(parents=True, exist_ok=True)
        for kind in args.engines:
            for precision in args.precisions:
                entry = {"engine": kind, "precision": precision}
                try:
                    engine = make_engine(kind, precision, model, metadata, Path(tmp), args.threads, onnx_cache,
                                         calib)
                except Exception as exc:  # record why a combination cannot run here and go on
                    entry["skipped"] = f"{type(exc).__name__}: {exc}"
                    log.info("skip %s %s: %s", kind, precision, entry["skipped"])
                    results.append(entry)
                    continue
                entry["info"] = vars(engine.info)
                entry.update(summarise(time_engine(engine, images, args.iters, args.warmup), gflops, peaks,
                                       precision))
                entry["agreement_vs_torch_fp32"] = agreement(engine.infer(images), reference)
                log.info("%s %s: median %.0f ms, %.2f FPS, %.0f GFLOP/s = %.0f%% of bf16 peak", kind, precision,
                         entry["median_ms"], entry["fps"], entry["achieved_gflops_per_s"],
                         100 * entry["efficiency_vs_bf16_peak"])
                if args.profile and kind == "openvino":
                    entry["profile"] = openvino_profile(engine, images)
                results.append(entry)
                engine.close()
    ran = [r for r in results if "skipped" not in r]
    best = max(ran, key=lambda r: r["fps"]) if ran else None
    by_key = {(r["engine"], r["precision"]): r for r in ran}
    if ("openvino", "int8") in by_key and ("openvino", "bf16") in by_key:  # the int8 goal, measured side by side
        by_key[("openvino", "int8")]["speedup_vs_openvino_bf16"] = (
            by_key[("openvino", "bf16")]["median_ms"] / by_key[("openvino", "int8")]["median_ms"])
    return {
        "model": args.model, "input": [args.height, args.width], "gflops": gflops, "matmul_peak_gflops_per_s": peaks,
        "peak_size": args.peak_size, "peak_reps": args.peak_reps, "results": results,
        "best": None if best is None else {k: best[k] for k in ("engine", "precision", "median_ms", "fps",
                                                                 "efficiency_vs_bf16_peak")},
        "target": "best CPU engine >= 70% of the measured bf16 matmul peak",
        "target_met": bool(best and best["efficiency_vs_bf16_peak"] >= 0.7),
        "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "bf16_flags": sorted(cpu_bf16_flags()), "load_avg_1m": os.getloadavg()[0],
                    "python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }


def _reference_outputs(model, metadata, images: np.ndarray) -> dict[str, np.ndarray]:
    """The torch fp32 export module's outputs by contract name (the parity reference)."""
    import torch

    from vlt_training.export.onnx_export import output_names_of

    module = model.export_module()
    example = torch.from_numpy(images)
    names = output_names_of(module, example, metadata)
    with torch.inference_mode():
        out = module(example)
    values = [out[n] for n in names] if isinstance(out, dict) else (out if isinstance(out, (tuple, list)) else [out])
    return {name: value.numpy() for name, value in zip(names, values)}


def agreement(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float | None:
    """Segmentation: fraction of pixels whose label equals torch fp32's (what reduced precision costs)."""
    if "labels" not in outputs or "labels" not in reference or "boxes" in reference:
        return None
    return float(np.mean(outputs["labels"] == reference["labels"]))


def format_table(result: dict) -> str:
    """Every figure against the bf16 matmul peak measured in the same run, one line per engine x precision."""
    peaks = result["matmul_peak_gflops_per_s"]
    lines = [f"{result['model']} {result['input'][0]}x{result['input'][1]}: {result['gflops']:.1f} GFLOPs; "
             f"matmul peak {result['peak_size']}^2 best of {result['peak_reps']}: bf16 {peaks['bf16']:.0f}, fp32 "
             f"{peaks['fp32']:.0f}" + (f", int8 {peaks['int8']:.0f}" if peaks.get("int8") else "") + " GFLOP/s",
             f"{'engine':<12} {'precision':<9} {'median ms':>10} {'GFLOP/s':>8} {'% bf16 peak':>11} {'% own peak':>10} "
             f"{'agree':>7} {'x bf16':>7} {'load':>5}"]
    for r in result["results"]:
        if "skipped" in r:
            lines.append(f"{r['engine']:<12} {r['precision']:<9} skipped: {r['skipped'][:80]}")
            continue
        agree = r.get("agreement_vs_torch_fp32")
        speedup = r.get("speedup_vs_openvino_bf16")
        lines.append(f"{r['engine']:<12} {r['precision']:<9} {r['median_ms']:>10.0f} {r['achieved_gflops_per_s']:>8.0f} "
                     f"{100 * r['efficiency_vs_bf16_peak']:>10.0f}% {100 * r['efficiency_vs_own_precision_peak']:>9.0f}% "
                     f"{'' if agree is None else f'{agree:.4f}':>7} "
                     f"{'' if speedup is None else f'{speedup:.2f}':>7} {r['load_avg_1m']:>5.1f}")
        for row in (r.get("profile") or {}).get("by_type_and_kernel", [])[:8]:
            lines.append(f"    {row['layer_type']:<22} {row['kernel']:<34} {row['ms']:>8.1f} ms {100 * row['share']:>5.1f}%"
                         f" ({row['layers']} layers)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vltseg_vit_s16_mask2former")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--engines", default="torch,onnxruntime")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the libraries' own)")
    p.add_argument("--peak-size", type=int, default=4096,
                   help="square matmul size for the peak measurement (at least 4096: smaller ones swing)")
    p.add_argument("--peak-reps", type=int, default=5, help="peak: best of this many products")
    p.add_argument("--calib", type=Path, default=None,
                   help="openvino int8: calibration images (folder, bag or dataset config; default: random images)")
    p.add_argument("--calib-images", type=int, default=8, help="openvino int8: calibration images used")
    p.add_argument("--profile", action="store_true", help="OpenVINO per-layer counters for every openvino entry")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the exported and quantised models here and reuse them (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=Path("bench.json"))
    args = p.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    args.precisions = [x for x in args.precisions.split(",") if x]
    bad = [e for e in args.engines if e not in ENGINES] + [x for x in args.precisions if x not in PRECISIONS]
    if bad:
        p.error(f"unknown engines / precisions {bad}; engines {ENGINES}, precisions {PRECISIONS}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    return finish(args.out, result, format_table(result))


if __name__ == "__main__":
    sys.exit(main())
