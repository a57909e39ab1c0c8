"""The int8 options benchmark: each variant quantised as its options say, timed beside bf16, gated and scored."""

from __future__ import annotations

import argparse

import pytest
from helpers.benchmarks import load_benchmark
from helpers.tiny_bench import tiny_bench

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")


def _fake_quantize_count(path) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(path)).get_ops())


def test_variants_side_by_side_with_their_gate_and_accuracy(tmp_path):
    bench = load_benchmark("bench_int8_options")
    data = tiny_bench(tmp_path / "data", num_train=2, num_val=1, conditions=("fog",))
    args = argparse.Namespace(onnx=None, model="vltseg_tiny_mask2former", height=64, width=128, calib=None,
                              calib_images=2, num_verify=2, data=data, variants=["default", "float_predictor"],
                              iters=2, threads=None, workdir=tmp_path / "work")
    result = bench.run(args)
    rows = {r["variant"]: r for r in result["variants"]}
    assert set(rows) == {"default", "float_predictor"}
    for row in rows.values():
        assert len(row["times_ms"]) == 2 and row["quantise_seconds"] > 0
        assert row["speedup_vs_openvino_bf16"] == pytest.approx(result["bf16"]["median_ms"] / row["median_ms"])
        assert 0.0 <= row["parity"]["label_agreement"] <= 1.0 and row["parity"]["precision"] == "int8"
        fp32 = result["accuracy"]["miou_fp32"]
        assert set(row["miou"]) == set(fp32) == {"source", "fog"}
        assert row["worst_change_points"] == pytest.approx(min(row["miou"][c] - fp32[c] for c in fp32))
    assert rows["default"]["speedup_vs_default"] == pytest.approx(1.0)
    # the option took effect: the mask predictor's products stay float
    assert _fake_quantize_count(rows["float_predictor"]["model"]) < _fake_quantize_count(rows["default"]["model"])
    assert "float_predictor" in bench.format_table(result)

    again = bench.run(argparse.Namespace(**{**vars(args), "data": None, "variants": ["default"]}))
    assert again["variants"][0]["quantise_seconds"] is None  # reused from the workdir, not quantised again
    assert "accuracy" not in again


def test_unknown_variant_is_refused(capsys):
    bench = load_benchmark("bench_int8_options")
    with pytest.raises(SystemExit):
        bench.main(["--model", "vltseg_tiny_mask2former", "--variants", "default,fastest"])
    assert "unknown variants ['fastest']" in capsys.readouterr().err
