"""benchmarks/plot_det_budget.py draws the committed measurements (docs/figures/det_budget.json) as a PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[2]


def load_plot_module():
    return load_benchmark("plot_det_budget")


def test_the_figure_draws_every_series_with_its_measurements():
    data = json.loads((REPO / "docs/figures/det_budget.json").read_text())
    series = list(dict.fromkeys(r["series"] for r in data["runs"]))
    assert len(series) >= 2
    assert all(0.0 <= r["AP50"] <= 1.0 and r["train_s"] > 0 for r in data["runs"])
    fig = load_plot_module().draw(data)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in series:
        runs = sorted((r for r in data["runs"] if r["series"] == name), key=lambda r: r["train_s"])
        x, y = lines[name].get_data()
        np.testing.assert_allclose(x, [r["train_s"] / 60 for r in runs])
        np.testing.assert_allclose(y, [100 * r["AP50"] for r in runs])
    target = [line for line in ax.get_lines() if line.get_label().startswith("target")]
    assert target and np.allclose(target[0].get_ydata(), 100 * data["target_AP50"])
    assert [t.get_text() for t in ax.get_legend().get_texts()][: len(series)] == series


def test_the_command_writes_a_png(tmp_path):
    out = tmp_path / "det_budget.png"
    done = subprocess.run([sys.executable, "benchmarks/plot_det_budget.py", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
