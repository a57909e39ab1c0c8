"""Rein: small change at init, prefix tokens untouched, gradients only in Rein + heads, decoder queries from the
tokens, parameter budget of every registered tower, ONNX export parity."""

import pytest
import torch

from vlt_training.export import export_onnx, verify_onnx
from vlt_training.export.model_metadata import metadata_for_model
from vlt_training.export.verify import verification_batch
from vlt_training.modeling import create_model
from vlt_training.modeling.rein import Rein, rein_parameter_count, tower_rein_fraction
from vlt_training.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder

H, W = 32, 64
CLASSES = ["road", "car", "sky"]
# the open_clip towers of the registered vltseg_* models (vlt_training/modeling/meta_arch/vltseg.py)
REGISTERED_TOWERS = ["vlt-tiny-vit", "ViT-S-16", "ViT-B-16", "ViT-L-14", "EVA02-B-16", "EVA02-L-14"]


def _rein_model(**options):
    torch.manual_seed(0)
    return create_model("vltseg_tiny_mask2former", class_names=CLASSES, mode="rein", train_num_points=64,
                        mode_options=options or None)


def test_output_changes_only_by_the_small_scale():
    model = _rein_model().eval()
    rein = model.backbone.block_hook
    assert isinstance(rein, Rein) and rein.scale.item() == pytest.approx(1e-3)
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        with_rein = model.backbone(x)
        model.backbone.set_block_hook(None)
        plain = model.backbone(x)
        model.backbone.set_block_hook(rein)
        rein.scale.fill_(0.0)
        zero_scale = model.backbone(x)
    for a, b, c in zip(with_rein, plain, zero_scale):
        assert torch.equal(c, b)  # scale 0: exactly the frozen tower
        rel = (a - b).norm() / b.norm()
        assert 0 < rel < 1e-2, rel


def test_prefix_tokens_untouched_patch_tokens_refined():
    rein = Rein(num_blocks=2, width=8, patch_size=4, num_tokens=5, rank=2, scale_init=1.0)
    x = torch.randn(3, 1 + 6, 8)
    y = rein(x, 1, (2, 3), 1)
    assert y.shape == x.shape
    assert torch.equal(y[:, :1], x[:, :1])
    assert not torch.allclose(y[:, 1:], x[:, 1:])
    assert sum(p.numel() for p in rein.parameters()) == rein_parameter_count(2, 8, 5, 2, None)


def test_only_rein_and_heads_get_gradients():
    model = _rein_model().train()
    g = torch.Generator().manual_seed(1)
    targets = [{"sem_seg": s} for s in torch.randint(0, 3, (2, H, W), generator=g)]
    sum(model(torch.randn(2, 3, H, W, generator=g), targets).values()).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    rein = {n for n, _ in model.named_parameters() if n.startswith("backbone.block_hook.")}
    assert rein <= with_grad, f"Rein parameters without gradient: {rein - with_grad}"
    backbone_other = {n for n in with_grad if n.startswith("backbone.") and n not in rein}
    assert not backbone_other
    # the heads: pyramid, pixel decoder, Mask2Former decoder and the text guidance's trainable parts (if any)
    heads = {n for n in with_grad if n.startswith(("neck.", "pixel_decoder.", "predictor.", "pixel_text."))}
    assert with_grad == rein | heads
    assert "predictor.class_embed.weight" in heads
    # the decoder's own query tables are gone: its queries come from the tokens
    assert model.predictor.query_feat is None and model.predictor.query_embed is None


def test_unlinked_rein_keeps_the_decoder_queries():
    model = _rein_model(link_queries=False, num_tokens=7, rank=4)
    rein = model.backbone.block_hook
    assert rein.num_tokens == 7 and rein.decoder_queries() == {}
    assert model.predictor.query_feat is not None


def test_decoder_accepts_external_queries():
    torch.manual_seed(0)
    dec = MultiScaleMaskedTransformerDecoder(16, 3, hidden_dim=16, num_queries=4, nheads=2, dim_feedforward=32,
                                             dec_layers=2, mask_dim=16).eval()
    feats = [torch.randn(2, 16, s, 2 * s) for s in (2, 4, 8)]
    mask_features = torch.randn(2, 16, 16, 32)
    with torch.no_grad():
        own = dec(feats, mask_features)
        same = dec(feats, mask_features, query_embed=dec.query_embed.weight, query_feat=dec.query_feat.weight)
        qe, qf = torch.randn(4, 16), torch.randn(4, 16)
        shared = dec(feats, mask_features, query_embed=qe, query_feat=qf)
        batched = dec(feats, mask_features, query_embed=qe.expand(2, -1, -1), query_feat=qf.expand(2, -1, -1))
    torch.testing.assert_close(same["pred_masks"], own["pred_masks"])
    torch.testing.assert_close(batched["pred_logits"], shared["pred_logits"])
    assert not torch.allclose(shared["pred_logits"], own["pred_logits"])
    dec.query_feat = None
    with pytest.raises(ValueError, match="no learned query_feat"):
        dec(feats, mask_features)


@pytest.mark.parametrize("tower", REGISTERED_TOWERS)
def test_rein_parameter_fraction_of_registered_towers(tower):
    row = tower_rein_fraction(tower)
    print(row)
    if tower in ("ViT-L-14", "EVA02-L-14"):
        assert 0.005 < row["fraction"] < 0.015  # "about 1% for ViT-L"
    assert row["rein_params"] < 0.2 * row["tower_params"] or tower == "vlt-tiny-vit"


def test_rein_model_export_parity(tmp_path):
    model = _rein_model().eval()
    with torch.no_grad():
        model.backbone.block_hook.scale.fill_(0.5)  # make the refinement matter in the graph
    path, stored = export_onnx(model, metadata_for_model(model, H, W), tmp_path / "rein.onnx")
    images, source = verification_batch(stored, count=2)
    report = verify_onnx(path, model, stored, images, source)
    assert report.passed, report.summary()
