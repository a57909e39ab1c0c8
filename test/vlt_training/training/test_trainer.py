"""The training loop on a tiny contract model and a tiny synthetic benchmark: checkpoints, logs, exact resume,
NaN stop, gradient accumulation, and 2-process gloo DDP."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tiny_contract  # noqa: E402  (helper module beside this file)
from helpers.gloo import free_port  # noqa: E402
from helpers.tiny_bench import tiny_bench  # noqa: E402

from vlt_training.config import load_config  # noqa: E402
from vlt_training.training.checkpoint import (  # noqa: E402
    CheckpointError, list_checkpoints, load_model, load_trainer_state, load_weights, read_meta)
from vlt_training.training.trainer import train  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """4 training images of 32x64 in Cityscapes layout from the synthetic benchmark generator."""
    return tiny_bench(tmp_path_factory.mktemp("bench"))


def tiny_cfg(bench: Path, *overrides: str):
    return load_config(REPO / "config/train/tiny_cpu.yaml", [
        f"data.root={bench}", "data.synthetic.enabled=false", "data.crop_size=[32,48]",
        "train.max_iters=6", "train.batch_size=2", "train.checkpoint_interval=3", "train.log_interval=1",
        "train.keep_last=5", "schedule.warmup_iters=2", "optim.lr=1e-2", "train.num_workers=0", *overrides])


def read_log(run_dir: Path) -> dict[int, dict]:
    with open(run_dir / "log.csv", newline="") as fh:
        return {int(row["step"]): row for row in csv.DictReader(fh)}


def test_train_writes_checkpoints_logs_and_config(bench, tmp_path, monkeypatch):
    tiny_contract.install(monkeypatch)
    result = train(tiny_cfg(bench), tmp_path / "run", progress=False)
    assert result.step == 6
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000003", "step_00000006"]
    log = read_log(tmp_path / "run")
    assert sorted(log) == [1, 2, 3, 4, 5, 6]
    assert {"lr", "loss", "loss_ce", "loss_aux", "images_per_s", "grad_norm"} <= set(log[1])
    assert float(log[6]["loss"]) < float(log[1]["loss"])  # lr 1e-2 on 4 images: it learns
    assert (tmp_path / "run" / "config.yaml").is_file()
    model, meta = load_model(tmp_path / "run")
    assert meta.input_height == 32 and meta.input_width == 48 and meta.extra["step"] == 6
    assert meta.task == "semantic_segmentation" and len(meta.class_names) == 19
    assert torch.equal(model.head.weight, result.model.head.weight)
    state = load_trainer_state(list_checkpoints(tmp_path / "run")[-1])
    assert state["step"] == 6 and state["scheduler"]["last_epoch"] == 6


def test_resume_after_kill_continues_with_identical_losses(bench, tmp_path, monkeypatch):
    overrides = ("data.augment.photometric=true", "data.augment.flip_prob=0.5")
    tiny_contract.install(monkeypatch)
    reference = train(tiny_cfg(bench, *overrides), tmp_path / "ref", progress=False)
    ref_log = read_log(tmp_path / "ref")

    # Killed during step 5 (forward 5): the step-3 checkpoint survives, steps 4 was logged but not saved.
    tiny_contract.install(monkeypatch, crash_at_forward=5)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(bench, *overrides), tmp_path / "run", progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000003"]
    assert sorted(read_log(tmp_path / "run")) == [1, 2, 3, 4]

    tiny_contract.install(monkeypatch)
    resumed = train(tiny_cfg(bench, *overrides), tmp_path / "run", progress=False)
    log = read_log(tmp_path / "run")
    assert sorted(log) == [1, 2, 3, 4, 5, 6]  # the orphan step-4 row was replaced, not duplicated
    for step in range(1, 7):
        assert float(log[step]["loss"]) == float(ref_log[step]["loss"]), step
        assert float(log[step]["lr"]) == float(ref_log[step]["lr"]), step
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_nan_loss_stops_with_clear_error(bench, tmp_path, monkeypatch):
    tiny_contract.install(monkeypatch)
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 2 \(terms: .*loss_ce"):
        train(tiny_cfg(bench, "optim.lr=1e30", "schedule.warmup_iters=0", "train.clip_grad_norm=null",
                       "train.max_iters=3"), tmp_path / "run", progress=False)


def test_grad_accumulation_matches_full_batch(bench, tmp_path, monkeypatch):
    # Dropout off, same images per optimiser step, a loss that averages per image: 2 micro-batches of 1 give the
    # gradient of 1 batch of 2. eps=1 makes Adam's first steps ~ lr * g (not sign(g), which would amplify
    # rounding noise in near-zero gradients).
    common = ("train.max_iters=2", "optim.eps=1.0", "data.augment.photometric=false", "data.augment.resize_ratio=[1.0,1.0]",
              "data.augment.flip_prob=0.0", "data.augment.cat_max_ratio=1.0")
    tiny_contract.install(monkeypatch, dropout=0.0)
    full = train(tiny_cfg(bench, *common), tmp_path / "full", progress=False)
    accum = train(tiny_cfg(bench, *common, "train.grad_accum_steps=2"), tmp_path / "accum", progress=False)
    for (name, a), b in zip(full.model.state_dict().items(), accum.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_batch_size_must_divide(bench, tmp_path, monkeypatch):
    tiny_contract.install(monkeypatch)
    with pytest.raises(ValueError, match="batch_size=3 is not divisible"):
        train(tiny_cfg(bench, "train.batch_size=3", "train.grad_accum_steps=2"), tmp_path / "run", progress=False)


def test_init_from_starts_the_detector_from_a_segmentation_run(bench, tmp_path):
    """model.init_from: VLTDet's tower starts as a VLTSeg run's tower (real tiny models, no contract stand-in);
    a resumed run keeps its own weights and no longer needs the source."""
    small = ("data.crop_size=[32,64]", "train.max_iters=1", "train.checkpoint_interval=1")
    seg = train(tiny_cfg(bench, *small), tmp_path / "seg", progress=False)
    det_cfg = ("config/train/tiny_det_cpu.yaml", [
        f"data.root={bench}", "data.synthetic.enabled=false", *small, "train.batch_size=2", "train.num_workers=0",
        "optim.lr=1e-12", "schedule.warmup_iters=0", f"model.init_from={tmp_path / 'seg'}"])
    det = train(load_config(REPO / det_cfg[0], det_cfg[1]), tmp_path / "det", progress=False)

    seg_tower = {k: v for k, v in seg.model.state_dict().items() if k.startswith("backbone.")}
    det_tower = {k: v for k, v in det.model.state_dict().items() if k.startswith("backbone.")}
    assert det_tower and set(det_tower) <= set(seg_tower)  # VLTSeg's tower also has its dense projection
    for name, tensor in det_tower.items():  # lr 1e-12: one step leaves the copied tensors where they were
        torch.testing.assert_close(tensor, seg_tower[name], rtol=0, atol=1e-9, msg=name)
    fresh = train(load_config(REPO / det_cfg[0], det_cfg[1][:-1]), tmp_path / "fresh", progress=False)
    assert not torch.equal(fresh.model.backbone.conv1.weight, seg.model.backbone.conv1.weight)

    shutil.rmtree(tmp_path / "seg")  # resuming det must not read the source again
    more = load_config(REPO / det_cfg[0], [*det_cfg[1], "train.max_iters=2"])
    assert train(more, tmp_path / "det", progress=False).step == 2
    with pytest.raises(CheckpointError, match="no such checkpoint or run folder"):
        train(load_config(REPO / det_cfg[0], det_cfg[1]), tmp_path / "det2", progress=False)


DDP_WORKER = """
import os, sys
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads(1)
import tiny_contract
tiny_contract.install(None)
from safetensors.torch import save_file
from vlt_training.config import load_config
from vlt_training.training.trainer import train
cfg = load_config({config!r}, {overrides!r})
result = train(cfg, {run!r}, progress=False)
rank = os.environ["RANK"]
save_file({{k: v.contiguous() for k, v in result.model.state_dict().items()}}, os.path.join({out!r}, f"rank{{rank}}.safetensors"))
"""


def test_ddp_two_processes_gloo_keep_identical_parameters(bench, tmp_path):
    from safetensors.torch import load_file

    overrides = [f"data.root={bench}", "data.synthetic.enabled=false", "data.crop_size=[32,48]",
                 "train.max_iters=3", "train.batch_size=4", "train.checkpoint_interval=3", "train.log_interval=1",
                 "schedule.warmup_iters=0", "optim.lr=1e-2", "train.num_workers=0", "train.device=cpu"]
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER.format(here=str(Path(__file__).parent), config=str(REPO / "config/train/tiny_cpu.yaml"),
                                        overrides=overrides, run=str(tmp_path / "run"), out=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # Only rank 0 wrote: one run folder, one checkpoint, equal to what both ranks hold.
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000003"]
    ckpt = list_checkpoints(tmp_path / "run")[0]
    saved = tiny_contract.TinySegNet(**read_meta(ckpt)["model_kwargs"])
    load_weights(saved, ckpt)
    for name, value in saved.state_dict().items():
        assert torch.equal(value, rank0[name]), name
    assert sorted(read_log(tmp_path / "run")) == [1, 2, 3]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains(bench, tmp_path, monkeypatch, amp):
    tiny_contract.install(monkeypatch)
    result = train(tiny_cfg(bench, f"train.amp={amp}", "train.max_iters=3"), tmp_path / "run", progress=False)
    log = read_log(tmp_path / "run")
    assert sorted(log) == [1, 2, 3] and all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in log.values())
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast keeps fp32 master weights
    state = load_trainer_state(list_checkpoints(tmp_path / "run")[-1])
    assert ("scale" in state["scaler"]) == (amp == "fp16")  # the loss scale is saved for resuming fp16 runs
