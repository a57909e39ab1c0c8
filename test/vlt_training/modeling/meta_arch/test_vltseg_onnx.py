"""export_module() traces to ONNX opset 17 with standard ops only, and ONNX Runtime agrees with PyTorch."""

import warnings

import numpy as np
import pytest
import torch

from vlt_training.modeling import create_model


@pytest.mark.parametrize("text_guidance", [True, False])
def test_export_module_onnx_matches_onnxruntime(tmp_path, text_guidance):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former", text_guidance=text_guidance, class_names=["a", "b", "c", "d"])
    graph = model.export_module()
    images = torch.randn(1, 3, 48, 80)  # non-square and not a multiple of the patch size (padding in the graph)
    path = tmp_path / "vltseg.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes: sizes are static here
        torch.onnx.export(graph, (images,), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["labels", "confidence"])
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {op.domain for op in proto.graph.node} <= {"", "ai.onnx"}, "custom ops in the graph"
    assert "GridSample" in {op.op_type for op in proto.graph.node}  # deformable attention is in there

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, conf = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        ref_labels, ref_conf = graph(images)
    assert labels.dtype == np.uint8 and labels.shape == (1, 48, 80)
    assert conf.dtype == np.float32 and conf.shape == (1, 48, 80)
    # argmax may flip only where two classes tie within float noise
    assert (labels == ref_labels.numpy()).mean() > 0.999
    np.testing.assert_allclose(conf, ref_conf.numpy(), atol=1e-4)
