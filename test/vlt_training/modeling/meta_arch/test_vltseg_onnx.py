"""export_module() traces to ONNX opset 17 with standard ops only, and ONNX Runtime agrees with PyTorch."""

import warnings

import numpy as np
import pytest
import torch

from vlt_training.modeling import create_model


@pytest.mark.parametrize("clip_model,text_guidance", [
    ("vlt-tiny-vit", False), ("vlt-tiny-eva02", True),  # EVA: RoPE, patch 14, score maps concatenated
])
def test_export_module_onnx_matches_onnxruntime(tmp_path, clip_model, text_guidance):
    import onnx
    import onnxruntime as ort
    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former", clip_model=clip_model, text_guidance=text_guidance,
                         class_names=["a", "b", "c", "d"])
    graph = model.export_module()
    # non-square and not a multiple of the patch size (16 or 14): padding and cropping are in the graph
    h, w = 50, 90
    images = torch.randn(1, 3, h, w)
    path = tmp_path / "vltseg.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes: sizes are static here
        torch.onnx.export(graph, (images,), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["labels", "confidence"],
                          dynamic_axes={name: {0: "batch"} for name in ("images", "labels", "confidence")})
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {op.domain for op in proto.graph.node} <= {"", "ai.onnx"}, "custom ops in the graph"
    ops = {op.op_type for op in proto.graph.node}
    # Deformable attention is in there as gathers, not GridSample (which TensorRT 10.14 / 11.1 miscompile).
    assert "GridSample" not in ops and "Gather" in ops

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.randn(2, 3, h, w)  # traced with batch 1, run with batch 2
    labels, conf = session.run(None, {"images": batch.numpy()})
    with torch.no_grad():
        ref_labels, ref_conf = graph(batch)
    assert labels.dtype == np.uint8 and labels.shape == (2, h, w)
    assert conf.dtype == np.float32 and conf.shape == (2, h, w)
    # argmax may flip only where two classes tie within float noise
    assert (labels == ref_labels.numpy()).mean() > 0.999
    np.testing.assert_allclose(conf, ref_conf.numpy(), atol=1e-4)
