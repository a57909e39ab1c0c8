"""Plot docs/figures/det_budget.json (the tiny VLTDet's measured AP50 against training time) as det_budget.png.

    python benchmarks/plot_det_budget.py [--json docs/figures/det_budget.json] [--out docs/figures/det_budget.png]

The JSON holds the measured runs of docs/results.md (2026-12-02 to 2026-12-04): each was one training run plus
one held-out evaluation with the commands given there; this script only draws them. Each series names its VM and its
held-out set, because seconds are only comparable within one VM.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIGURES = Path("docs/figures")


def plot(data: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    fig = draw(data)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def draw(data: dict):
    """The figure: one series per ``series`` of the runs (AP50 in % against training minutes), the target line
    and the demo's training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    for series, marker in zip(dict.fromkeys(r["series"] for r in data["runs"]), "os^Dv*P"):
        runs = sorted((r for r in data["runs"] if r["series"] == series), key=lambda r: r["train_s"])
        minutes, ap50 = [r["train_s"] / 60 for r in runs], [100 * r["AP50"] for r in runs]
        over_seeds = all("seed" in r for r in runs)  # one recipe repeated: its spread, not a trend
        ax.plot(minutes, ap50, marker=marker, ls="none" if over_seeds else "-", label=series)
        if over_seeds:
            continue  # the legend names the series; iteration labels would pile up on one spot
        for run, x, y in zip(runs, minutes, ap50):
            ax.annotate(f"{run['iters']} it", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.axhline(100 * data["target_AP50"], color="grey", ls="--", lw=1, label="target (AP50 50)")
    ax.axvline(data["demo_detection_s"] / 60, color="tab:red", ls=":", lw=1,
               label="the demo's detection training (2026-12-03, fast VM)")
    ax.set_xlabel("detection training, minutes (idle 2-core CPU)")
    ax.set_ylabel("held-out source AP50 (%)")
    ax.set_title("Tiny VLTDet: AP50 against training time")
    ax.set_ylim(0, 65)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=FIGURES / "det_budget.json")
    parser.add_argument("--out", type=Path, default=FIGURES / "det_budget.png")
    args = parser.parse_args(argv)
    plot(json.loads(args.json.read_text()), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
