"""VLTDet (Faster R-CNN, Mask R-CNN and FCOS heads): tiny forward/backward, the FCOS static-shape decode on
hand-made head outputs, the ONNX export graph of every head."""

import warnings

import numpy as np
import pytest
import torch

from vlt_perception.labels import CITYSCAPES_THING_CLASSES
from vlt_training.modeling import create_model, list_models
from vlt_training.modeling.det_head import FCOSDetHead

H, W = 64, 96


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("vltdet_tiny_fcos", class_names=["car", "person", "bus"])


HEADS = ["vltdet_tiny_fasterrcnn", "vltdet_tiny_maskrcnn", "vltdet_tiny_fcos"]
_RCNN_LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
LOSSES = {"vltdet_tiny_fasterrcnn": _RCNN_LOSSES, "vltdet_tiny_maskrcnn": _RCNN_LOSSES | {"loss_mask"},
          "vltdet_tiny_fcos": {"loss_cls", "loss_box", "loss_ctrness"}}


@pytest.fixture(scope="module", params=HEADS)
def tiny_any(request):
    torch.manual_seed(0)
    return create_model(request.param, class_names=["car", "person", "bus"])


def _targets(with_masks: bool = False):
    targets = [
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0], [40.0, 10.0, 90.0, 60.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # an image without objects
    ]
    if with_masks:  # filled boxes, the first one with a hole
        masks = torch.zeros(2, H, W, dtype=torch.uint8)
        masks[0, 5:40, 5:30] = 1
        masks[0, 15:25, 10:20] = 0
        masks[1, 10:60, 40:90] = 1
        targets[0]["masks"], targets[1]["masks"] = masks, torch.zeros(0, H, W, dtype=torch.uint8)
    return targets


def test_registry_names_the_heads():
    names = list_models("vltdet")
    for tower in ("tiny", "vit_s16", "vit_b16", "vit_l14", "eva02_b16", "eva02_l14"):
        for head in ("fasterrcnn", "maskrcnn", "fcos"):
            assert f"vltdet_{tower}_{head}" in names
    assert type(create_model("vltdet_tiny_fasterrcnn")).__name__ == "VLTDetFasterRCNN"
    assert type(create_model("vltdet_tiny_maskrcnn")).__name__ == "VLTDetMaskRCNN"


def test_train_losses_and_every_parameter_gets_gradient(tiny_any):
    tiny = tiny_any
    tiny.train()
    tiny.zero_grad(set_to_none=True)
    losses = tiny(torch.randn(2, 3, H, W), _targets(tiny.predicts_masks))
    assert set(losses) == LOSSES[tiny.model_name]
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in tiny.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in tiny.parameters())
    assert any(p.grad.abs().sum() > 0 for n, p in tiny.named_parameters() if n.startswith("backbone."))


def test_loss_weights_scale_the_terms(tiny):
    torch.manual_seed(1)
    images = torch.randn(2, 3, H, W)
    tiny.train()
    base = tiny(images, _targets())
    weighted = create_model("vltdet_tiny_fcos", class_names=["car", "person", "bus"], box_weight=2.0)
    weighted.load_state_dict(tiny.state_dict())
    weighted.train()
    out = weighted(images, _targets())
    assert out["loss_box"].item() == pytest.approx(2 * base["loss_box"].item(), rel=1e-5)
    assert out["loss_cls"].item() == pytest.approx(base["loss_cls"].item(), rel=1e-5)


