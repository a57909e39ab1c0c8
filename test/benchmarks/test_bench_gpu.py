"""benchmarks/bench_gpu.py: a clear exit without a GPU, and its smoke mode runs every part on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.benchmarks import load_benchmark


def _bench():
    return load_benchmark("bench_gpu")


def test_without_cuda_it_exits_2_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert _bench().main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--smoke" in err
    assert not out.exists()


@pytest.mark.cli
def test_smoke_mode_runs_every_part_on_the_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "smoke.json"
    assert _bench().main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["smoke"] and result["gpu"] is None
    (inference,) = result["inference"]
    assert "skipped" not in inference, inference
    assert inference["latency_ms"] > 0 and inference["throughput_fps"] > 0 and inference["throughput_batch"] == 2
    training = result["training"]
    assert "skipped" not in training, training
    assert training["iterations"] == 3 and training["crop"] == [64, 128] and training["step_s"] > 0
    rows = {(r["method"], r["dtype"]): r for r in result["deform_attn"]}
    assert set(rows) == {(m, d) for m in ("level", "point", "gather") for d in ("fp32", "bf16")}
    for method in ("point", "gather"):  # exact in fp32, close in bf16
        assert rows[method, "fp32"]["max_diff_vs_grid_sample_fp32"] < 1e-5
        assert rows[method, "bf16"]["max_diff_vs_grid_sample_fp32"] < 0.1
        assert rows[method, "fp32"]["forward_backward_ms"] > 0
    assert rows["gather", "fp32"]["shapes"]["spatial_shapes"] == [[2, 4], [4, 8], [8, 16]]
    table = capsys.readouterr().out
    assert "| training | vltdet_tiny_fasterrcnn crop 64x128 batch 2 |" in table and "| deform attn | gather" in table
