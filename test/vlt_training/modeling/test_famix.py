"""FAMix: patch statistics, AdaIN mixing, the style-mixing hook, style banks on disk, PIN and mining on a
vision-language pretrained tiny tower."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vlt_training.modeling import create_model
from vlt_training.modeling.famix import (StyleBank, StyleMixHook, adain_mix, cache_key, cell_ids, cell_stats,
                                         dominant_classes, mine_styles, pin_optimise, text_targets)

sys.path.insert(0, str(Path(__file__).parent))
import tiny_clip  # noqa: E402  (helper module beside this file)

CLASSES = list(tiny_clip.COLOURS)


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    """Path of a colour-aligned tiny open_clip checkpoint: a tower whose alignment is known exactly (the shipped
    vlt-tiny-clip is tested below too)."""
    return str(tiny_clip.train_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny_clip.pt"))


@pytest.fixture(scope="module")
def famix_model(tower):
    torch.manual_seed(0)
    return create_model("vltseg_tiny_mask2former", class_names=CLASSES, pretrained=tower, mode="famix",
                        train_num_points=64)


def test_cell_ids_split_the_grid_into_patches():
    ids = cell_ids((4, 6), 3).view(4, 6)
    assert ids[0].tolist() == [0, 0, 1, 1, 2, 2]
    assert ids[:, 0].tolist() == [0, 0, 3, 6]  # 4 rows over 3 cells: 2, 1, 1
    assert set(cell_ids((8, 16), 3).tolist()) == set(range(9))


def test_dominant_class_per_patch():
    labels = torch.full((1, 6, 6), 255)
    labels[0, :3, :3] = 2  # top-left patch of a 2x2 grid of 3x3 pixels (patch size 1)
    labels[0, :3, 3:] = 1
    labels[0, 3:, :3] = 0
    labels[0, 3, 3] = 1  # bottom-right: 1 labelled pixel, 8 ignored -> ignore dominates
    classes = dominant_classes(labels, (6, 6), (1, 1), 2, num_classes=3)
    assert classes.tolist() == [[2, 1, 0, 255]]


def test_adain_weight_one_is_identity_and_zero_takes_the_style():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 24, 8, generator=g) * 3 + 1  # B, hw, C for a 4x6 grid
    ids = cell_ids((4, 6), 3)
    style_mean, style_std = torch.randn(2, 9, 8, generator=g), torch.rand(2, 9, 8, generator=g) + 0.5
    same = adain_mix(feats, ids, 9, style_mean, style_std, torch.ones(2, 1, 8))
    assert same.shape == feats.shape and torch.equal(same, feats)
    styled = adain_mix(feats, ids, 9, style_mean, style_std, torch.zeros(2, 1, 8))
    mean, std = cell_stats(styled, ids, 9)
    torch.testing.assert_close(mean, style_mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(std, style_std, atol=1e-2, rtol=1e-2)  # eps and E[x^2] - E[x]^2 on 2-token cells


def _bank(width, classes=(0, 1), n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = {k: torch.randn(n, width, generator=g) for k in classes}
    std = {k: torch.rand(n, width, generator=g) + 0.5 for k in classes}
    return StyleBank(mean, std, width)


def test_style_mix_hook_keeps_shapes_labels_and_prefix():
    hook = StyleMixHook(block=0, patch_size=(4, 4), num_classes=3, grid=2).train()
    x = torch.randn(2, 1 + 12, 8)  # 3x4 patch grid + class token
    labels = torch.randint(0, 3, (2, 12, 16))
    labels_before = labels.clone()
    hook.set_bank(_bank(8))
    hook.set_labels(labels)
    y = hook(x, 0, (3, 4), 1)
    assert y.shape == x.shape and torch.equal(y[:, :1], x[:, :1])
    assert torch.equal(labels, labels_before)
    assert not torch.allclose(y, x)
    hook.set_labels(labels)
    assert torch.equal(hook(x, 1, (3, 4), 1), x)  # other blocks untouched
    hook.eval()
    hook.set_labels(labels)
    assert torch.equal(hook(x, 0, (3, 4), 1), x)  # eval / export: identity


def test_style_bank_round_trip_and_invalidation(tmp_path):
    bank = _bank(5, classes=(0, 2, "ignore"))
    path = tmp_path / "styles.safetensors"
    bank.save(path, key="abc")
    loaded = StyleBank.load(path, "abc")
    assert loaded.sizes() == bank.sizes() and loaded.width == 5
    assert torch.equal(loaded.mean[2], bank.mean[2]) and torch.equal(loaded.std["ignore"], bank.std["ignore"])
    assert StyleBank.load(path, "other inputs") is None
    assert StyleBank.load(tmp_path / "missing.safetensors", "abc") is None
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="styles.safetensors"):
        StyleBank.load(path, "abc")

    # a class with an empty bank falls back to the ignore bank
    classes = torch.tensor([[0, 1], [255, 2]])  # class 1 has no bank
    mean, std, found = bank.sample(classes, ignore_index=255, generator=torch.Generator().manual_seed(0))
    assert mean.shape == std.shape == (2, 2, 5) and found.all()
    assert any(torch.equal(mean[0, 1], row) for row in bank.mean["ignore"])
    assert any(torch.equal(std[1, 1], row) for row in bank.std[2])
    nothing = StyleBank({0: bank.mean[0]}, {0: bank.std[0]}, 5)  # no ignore bank either: that patch keeps its own
    assert nothing.sample(classes, ignore_index=255)[2].tolist() == [[True, False], [False, False]]


def test_pretrained_tower_is_aligned(famix_model):
    """The fixture tower ranks the right colour caption first: PIN's test below runs on a real VL tower."""
    backbone = famix_model.backbone
    names = CLASSES
    text = text_targets(backbone, [f"{n} thing" for n in names], ["a photo of a {}."])
    images = tiny_clip.colour_images(names, 128, torch.Generator().manual_seed(3), backbone.pixel_mean,
                                     backbone.pixel_std)
    with torch.no_grad():
        tokens, grid = backbone.forward_tokens(images, 0)
        emb = F.normalize(backbone.pooled_embedding(tokens, 1, grid), dim=-1)
    assert (emb @ text.t()).argmax(1).tolist() == list(range(len(names)))


