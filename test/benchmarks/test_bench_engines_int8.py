"""The engine benchmark's OpenVINO int8 entry and its figures against the peak measured in the same run."""

from __future__ import annotations

import argparse

import pytest
from helpers.benchmarks import load_benchmark

pytest.importorskip("nncf")
pytest.importorskip("openvino")


def _args(**overrides) -> argparse.Namespace:
    args = dict(model="vltseg_tiny_mask2former", height=64, width=128, engines=["openvino"],
                precisions=["bf16", "int8"], iters=1, warmup=0, threads=None, peak_size=256, peak_reps=2, calib=None,
                calib_images=2, profile=True, workdir=None)
    return argparse.Namespace(**{**args, **overrides})


def test_openvino_int8_beside_bf16_against_the_same_peak():
    bench = load_benchmark("bench_engines")
    result = bench.run(_args())
    entries = {r["precision"]: r for r in result["results"]}
    assert "skipped" not in entries["int8"], entries["int8"].get("skipped")
    int8, bf16 = entries["int8"], entries["bf16"]
    assert int8["info"]["precision"] == "int8" and bf16["info"]["precision"] == "bf16"
    peak = result["matmul_peak_gflops_per_s"]["bf16"]
    for entry in (int8, bf16):  # every figure divides by the peak of this run
        assert entry["efficiency_vs_bf16_peak"] == pytest.approx(entry["achieved_gflops_per_s"] / peak)
        assert entry["profile"]["total_ms"] > 0 and entry["profile"]["by_type_and_kernel"]
    int8_peak = result["matmul_peak_gflops_per_s"]["int8"]  # torch._int_mm, measured in the same run
    assert int8_peak > 0
    assert int8["efficiency_vs_own_precision_peak"] == pytest.approx(int8["achieved_gflops_per_s"] / int8_peak)
    assert int8["speedup_vs_openvino_bf16"] == pytest.approx(bf16["median_ms"] / int8["median_ms"])
    table = bench.format_table(result)
    assert f"bf16 {peak:.0f}" in table and f"int8 {int8_peak:.0f}" in table and "% own peak" in table
    assert any(line.startswith("openvino     int8") for line in table.splitlines())


def test_workdir_keeps_the_exported_and_quantised_models_for_the_next_run(tmp_path, caplog):
    bench = load_benchmark("bench_engines")
    first = bench.run(_args(precisions=["int8"], profile=False, workdir=tmp_path))
    assert "skipped" not in first["results"][0], first["results"][0].get("skipped")
    kept = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.suffix in (".onnx", ".xml", ".bin")}
    assert {"vltseg_tiny_mask2former_64x128.fp32.onnx", "vltseg_tiny_mask2former_64x128.int8-calib2.xml"} <= set(kept)
    with caplog.at_level("INFO", logger="bench_engines"):
        second = bench.run(_args(precisions=["bf16", "int8"], profile=False, workdir=tmp_path))
    assert all("skipped" not in r for r in second["results"])
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name in kept} == kept  # reused, not rewritten
    assert any("reusing" in r.getMessage() for r in caplog.records)
    assert "speedup_vs_openvino_bf16" in {r["precision"]: r for r in second["results"]}["int8"]
