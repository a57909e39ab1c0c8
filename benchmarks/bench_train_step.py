"""CPU speed of VLTSeg: tiny-model training step and ViT-S-16 inference, optionally against a baseline checkout.

    python benchmarks/bench_train_step.py [--iters 5] [--skip-large] [--onnx] [--out bench_train_step.json]
    python benchmarks/bench_train_step.py --baseline-root /tmp/baseline   # before/after side by side

Figures:
* ``train_step``: one training step of ``vltseg_tiny_mask2former`` on a batch of 4 at 128x256 (forward,
  Mask2Former losses with Hungarian matching, backward, the trainer's ``build_optimizer`` AdamW step);
  ``--train-points N`` adds the same step with N sampled mask points in both versions (the factory default
  differs between them),
* ``forward_fp32`` / ``forward_bf16``: eval forward of ``vltseg_vit_s16_mask2former`` at 512x1024, batch 1, in
  torch fp32 and with bf16 weights and inputs (the AMX fast path),
* ``onnxruntime_fp32`` (``--onnx``): the exported graph of the same model in ONNX Runtime (CPU).

With ``--baseline-root DIR`` (a folder holding another version of ``vlt_training`` / ``vlt_perception``, e.g.
``git archive <rev> vlt_training vlt_perception | tar -x -C DIR``) each figure is measured in worker processes for
the baseline and for this checkout, alternating rounds, and the JSON holds both plus the ratio baseline / current.
The machines are shared and noisy: compare the ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timeit(fn, iters: int, warmup: int = 1) -> dict[str, float]:
    import numpy as np

    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(iters):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    # process CPU time (all threads) suffers less than wall time when other processes share the cores
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)),
            "median_cpu_s": float(np.median(cpu)), "iters": iters}


def _train_step_bench(iters: int, points: int = 0) -> dict:
    import torch

    from vlt_training.modeling import create_model

    from vlt_training.config import OptimConfig
    from vlt_training.training.optim import build_optimizer

    torch.manual_seed(0)
    overrides = {"train_num_points": points} if points else {}
    model = create_model("vltseg_tiny_mask2former", **overrides).train()
    # the trainer's optimiser (AdamW with VLTSeg's parameter groups), as the training CLI builds it
    opt = build_optimizer(model, OptimConfig())
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 128, 256, generator=g)
    # blocky label maps with a handful of classes per image, some ignored pixels
    coarse = torch.randint(0, 19, (4, 1, 8, 16), generator=g).float()
    labels = torch.nn.functional.interpolate(coarse, size=(128, 256), mode="nearest")[:, 0].long()
    labels[:, :4] = 255
    targets = [{"sem_seg": s} for s in labels]

    def step():
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    result = _timeit(step, iters, warmup=2)
    result["params"] = sum(p.numel() for p in model.parameters())
    return result


def _forward_benches(iters: int, onnx: bool) -> dict:
    import torch

    from vlt_training.modeling import create_model

    torch.manual_seed(0)
    model = create_model("vltseg_vit_s16_mask2former").eval()
    images = torch.randn(1, 3, 512, 1024)
    out = {}
    with torch.inference_mode():
        out["forward_fp32"] = _timeit(lambda: model(images), iters)
        model_bf16 = model.to(torch.bfloat16)
        images_bf16 = images.to(torch.bfloat16)
        out["forward_bf16"] = _timeit(lambda: model_bf16(images_bf16), iters)
    model = model.float()
    if onnx:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "vltseg_s16.onnx")
            torch.onnx.export(model.export_module(), (images,), path, opset_version=17, dynamo=False,
                              input_names=["images"], output_names=["labels", "confidence"])
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            feed = {"images": images.numpy()}
            out["onnxruntime_fp32"] = _timeit(lambda: session.run(None, feed), iters)
    return out


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    result = {"train_step": _train_step_bench(args.iters)}
    if args.train_points:
        result[f"train_step_{args.train_points}pts"] = _train_step_bench(args.iters, args.train_points)
    if not args.skip_large:
        result.update(_forward_benches(max(1, args.iters // 2), args.onnx))
    return result


def _run_worker(root: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--iters", str(args.iters), "--threads", str(args.threads)]
    cmd += ["--skip-large"] if args.skip_large else []
    cmd += ["--onnx"] if args.onnx else []
    cmd += ["--train-points", str(args.train_points)] if args.train_points else []
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, env=env, cwd=str(root), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker for {root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _merge(rounds: list[dict]) -> dict:
    """Per figure, the lowest median over rounds (the least disturbed by other processes)."""
    merged = {}
    for r in rounds:
        for key, fig in r.items():
            if key not in merged or fig["median_s"] < merged[key]["median_s"]:
                merged[key] = fig
    return merged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-large", action="store_true", help="only the tiny training step")
    parser.add_argument("--train-points", type=int, default=0,
                        help="also time the step with this many sampled mask points in both versions")
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime fp32")
    parser.add_argument("--baseline-root", type=Path, help="folder with the baseline vlt_training/vlt_perception")
    parser.add_argument("--rounds", type=int, default=2, help="alternating baseline/current rounds")
    parser.add_argument("--out", type=Path, default=Path("bench_train_step.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.baseline_root is not None and not (args.baseline_root / "vlt_training").is_dir():
        parser.error(f"{args.baseline_root}: no vlt_training folder there")

    current_rounds, baseline_rounds = [], []
    for _ in range(args.rounds if args.baseline_root else 1):
        if args.baseline_root:
            baseline_rounds.append(_run_worker(args.baseline_root, args))
        current_rounds.append(_run_worker(REPO, args))
    current = _merge(current_rounds)
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                          "load_average": list(os.getloadavg())},
              "current": current}
    print(f"{'figure':<20} {'current s':>10} {'cpu s':>8}", end="")
    if args.baseline_root:
        baseline = _merge(baseline_rounds)
        report["baseline"] = baseline
        report["speedup"] = {k: baseline[k]["median_s"] / current[k]["median_s"] for k in current if k in baseline}
        print(f" {'baseline s':>10} {'cpu s':>8} {'speedup':>8}", end="")
    print()
    for key, fig in current.items():
        line = f"{key:<20} {fig['median_s']:>10.3f} {fig['median_cpu_s']:>8.3f}"
        if args.baseline_root and key in report["baseline"]:
            base = report["baseline"][key]
            line += f" {base['median_s']:>10.3f} {base['median_cpu_s']:>8.3f} {report['speedup'][key]:>7.2f}x"
        print(line)
    print(f"load average {report['machine']['load_average']}")
    # atomic write: a reader never sees half a report
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
