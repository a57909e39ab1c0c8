"""The GPU check: torch inference, a short training run of the ViT-B recipe and deformable attention on CUDA.

    python benchmarks/bench_gpu.py --out bench_gpu.json            # a CUDA GPU, no TensorRT needed; ~5 minutes
    python benchmarks/bench_gpu.py --smoke --out smoke.json        # tiny sizes, CPU or GPU: checks the script

Three parts, one table and one JSON:

1. ``inference``: the torch engine (what the nodes run for a checkpoint) in fp16 and bf16 for VLTSeg ViT-B/16 and
   EVA02-L/14 (random weights) at 512x1024 and 1024x2048: latency of one frame (median, p90; numpy in, numpy out,
   as the nodes call it), throughput at a larger batch, peak GPU memory.
2. ``training``: 50 iterations of the ViT-B recipe (``config/train/det_synthetic_to_cityscapes_vit_b16.yaml``:
   VLTDet Mask R-CNN, crop 512x1024, batch 16, bf16 autocast) through the real trainer on a small rendered
   synthetic set, random tower weights: step time (median of the logged intervals after warm-up) and peak memory.
3. ``deform_attn``: the deformable-attention sampling alone at the shapes ViT-B's pixel decoder uses, gather form
   (every export's) against ``grid_sample`` per level (training) and per point, forward in fp32 / fp16 / bf16 and
   forward + backward in fp32, with the largest difference from ``grid_sample``.

Without a CUDA GPU it exits with status 2 and says so (``--smoke`` runs the same code on the CPU at tiny sizes).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import cpu_name, finish  # noqa: E402

FULL = {
    "models": ("vltseg_vit_b16_mask2former", "vltseg_eva02_l14_mask2former"),
    "sizes": ((512, 1024), (1024, 2048)),
    "precisions": ("fp16", "bf16"),
    "latency_iters": 10, "throughput_batch": {512: 8, 1024: 2}, "throughput_iters": 3,
    "recipe": "config/train/det_synthetic_to_cityscapes_vit_b16.yaml",
    "train_overrides": ("train.max_iters=50", "train.log_interval=10", "data.synthetic.num_train=32",
                        "data.synthetic.num_val=1", "model.pretrained=null", "train.eval_interval=0",
                        "eval.datasets=[]", "train.checkpoint_interval=1000"),
    "train_warmup_steps": 10,
    "deform_model": "vltseg_vit_b16_mask2former", "deform_iters": 20,
}
SMOKE = {
    "models": ("vltseg_tiny_mask2former",),
    "sizes": ((64, 128),),
    "precisions": ("bf16",),  # fp16 runs on CUDA only
    "latency_iters": 2, "throughput_batch": {64: 2}, "throughput_iters": 1,
    "recipe": "config/train/tiny_det_cpu.yaml",
    "train_overrides": ("train.max_iters=3", "train.log_interval=1", "data.synthetic.num_train=2",
                        "data.synthetic.num_val=1", "data.synthetic.height=64", "data.synthetic.width=128",
                        "data.crop_size=[64,128]", "train.batch_size=2", "train.eval_interval=0",
                        "eval.datasets=[]", "train.checkpoint_interval=1000"),
    "train_warmup_steps": 1,
    "deform_model": "vltseg_tiny_mask2former", "deform_iters": 2,
}


class Clock:
    """Wall time of ``fn`` on the device: CUDA events on a GPU (no host-side launch overhead hidden), else the
    host clock."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def times_ms(self, fn, iters: int, warmup: int = 2) -> list[float]:
        import torch

        for _ in range(warmup):
            fn()
        out = []
        for _ in range(iters):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end))
            else:
                start = time.perf_counter()
                fn()
                out.append((time.perf_counter() - start) * 1e3)
        return out


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


# ----------------------------------------------------------------------------------------------------------------
# 1. inference


