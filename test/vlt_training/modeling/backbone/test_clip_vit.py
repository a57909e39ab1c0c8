"""The open_clip backbone: parity with the towers' own forward, checkpoints, position embeddings, hooks."""

import pytest
import torch
from torch import nn

from vlt_training.modeling.backbone import (
    CLIPVisionBackbone,
    build_open_clip,
    evenly_spaced_indices,
    interpolate_pos_embed,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return CLIPVisionBackbone("vlt-tiny-vit")


def test_matches_open_clip_forward_intermediates_at_native_size(tiny):
    visual = tiny.__dict__["_clip"].visual  # the tower the backbone was cut from (kept until released)
    x = torch.randn(2, 3, 128, 128)  # the tower's configured image size: no interpolation involved
    with torch.no_grad():
        ref = visual.forward_intermediates(x, indices=list(tiny.out_indices), intermediates_only=True)
        got = tiny.forward_intermediates(x)
    assert len(got) == 4
    for g, r in zip(got, ref["image_intermediates"]):
        torch.testing.assert_close(g, r)


def test_non_square_input_and_padding(tiny):
    with torch.no_grad():
        feats = tiny(torch.randn(1, 3, 64, 160))
        padded = tiny(torch.randn(1, 3, 60, 150))  # padded up to 64 x 160
    assert [tuple(f.shape) for f in feats] == [(1, 128, 4, 10)] * 4
    assert [tuple(f.shape) for f in padded] == [(1, 128, 4, 10)] * 4


def test_interpolate_pos_embed_matches_timm_resample_and_keeps_prefix():
    from timm.layers import resample_abs_pos_embed

    pos = torch.randn(1, 1 + 7 * 7, 16)
    got = interpolate_pos_embed(pos, (7, 7), (12, 24), num_prefix=1)
    ref = resample_abs_pos_embed(pos, (12, 24), (7, 7), num_prefix_tokens=1, interpolation="bicubic",
                                 antialias=False)
    assert got.shape == (1, 1 + 12 * 24, 16)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got[:, :1], pos[:, :1])
    assert interpolate_pos_embed(pos, (7, 7), (7, 7), 1) is pos  # same grid: untouched
    # a constant field stays constant (bicubic weights sum to one)
    const = torch.ones(1, 1 + 4 * 4, 3)
    torch.testing.assert_close(interpolate_pos_embed(const, (4, 4), (8, 16), 1), torch.ones(1, 1 + 8 * 16, 3))


def test_open_clip_checkpoint_loads_through_pretrained_path(tmp_path):
    torch.manual_seed(123)
    import open_clip

    clip = build_open_clip("vlt-tiny-vit")
    path = tmp_path / "open_clip_tiny.pt"
    torch.save(clip.state_dict(), path)  # open_clip's own format
    torch.manual_seed(999)  # a different random init, so equality proves loading
    bb = CLIPVisionBackbone("vlt-tiny-vit", pretrained=str(path))
    ref = clip.visual.state_dict()
    ours = bb.state_dict()
    mapping = {"conv1.weight": "conv1.weight", "class_embedding": "class_embedding",
               "positional_embedding": "positional_embedding", "ln_pre.weight": "ln_pre.weight",
               "ln_post.weight": "dense_norm.weight", "proj": "dense_proj.proj"}
    for name, value in ref.items():
        if name.startswith("transformer.resblocks."):
            mapping[name] = name.replace("transformer.resblocks.", "resblocks.")
    for src, dst in mapping.items():
        torch.testing.assert_close(ours[dst], ref[src], rtol=0, atol=0, msg=f"{src} -> {dst}")
    # the text tower came from the checkpoint too
    tok = open_clip.get_tokenizer("vlt-tiny-vit")(["a photo of a car."])
    with torch.no_grad():
        expected = clip.encode_text(tok, normalize=True)
    torch.testing.assert_close(bb.encode_prompts(["a photo of a car."]), expected)


def test_missing_checkpoint_names_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        CLIPVisionBackbone("vlt-tiny-vit", pretrained=str(missing))
    with pytest.raises(ValueError, match="unknown open_clip model"):
        CLIPVisionBackbone("ViT-Q-99")


