"""Pretraining models: losses for the trainer, export to a folder open_clip loads, VLTSeg / VLTDet load it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vlt_training.modeling import create_model
from vlt_training.modeling.backbone.clip_vit import folder_overrides
from vlt_training.modeling.meta_arch.clip_pretrain import export_open_clip

SMALL = {"vision_cfg_overrides": {"image_size": [32, 64]}}  # tiny inputs: 2 x 4 patches


def _captions(n: int) -> list[dict]:
    return [{"caption": f"a foggy photo of {i} cars", "labels": torch.zeros(50)} for i in range(n)]


def test_clip_pretrain_loss_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = create_model("clip_pretrain_tiny", **SMALL)
    images = torch.randn(4, 3, 32, 64)
    losses = model(images, _captions(4))
    assert set(losses) == {"loss_contrastive"}
    assert abs(float(losses["loss_contrastive"].detach()) - math.log(4)) < 1.0  # random init: about log(batch)
    losses["loss_contrastive"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    model.eval()
    assert model(images)["image_features"].shape == (4, 64)


def test_vision_pretrain_trains_only_the_vision_tower_and_its_head():
    model = create_model("vision_pretrain_tiny", **SMALL)
    loss = model(torch.randn(2, 3, 32, 64), [{"labels": torch.ones(model.head.out_features)}] * 2)["loss_bce"]
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("clip.visual.", "head.")) for n in trainable)
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(1)
    model = create_model("clip_pretrain_tiny")
    out = export_open_clip(model, tmp_path_factory.mktemp("tower"), fp16=True, provenance={"seed": 1})
    return model, out


def test_export_is_an_open_clip_folder(exported):
    import open_clip

    model, out = exported
    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    assert tokenizer(["a snowy street"]).shape == (1, 32)  # the tiny text tower's context length
    clip.eval()
    model.eval()
    images = torch.randn(2, 3, 128, 256)
    with torch.no_grad():
        ours = model.encode_image(images)
        theirs = clip.encode_image(images, normalize=True)
        text = clip.encode_text(tokenizer(["a snowy street", "a car at night"]), normalize=True)
    assert torch.allclose(ours, theirs, atol=2e-2)  # fp16 storage
    assert text.shape == (2, 64)
    assert json.loads((out / "open_clip_config.json").read_text())["vlt_provenance"]["dtype"] == "float16"


@pytest.mark.parametrize("name", ["vltseg_tiny_mask2former", "vltdet_tiny_fcos"])
def test_vltseg_and_vltdet_take_the_folder_as_pretrained(exported, name):
    import open_clip

    from vlt_training.training.checkpoint import build_model

    _, out = exported
    clip = open_clip.create_model(f"local-dir:{out}")
    for spec in (f"local-dir:{out}", str(out)):
        model = create_model(name, pretrained=spec)
        assert torch.equal(model.backbone.conv1.weight, clip.visual.conv1.weight)
        assert torch.equal(model.backbone.resblocks[0].mlp.c_fc.weight, clip.visual.transformer.resblocks[0].mlp.c_fc.weight)
        assert model.backbone.pretrain_grid == (8, 16)
    # a checkpoint rebuilds the same architecture without the folder (pretrained cleared)
    rebuilt = build_model({"model_name": name, "model_kwargs": model.init_kwargs})
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 128, 256)
    assert [f.shape for f in rebuilt.backbone(x)] == [f.shape for f in model.backbone(x)]


def test_a_folder_with_another_vision_tower_fails_naming_it(exported, tmp_path):
    _, out = exported
    cfg = json.loads((out / "open_clip_config.json").read_text())
    cfg["model_cfg"]["vision_cfg"]["width"] = 256
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"open_clip_config.json.*width"):
        folder_overrides("vlt-tiny-vit", tmp_path)
    with pytest.raises(FileNotFoundError, match="open_clip_model.safetensors"):
        create_model("vltseg_tiny_mask2former", pretrained=f"local-dir:{tmp_path}")
