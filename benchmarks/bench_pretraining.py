"""The paper's central comparison in miniature: does vision-language pretraining make tiny VLTSeg more robust?

    python benchmarks/bench_pretraining.py --out outputs/bench_pretraining            # 2 seeds, all four arms
    python benchmarks/bench_pretraining.py --out /tmp/b --seeds 0 --lr-grid 1e-3 2e-3 \\
        --pretrain-overrides train.max_iters=600 --finetune-overrides train.max_iters=300

Tiny VLTSeg is fine-tuned on the procedural benchmark's source domain with the same schedule from

- ``random``: random init (the tower as every figure of the project so far);
- ``vision``: the vision-only control (``config/pretrain/tiny_vision.yaml``: classes present + appearance BCE);
- ``vl``: the vision-language tower (``config/pretrain/tiny_clip.yaml``, ClipLoss on captioned scenes);
- ``vl_no_night``: the vision-language tower whose corpus left out every dark / night-like look
  (``config/pretrain/tiny_clip_no_night.yaml``): does night retention still improve?

Each pretraining runs per seed (``train.seed`` and the corpus seed both set to it), with the project's own commands
(``vlt_training.cli.pretrain`` / ``train`` / ``evaluate``); existing run folders are resumed / reused, so an
interrupted comparison continues where it stopped. The fine-tuning learning rate of every arm is chosen from
``--lr-grid`` on the source domain's held-out val split (first seed), never on a shifted condition. Writes
``results.json``, ``results.md`` (per-condition mIoU, retention, mean +- spread over seeds) and ``results.png``
(bar chart) under ``--out``. Report whatever ranking comes out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARMS = {  # arm -> pretraining config (None: random init)
    "random": None,
    "vision": "config/pretrain/tiny_vision.yaml",
    "vl": "config/pretrain/tiny_clip.yaml",
    "vl_no_night": "config/pretrain/tiny_clip_no_night.yaml",
}


def _run(args: list[str], log: Path) -> None:
    """Run one project command (``python -m ...``), its output appended to ``log``; fail naming the log."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(args)}\n")
        fh.flush()
        done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:1])} failed (exit {done.returncode}); see {log}")


def pretrain(arm: str, seed: int, out: Path, overrides: list[str]) -> Path | None:
    """The pretrained open_clip folder of ``arm`` for ``seed`` (None for random init)."""
    config = ARMS[arm]
    if config is None:
        return None
    folder = out / "pretrain" / f"{arm}_s{seed}"
    if not (folder / "open_clip_model.safetensors").is_file():
        _run(["vlt_training.cli.pretrain", "--config", config, "--out", str(folder), "--no-progress",
              f"train.seed={seed}", f"pretrain.corpus.seed={seed}", *overrides], out / "logs" / f"{folder.name}.log")
    return folder


def finetune(arm: str, seed: int, lr: float, tower: Path | None, out: Path, args) -> dict:
    """Fine-tune tiny VLTSeg from ``tower`` and evaluate it; returns the evaluate CLI's report."""
    name = f"{arm}_s{seed}_lr{lr:g}"
    run = out / "finetune" / name
    report = run / "report.json"
    if not report.is_file():
        pretrained = "null" if tower is None else str(tower.resolve())
        log = out / "logs" / f"{name}.log"
        _run(["vlt_training.cli.train", "--config", args.finetune_config, "--out", str(run), "--no-progress",
              f"train.seed={seed}", f"optim.lr={lr}", f"model.pretrained={pretrained}",
              f"data.root={args.data_root}", *args.finetune_overrides], log)
        _run(["vlt_training.cli.evaluate", "--checkpoint", str(run), "--out", str(report)], log)
    return json.loads(report.read_text())


def summarise(report: dict) -> dict:
    """``{"source": mIoU, <condition>: mIoU ..., "retention": {<condition>: r}}`` from an evaluate report."""
    source = report["source"]
    out = {"source": report["datasets"][source]["overall"]["mIoU"]}
    retention = {}
    for label, result in report["datasets"].items():
        if label == source:
            continue
        for condition, metrics in result["conditions"].items():
            out[condition] = metrics["mIoU"]
            retention[condition] = report["retention"][label]["conditions"][condition]
    out["retention"] = retention
    return out


