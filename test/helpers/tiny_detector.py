"""Train the tiny VLTDet on a few synthetic images through the real CLI; returns the checkpoint folder.

Shared by the VLTDet overfit test (test/vlt_training/cli/test_train_det.py) and the ROS detection-node tests,
which need a detector that really finds the synthetic benchmark's objects. Use it from a session fixture::

    from helpers.tiny_detector import train_tiny_detector

    @pytest.fixture(scope="session")
    def tiny_detector(tmp_path_factory):
        return train_tiny_detector(tmp_path_factory.mktemp("tiny_det"))

The run is ``python -m vlt_training.cli.train --config config/train/tiny_det_cpu.yaml`` with
:data:`OVERFIT_OVERRIDES`: the benchmark rendered into ``<out>/synthetic``, 4 training images, no augmentation,
evaluation on those same 4 images (objects of at least :data:`MIN_BOX_AREA` px). Calling it again on the same
folder returns the existing checkpoint at once (the trainer resumes and finds nothing left to do).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "train" / "tiny_det_cpu.yaml"
NUM_IMAGES = 4
MAX_ITERS = 100
# Objects below 10 x 10 px (many of the benchmark's distant cars at 128 x 256) cannot be matched by any cell of
# the tiny model's stride-8 grid; like Cityscapes' 100-pixel minimum instance size, they are not evaluated.
MIN_BOX_AREA = 100.0

OVERFIT_OVERRIDES = [
    f"data.train.0.limit={NUM_IMAGES}",
    "data.augment.resize_ratio=[1.0,1.0]",
    "data.augment.flip_prob=0.0",
    "data.augment.photometric=false",
    f"train.max_iters={MAX_ITERS}",
    f"train.checkpoint_interval={MAX_ITERS}",
    "train.log_interval=25",
    f"eval.min_box_area={MIN_BOX_AREA}",
    "eval.source=train",
    f"eval.datasets=[{{name: cityscapes, root: cityscapes, split: train, limit: {NUM_IMAGES}, label: train}}]",
]


def train_tiny_detector(out_dir: str | os.PathLike, extra_overrides: list[str] | tuple[str, ...] = (),
                        timeout: float = 1800) -> Path:
    """Train (or find) the overfitted tiny detector in ``out_dir``; returns its checkpoint folder.

    Raises ``RuntimeError`` with the command's output when training fails.
    """
    out_dir = Path(out_dir)
    run_dir = out_dir / "run"
    overrides = [f"data.root={out_dir / 'synthetic'}", *OVERFIT_OVERRIDES, *extra_overrides]
    cmd = [sys.executable, "-m", "vlt_training.cli.train", "--config", str(CONFIG), "--out", str(run_dir),
           "--no-progress", *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"tiny detector training failed ({proc.returncode}): {' '.join(cmd)}\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    checkpoint = run_dir / "checkpoints" / f"step_{MAX_ITERS:08d}"
    if not (checkpoint / "model.safetensors").is_file():
        raise RuntimeError(f"training finished but {checkpoint} has no model.safetensors:\n{proc.stdout[-4000:]}")
    return checkpoint


def shared_detector_dir(tmp_path_factory) -> Path:
    """One folder per test session (or ``VLT_TINY_DETECTOR_DIR``), so the detector is trained once per run
    whichever tests ask for it first."""
    return Path(os.environ.get("VLT_TINY_DETECTOR_DIR") or tmp_path_factory.getbasetemp() / "tiny_detector")
