"""benchmarks/bench_pretraining.py at miniature size: two arms, two seeds, a few steps each, real commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_PRETRAIN = ["model.overrides={clip_model: vlt-tiny-clip, vision_cfg_overrides: {image_size: [32, 64]}}",
                 "data.crop_size=[32,64]", "pretrain.corpus.height=32", "pretrain.corpus.width=64",
                 "pretrain.corpus.num_train=8", "pretrain.corpus.num_heldout=4", "train.max_iters=2",
                 "train.batch_size=4", "train.num_workers=0", "pretrain.report=false"]
TINY_FINETUNE = ["data.synthetic.num_train=2", "data.synthetic.num_val=1", "data.synthetic.height=32",
                 "data.synthetic.width=64", "data.synthetic.conditions=[night]", "data.crop_size=[32,64]",
                 "eval.crop_size=[32,64]", "model.overrides={train_num_points: 64}", "train.max_iters=2",
                 "train.batch_size=2", "train.checkpoint_interval=2"]


@pytest.mark.cli
def test_miniature_comparison_writes_json_markdown_and_chart(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_pretraining.py", "--out", str(out), "--arms", "random", "vl_no_night",
         "--seeds", "0", "1", "--data-root", str(tmp_path / "data"), "--pretrain-overrides", *TINY_PRETRAIN,
         "--finetune-overrides", *TINY_FINETUNE],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"random", "vl_no_night"}
    for arm in results["runs"]:
        assert set(results["runs"][arm]) == {"0", "1"}
        row = results["table"][arm]
        assert row["source"]["n"] == 2 and row["night"]["n"] == 2 and "night" in row["retention"]
    # the vision-language arm really fine-tuned from its own tower (one per seed), random init from none
    towers = sorted(p.name for p in (out / "pretrain").iterdir())
    assert towers == ["vl_no_night_s0", "vl_no_night_s1"]
    config = (out / "finetune" / "vl_no_night_s1_lr0.001" / "config.yaml").read_text()
    assert "vl_no_night_s1" in config
    assert "| random |" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 1000