def test_pin_raises_similarity_to_the_prompt_and_lowers_its_objective(famix_model):
    backbone = famix_model.backbone
    images = tiny_clip.colour_images(["blue", "black"], 128, torch.Generator().manual_seed(4), backbone.pixel_mean,
                                     backbone.pixel_std)
    with torch.no_grad():
        tokens, grid = backbone.forward_tokens(images, 0)  # 2, 1 + 64, C
    ids = cell_ids(grid, 2)
    cell = (ids == 0).nonzero().flatten()  # the top-left 4x4 tokens
    patch = torch.cat([tokens[:, :1], tokens[:, 1 + cell]], 1)
    targets = text_targets(backbone, ["red thing", "yellow thing"], ["a photo of a {}."])
    before = [p.detach().clone() for p in backbone.parameters()]
    result = pin_optimise(backbone, patch, (4, 4), 1, targets, steps=15, lr=0.3, optimizer="adam")
    cos_before, cos_after = result["cos"]
    assert (cos_after > cos_before + 0.02).all(), (cos_before, cos_after)
    assert result["loss"][-1] < result["loss"][0]
    assert result["mean"].shape == (2, backbone.width) and (result["std"] > 0).all()
    assert all(torch.equal(a, b) for a, b in zip(before, backbone.parameters()))  # only statistics moved


@pytest.fixture(scope="module")
def shipped_famix_model():
    """VLTSeg in FAMix mode on the project's own vision-language pretrained tower, as the ablation uses."""
    from vlt_perception.labels import CITYSCAPES_CLASSES

    torch.manual_seed(0)
    return create_model("vltseg_tiny_mask2former", class_names=list(CITYSCAPES_CLASSES),
                        pretrained="vlt-pretrained:vlt-tiny-clip", mode="famix", train_num_points=64)


