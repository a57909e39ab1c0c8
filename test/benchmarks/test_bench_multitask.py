"""benchmarks/bench_multitask.py: the profile's split of a multi-task graph into parts, on a hand-built graph and on
the tiny models' exported graphs."""

from __future__ import annotations

import json

import pytest

from helpers.benchmarks import load_benchmark


def _bench():
    return load_benchmark("bench_multitask")


def _two_task_graph():
    """images -> shared -> {segmentation: seg_op -> labels; detection: rpn -> NMS -> select -> RoiAlign -> box head
    -> decode -> NMS -> top -> det_boxes}; the second NMS reads a detection tensor and the RPN's output."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def node(op, inputs, outputs, name, **attrs):
        return helper.make_node(op, inputs, outputs, name=name, **attrs)

    nodes = [
        node("Relu", ["images"], ["feat"], "/module/backbone/Relu"),
        node("Sigmoid", ["feat"], ["labels"], "/module/pixel_decoder/Sigmoid"),
        node("Relu", ["feat"], ["rpn"], "/module/head/rpn/head/conv/Relu"),
        node("Relu", ["feat"], ["stem"], "/module/detail_stem/Relu"),
        node("NonMaxSuppression", ["boxes_in", "scores_in"], ["keep1"], "/module/NonMaxSuppression"),
        node("Cast", ["keep1"], ["keep1f"], "/module/Cast", to=TensorProto.FLOAT),
        node("RoiAlign", ["rpn", "rois", "batch_idx"], ["pooled"], "/module/RoiAlign"),
        node("Add", ["pooled", "keep1f"], ["pooled2"], "/module/Add"),
        node("Relu", ["pooled2"], ["fc"], "fused /module/box_head/box_head.1/Gemm"),
        node("Add", ["fc", "stem"], ["decoded"], "/module/Add_1"),
        node("NonMaxSuppression", ["boxes_in", "decoded"], ["keep2"], "/module/NonMaxSuppression_1"),
        node("Cast", ["keep2"], ["det_boxes"], "/module/Cast_1", to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("labels", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, None)])
    return onnx, helper.make_model(graph)


def test_graph_parts_follow_the_graph_structure():
    _, model = _two_task_graph()
    parts = _bench().graph_parts(model)
    assert parts == {
        "/module/backbone/Relu": "shared tower + pyramid",
        "/module/pixel_decoder/Sigmoid": "segmentation head",
        "/module/head/rpn/head/conv/Relu": "det: RPN convs + top-k + decode",
        "/module/detail_stem/Relu": "det: detail stem",
        "/module/NonMaxSuppression": "det: RPN NMS + proposal selection",
        "/module/Cast": "det: RPN NMS + proposal selection",
        "/module/RoiAlign": "det: RoIAlign",
        "/module/Add": "det: RoIAlign",
        "fused /module/box_head/box_head.1/Gemm": "det: box head",
        "/module/Add_1": "det: class decode + NMS prep",
        "/module/NonMaxSuppression_1": "det: final NMS + top-K",
        "/module/Cast_1": "det: final NMS + top-K",
    }


@pytest.mark.cli
def test_tiny_run_profiles_both_proposal_counts(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "mt.json"
    assert _bench().main(["--sizes", "tiny", "--iters", "1", "--warmup", "0", "--test-proposals", "50",
                          "--profile", "--profile-runs", "1", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["speed"][0]
    assert set(row["ms"]) >= {"a_seg_alone", "c_multitask", "c_multitask_p50"}
    assert 0 < row["valid_proposals"]["multitask_p50"] <= 50 < row["valid_proposals"]["multitask"] <= 300
    for role in ("multitask", "multitask_p50"):
        shares = row["profiles"][role]["share_percent"]
        # every node of the optimised graph was attributed to a part, and the detection stages are there
        assert "other" not in shares
        assert {"shared tower + pyramid", "segmentation head", "det: RoIAlign", "det: box head",
                "det: RPN NMS + proposal selection"} <= set(shares)
        assert sum(shares.values()) == pytest.approx(100, abs=0.5)
