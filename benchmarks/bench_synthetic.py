"""Speed (and optionally learnability) of the procedural domain-shift benchmark.

    python benchmarks/bench_synthetic.py                       # render / shift / write rates at 512x1024
    python benchmarks/bench_synthetic.py --learnability 360    # + train a small ViT for 360 CPU-s at 128x256

Prints the figures and writes them as JSON (``--json``, default ``outputs/bench_synthetic.json``). Rates are single
process; the machine's load average is recorded with them because other jobs on shared cores slow them down.
The learnability check trains a small ViT (patch 8, 4 blocks of width 128, bf16 autocast, a small upsampling head) from scratch
on source-domain train images and reports mIoU on held-out source val images and on each condition, i.e. the
source accuracy and retention a tiny model gets out of the data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlt_perception.labels import CITYSCAPES_CLASSES  # noqa: E402
from vlt_training.synthetic import render_scene  # noqa: E402
from vlt_training.synthetic.benchmark import generate_benchmark, image_rng  # noqa: E402
from vlt_training.synthetic.conditions import apply_condition, list_conditions  # noqa: E402


def bench_render(n: int, height: int, width: int) -> dict:
    render_scene(image_rng(0, "warmup", 0), height, width)
    start, cpu = time.perf_counter(), time.process_time()
    scenes = [render_scene(image_rng(0, "bench", i), height, width) for i in range(n)]
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    per_condition, per_condition_cpu = {}, {}
    m = max(n // 3, 1)
    for name in list_conditions():
        start, cpu = time.perf_counter(), time.process_time()
        for i, s in enumerate(scenes[:m]):
            apply_condition(name, s.image, image_rng(0, name, i), depth=s.depth)
        per_condition[name] = (time.perf_counter() - start) / m * 1000
        per_condition_cpu[name] = (time.process_time() - cpu) / m * 1000
    return {"images": n, "images_per_s": n / seconds, "ms_per_image": seconds / n * 1000,
            "images_per_cpu_s": n / cpu_seconds, "cpu_ms_per_image": cpu_seconds / n * 1000,
            "condition_cpu_ms_per_image": per_condition_cpu,
            "condition_ms_per_image": per_condition,
            "things_per_image": float(np.mean([len(s.objects) for s in scenes]))}


def bench_write(n: int, height: int, width: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        generate_benchmark(tmp, num_train=n, num_val=0, height=height, width=width, conditions=[])
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.png"))
    return {"images": n, "images_per_s": n / seconds, "images_per_cpu_s": n / cpu_seconds,
            "mb_per_image": size / n / 1e6}


def learnability(seconds: float, num_train: int, num_val: int, height: int, width: int, seed: int) -> dict:
    """Train a small ViT on source train images for ``seconds``; mIoU on source val and every condition."""
    import torch
    from torch import nn

    from vlt_perception.metrics.segmentation import ConfusionMatrix

    torch.manual_seed(seed)

    def render(split: str, n: int):
        scenes = [render_scene(image_rng(seed, split, i), height, width) for i in range(n)]
        return scenes, np.stack([s.train_ids for s in scenes])

    def to_tensor(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # B, 3, H, W
        return (x - 0.45) / 0.25

    train_scenes, train_y = render("train", num_train)
    train_x = to_tensor(np.stack([s.image for s in train_scenes]))
    train_y = torch.from_numpy(train_y).long()
    val_scenes, val_y = render("val", num_val)
    sets = {"source": np.stack([s.image for s in val_scenes])}
    for name in list_conditions():
        sets[name] = np.stack([apply_condition(name, s.image, image_rng(seed, f"val/{name}", i), depth=s.depth)
                               for i, s in enumerate(val_scenes)])

    class SmallViT(nn.Module):
        def __init__(self, dim=128, depth=4, patch=8, classes=19):
            super().__init__()
            self.patch = patch
            self.embed = nn.Conv2d(3, dim, patch, patch)
            self.pos = nn.Parameter(torch.zeros(1, dim, height // patch, width // patch))
            layer = nn.TransformerEncoderLayer(dim, 4, dim * 4, dropout=0.0, batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.head = nn.Sequential(nn.ConvTranspose2d(dim, 48, 4, 4), nn.GELU(), nn.Conv2d(48, classes, 1))

        def forward(self, x):
            t = self.embed(x) + self.pos  # B, D, H/8, W/8
            b, d, h, w = t.shape
            t = self.blocks(t.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, d, h, w)
            return nn.functional.interpolate(self.head(t), scale_factor=self.patch / 4, mode="bilinear")  # B, C, H, W

    model = SmallViT()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss(ignore_index=255)

    def evaluate(images: np.ndarray) -> ConfusionMatrix:
        cm = ConfusionMatrix(len(CITYSCAPES_CLASSES))
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            pred = torch.cat([model(to_tensor(images[i:i + 8])).float().argmax(1) for i in range(0, len(images), 8)])
        model.train()
        cm.update(pred.numpy(), val_y)
        return cm

    # The budget is process CPU time, so a loaded shared machine gives the same training as an idle one
    # (two threads: 360 CPU-s is about three minutes of wall time on two free cores). Source mIoU is also
    # measured at each quarter of the budget (evaluation time not counted) to show the learning curve.
    used, step, curve = 0.0, 0, []
    wall = time.perf_counter()
    model.train()
    while used < seconds:
        tick = time.process_time()
        idx = torch.randint(0, num_train, (8,))
        x, y = train_x[idx], train_y[idx]
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        for group in opt.param_groups:  # linear warm-up over the first 50 steps
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 50)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # AMX: the CPU fast path on these machines
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        used += time.process_time() - tick
        if used >= seconds * (len(curve) + 1) / 4:
            curve.append({"cpu_seconds": used, "steps": step, "source_miou": evaluate(sets["source"]).miou()})
            print(f"  {used:.0f} CPU-s, {step} steps: source mIoU {curve[-1]['source_miou']:.3f}", flush=True)
    result = {"cpu_seconds": used, "wall_seconds": time.perf_counter() - wall, "steps": step, "batch": 8,
              "final_loss": float(loss.detach()), "curve": curve, "miou": {}}
    for name, images in sets.items():
        cm = evaluate(images)
        result["miou"][name] = cm.miou()
        if name == "source":
            result["source_per_class_iou"] = {
                k: v for k, v in cm.as_dict(CITYSCAPES_CLASSES)["per_class_iou"].items() if v is not None}
    result["retention"] = {k: v / result["miou"]["source"] for k, v in result["miou"].items() if k != "source"}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=40, help="images rendered for the speed figures")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--learnability", type=float, default=0.0, metavar="CPU_SECONDS",
                   help="also train a small ViT for this much process CPU time at 128x256 (needs torch)")
    p.add_argument("--json", default="outputs/bench_synthetic.json")
    args = p.parse_args(argv)

    report = {"machine": {"cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
                          "python": platform.python_version()},
              "resolution": [args.height, args.width]}
    report["render"] = bench_render(args.images, args.height, args.width)
    r = report["render"]
    print(f"load average {report['machine']['load_avg_1min']:.1f} on {os.cpu_count()} cores")
    print(f"render {args.height}x{args.width}: {r['images_per_s']:.1f} images/s wall ({r['ms_per_image']:.1f} ms), "
          f"{r['images_per_cpu_s']:.1f} images per CPU-second ({r['cpu_ms_per_image']:.1f} ms), "
          f"{r['things_per_image']:.1f} things/image")
    for name, ms in r["condition_ms_per_image"].items():
        print(f"  {name:>10}: {ms:.1f} ms/image wall, {r['condition_cpu_ms_per_image'][name]:.1f} ms CPU")
    report["write"] = bench_write(max(args.images // 4, 1), args.height, args.width)
    print(f"render + write Cityscapes PNGs: {report['write']['images_per_s']:.1f} images/s wall, "
          f"{report['write']['images_per_cpu_s']:.1f} per CPU-second, {report['write']['mb_per_image']:.2f} MB/image")
    if args.learnability > 0:
        report["learnability"] = learnability(args.learnability, 400, 40, 128, 256, seed=0)
        lr = report["learnability"]
        print(f"small ViT, {lr['steps']} steps x 8 in {args.learnability:.0f} CPU-s ({lr['wall_seconds']:.0f} s wall) "
              "at 128x256: "
              + ", ".join(f"{k} mIoU {v:.3f}" for k, v in lr["miou"].items()))
        print("  source per-class IoU: " + ", ".join(f"{k} {v:.2f}" for k, v in lr["source_per_class_iou"].items()))
    report["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