def _stats(values: list[float]) -> dict:
    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def aggregate(runs: dict[str, dict[int, dict]]) -> dict:
    """Per arm and metric: mean, std (over seeds), min, max."""
    table = {}
    for arm, per_seed in runs.items():
        seeds = list(per_seed.values())
        keys = [k for k in seeds[0] if k != "retention"]
        table[arm] = {k: _stats([s[k] for s in seeds]) for k in keys}
        table[arm]["retention"] = {c: _stats([s["retention"][c] for s in seeds]) for c in seeds[0]["retention"]}
    return table


def markdown(results: dict) -> str:
    table = results["table"]
    arms = list(table)
    columns = [k for k in table[arms[0]] if k != "retention"]
    conditions = list(table[arms[0]]["retention"])

    def cell(s: dict) -> str:
        return "n/a" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"

    lines = [f"Tiny VLTSeg fine-tuned with the same schedule from each initialisation; seeds {results['seeds']}; "
             "mean ± std over seeds (mIoU).", "",
             "| init | lr (chosen on source val) | " + " | ".join(columns) + " |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for arm in arms:
        lines.append(f"| {arm} | {results['lr'][arm]:g} | " + " | ".join(cell(table[arm][c]) for c in columns) + " |")
    lines += ["", "Retention (condition mIoU / source mIoU):", "",
              "| init | " + " | ".join(conditions) + " |", "| --- | " + " | ".join("---" for _ in conditions) + " |"]
    for arm in arms:
        lines.append(f"| {arm} | " + " | ".join(cell(table[arm]["retention"][c]) for c in conditions) + " |")
    lines += ["", "Per seed (mIoU):", "", "| init | seed | " + " | ".join(columns) + " |",
              "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for arm in arms:
        for seed, s in results["runs"][arm].items():
            lines.append(f"| {arm} | {seed} | " + " | ".join(
                "n/a" if s[c] is None else f"{s[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results["table"]
    arms = list(table)
    columns = [k for k in table[arms[0]] if k != "retention"]
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(columns), 3.2))
    for i, arm in enumerate(arms):
        means = [table[arm][c]["mean"] or 0.0 for c in columns]
        stds = [table[arm][c]["std"] or 0.0 for c in columns]
        ax.bar(np.arange(len(columns)) + (i - (len(arms) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=arm)
    ax.set_xticks(np.arange(len(columns)), columns)
    ax.set_ylabel("mIoU")
    ax.set_title(f"tiny VLTSeg by initialisation (seeds {results['seeds']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/bench_pretraining")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--lr-grid", type=float, nargs="+", default=[1e-3],
                        help="fine-tuning learning rates; each arm's is chosen on source val (first seed)")
    parser.add_argument("--finetune-config", default="config/train/tiny_cpu.yaml")
    parser.add_argument("--data-root", default="data/synthetic_tiny", help="the benchmark (rendered when missing)")
    parser.add_argument("--pretrain-overrides", nargs="*", default=[])
    parser.add_argument("--finetune-overrides", nargs="*", default=[])
    args = parser.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()

    from vlt_perception.atomic import atomic_write_text

    lr, runs = {}, {}
    for arm in args.arms:
        towers = {seed: pretrain(arm, seed, out, args.pretrain_overrides) for seed in args.seeds}
        first = args.seeds[0]
        if len(args.lr_grid) > 1:  # recipe selection on the source domain's held-out split only
            scores = {x: summarise(finetune(arm, first, x, towers[first], out, args))["source"] for x in args.lr_grid}
            lr[arm] = max(scores, key=lambda x: -1.0 if scores[x] is None else scores[x])
        else:
            lr[arm] = args.lr_grid[0]
        runs[arm] = {seed: summarise(finetune(arm, seed, lr[arm], towers[seed], out, args)) for seed in args.seeds}
    results = {"seeds": args.seeds, "lr_grid": args.lr_grid, "lr": lr, "runs": runs, "table": aggregate(runs),
               "finetune_config": args.finetune_config, "finetune_overrides": args.finetune_overrides,
               "pretrain_overrides": args.pretrain_overrides, "wall_s": time.perf_counter() - start,
               "load_average": os.getloadavg()}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "results.md", markdown(results))
    bar_chart(results, out / "results.png")
    print(markdown(results))
    print(f"results: {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