def test_out_indices_default_and_validation():
    assert evenly_spaced_indices(12) == (2, 5, 8, 11)
    assert evenly_spaced_indices(24) == (5, 11, 17, 23)
    with pytest.raises(ValueError, match="out_indices"):
        CLIPVisionBackbone("vlt-tiny-vit", out_indices=(0, 1, 2, 9))


def test_block_hook_sees_every_block_and_changes_features(tiny):
    seen = []

    class Shift(nn.Module):
        def forward(self, tokens, index, grid, num_prefix):
            seen.append((index, tuple(tokens.shape), grid, num_prefix))
            return tokens + 1.0

    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        base = tiny(x)
        tiny.set_block_hook(nn.ModuleList(Shift() for _ in range(tiny.depth)))
        try:
            hooked = tiny(x)
        finally:
            tiny.set_block_hook(None)
    assert seen == [(i, (1, 1 + 2 * 3, 128), (2, 3), 1) for i in range(4)]
    assert not torch.allclose(hooked[0], base[0])
    assert "block_hook" not in dict(tiny.named_modules())
    # callables work too
    calls = []
    tiny.set_block_hook(lambda t, i, g, n: calls.append(i) or t)
    try:
        with torch.no_grad():
            same = tiny(x)
    finally:
        tiny.set_block_hook(None)
    assert calls == [0, 1, 2, 3]
    torch.testing.assert_close(same[-1], base[-1])


def test_drop_path_only_in_training_and_checkpointing_keeps_gradients():
    torch.manual_seed(0)
    bb = CLIPVisionBackbone("vlt-tiny-vit", drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    bb.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb(x)[-1], bb(x)[-1])
    bb.train()
    torch.manual_seed(1)
    a = bb(x)[-1]
    torch.manual_seed(2)
    b = bb(x)[-1]
    assert not torch.allclose(a, b)

    bb_ref = CLIPVisionBackbone("vlt-tiny-vit")
    bb_ckpt = CLIPVisionBackbone("vlt-tiny-vit", grad_checkpointing=True)
    bb_ckpt.load_state_dict(bb_ref.state_dict())
    grads = []
    for model in (bb_ref, bb_ckpt):
        model.train()
        model(x)[-1].square().mean().backward()
        grads.append(model.conv1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_eva02_tower_matches_timm_and_runs_non_square():
    # vlt-tiny-eva02: timm's eva02_tiny (RoPE, cls token, abs pos embed) as an open_clip tower, the same code path
    # as EVA02-B/L at a fraction of the build time
    torch.manual_seed(0)
    bb = CLIPVisionBackbone("vlt-tiny-eva02", out_indices=(1, 3, 5, 7))
    bb.release_text_tower()
    assert bb.is_timm and bb.depth == 8 and bb.tower_depth == 12  # blocks after the last output are dropped
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = bb.trunk.forward_intermediates(x, indices=[1, 3, 5, 7], intermediates_only=True)
        got = bb(x)
        for g, r in zip(got, ref):
            torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
        wide = bb(torch.randn(1, 3, 56, 140))  # RoPE and abs pos embed rebuilt for 4 x 10
        back = bb(x)  # and back to the pretraining grid
        proj = bb.project_dense(wide[-1])
    torch.testing.assert_close(back[-1], got[-1])
    assert [tuple(f.shape) for f in wide] == [(1, 192, 4, 10)] * 4
    assert proj.shape == (1, 64, 4, 10)  # the joint embedding dim of the config


def test_eva02_trains_after_inference_mode_at_the_same_size():
    """The RoPE table rebuilt under torch.inference_mode (evaluation) must not break the next training step."""
    torch.manual_seed(0)
    bb = CLIPVisionBackbone("vlt-tiny-eva02", out_indices=(0, 1, 2, 3), keep_projection=False)
    bb.release_text_tower()
    x = torch.randn(1, 3, 42, 70)  # 3 x 5 grid, not the 16 x 16 of pretraining
    with torch.inference_mode():
        bb.eval()
        bb(x)
    bb.train()
    bb(x)[-1].mean().backward()
    assert bb.trunk.patch_embed.proj.weight.grad is not None
