"""CPU cost of the tiny VLTDet heads side by side: one training step of each on the same batch.

    python benchmarks/bench_det_heads.py [--iters 10] [--rounds 3] [--out bench_det_heads.json]

Figures, per model (``vltdet_tiny_fasterrcnn``, ``vltdet_tiny_maskrcnn``, ``vltdet_tiny_fcos``): one training step
(forward with the torchvision losses, backward, AdamW from the trainer's ``build_optimizer``) on a batch of 4 at
128 x 256 with 6 objects per image (boxes and their masks), and one eval forward (``predict``, batch 1). Models
alternate within each round so that a change in the machine's load hits all of them; the medians over rounds are
reported with the ratio to Faster R-CNN, and the fp32 / bf16 matmul peak is measured in the same run. Compare
ratios, not absolute times: the VMs differ.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

MODELS = ("vltdet_tiny_fasterrcnn", "vltdet_tiny_maskrcnn", "vltdet_tiny_fcos")
H, W, BATCH, OBJECTS = 128, 256, 4, 6


def _batch(torch):
    """Images and targets: OBJECTS random boxes per image (8-60 px), each mask its box minus a corner."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, H, W, generator=gen)
    targets = []
    for _ in range(BATCH):
        xy = torch.rand(OBJECTS, 2, generator=gen) * torch.tensor([W - 64.0, H - 64.0])
        wh = 8 + torch.rand(OBJECTS, 2, generator=gen) * 52
        boxes = torch.cat([xy, xy + wh], dim=1)
        masks = torch.zeros(OBJECTS, H, W, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
            masks[i, y1:y2, x1:x2] = 1
            masks[i, y1:(y1 + y2) // 2, x1:(x1 + x2) // 2] = 0
        targets.append({"boxes": boxes, "labels": torch.randint(0, 8, (OBJECTS,), generator=gen), "masks": masks})
    return images, targets


def _step_fn(name: str, images, targets):
    import torch

    from vlt_training.config import OptimConfig
    from vlt_training.training.optim import build_optimizer
    from vlt_training.modeling import create_model

    torch.manual_seed(0)
    model = create_model(name).train()
    optimizer = build_optimizer(model, OptimConfig(name="adamw", lr=1e-4))
    own = [{k: v for k, v in t.items() if k != "masks" or model.predicts_masks} for t in targets]

    def step():
        optimizer.zero_grad(set_to_none=True)
        sum(model(images, own).values()).backward()
        optimizer.step()

    def predict():
        model.eval()
        with torch.no_grad():
            model.predict(images[:1])
        model.train()

    return step, predict


def _time(fn, iters: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench_det_heads.json"))
    args = parser.parse_args()

    import numpy as np
    import torch

    from bench_engines import matmul_peak

    torch.set_num_threads(args.threads)
    peaks = {"fp32": matmul_peak("fp32", 2048), "bf16": matmul_peak("bf16", 2048)}
    images, targets = _batch(torch)
    fns = {name: _step_fn(name, images, targets) for name in MODELS}
    train = {name: [] for name in MODELS}
    infer = {name: [] for name in MODELS}
    for r in range(args.rounds):
        for name in MODELS:
            step, predict = fns[name]
            train[name].append(_time(step, args.iters))
            infer[name].append(_time(predict, args.iters))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {train[n][-1] * 1e3:.0f} ms" for n in MODELS),
              flush=True)
    base_train, base_infer = float(np.median(train[MODELS[0]])), float(np.median(infer[MODELS[0]]))
    result = {"machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads,
                          "matmul_peak_gflops": peaks},
              "batch": BATCH, "size": [H, W], "objects_per_image": OBJECTS, "rounds": args.rounds,
              "iters": args.iters, "models": {}}
    print(f"matmul peak (2048^3): fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print(f"{'model':26s} {'train step ms':>14s} {'x Faster':>9s} {'predict ms':>11s} {'x Faster':>9s}")
    for name in MODELS:
        t, i = float(np.median(train[name])), float(np.median(infer[name]))
        result["models"][name] = {"train_step_s": t, "predict_s": i, "train_ratio_to_fasterrcnn": t / base_train,
                                  "predict_ratio_to_fasterrcnn": i / base_infer, "train_rounds_s": train[name],
                                  "predict_rounds_s": infer[name]}
        print(f"{name:26s} {t * 1e3:14.0f} {t / base_train:9.2f} {i * 1e3:11.0f} {i / base_infer:9.2f}")
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
