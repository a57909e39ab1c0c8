"""The pretrain command through the trainer: smoke run to an open_clip folder, learning, resume after SIGKILL."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlt_training.config import load_config

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
KILL_AT_CHECKPOINT = REPO / "test" / "helpers" / "kill_at_checkpoint.py"
CONFIG = "config/pretrain/tiny_clip.yaml"
# 32 x 64 pairs (2 x 4 patches) keep every run to seconds; the tower is the same, only its input is smaller.
SMALL = ["model.overrides={clip_model: vlt-tiny-clip, vision_cfg_overrides: {image_size: [32, 64]}}",
         "data.crop_size=[32,64]", "pretrain.corpus.height=32", "pretrain.corpus.width=64",
         "train.num_workers=0", "pretrain.export_fp16=false"]


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def pretrain_cmd(out: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "vlt_training.cli.pretrain", "--config", CONFIG, "--out", str(out), "--no-progress",
            *SMALL, *overrides]


@pytest.mark.cli
def test_smoke_run_writes_a_folder_open_clip_loads(tmp_path):
    import open_clip
    import torch

    out = tmp_path / "run"
    done = subprocess.run(pretrain_cmd(out, "train.max_iters=3", "train.batch_size=4", "pretrain.corpus.num_train=8",
                                       "pretrain.corpus.num_heldout=8"),
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokens = open_clip.get_tokenizer(f"local-dir:{out}")(["a foggy street with two cars"])
    assert tokens.shape == (1, 32)
    with torch.no_grad():
        assert clip.encode_image(torch.randn(1, 3, 32, 64)).shape == (1, 64)
        assert clip.encode_text(tokens).shape == (1, 64)
    report = json.loads((out / "report.json").read_text())
    assert report["retrieval"]["chance"]["R@1"] == pytest.approx(1 / 8)
    assert set(report["zero_shot_presence"]["per_class"]) >= {"car", "bicycle", "traffic light"}
    assert "| image to text |" in (out / "report.md").read_text()
    provenance = json.loads((out / "open_clip_config.json").read_text())["vlt_provenance"]
    assert provenance["step"] == 3 and provenance["command"].startswith("python -m vlt_training.cli.pretrain")
    assert [r["step"] for r in read_log(out / "log.csv")] == ["1", "3"]


def test_contrastive_loss_falls_well_below_log_batch(tmp_path):
    from vlt_training.training.trainer import train

    batch = 16
    cfg = load_config(CONFIG, [*SMALL, "train.max_iters=100", f"train.batch_size={batch}", "train.log_interval=10",
                               "train.checkpoint_interval=1000", "pretrain.corpus.num_train=32",
                               "pretrain.corpus.resample_look=false", "schedule.warmup_iters=10", "optim.lr=2e-3"])
    start = time.perf_counter()
    train(cfg, tmp_path / "run", progress=False)
    losses = [float(r["loss_contrastive"]) for r in read_log(tmp_path / "run" / "log.csv")]
    print(f"contrastive loss {losses[0]:.3f} -> {losses[-1]:.3f} (log {batch} = {math.log(batch):.3f}) "
          f"in {time.perf_counter() - start:.0f} s")
    assert losses[0] > 0.8 * math.log(batch)
    assert losses[-1] < 0.5 * math.log(batch)


@pytest.mark.cli
def test_killed_pretraining_resumes_and_continues_the_loss_curve(tmp_path):
    from vlt_training.training.trainer import train

    overrides = ["train.max_iters=10", "train.batch_size=4", "train.checkpoint_interval=3", "train.log_interval=1",
                 "train.keep_last=10", "pretrain.corpus.num_train=12", "pretrain.corpus.num_heldout=4",
                 "pretrain.report=false"]
    reference = tmp_path / "reference"
    train(load_config(CONFIG, [*SMALL, *overrides]), reference, progress=False)
    ref = {int(r["step"]): r for r in read_log(reference / "log.csv")}

    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    # SIGKILL right after the step-6 checkpoint is on disk (test/helpers/kill_at_checkpoint.py).
    killed = subprocess.run([sys.executable, str(KILL_AT_CHECKPOINT), "6", *pretrain_cmd(out, *overrides)[2:]],
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            timeout=600)
    assert killed.returncode == -9, f"pretraining was not killed at step 6: {killed.stderr[-3000:]}"
    saved = sorted(int(p.name[5:]) for p in ckpts.iterdir() if p.name.startswith("step_"))
    assert saved == [3, 6]
    before = {int(r["step"]): r for r in read_log(out / "log.csv")}

    resumed = subprocess.run(pretrain_cmd(out, *overrides), cwd=REPO, env=ENV, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {saved[-1]}" in resumed.stdout, resumed.stdout
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 11))  # no gap, no duplicate
    for r in rows:
        step = int(r["step"])
        if step <= saved[-1]:
            assert r == before[step]  # the pre-kill part of the curve is untouched
        # the same pairs, looks and captions as an uninterrupted run: the same losses
        assert float(r["loss_contrastive"]) == pytest.approx(float(ref[step]["loss_contrastive"]), rel=1e-5), step
    assert (out / "open_clip_model.safetensors").is_file()


@pytest.mark.cli
def test_vision_only_control_runs_through_the_same_command(tmp_path):
    import open_clip

    out = tmp_path / "vision"
    cmd = pretrain_cmd(out, "train.max_iters=2", "train.batch_size=4", "pretrain.corpus.num_train=8",
                       "pretrain.corpus.num_heldout=8")
    cmd[cmd.index(CONFIG)] = "config/pretrain/tiny_vision.yaml"
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loss_bce" in read_log(out / "log.csv")[0]
    report = json.loads((out / "report.json").read_text())
    assert "car" in report["head_auroc"] and "condition=night" in report["head_auroc"]
    assert "mean AUROC" in (out / "report.md").read_text()
    open_clip.create_model(f"local-dir:{out}")  # the same open_clip folder as the vision-language arm
