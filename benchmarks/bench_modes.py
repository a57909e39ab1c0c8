"""The four-way ablation: full fine-tuning, frozen tower, Rein, FAMix, same tower, data, budget and evaluation.

    python benchmarks/bench_modes.py --out outputs/bench_modes --pretrained PATH_TO_TINY_CLIP \
        [--config config/train/tiny_cpu.yaml] [--seeds 0,1] [--max-iters 300] [--set key=value ...]

Each (mode, seed) trains with the trainer from the same config (``model.mode`` and ``train.seed`` changed, nothing
else) into ``OUT/runs/<mode>_s<seed>``, then is evaluated by the evaluation runner on the config's
``eval.datasets``: the held-out source split (``eval.source``) and the shifted conditions. Settings are chosen on the
source split only; the shifted conditions are reported, never tuned on.

Writes ``OUT/bench_modes.json`` (every run and the per-mode mean and spread), ``OUT/bench_modes.md`` (one table:
per-condition mIoU, rPD, trainable parameters, training time, mean +- standard deviation over seeds) and
``OUT/bench_modes.png`` (bar chart). An existing run folder is resumed / reused, so an interrupted ablation
continues where it stopped. FAMix's training time includes its style mining, done once (``OUT/famix_styles.
safetensors``) and reused by the other seeds.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlt_perception.atomic import atomic_write_text  # noqa: E402
from vlt_training.config import MODEL_MODES, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_one(config: str, overrides: list[str], mode: str, seed: int, run_dir: Path) -> dict:
    """Train one (mode, seed) and evaluate it; returns a flat row of figures."""
    from vlt_training.training.mode_setup import mode_summary
    from vlt_training.training.trainer import train
    from vlt_training.tasks.runner import evaluate, write_json

    cfg = load_config(config, [*overrides, f"model.mode={mode}", f"train.seed={seed}"])
    start = time.perf_counter()
    result = train(cfg, run_dir, progress=False)
    seconds = time.perf_counter() - start
    model = result.model.eval()
    report = evaluate(model, cfg, device=cfg.train.device if cfg.train.device != "auto" else "cpu")
    write_json(report, run_dir / "report.json")
    metric = report["primary_metric"]
    row = {"mode": mode, "seed": seed, "train_seconds": seconds, "steps": result.step, **mode_summary(model)}
    source = report["source"]
    row[f"{source}/{metric}"] = report["datasets"][source]["overall"][metric]
    for label, res in report["datasets"].items():
        if label == source:
            continue
        row[f"{label}/{metric}"] = res["overall"][metric]
        row[f"{label}/retention"] = report["retention"][label]["overall"]
        for cond, m in res["conditions"].items():
            row[f"{label}:{cond}/{metric}"] = m[metric]
    return row


def summarise(rows: list[dict]) -> dict:
    """Per mode: mean and sample standard deviation (0 for one seed) of every numeric figure."""
    out: dict = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        keys = [k for k, v in mine[0].items() if isinstance(v, (int, float)) and k != "seed"]
        out[mode] = {}
        for k in keys:
            vals = np.array([float(r[k]) for r in mine if r.get(k) is not None and math.isfinite(float(r[k]))])
            if len(vals):
                out[mode][k] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                                "n": int(len(vals))}
    return out


def _pm(stat: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if not stat:
        return "-"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def markdown(summary: dict, seeds: list[int]) -> str:
    """One table: score columns (mIoU in %, rPD = 100 x target / source mIoU), trainable parameters, training
    time; then the ranking with each mode's mean ± standard deviation over seeds."""
    modes = list(summary)
    score_keys = [k for k in summary[modes[0]] if "/" in k]
    # the JSON keeps rPD's fraction under ".../retention" (older results read it); the table shows rPD
    head = ["mode", *(k.replace("/retention", "/rPD") for k in score_keys), "trainable params", "train time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for mode in modes:
        s = summary[mode]
        cells = [mode, *(_pm(s.get(k)) for k in score_keys),
                 f"{s['trainable_params']['mean']:,.0f} of {s['total_params']['mean']:,.0f}",
                 _pm(s.get("train_seconds"), 1.0, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    target = [k for k in score_keys if "/retention" not in k and ":" not in k][1:]
    if target:
        key = target[0]
        order = sorted(modes, key=lambda m: -summary[m].get(key, {"mean": -1})["mean"])
        lines.append("")
        lines.append(f"Ranking by mean {key} over seeds {seeds} (mean ± std): "
                     + " > ".join(f"{m} ({_pm(summary[m].get(key))})" for m in order) + ".")
    return "\n".join(lines) + "\n"


def bar_chart(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary)
    keys = [k for k in summary[modes[0]] if "/" in k and "/retention" not in k and ":" not in k]
    width = 0.8 / max(len(keys), 1)
    fig, ax = plt.subplots(figsize=(2 + 1.5 * len(modes), 3.5))
    for i, key in enumerate(keys):
        means = [100 * summary[m].get(key, {"mean": 0})["mean"] for m in modes]
        stds = [100 * summary[m].get(key, {"std": 0})["std"] for m in modes]
        ax.bar(np.arange(len(modes)) + i * width, means, width, yerr=stds, capsize=3, label=key)
    ax.set_xticks(np.arange(len(modes)) + width * (len(keys) - 1) / 2, modes)
    ax.set_ylabel("score (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default=str(ROOT / "config/train/tiny_cpu.yaml"))
    parser.add_argument("--pretrained", default=None,
                        help="open_clip checkpoint of the tower (the project's pretrained tiny CLIP); default: "
                             "the config's model.pretrained")
    parser.add_argument("--modes", default=",".join(MODEL_MODES))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--max-iters", type=int, default=None, help="the same budget for every mode")
    parser.add_argument("--set", action="append", default=[], help="extra dotted config override (repeatable)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # FAMix's style bank depends on the tower, data and mining settings, not on train.seed: mine it once
    overrides = [f"model.mode_options.famix.cache={out.resolve() / 'famix_styles.safetensors'}", *args.set]
    if args.pretrained:
        overrides.append(f"model.pretrained={args.pretrained}")
    if args.max_iters:
        overrides.append(f"train.max_iters={args.max_iters}")
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODEL_MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; expected {list(MODEL_MODES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    rows = []
    for mode in modes:
        for seed in seeds:
            row = run_one(args.config, overrides, mode, seed, out / "runs" / f"{mode}_s{seed}")
            print(f"{mode} seed {seed}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)), flush=True)
            rows.append(row)
    summary = summarise(rows)
    from vlt_training.tasks.runner import write_json

    write_json({"config": args.config, "overrides": overrides, "seeds": seeds, "runs": rows, "summary": summary},
               out / "bench_modes.json")
    table = markdown(summary, seeds)
    atomic_write_text(out / "bench_modes.md", table)
    bar_chart(summary, out / "bench_modes.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
