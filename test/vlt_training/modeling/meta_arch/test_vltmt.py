"""VLTMT (segmentation + detection on one tower) on the tiny tower: both heads' losses and their weights, gradients,
eval outputs of both, the task views, the export module, the frozen-tower route, and a rebuild from a checkpoint."""

import pytest
import torch

from vlt_training.modeling import create_model, list_models
from vlt_training.modeling.meta_arch.vltmt import SEGMENTATION_PREFIXES, VLTMultiTask

H, W = 64, 128
SEG = ["road", "car", "person"]
DET = ["car", "person"]


def _model(**kw) -> VLTMultiTask:
    torch.manual_seed(0)
    return create_model("vltmt_tiny_mask2former_fasterrcnn", class_names=SEG, detection_class_names=DET,
                        train_num_points=64, **kw)


@pytest.fixture(scope="module")
def tiny():
    return _model()


def _targets(b=2, masks=False):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(b):
        sem = torch.randint(0, len(SEG), (H, W), generator=g)
        sem[:4] = 255
        t = {"sem_seg": sem, "boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [60.0, 10.0, 90.0, 30.0]]),
             "labels": torch.tensor([0, 1])}
        if masks:
            m = torch.zeros(2, H, W, dtype=torch.uint8)
            m[0, 6:50, 4:40] = 1
            m[1, 10:30, 60:90] = 1
            t["masks"] = m
        out.append(t)
    return out


def _losses(model, images, targets):
    torch.manual_seed(3)  # Mask2Former's point sampling and the RoI sampling draw random numbers
    return model(images, targets)


def test_registry_names_say_both_heads():
    names = list_models("vltmt_")
    assert "vltmt_tiny_mask2former_fasterrcnn" in names and "vltmt_vit_b16_mask2former_fasterrcnn" in names
    assert all("mask2former" in n and ("fasterrcnn" in n or "maskrcnn" in n) for n in names)


def test_loss_dict_has_both_heads_and_every_parameter_gets_gradient(tiny):
    tiny.train()
    tiny.zero_grad(set_to_none=True)
    losses = _losses(tiny, torch.randn(2, 3, H, W), _targets())
    seg = {k for k in losses if k.startswith("seg_")}
    det = {k for k in losses if k.startswith("det_")}
    assert seg | det == set(losses)
    assert {"seg_loss_ce", "seg_loss_mask", "seg_loss_dice", "seg_loss_pixel_text"} <= seg
    assert det == {"det_loss_objectness", "det_loss_rpn_box_reg", "det_loss_classifier", "det_loss_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    missing = [n for n, p in tiny.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


def test_loss_weights_scale_each_head(tiny):
    images, targets = torch.randn(2, 3, H, W), _targets()
    base = _losses(tiny.train(), images, targets)
    tiny.seg_loss_weight, tiny.det_loss_weight = 2.0, 0.5
    try:
        weighted = _losses(tiny, images, targets)
    finally:
        tiny.seg_loss_weight, tiny.det_loss_weight = 1.0, 1.0
    for name, value in base.items():
        factor = 2.0 if name.startswith("seg_") else 0.5
        torch.testing.assert_close(weighted[name], value * factor, msg=name)


def test_a_zero_weight_skips_that_head_and_its_targets():
    model = _model(seg_loss_weight=0.0, freeze=["backbone", "neck", "segmentation"]).train()
    targets = [{k: v for k, v in t.items() if k != "sem_seg"} for t in _targets()]  # no label maps needed
    losses = _losses(model, torch.randn(2, 3, H, W), targets)
    assert losses and all(k.startswith("det_") for k in losses)
    sum(losses.values()).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("head.", "detail_stem.")) for n in trainable)
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    assert not model.backbone.training  # frozen parts stay in eval mode


