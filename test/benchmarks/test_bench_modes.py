"""The four-way ablation command at miniature size: every mode x 2 seeds, JSON + Markdown + bar chart."""

from __future__ import annotations

import json

import pytest

import torch
from helpers.benchmarks import load_benchmark


def _bench():
    return load_benchmark("bench_modes")


@pytest.mark.cli
def test_ablation_miniature(tmp_path, capsys):
    from vlt_training.cli.generate import main as generate

    data = tmp_path / "bench"
    assert generate(["--out", str(data), "--num-train", "2", "--num-val", "1", "--height", "32", "--width", "64",
                     "--conditions", "fog"]) == 0
    sets = [f"data.root={data}", "data.synthetic.enabled=false", "data.crop_size=[32,64]", "train.batch_size=2",
            "train.checkpoint_interval=1", "train.num_workers=0", "schedule.warmup_iters=1",
            "model.overrides={train_num_points: 64}", "eval.crop_size=[32,64]",
            "model.mode_options.famix.mine_images=1", "model.mode_options.famix.pin_steps=1",
            "model.mode_options.famix.grid=2"]
    # one tower for every run, as with the pretrained tiny CLIP (random weights: this checks the mechanics)
    from vlt_training.modeling.backbone.clip_vit import build_open_clip

    tower = tmp_path / "tower.pt"
    torch.manual_seed(0)  # the same tower whatever the tests before this one drew
    torch.save(build_open_clip("vlt-tiny-vit").state_dict(), tower)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--seeds", "0,1", "--max-iters", "1", "--pretrained", str(tower)] + [
        a for s in sets for a in ("--set", s)]
    assert _bench().main(argv) == 0
    report = json.loads((out / "bench_modes.json").read_text())
    assert [(r["mode"], r["seed"]) for r in report["runs"]] == [
        (m, s) for m in ("full", "frozen", "rein", "famix") for s in (0, 1)]
    # every run reports retention; after one step on random weights it is NaN wherever source mIoU is 0, and the
    # summary leaves NaN out, so the key is checked on the runs
    assert all("acdc/retention" in r and "acdc:fog/mIoU" in r for r in report["runs"])
    summary = report["summary"]
    assert set(summary) == {"full", "frozen", "rein", "famix"}
    for mode, figures in summary.items():
        assert figures["source/mIoU"]["n"] == 2 and figures["train_seconds"]["mean"] > 0
        assert "acdc:fog/mIoU" in figures
    assert summary["frozen"]["trainable_params"]["mean"] < summary["full"]["trainable_params"]["mean"]
    table = (out / "bench_modes.md").read_text()
    assert table.count("\n| ") == 5 and "±" in table and "Ranking by mean acdc/mIoU" in table
    assert (out / "bench_modes.png").stat().st_size > 1000
    assert (out / "famix_styles.safetensors").is_file()  # mined once, shared by the seeds
    printed = capsys.readouterr().out
    assert "famix seed 1:" in printed and printed.count("FAMix: mining styles") == 1
