"""benchmarks/bench_deform_attn.py at a miniature size: both graphs exported, the point graph with GridSample and
the gather graph without, both engines timed side by side, the outputs agreeing."""

from __future__ import annotations

import json

import pytest

from helpers.benchmarks import load_benchmark


def _bench():
    return load_benchmark("bench_deform_attn")


@pytest.mark.cli
def test_miniature_run(tmp_path, capsys):
    out = tmp_path / "deform.json"
    assert _bench().main(["--cases", "vltseg_tiny_mask2former:64x128", "--engines", "onnxruntime:fp32,openvino:fp32",
                          "--iters", "1", "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {(r["case"].split()[0], r["engine"]): r for r in result["results"]}
    assert set(rows) == {(c, e) for c in ("op", "model") for e in ("onnxruntime", "openvino")}
    for (case, _), row in rows.items():
        assert "skipped" not in row, row
        assert row["ops"]["point"]["GridSample"] > 0 and row["ops"]["gather"]["GridSample"] == 0
        assert row["point_median_ms"] > 0 and row["gather_median_ms"] > 0
        if case == "model":
            assert row["label_agreement"] > 0.999 and row["max_confidence_diff"] < 1e-4
        else:
            assert row["max_abs_diff"] < 1e-4
    assert "| model vltseg_tiny_mask2former@64x128 | openvino fp32 |" in capsys.readouterr().out


def test_bad_arguments_are_refused():
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--engines", "onnxruntime:bf16"])  # ONNX Runtime has no bf16 path
    with pytest.raises(SystemExit):
        bench.main(["--cases", "vltseg_tiny_mask2former:64by128"])