def test_eval_detections_follow_the_contract(tiny_any):
    tiny = tiny_any
    tiny.eval()
    with torch.no_grad():
        out = tiny(torch.randn(2, 3, H, W))["detections"]
    assert len(out) == 2
    for det in out:
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
        assert 0 < n <= tiny.max_detections
        assert det["labels"].dtype == torch.int64 and det["labels"].max() < 3
        assert (det["scores"] > tiny.score_thresh).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()  # sorted
        b = det["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= W).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= H).all()
        if tiny.predicts_masks:  # one 28 x 28 probability map per detection, in its box's frame
            assert det["masks"].shape == (n, 28, 28) and det["masks"].dtype == torch.float32
            assert ((det["masks"] >= 0) & (det["masks"] <= 1)).all()
        else:
            assert "masks" not in det


def test_default_classes_and_rebuild_from_init_kwargs(tiny_any):
    tiny = tiny_any
    default = create_model(tiny.model_name)
    assert default.class_names == list(CITYSCAPES_THING_CLASSES)
    rebuilt = create_model(tiny.model_name, **tiny.init_kwargs)
    rebuilt.load_state_dict(tiny.state_dict())  # strict: same architecture
    tiny.eval(), rebuilt.eval()
    images = torch.randn(1, 3, H, W)
    with torch.no_grad():
        a, b = tiny.predict(images), rebuilt.predict(images)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize(
    "targets, match",
    [
        (None, "list of 2 target dicts"),
        ([{"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]), "labels": torch.tensor([0])}] * 2, "degenerate box"),
        ([{"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([7])}] * 2, "labels must be in"),
        ([{"boxes": torch.ones(2, 3), "labels": torch.tensor([0, 1])}] * 2, "must be \\(N, 4\\)"),
        ([{"boxes": torch.ones(0, 4)}] * 2, "expected a dict with 'boxes'"),
    ],
)
def test_bad_targets_name_the_problem(tiny_any, targets, match):
    tiny_any.train()
    with pytest.raises(ValueError, match=match):
        tiny_any(torch.randn(2, 3, H, W), targets)


def test_mask_rcnn_targets_need_masks_of_the_input_size():
    model = create_model("vltdet_tiny_maskrcnn", class_names=["car", "person", "bus"]).train()
    images = torch.randn(2, 3, H, W)
    with pytest.raises(ValueError, match="needs 'masks'"):
        model(images, _targets(with_masks=False))
    bad = _targets(with_masks=True)
    bad[0]["masks"] = bad[0]["masks"][:, : H // 2]
    with pytest.raises(ValueError, match=f"masks must be \\(2, {H}, {W}\\)"):
        model(images, bad)


def test_mask_rcnn_head_is_vitdets():
    """ViTDet's mask head (mask_rcnn_vitdet: 4 convs of 256 with LayerNorm on 14 x 14 RoIAlign features, a 2x
    deconvolution, one 28 x 28 mask per class) on torchvision's modules; Faster R-CNN has none."""
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    from vlt_training.modeling.layers import LayerNorm2d

    small = dict(vision_cfg_overrides={"width": 64, "layers": 4, "head_width": 32},
                 text_cfg_overrides={"width": 64, "layers": 1, "heads": 2})
    model = create_model("vltdet_vit_b16_maskrcnn", **small)
    heads = model.head.roi_heads
    assert model.predicts_masks and heads.has_mask()
    assert isinstance(heads.mask_head, MaskRCNNHeads) and isinstance(heads.mask_predictor, MaskRCNNPredictor)
    convs = [m for m in heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(256, 256, (3, 3))] * 4
    assert sum(isinstance(m, LayerNorm2d) for m in heads.mask_head.modules()) == 4
    assert heads.mask_roi_pool.output_size == (14, 14) and heads.mask_roi_pool.strides == (4.0, 8.0, 16.0, 32.0)
    assert heads.mask_predictor.mask_fcn_logits.out_channels == len(model.class_names) + 1
    with torch.no_grad():
        assert heads.mask_predictor(torch.zeros(1, 256, 14, 14)).shape[-2:] == (28, 28)
    faster = create_model("vltdet_vit_b16_fasterrcnn", **small)
    assert not faster.predicts_masks and not faster.head.roi_heads.has_mask()


def test_fasterrcnn_loss_weights_scale_the_stages():
    torch.manual_seed(0)
    base_model = create_model("vltdet_tiny_fasterrcnn", class_names=["car", "person", "bus"])
    weighted = create_model("vltdet_tiny_fasterrcnn", class_names=["car", "person", "bus"], rpn_weight=2.0)
    weighted.load_state_dict(base_model.state_dict())
    images = torch.randn(2, 3, H, W)
    base_model.train(), weighted.train()
    torch.manual_seed(5)  # the anchor / RoI samplers draw at random: same draws for both
    base = base_model(images, _targets())
    torch.manual_seed(5)
    out = weighted(images, _targets())
    assert out["loss_objectness"].item() == pytest.approx(2 * base["loss_objectness"].item(), rel=1e-5)
    assert out["loss_classifier"].item() == pytest.approx(base["loss_classifier"].item(), rel=1e-5)


def test_patch14_pyramid_strides_and_shrunk_registry_factory():
    """ViT-L/14 factory (shrunk tower): non-integer strides 3.5 / 7 / 14 / 28 / 56 still decode inside the image."""
    torch.manual_seed(0)
    model = create_model(
        "vltdet_vit_l14_fcos", vision_cfg_overrides={"width": 64, "layers": 4, "head_width": 32},
        text_cfg_overrides={"width": 64, "layers": 1, "heads": 2}, pyramid_channels=32, head_convs=1,
    )
    assert model.head.strides == (3.5, 7.0, 14.0, 28.0, 56.0)
    model.train()
    losses = model(torch.randn(1, 3, 70, 98), [{"boxes": torch.tensor([[3.0, 4.0, 60.0, 50.0]]),
                                              "labels": torch.tensor([2])}])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        boxes, scores, labels = model.predict(torch.randn(1, 3, 70, 98))
    assert boxes.shape == (1, 100, 4) and boxes[..., 2].max() <= 98 and boxes[..., 3].max() <= 70


def test_patch14_fasterrcnn_anchors_and_roi_levels():
    """ViT-L/14 Faster R-CNN (shrunk tower): anchors 8 x stride on strides 3.5 .. 56, RoIs pooled from p2-p5."""
    torch.manual_seed(0)
    model = create_model(
        "vltdet_vit_l14_fasterrcnn", vision_cfg_overrides={"width": 64, "layers": 4, "head_width": 32},
        text_cfg_overrides={"width": 64, "layers": 1, "heads": 2}, pyramid_channels=32, box_convs=1,
        box_conv_dim=32, box_fc_dim=64,
    )
    anchors = model.head.rpn.anchor_generator
    assert anchors.strides == (3.5, 7.0, 14.0, 28.0, 56.0)
    assert [s[0] for s in anchors.sizes] == [28.0, 56.0, 112.0, 224.0, 448.0]
    assert model.head.roi_heads.box_roi_pool.strides == (3.5, 7.0, 14.0, 28.0)
    model.train()
    losses = model(torch.randn(1, 3, 70, 98), [{"boxes": torch.tensor([[3.0, 4.0, 60.0, 50.0]]),
                                              "labels": torch.tensor([2])}])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        boxes, scores, labels = model.predict(torch.randn(1, 3, 70, 98))
    assert boxes.shape == (1, 100, 4) and boxes[..., 2].max() <= 98 and boxes[..., 3].max() <= 70


# --------------------------------------------------------------------------------------------- decode / NMS
def _hand_made_outputs(head: FCOSDetHead, logits: dict[int, tuple[int, float]], batch: int = 1):
    """Head outputs where cell ``i`` of the (1-level, stride 8) grid predicts class ``c`` with logit ``v``
    and a box 1 stride around its centre (regression 1.0 each side, centre-ness logit +inf)."""
    n = 4 * 4
    cls = torch.full((batch, n, head.num_classes), -1e4)
    for (image, cell), (cls_id, value) in logits.items():
        cls[image, cell, cls_id] = value
    return {"cls_logits": cls, "bbox_regression": torch.ones(batch, n, 4),
            "bbox_ctrness": torch.full((batch, n, 1), 1e4)}


def test_decode_nms_keeps_classes_and_images_apart():
    head = FCOSDetHead(8, num_classes=2, strides=[8])
    anchors = head.anchors([torch.zeros(1, 8, 4, 4)])  # 16 cells of 8 px on a 32 x 32 image
    assert anchors[0].tolist() == [0.0, 0.0, 8.0, 8.0] and anchors[5].tolist() == [8.0, 8.0, 16.0, 16.0]
    # Cells 0 and 1 are neighbours; their 16 px boxes clipped to the image, [0, 0, 12, 12] and [4, 0, 20, 12],
    # overlap with IoU 96 / 240 = 0.4. Cells 5 and 6 (class 1): [4, 4, 20, 20] and [12, 4, 28, 20], IoU 1/3.
    logits = {(0, 0): (0, 3.0), (0, 1): (0, 2.0), (0, 5): (1, 1.0), (0, 6): (1, 0.5), (1, 0): (0, 2.5)}
    outputs = _hand_made_outputs(head, logits, batch=2)
    sig = torch.sigmoid(torch.tensor([3.0, 2.0, 1.0, 0.5, 2.5])).sqrt()  # score = sqrt(p_cls * p_ctr), p_ctr = 1

    # IoU 0.4 and 1/3 > 0.3: the lower-scored neighbour of the same class is suppressed, the other class is not,
    # and image 1's detection does not suppress image 0's.
    boxes, scores, labels = head.decode(outputs, anchors, (32, 32), score_thresh=0.05, nms_thresh=0.3,
                                        pre_nms_topk=8, max_detections=4)
    assert boxes.shape == (2, 4, 4) and scores.shape == (2, 4) and labels.dtype == torch.int64
    assert scores[0].tolist() == pytest.approx([sig[0].item(), sig[2].item(), 0.0, 0.0])
    assert labels[0].tolist() == [0, 1, 0, 0]
    assert boxes[0, 0].tolist() == [0.0, 0.0, 12.0, 12.0]  # cell 0's box [-4, -4, 12, 12] clipped to the image
    assert boxes[0, 1].tolist() == [4.0, 4.0, 20.0, 20.0]  # cell 5: centre (12, 12), +-8
    assert boxes[0, 2:].abs().sum() == 0  # padding: score 0, box 0
    assert scores[1].tolist() == pytest.approx([sig[4].item(), 0.0, 0.0, 0.0])

    # IoU 0.4 and 1/3 < 0.5: everything survives NMS; a score threshold between drops the weakest.
    boxes, scores, labels = head.decode(outputs, anchors, (32, 32), score_thresh=sig[3].item() + 1e-4,
                                        nms_thresh=0.5, pre_nms_topk=8, max_detections=5)
    assert scores[0].tolist() == pytest.approx([sig[0].item(), sig[1].item(), sig[2].item(), 0.0, 0.0])
    assert labels[0, :3].tolist() == [0, 0, 1]


def test_decode_pads_when_fewer_candidates_than_slots():
    head = FCOSDetHead(8, num_classes=1, strides=[8])
    anchors = head.anchors([torch.zeros(1, 8, 4, 4)])
    outputs = _hand_made_outputs(head, {(0, 3): (0, 4.0)})
    boxes, scores, labels = head.decode(outputs, anchors, (32, 32), 0.05, 0.5, pre_nms_topk=8, max_detections=20)
    assert boxes.shape == (1, 20, 4) and (scores[0, 1:] == 0).all() and scores[0, 0] > 0.9


# --------------------------------------------------------------------------------------------- ONNX export
def _match_fraction(ref_boxes, ref_scores, ref_labels, boxes, scores, labels, threshold, tol=1.0) -> float:
    """Fraction of reference detections above ``threshold`` that have a detection with the same label whose
    corners are all within ``tol`` pixels (order-free: near-tied scores may swap slots)."""
    matched = total = 0
    for b in range(ref_boxes.shape[0]):
        keep_ref, keep = ref_scores[b] > threshold, scores[b] > threshold / 2
        for box, label in zip(ref_boxes[b][keep_ref], ref_labels[b][keep_ref]):
            total += 1
            close = (np.abs(boxes[b][keep] - box).max(axis=1) <= tol) & (labels[b][keep] == label)
            matched += bool(close.any())
    return matched / max(total, 1)


def _assert_masks_match(ref, out, threshold):
    """Every reference detection above ``threshold`` has an ONNX detection with the same box (1e-3 px) and label
    whose mask agrees within 1e-3 (slots may swap between near-tied scores)."""
    checked = 0
    for b in range(ref[0].shape[0]):
        for slot in np.flatnonzero(ref[1][b] > threshold):
            same = (np.abs(out[0][b] - ref[0][b][slot]).max(axis=1) <= 1e-3) & (out[2][b] == ref[2][b][slot])
            assert same.any(), f"image {b} slot {slot}: no ONNX detection with the reference box"
            np.testing.assert_allclose(out[3][b][np.flatnonzero(same)[0]], ref[3][b][slot], atol=1e-3)
            checked += 1
    assert checked > 10


def test_export_graph_matches_pytorch_in_onnxruntime(tiny_any, tmp_path):
    import onnxruntime as ort
    tiny = tiny_any
    torch.manual_seed(3)
    module = tiny.eval().export_module()
    example = torch.randn(2, 3, H, W)
    path = tmp_path / "vltdet.onnx"
    names = ["boxes", "scores", "labels"] + (["masks"] if tiny.predicts_masks else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=names, dynamic_axes={n: {0: "batch"} for n in ["images", *names]})
    import onnx

    graph = onnx.load(str(path))
    ops = {node.op_type for node in graph.graph.node}
    assert "NonMaxSuppression" in ops and "TopK" in ops  # post-processing is inside the one graph
    if not tiny.model_name.endswith("fcos"):
        assert "RoiAlign" in ops  # the second stage too
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (2, 3):  # the traced batch and another one through the dynamic axis
        images = torch.randn(batch, 3, H, W)
        outputs = session.run(None, {"images": images.numpy()})
        boxes, scores, labels = outputs[:3]
        with torch.no_grad():
            ref = [t.numpy() for t in module(images)]
        if tiny.predicts_masks:
            _assert_masks_match(ref, outputs, tiny.score_thresh)
            ref = ref[:3]
        assert boxes.shape == (batch, tiny.max_detections, 4) and boxes.dtype == np.float32
        assert scores.dtype == np.float32 and labels.dtype == np.int64
        assert (ref[1] > tiny.score_thresh).sum() > 10 * batch  # the comparison covers many detections
        assert _match_fraction(*ref, boxes, scores, labels, tiny.score_thresh) >= 0.99
        np.testing.assert_allclose(np.sort(scores, axis=1), np.sort(ref[1], axis=1), atol=1e-4)


def test_max_detections_reaches_outputs_and_metadata():
    from vlt_training.config import Config
    from vlt_training.tasks.registry import get_task
    from vlt_training.training.trainer import model_metadata
    from vlt_training.export.model_metadata import metadata_for_model

    model = create_model("vltdet_tiny_fcos", max_detections=20).eval()
    with torch.no_grad():
        boxes, scores, labels = model.predict(torch.randn(1, 3, H, W))
    assert boxes.shape == (1, 20, 4) and scores.shape == labels.shape == (1, 20)
    assert metadata_for_model(model, H, W).max_detections == 20
    checkpoint_meta = model_metadata(model, Config(task="detection"), get_task("detection"), step=0)
    assert checkpoint_meta.max_detections == 20 and checkpoint_meta.task == "detection"
    with pytest.raises(ValueError, match="max_detections"):
        create_model("vltdet_tiny_fcos", max_detections=500, pre_nms_topk=300)


def test_vitdet_layer_decay_reaches_the_clip_tower():
    """ViTDet's lr factor (detectron2 get_vit_lr_decay_rate): decay ** (L + 1 - id), id 0 for the patch and
    position embeddings, i + 1 for block i; pyramid and head undecayed."""
    from vlt_training.config import OptimConfig
    from vlt_training.training.optim import param_groups

    model = create_model(
        "vltdet_vit_b16_fasterrcnn", vision_cfg_overrides={"width": 64, "layers": 4, "head_width": 32},
        text_cfg_overrides={"width": 64, "layers": 1, "heads": 2}, pyramid_channels=32, box_convs=1,
        box_conv_dim=32, box_fc_dim=64,
    )
    groups = param_groups(model, OptimConfig(lr=1.0, backbone_lr_mult=1.0, layer_decay=0.7))
    lr = {name: g["lr"] for g in groups for name in g["names"]}
    assert lr["backbone.conv1.weight"] == pytest.approx(0.7 ** 5)
    assert lr["backbone.positional_embedding"] == pytest.approx(0.7 ** 5)
    assert lr["backbone.resblocks.0.attn.in_proj_weight"] == pytest.approx(0.7 ** 4)
    assert lr["backbone.resblocks.3.mlp.c_fc.weight"] == pytest.approx(0.7)
    assert all(v == 1.0 for n, v in lr.items() if n.startswith(("neck.", "head.")))


@pytest.mark.parametrize("name", ["vltdet_tiny_fasterrcnn", "vltdet_tiny_maskrcnn"])
def test_rcnn_graph_runs_in_the_detection_pipeline(tmp_path, name):
    """The exported Faster / Mask R-CNN graph through the detection node's pipeline (ONNX Runtime, no ROS): the
    detections of an image twice the network size are PyTorch's on the preprocessed image, scaled by 2 (the
    node publishes boxes: a Mask R-CNN graph's extra masks output does not disturb it)."""
    from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine
    from vlt_perception.pipeline.detection import DetectionPipeline
    from vlt_training.export import export_onnx
    from vlt_training.export.model_metadata import metadata_for_model
    from vlt_training.export.verify import detection_agreement

    torch.manual_seed(0)
    model = create_model(name, class_names=["car", "person", "bus"]).eval()
    path, _ = export_onnx(model, metadata_for_model(model, 64, 128), tmp_path / "det.onnx")
    pipeline = DetectionPipeline(OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"]), score_threshold=0.2)
    rgb = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    dets = pipeline.process(rgb)
    with torch.no_grad():
        boxes, scores, labels = model.predict(torch.from_numpy(pipeline.preprocess(rgb)))[:3]
    keep = scores[0] >= 0.2
    assert len(dets) == int(keep.sum()) > 5
    ref = {"boxes": boxes[0][keep].numpy()[None] * 2, "scores": scores[0][keep].numpy()[None],
           "labels": labels[0][keep].numpy()[None]}
    out = {"boxes": dets.boxes[None], "scores": dets.scores[None], "labels": dets.class_ids[None]}
    assert detection_agreement(ref, out, score_threshold=0.2) == 1.0
    assert dets.class_names == [model.class_names[i] for i in dets.class_ids]


def test_detail_stem_starts_as_plain_vitdet_then_learns():
    """The tiny detector's detail stem adds nothing at initialisation (zero projection), so VLTDet starts as ViTDet;
    after one optimiser step it feeds the finest level, and its convs receive gradient."""
    torch.manual_seed(0)
    model = create_model("vltdet_tiny_fasterrcnn", class_names=["car", "person", "bus"])
    assert model.detail_stem is not None and model.init_kwargs["detail_stem_channels"] == 32
    images = torch.randn(2, 3, H, W)
    stem = model.detail_stem
    with torch.no_grad():
        with_stem = model.features(images)
        model.detail_stem = None
        plain = model.features(images)
        model.detail_stem = stem
    assert all(torch.equal(a, b) for a, b in zip(with_stem, plain))

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # step 1 moves the zero projection; step 2's gradient reaches the convs through it
        optimizer.zero_grad()
        sum(model(images, _targets()).values()).backward()
        optimizer.step()
    assert stem.convs[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        trained = model.features(images)
        model.detail_stem = None
        trained_plain = model.features(images)
        model.detail_stem = stem
    assert not torch.equal(trained[0], trained_plain[0])  # the finest level now carries the stem's detail
    assert all(torch.equal(a, b) for a, b in zip(trained[1:], trained_plain[1:]))  # the others never do


def test_detail_stem_needs_a_power_of_two_stride():
    with pytest.raises(ValueError, match="power of 2"):
        create_model("vltdet_vit_l14_fcos", vision_cfg_overrides={"width": 64, "layers": 4, "head_width": 32},
                     text_cfg_overrides={"width": 64, "layers": 1, "heads": 2}, pyramid_channels=32, head_convs=1,
                     detail_stem_channels=8)  # strides 3.5 / 7 / ...