def bench_inference(plan: dict, device: str, log) -> list[dict]:
    import torch

    from vlt_perception.engines.torch_engine import TorchEngine
    from vlt_training.export.model_metadata import metadata_for_model
    from vlt_training.modeling import create_model

    rows = []
    clock = Clock(device)
    for name in plan["models"]:
        torch.manual_seed(0)
        model = create_model(name).eval()
        for height, width in plan["sizes"]:
            metadata = metadata_for_model(model, height, width)
            for precision in plan["precisions"]:
                row = {"model": name, "input": [height, width], "precision": precision}
                try:
                    _peak_reset(device)
                    engine = TorchEngine(model.export_module(), metadata, precision=precision, device=device)
                    one = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
                    lat = clock.times_ms(lambda: engine.infer(one), plan["latency_iters"])
                    batch = plan["throughput_batch"][height]
                    many = np.repeat(one, batch, axis=0)
                    thr = clock.times_ms(lambda: engine.infer(many), plan["throughput_iters"], warmup=1)
                    row.update(latency_ms=float(np.median(lat)), latency_p90_ms=float(np.percentile(lat, 90)),
                               throughput_batch=batch, throughput_fps=batch / (float(np.median(thr)) / 1e3),
                               peak_gib=_peak_gib(device), iters=len(lat))
                    engine.close()
                except Exception as exc:  # out of memory, a precision the device lacks: record it and go on
                    row["skipped"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                log(f"inference {name} {height}x{width} {precision}: "
                    + (row.get("skipped") or f"{row['latency_ms']:.1f} ms, {row['throughput_fps']:.1f} FPS"))
                rows.append(row)
        model.to("cpu")
        del model
        _peak_reset(device)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# 2. training


def bench_training(plan: dict, device: str, workdir: Path, log) -> dict:
    from vlt_training.config import load_config
    from vlt_training.training.trainer import train

    recipe = Path(__file__).resolve().parents[1] / plan["recipe"]
    overrides = [*plan["train_overrides"], f"data.root={workdir / 'synthetic'}", "train.num_workers=0"
                 if not device.startswith("cuda") else "train.num_workers=4",
                 f"train.device={'cuda' if device.startswith('cuda') else 'cpu'}"]
    cfg = load_config(recipe, overrides)
    _peak_reset(device)
    start = time.perf_counter()
    train(cfg, workdir / "run", progress=False)
    wall = time.perf_counter() - start
    rows = list(csv.DictReader(open(workdir / "run" / "log.csv")))
    # images_per_s of a row covers the steps since the previous row: skip the warm-up (cuDNN autotuning, the
    # first batches of the loader)
    rates = [float(r["images_per_s"]) for r in rows if int(r["step"]) > plan["train_warmup_steps"]]
    rates = rates or [float(rows[-1]["images_per_s"])]
    batch = cfg.train.batch_size
    result = {"recipe": plan["recipe"], "model": cfg.model.name, "crop": list(cfg.data.crop_size),
              "batch_size": batch, "amp": cfg.train.amp, "iterations": cfg.train.max_iters,
              "step_s": batch / float(np.median(rates)), "images_per_s": float(np.median(rates)),
              "wall_s_incl_data_rendering": wall, "peak_gib": _peak_gib(device), "overrides": overrides}
    log(f"training {result['model']} crop {result['crop']} batch {batch}: {result['step_s']:.3f} s/step")
    return result


# ----------------------------------------------------------------------------------------------------------------
# 3. deformable attention


def decoder_shapes(name: str, height: int, width: int) -> dict:
    """Shapes of the first deformable attention call of the model's pixel decoder (one forward on the CPU at a
    small size scaled up: the levels are the input divided by 8, 16 and 32)."""
    import torch

    from vlt_training.modeling import create_model
    from vlt_training.modeling.pixel_decoder.ms_deform_attn import MSDeformAttn

    torch.manual_seed(0)
    model = create_model(name).eval()
    attn = next(m for m in model.modules() if isinstance(m, MSDeformAttn))
    levels = sorted({(height // s, width // s) for s in (8, 16, 32)})[: attn.n_levels]
    return {"spatial_shapes": levels, "queries": sum(h * w for h, w in levels), "heads": attn.n_heads,
            "channels": attn.d_model // attn.n_heads, "levels": attn.n_levels, "points": attn.n_points}


def bench_deform_attn(plan: dict, device: str, log) -> list[dict]:
    import torch

    from vlt_training.modeling.pixel_decoder.ms_deform_attn import ms_deform_attn_core

    rows = []
    clock = Clock(device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if device.startswith("cuda"):
        dtypes["fp16"] = torch.float16
    for height, width in plan["sizes"]:
        s = decoder_shapes(plan["deform_model"], height, width)
        g = torch.Generator(device="cpu").manual_seed(0)
        total = sum(h * w for h, w in s["spatial_shapes"])
        value = torch.randn(1, total, s["heads"], s["channels"], generator=g)
        locations = torch.rand(1, s["queries"], s["heads"], s["levels"], s["points"], 2, generator=g) * 1.1 - 0.05
        weights = torch.rand(1, s["queries"], s["heads"], s["levels"], s["points"], generator=g)
        weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
        value, locations, weights = (t.to(device) for t in (value, locations, weights))
        with torch.no_grad():
            reference = ms_deform_attn_core(value, s["spatial_shapes"], locations, weights, method="level")
        for dtype_name, dtype in dtypes.items():
            # as under autocast: values, locations and weights in one dtype (grid_sample needs that)
            v, loc_d, w_d = value.to(dtype), locations.to(dtype), weights.to(dtype)
            for method in ("level", "point", "gather"):
                row = {"input": [height, width], "shapes": s, "method": method, "dtype": dtype_name}
                with torch.no_grad():
                    def forward(v=v, loc_d=loc_d, w_d=w_d, method=method):
                        return ms_deform_attn_core(v, s["spatial_shapes"], loc_d, w_d, method=method)

                    row["forward_ms"] = float(np.median(clock.times_ms(forward, plan["deform_iters"])))
                    row["max_diff_vs_grid_sample_fp32"] = float((forward().float() - reference).abs().max())
                if dtype_name == "fp32":
                    leaf = value.clone().requires_grad_(True)
                    loc = locations.clone().requires_grad_(True)

                    def train_step(method=method):
                        ms_deform_attn_core(leaf, s["spatial_shapes"], loc, weights, method=method).sum().backward()

                    row["forward_backward_ms"] = float(np.median(clock.times_ms(train_step, plan["deform_iters"])))
                log(f"deform attn {height}x{width} {dtype_name} {method}: {row['forward_ms']:.2f} ms")
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------


def format_table(result: dict) -> str:
    lines = ["| part | case | precision | figure |", "| --- | --- | --- | --- |"]
    for r in result["inference"]:
        case = f"{r['model']} {r['input'][0]}x{r['input'][1]}"
        figure = r.get("skipped") or (f"{r['latency_ms']:.1f} ms (p90 {r['latency_p90_ms']:.1f}), "
                                      f"{r['throughput_fps']:.1f} FPS at batch {r['throughput_batch']}"
                                      + (f", peak {r['peak_gib']:.1f} GiB" if r["peak_gib"] is not None else ""))
        lines.append(f"| inference | {case} | {r['precision']} | {figure} |")
    t = result["training"]
    if "skipped" in t:
        lines.append(f"| training | {t['recipe']} | | {t['skipped']} |")
    else:
        peak = f", peak {t['peak_gib']:.1f} GiB" if t["peak_gib"] is not None else ""
        lines.append(f"| training | {t['model']} crop {t['crop'][0]}x{t['crop'][1]} batch {t['batch_size']} | "
                     f"{t['amp']} | {t['step_s']:.3f} s/step ({t['images_per_s']:.1f} img/s){peak} |")
    for r in result["deform_attn"]:
        backward = f", fwd+bwd {r['forward_backward_ms']:.2f} ms" if "forward_backward_ms" in r else ""
        lines.append(f"| deform attn | {r['method']} {r['input'][0]}x{r['input'][1]} | {r['dtype']} | "
                     f"fwd {r['forward_ms']:.2f} ms{backward}, max diff {r['max_diff_vs_grid_sample_fp32']:.1e} |")
    return "\n".join(lines)


def run(args, device: str) -> dict:
    import torch

    plan = SMOKE if args.smoke else FULL
    logs = []

    def log(message: str) -> None:
        logs.append(message)
        print(message, flush=True)

    torch.backends.cuda.matmul.allow_tf32 = True  # what a deployment would enable; fp16 / bf16 rows are unaffected
    result = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "smoke": args.smoke, "device": device,
              "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
              "torch": torch.__version__, "cuda": torch.version.cuda, "cpu": cpu_name(),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    parts = set(args.parts)
    result["inference"] = bench_inference(plan, device, log) if "inference" in parts else []
    result["training"] = {"skipped": "not asked for"}
    if "training" in parts:
        with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
            try:
                result["training"] = bench_training(plan, device, Path(tmp), log)
            except Exception as exc:  # out of memory at the recipe's batch: say so, keep the other parts
                result["training"] = {"recipe": plan["recipe"], "skipped": f"{type(exc).__name__}: {str(exc)[:300]}"}
                log(f"training skipped: {result['training']['skipped']}")
    result["deform_attn"] = bench_deform_attn(plan, device, log) if "deform_attn" in parts else []
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, runs on the CPU too (checks the script)")
    p.add_argument("--parts", default="inference,training,deform_attn",
                   help="comma-separated subset of inference, training, deform_attn")
    p.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    args = p.parse_args(argv)
    args.parts = [x for x in args.parts.split(",") if x]
    unknown = set(args.parts) - {"inference", "training", "deform_attn"}
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}")
    import torch

    if torch.cuda.is_available():
        device = "cuda"
    elif args.smoke:
        device = "cpu"
    else:
        print("bench_gpu.py: no CUDA GPU visible to torch (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda}); this benchmark measures the GPU. "
              "Run it on a CUDA machine, or with --smoke for a CPU check of the script.", file=sys.stderr)
        return 2
    result = run(args, device)
    return finish(args.out, result, format_table(result))


if __name__ == "__main__":
    sys.exit(main())