def test_eval_gives_both_outputs_and_the_views_one_each(tiny):
    tiny.eval()
    images = torch.randn(2, 3, H, W)
    with torch.no_grad():
        out = tiny(images)
        seg_view = tiny.task_view("segmentation")(images)
        det_view = tiny.task_view("detection")(images)
    assert out["sem_seg"].shape == (2, len(SEG), H, W)
    assert len(out["detections"]) == 2
    for det in out["detections"]:
        assert det["boxes"].shape[1] == 4 and det["scores"].shape == det["labels"].shape
        assert det["labels"].numel() == 0 or int(det["labels"].max()) < len(DET)
    torch.testing.assert_close(seg_view["sem_seg"], out["sem_seg"])
    for a, b in zip(det_view["detections"], out["detections"]):
        torch.testing.assert_close(a["boxes"], b["boxes"])
    assert tiny.task_view("detection").class_names == DET and tiny.task_view("segmentation").class_names == SEG


def test_export_module_follows_the_multitask_contract(tiny):
    with torch.no_grad():
        out = tiny.export_module()(torch.randn(2, 3, H, W))
    assert list(out) == ["labels", "confidence", "det_boxes", "det_scores", "det_labels"]
    assert out["labels"].dtype == torch.uint8 and out["labels"].shape == (2, H, W)
    assert out["confidence"].dtype == torch.float32 and out["confidence"].shape == (2, H, W)
    k = tiny.max_detections
    assert out["det_boxes"].shape == (2, k, 4) and out["det_scores"].shape == (2, k)
    assert out["det_labels"].dtype == torch.int64


def test_mask_rcnn_variant_adds_det_masks():
    torch.manual_seed(0)
    model = create_model("vltmt_tiny_mask2former_maskrcnn", class_names=SEG, detection_class_names=DET,
                         train_num_points=64, text_guidance=False)
    losses = _losses(model.train(), torch.randn(2, 3, H, W), _targets(masks=True))
    assert "det_loss_mask" in losses and "seg_loss_mask" in losses
    with pytest.raises(ValueError, match="masks"):
        _losses(model, torch.randn(2, 3, H, W), _targets())
    with torch.no_grad():
        out = model.eval().export_module()(torch.randn(1, 3, H, W))
    assert out["det_masks"].shape[:2] == (1, model.max_detections)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="freeze"):
        _model(freeze=["tower"])
    with pytest.raises(ValueError, match="det_head"):
        _model(det_head={"rpn_convz": 2})
    with pytest.raises(ValueError, match="loss weights"):
        _model(seg_loss_weight=0.0, det_loss_weight=0.0)


def test_segmentation_half_has_vltseg_names():
    """A VLTSeg checkpoint's tensors land in VLTMT under the same names (model.init_from with these prefixes)."""
    torch.manual_seed(0)
    seg = create_model("vltseg_tiny_mask2former", class_names=SEG, train_num_points=64).state_dict()
    mt = {k: v for k, v in _model().state_dict().items() if k.startswith(SEGMENTATION_PREFIXES)}
    assert mt and set(mt) <= set(seg)
    assert all(mt[k].shape == seg[k].shape for k in mt)


def test_checkpoint_rebuilds_the_model_alone(tiny, tmp_path):
    from vlt_perception.metadata import TASK_MULTITASK, ModelMetadata
    from vlt_training.training.checkpoint import load_model, save_checkpoint

    meta = ModelMetadata(task=TASK_MULTITASK, model_name=tiny.model_name, class_names=SEG,
                         palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2]], detection_class_names=DET,
                         input_height=H, input_width=W)
    ckpt = save_checkpoint(tmp_path, 1, tiny, meta, "task: multitask\n")
    rebuilt, metadata = load_model(ckpt)
    assert isinstance(rebuilt, VLTMultiTask) and metadata.detection_class_names == DET
    images = torch.randn(1, 3, H, W)
    with torch.no_grad():
        a, b = tiny.eval().export_module()(images), rebuilt.export_module()(images)
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