def test_pin_on_the_shipped_tower_moves_a_corpus_patch_toward_corpus_style_prompts(shipped_famix_model):
    """PIN on ``vlt-tiny-clip`` with the default style words (the corpus vocabulary): for held-out corpus scenes,
    the top-left patch's restyled embedding moves toward "<style> road" prompts, and the objective falls."""
    from vlt_training.modeling.famix import default_style_words
    from vlt_training.pretrain.corpus import CorpusSpec, image_to_tensor, render_pair

    backbone = shipped_famix_model.backbone
    words = default_style_words()
    assert {"foggy", "night", "snowy", "rainy"} <= set(words)
    spec = CorpusSpec(seed=0, num_train=1, num_heldout=8)
    images = torch.stack([image_to_tensor(render_pair(spec, "heldout", i).image, backbone.pixel_mean,
                                          backbone.pixel_std) for i in range(4)])  # 4, 3, 128, 256
    with torch.no_grad():
        tokens, grid = backbone.forward_tokens(images, 0)  # 4, 1 + 8*16, C
    ch, cw = grid[0] // 3, grid[1] // 3  # the top-left (ch, cw) tokens of the first of 3 x 3 cells, as mining does
    cell = tokens[:, 1:].reshape(4, grid[0], grid[1], -1)[:, :ch, :cw].flatten(1, 2)  # 4, ch*cw, C
    patch = torch.cat([tokens[:, :1], cell], 1)
    prompts = ["night road", "foggy road", "snowy road", "dark road"]
    targets = text_targets(backbone, prompts, ["a photo of a {}."])
    result = pin_optimise(backbone, patch, (ch, cw), 1, targets, steps=15, lr=0.3, optimizer="adam")
    cos_before, cos_after = result["cos"]
    assert (cos_after > cos_before).all(), (cos_before, cos_after)
    assert float((cos_after - cos_before).mean()) > 0.02, (cos_before, cos_after)
    assert result["loss"][-1] < result["loss"][0]


def test_mining_fills_class_banks(famix_model):
    backbone = famix_model.backbone
    image = tiny_clip.colour_images(["green"], 128, torch.Generator().manual_seed(5), backbone.pixel_mean,
                                    backbone.pixel_std)[0, :, :64]  # 3, 64, 128
    labels = torch.full((64, 128), 255)
    labels[:, :80] = 1
    labels[:40, 100:] = 4
    bank = mine_styles(famix_model, [(image, labels)], CLASSES, style_block=0, grid=3, pin_steps=2)
    assert set(bank.mean) == {1, 4, "ignore"}
    assert len(bank) == 9 and bank.mean[1].shape[1] == backbone.width
    key = cache_key(backbone, ["a"], {"grid": 3})
    assert key == cache_key(backbone, ["a"], {"grid": 3})
    assert key != cache_key(backbone, ["b"], {"grid": 3}) != cache_key(backbone, ["a"], {"grid": 2})


@pytest.mark.parametrize("tower, size, out_indices", [("vlt-tiny-vit", 128, (0, 1, 2, 2)),
                                                      ("vlt-tiny-eva02", 224, (1, 3, 5, 7))])
def test_pooled_embedding_path_matches_open_clip(tower, size, out_indices):
    """The miner's path (tokens after block k -> remaining blocks of the whole tower -> pooling / norm / projection)
    is open_clip's own image embedding, also with blocks after out_indices dropped from the dense backbone."""
    from vlt_training.modeling.backbone import CLIPVisionBackbone
    from vlt_training.modeling.backbone.clip_vit import build_open_clip

    torch.manual_seed(0)
    ref = build_open_clip(tower).eval()
    torch.manual_seed(0)
    backbone = CLIPVisionBackbone(tower, out_indices=out_indices).eval()
    assert backbone.depth < backbone.tower_depth  # some blocks only live in the pooled path
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens, grid = backbone.forward_tokens(x, 0)
        ours = backbone.pooled_embedding(tokens, 1, grid)
        theirs = ref.encode_image(x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    backbone.release_text_tower()
    with pytest.raises(RuntimeError, match="released"):
        backbone.pooled_embedding(tokens, 1, grid)


def test_famix_and_rein_on_the_eva_tower():
    """RoPE tower: the hooks see prefix + patch tokens the same way; frozen blocks get no gradient."""
    for mode in ("famix", "rein"):
        torch.manual_seed(0)
        model = create_model("vltseg_tiny_mask2former", clip_model="vlt-tiny-eva02", class_names=CLASSES[:3],
                             out_indices=[0, 1, 2, 3], mode=mode, train_num_points=64, num_queries=8)
        if mode == "famix":
            model.backbone.block_hook.set_bank(_bank(model.backbone.width, classes=(0, 1, 2)))
        model.train()
        targets = [{"sem_seg": s} for s in torch.randint(0, 3, (2, 28, 56))]
        sum(model(torch.randn(2, 3, 28, 56), targets).values()).backward()
        frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
        assert not frozen_with_grad
        assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("backbone.block_hook."))
