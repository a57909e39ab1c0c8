"""VLTSeg end to end on the tiny tower: losses, gradients, eval scores, export module, rebuild from init_kwargs."""

import json

import pytest
import torch

from vlt_training.modeling import create_model

H, W = 64, 128


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("vltseg_tiny_mask2former", class_names=["road", "car", "sky"])


def _targets(b, h, w, k=3):
    g = torch.Generator().manual_seed(1)
    sem = torch.randint(0, k, (b, h, w), generator=g)
    sem[:, :4] = 255  # some ignored pixels
    return [{"sem_seg": s} for s in sem]


def test_train_losses_and_every_parameter_gets_gradient(tiny):
    tiny.train()
    tiny.zero_grad(set_to_none=True)
    losses = tiny(torch.randn(2, 3, H, W), _targets(2, H, W))
    expected = {"loss_ce", "loss_mask", "loss_dice", "loss_pixel_text"}
    expected |= {f"{k}_{i}" for k in ("loss_ce", "loss_mask", "loss_dice") for i in range(3)}  # 3 decoder layers
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    missing = [n for n, p in tiny.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    bad = [n for n, p in tiny.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad


def test_eval_scores_cover_input_size_with_padding(tiny):
    tiny.eval()
    with torch.no_grad():
        out = tiny(torch.randn(1, 3, 70, 100))  # not a multiple of 16: padded inside, cropped back
    assert out["sem_seg"].shape == (1, 3, 70, 100)
    assert torch.isfinite(out["sem_seg"]).all()
    assert (out["sem_seg"] >= 0).all()


def test_export_module_returns_labels_and_confidence(tiny):
    exp = tiny.export_module()
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        labels, conf = exp(x)
        sem = tiny.semantic_inference(x)
    assert labels.dtype == torch.uint8 and labels.shape == (2, H, W)
    assert conf.dtype == torch.float32 and conf.shape == (2, H, W)
    assert torch.equal(labels.long(), sem.argmax(1))
    assert ((conf > 0) & (conf <= 1)).all()


def test_init_kwargs_rebuild_same_architecture(tiny):
    kwargs = json.loads(json.dumps(tiny.init_kwargs))  # must survive JSON (checkpoint meta.json)
    rebuilt = create_model(tiny.model_name, **kwargs)
    assert rebuilt.model_name == "vltseg_tiny_mask2former"
    assert rebuilt.class_names == ["road", "car", "sky"]
    rebuilt.load_state_dict(tiny.state_dict())  # strict: same parameter names and shapes
    tiny.eval(), rebuilt.eval()
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x)["sem_seg"], tiny(x)["sem_seg"])


def test_bad_targets_name_the_problem(tiny):
    tiny.train()
    with pytest.raises(ValueError, match="target labels"):
        tiny(torch.randn(1, 3, H, W), [{"sem_seg": torch.full((H, W), 7)}])
    with pytest.raises(ValueError, match="does not match"):
        tiny(torch.randn(1, 3, H, W), [{"sem_seg": torch.zeros(H, W + 1, dtype=torch.long)}])
    with pytest.raises(ValueError, match="needs targets"):
        tiny(torch.randn(1, 3, H, W))


def test_pixel_mean_std_from_tower(tiny):
    assert len(tiny.pixel_mean) == 3 and len(tiny.pixel_std) == 3
    assert tiny.pixel_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_rebuild_does_not_need_the_pretrained_file(tmp_path):
    from vlt_training.modeling.backbone import build_open_clip

    torch.manual_seed(5)
    path = tmp_path / "tiny_open_clip.pt"
    torch.save(build_open_clip("vlt-tiny-vit").state_dict(), path)
    model = create_model("vltseg_tiny_mask2former", pretrained=str(path), class_names=["road", "car"])
    assert model.pretrained_source == str(path)
    assert model.init_kwargs["pretrained"] is None
    path.unlink()  # e.g. a deployment machine without the CLIP weights
    rebuilt = create_model(model.model_name, **json.loads(json.dumps(model.init_kwargs)))
    model.eval(), rebuilt.eval()
    assert not torch.equal(rebuilt.pixel_text.text_embeddings(), model.pixel_text.text_embeddings())
    rebuilt.load_state_dict(model.state_dict())
    # the frozen text tower of the pretrained file and the context vectors travel in the state dict
    torch.testing.assert_close(rebuilt.pixel_text.text_embeddings(), model.pixel_text.text_embeddings())
    assert rebuilt.pixel_mean == model.pixel_mean


def test_full_size_head_defaults_on_the_tiny_tower():
    """The real Mask2Former head (6 encoder / 9 decoder layers, 100 queries, 256 ch, 12544 points)."""
    from vlt_training.modeling.meta_arch.vltseg import VLTSeg

    torch.manual_seed(0)
    model = VLTSeg(clip_model="vlt-tiny-vit", class_names=["road", "car", "sky"])  # constructor defaults
    assert len(model.pixel_decoder.layers) == 6 and model.predictor.num_layers == 9
    assert model.predictor.query_feat.num_embeddings == 100
    model.train()
    losses = model(torch.randn(1, 3, 64, 128), _targets(1, 64, 128))
    assert {f"loss_dice_{i}" for i in range(9)} <= set(losses) and "loss_dice_9" not in losses
    assert all(torch.isfinite(v) for v in losses.values())
