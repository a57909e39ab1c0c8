"""benchmarks/plot_det_budget.py draws the committed measurements (docs/figures/det_budget.json) as a PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_committed_measurements_plot(tmp_path):
    data = json.loads((REPO / "docs/figures/det_budget.json").read_text())
    assert len({r["series"] for r in data["runs"]}) >= 2
    assert all(0.0 <= r["AP50"] <= 1.0 and r["train_s"] > 0 for r in data["runs"])
    out = tmp_path / "det_budget.png"
    done = subprocess.run([sys.executable, "benchmarks/plot_det_budget.py", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
