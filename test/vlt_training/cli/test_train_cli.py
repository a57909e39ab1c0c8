"""CLI smoke tier: the real train / evaluate commands on the tiny config and the synthetic benchmark."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
KILL_AT_CHECKPOINT = REPO / "test" / "helpers" / "kill_at_checkpoint.py"

# 4 training images at the tiny config's 128x256, no augmentation, evaluated on those same images: an overfitting
# check. Not smaller: Mask2Former predicts masks at stride 4, and at 64x128 even the ground truth pooled to
# stride 4 and upsampled scores only ~94% pixel accuracy on these scenes (~97.5% at 128x256).
OVERFIT = [
    "data.synthetic.num_train=4", "data.synthetic.num_val=1", "data.synthetic.conditions=[fog]",
    "data.augment.resize_ratio=[1.0,1.0]", "data.augment.flip_prob=0.0", "data.augment.photometric=false",
    "data.augment.cat_max_ratio=1.0", "optim.lr=2e-3", "schedule.warmup_iters=10",
    "train.max_iters=200", "train.checkpoint_interval=1000", "train.log_interval=20",
    "eval.datasets=[{name: cityscapes, root: cityscapes, split: train, label: train}]", "eval.source=train",
]


def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.cli
@pytest.mark.timeout(2400)  # ~2-3 min on an idle 2-core machine; the bound only catches a hang, even under load
def test_tiny_config_overfits_four_synthetic_images(tmp_path):
    start = time.perf_counter()
    train = run("vlt_training.cli.train", "--config", "config/train/tiny_cpu.yaml", "--out", str(tmp_path / "run"),
                "--no-progress", f"data.root={tmp_path / 'data'}", *OVERFIT)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-4000:]
    elapsed = time.perf_counter() - start
    report_path = tmp_path / "report.json"
    evaluate = run("vlt_training.cli.evaluate", "--checkpoint", str(tmp_path / "run"), "--out", str(report_path))
    assert evaluate.returncode == 0, evaluate.stderr[-4000:]
    report = json.loads(report_path.read_text())
    overall = report["datasets"]["train"]["overall"]
    print(f"overfit: pixel accuracy {overall['pixel_accuracy']:.4f}, mIoU {overall['mIoU']:.4f}, "
          f"training {elapsed:.0f} s")
    assert overall["pixel_accuracy"] >= 0.95, evaluate.stdout
    assert overall["num_images"] == 4 and "road" in overall["per_class_iou"]
    assert "IoU per class" in evaluate.stdout and "train" in evaluate.stdout
    log = read_log(tmp_path / "run" / "log.csv")
    assert float(log[-1]["loss"]) < float(log[0]["loss"]) / 3


@pytest.mark.cli
def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "vlt_training.cli.train", "--config", "config/train/tiny_cpu.yaml",
           "--out", str(tmp_path / "run"), "--no-progress", f"data.root={tmp_path / 'data'}",
           "data.synthetic.num_train=4", "data.synthetic.num_val=1", "data.synthetic.height=32",
           "data.synthetic.width=64", "data.synthetic.conditions=[fog]", "data.crop_size=[32,64]",
           "model.overrides={train_num_points: 64}", "train.max_iters=12", "train.checkpoint_interval=3",
           "train.log_interval=1", "train.keep_last=10"]
    ckpts = tmp_path / "run" / "checkpoints"
    # SIGKILL right after the step-6 checkpoint is on disk (test/helpers/kill_at_checkpoint.py).
    killed = subprocess.run([sys.executable, str(KILL_AT_CHECKPOINT), "6", *cmd[2:]], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
    assert killed.returncode == -9, f"training was not killed at step 6: {killed.stderr[-3000:]}"
    saved = sorted(int(p.name[5:]) for p in ckpts.iterdir() if p.name.startswith("step_"))
    assert saved == [3, 6]
    before = {int(r["step"]): r for r in read_log(tmp_path / "run" / "log.csv")}

    resumed = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"at step {saved[-1]}" in resumed.stdout, resumed.stdout
    rows = read_log(tmp_path / "run" / "log.csv")
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(1, 13))  # continues the curve: no gap, no duplicate
    for r in rows:
        if int(r["step"]) <= saved[-1]:
            assert r == before[int(r["step"])]  # the pre-kill part of the curve is untouched
    final = sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step_"))
    assert final[-1] == "step_00000012"
