"""Every registered VLTSeg model: forward + backward at tiny size, every trainable parameter gets a gradient.

Big towers keep their architecture (width, heads, patch, RoPE ...) but run only 4 blocks and a small head, so the
test stays CPU-friendly: open_clip ViTs get ``layers=4`` through the open_clip config, timm EVA towers
``timm_kwargs={"depth": 4}``.
"""

import pytest
import torch

from vlt_training.modeling import create_model, list_models, register_model

SMALL_HEAD = dict(
    pyramid_channels=32, conv_dim=32, mask_dim=32, encoder_layers=1, encoder_ffn_dim=32, encoder_heads=4,
    hidden_dim=32, num_queries=6, nheads=4, dim_feedforward=32, dec_layers=2, train_num_points=256,
    text_cfg_overrides={"layers": 1}, class_names=["road", "car", "sky"],
)
SHRINK = {
    "vltseg_tiny_mask2former": {},
    "vltseg_vit_s16_mask2former": {"vision_cfg_overrides": {"layers": 4}},
    "vltseg_vit_b16_mask2former": {"vision_cfg_overrides": {"layers": 4}},
    "vltseg_vit_l14_mask2former": {"vision_cfg_overrides": {"layers": 4}},
    "vltseg_eva02_b16_mask2former": {"vision_cfg_overrides": {"timm_kwargs": {"depth": 4}}},
    "vltseg_eva02_l14_mask2former": {"vision_cfg_overrides": {"timm_kwargs": {"depth": 4}},
                                     "out_indices": [0, 1, 2, 3]},
}
VLTSEG_MODELS = list_models("vltseg")


def test_all_vltseg_variants_are_registered():
    assert set(SHRINK) <= set(VLTSEG_MODELS)


@pytest.mark.parametrize("name", VLTSEG_MODELS)
def test_forward_backward_every_parameter(name):
    torch.manual_seed(0)
    overrides = {**SMALL_HEAD, **SHRINK.get(name, {"vision_cfg_overrides": {"layers": 4}})}
    model = create_model(name, **overrides)
    assert model.model_name == name
    model.train()
    h, w = 32, 64  # need not be a multiple of the patch size (14 or 16): the backbone pads
    images = torch.randn(1, 3, h, w)
    targets = [{"sem_seg": torch.randint(0, 3, (h, w))}]
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:10]}"
    nan = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not nan, f"{name}: non-finite gradients in {nan[:10]}"
    model.eval()
    with torch.no_grad():
        sem = model(images)["sem_seg"]
    assert sem.shape == (1, 3, h, w) and torch.isfinite(sem).all()


def test_text_guidance_off_has_no_pixel_text_loss_and_all_grads():
    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former", text_guidance=False, **SMALL_HEAD)
    assert model.pixel_text is None
    model.train()
    losses = model(torch.randn(1, 3, 32, 64), [{"sem_seg": torch.randint(0, 3, (32, 64))}])
    assert "loss_pixel_text" not in losses
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_model_and_duplicate_registration():
    with pytest.raises(KeyError, match="vltseg_tiny_mask2former"):
        create_model("vltseg_tiny_mask2formr")

    def vltseg_tiny_mask2former(**kwargs):  # same name, different function
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="already registered"):
        register_model(vltseg_tiny_mask2former)
