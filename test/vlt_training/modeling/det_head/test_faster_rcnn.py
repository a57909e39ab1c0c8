"""Faster R-CNN head: anchors on fractional strides, level-wise RoIAlign, and the static-shape inference path
against torchvision's own (looping, data-dependent) RPN filtering and RoI post-processing."""

import pytest
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import roi_align

from vlt_training.modeling.det_head import FasterRCNNHead
from vlt_training.modeling.det_head._postprocess import batched_nms_mask, top_detections
from vlt_training.modeling.det_head.faster_rcnn import LevelRoIAlign, StrideAnchorGenerator

H, W = 64, 96


def _head(**overrides) -> FasterRCNNHead:
    torch.manual_seed(0)
    kwargs = dict(in_channels=16, num_classes=3, strides=[8.0, 16.0, 32.0], anchor_sizes=[[16.0], [32.0], [64.0]],
                  rpn_convs=1, rpn_pre_nms_topk=[200, 150], rpn_post_nms_topk=[100, 80], box_convs=1,
                  box_conv_dim=16, box_fc_dim=32, roi_batch_size=64, rpn_batch_size=64, pre_nms_topk=80 * 3,
                  score_thresh=0.4, max_detections=30)
    head = FasterRCNNHead(**{**kwargs, **overrides}).eval()
    with torch.no_grad():  # break the symmetric initialisation so that scores and boxes spread out
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return head


def _features(batch: int = 2, channels: int = 16, strides=(8, 16, 32)) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(batch, channels, H // s, W // s) for s in strides]


def test_anchors_follow_fractional_strides():
    gen = StrideAnchorGenerator([[28.0], [56.0]], [1.0], [3.5, 7.0])
    feats = [torch.zeros(1, 4, 4, 6), torch.zeros(1, 4, 2, 3)]
    anchors = gen.grid(feats)
    assert anchors.shape == (4 * 6 + 2 * 3, 4)
    # cell (row 1, col 2) of the stride-3.5 level: centre (7, 3.5), side 28
    assert anchors[1 * 6 + 2].tolist() == [7.0 - 14, 3.5 - 14, 7.0 + 14, 3.5 + 14]
    assert anchors[24 + 1].tolist() == [7.0 - 28, -28.0, 7.0 + 28, 28.0]  # stride 7, cell (0, 1)
    per_image = gen(ImageList(feats[0], [(14, 21)] * 3), feats)
    assert len(per_image) == 3 and torch.equal(per_image[2], anchors)


def test_level_roi_align_pools_each_box_from_its_level():
    pooler = LevelRoIAlign([4.0, 8.0, 16.0, 32.0], output_size=3, sampling_ratio=2)
    feats = [torch.randn(2, 5, 256 // s, 256 // s) for s in (4, 8, 16, 32)]
    # sqrt(area) 40 -> level floor(4 + log2(40 / 224)) = 1 -> clamped to k_min 2 (stride 4);
    # 224 -> level 4 (stride 16); 1000 -> clamped to level 5 (stride 32)
    rois = torch.tensor([[0, 10, 10, 50, 50], [1, 0, 0, 224, 224], [0, 0, 0, 1000, 1000.0]])
    out = pooler.pool(feats, rois)
    assert out.shape == (3, 5, 3, 3)
    for row, (level, stride) in enumerate([(0, 4.0), (2, 16.0), (3, 32.0)]):
        ref = roi_align(feats[level], rois[row:row + 1], (3, 3), 1.0 / stride, 2, aligned=True)
        torch.testing.assert_close(out[row:row + 1], ref)
    # The list interface of torchvision's RoIHeads gives the same rows, image ids from the list position.
    listed = pooler({"p2": feats[0], "p3": feats[1], "p4": feats[2], "p5": feats[3]},
                    [rois[rois[:, 0] == 0, 1:], rois[rois[:, 0] == 1, 1:]], [(256, 256)] * 2)
    torch.testing.assert_close(listed, out[[0, 2, 1]])


def test_level_roi_align_rejects_non_doubling_strides():
    with pytest.raises(ValueError, match="doubling"):
        LevelRoIAlign([4.0, 16.0])


@pytest.mark.parametrize("rpn_nms_thresh", [0.7, 0.2])  # 0.2: fewer proposals survive than P slots
def test_static_inference_matches_torchvision(rpn_nms_thresh):
    head = _head(rpn_nms_thresh=rpn_nms_thresh)
    feats = _features(batch=3)
    named = head._named(feats)
    sizes = [(H, W)] * 3
    with torch.no_grad():
        ref_props, _ = head.rpn(ImageList(feats[0], sizes), named)
        props, valid = head.proposals(feats, (H, W))
        ref_dets, _ = head.roi_heads(named, ref_props, sizes)
        boxes, scores, labels = head.predict(feats, (H, W))
    assert props.shape == (3, 80, 4) and valid.shape == (3, 80)
    if rpn_nms_thresh < 0.5:
        assert (valid.sum(1) < 80).any()  # the masked path is exercised
    for i in range(3):
        torch.testing.assert_close(props[i][valid[i]], ref_props[i])  # same proposals, same order
        ref, keep = ref_dets[i], scores[i] > 0
        assert 0 < len(ref["scores"]) < 30  # some, but fewer than the slots: padding is exercised too
        torch.testing.assert_close(scores[i][keep], ref["scores"])
        torch.testing.assert_close(boxes[i][keep], ref["boxes"])
        assert torch.equal(labels[i][keep], ref["labels"] - 1)  # torchvision's background 0 is internal
        assert (boxes[i][~keep] == 0).all() and (labels[i][~keep] == 0).all()


def test_training_losses_with_and_without_objects():
    head = _head().train()
    feats = [f.requires_grad_() for f in _features(batch=2)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [50.0, 10.0, 90.0, 30.0]]),
                "labels": torch.tensor([0, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = head(feats, (H, W), targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_box_reg"] > 0
    sum(losses.values()).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    missing = [n for n, p in head.named_parameters() if p.grad is None]
    assert not missing, missing


def test_batched_nms_keeps_images_and_groups_apart():
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]]], dtype=torch.float32).repeat(2, 1, 1)
    scores = torch.tensor([[0.9, 0.8, 0.7], [0.5, 0.95, 0.1]])
    groups = torch.tensor([[0, 0, 1], [0, 0, 0]])
    keep = batched_nms_mask(boxes, scores, groups, 2, 0.5)
    # image 0: box 1 suppressed by box 0 (same group), box 2 in its own group; image 1: box 1 wins
    assert keep.tolist() == [[True, False, True], [False, True, False]]
    out_boxes, out_scores, out_labels = top_detections(boxes, scores * keep, groups, max_detections=4)
    torch.testing.assert_close(out_scores, torch.tensor([[0.9, 0.7, 0, 0], [0.95, 0, 0, 0]]))
    assert out_labels.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0]] and out_boxes[1, 1:].abs().sum() == 0


@pytest.mark.parametrize("sizes, strides, match", [
    ([[16.0], [32.0]], [8.0], "2 anchor size lists for 1 pyramid levels"),
    ([[16.0, 24.0], [32.0]], [8.0, 16.0], "same number of anchor sizes"),
])
def test_anchor_settings_are_checked(sizes, strides, match):
    with pytest.raises(ValueError, match=match):
        StrideAnchorGenerator(sizes, [1.0], strides)
