"""The engine benchmark's OpenVINO int8 entry and its figures against the peak measured in the same run."""

from __future__ import annotations

import argparse

import pytest
from helpers.benchmarks import load_benchmark

pytest.importorskip("nncf")
pytest.importorskip("openvino")


def test_openvino_int8_beside_bf16_against_the_same_peak(tmp_path):
    bench = load_benchmark("bench_engines")
    args = argparse.Namespace(model="vltseg_tiny_mask2former", height=64, width=128, engines=["openvino"],
                              precisions=["bf16", "int8"], iters=1, warmup=0, threads=None, peak_size=256,
                              peak_reps=2, calib=None, calib_images=2, profile=True)
    result = bench.run(args)
    entries = {r["precision"]: r for r in result["results"]}
    assert "skipped" not in entries["int8"], entries["int8"].get("skipped")
    int8, bf16 = entries["int8"], entries["bf16"]
    assert int8["info"]["precision"] == "int8" and bf16["info"]["precision"] == "bf16"
    peak = result["matmul_peak_gflops_per_s"]["bf16"]
    for entry in (int8, bf16):  # every figure divides by the peak of this run
        assert entry["efficiency_vs_bf16_peak"] == pytest.approx(entry["achieved_gflops_per_s"] / peak)
        assert entry["profile"]["total_ms"] > 0 and entry["profile"]["by_type_and_kernel"]
    assert int8["speedup_vs_openvino_bf16"] == pytest.approx(bf16["median_ms"] / int8["median_ms"])
    table = bench.format_table(result)
    assert f"bf16 {peak:.0f}" in table and "% bf16 peak" in table
    assert any(line.startswith("openvino     int8") for line in table.splitlines())
