"""Deformable attention on grid_sample against an explicit bilinear-sampling loop, and the pixel decoder shapes."""

import math

import pytest
import torch

from vlt_training.modeling.pixel_decoder import MSDeformAttn, MSDeformAttnPixelDecoder, ms_deform_attn_core


def _bilinear(img, x, y):
    """Sample img (D, h, w) at normalised x, y in [0, 1] (pixel centres at (i + 0.5) / size), zeros outside."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=torch.float64)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                wgt = (1 - abs(px - xx)) * (1 - abs(py - yy))
                out += wgt * img[:, yy, xx].double()
    return out


def naive_ms_deform_attn(value, shapes, locations, weights):
    b, _, m, d = value.shape
    _, q, _, n_l, n_p, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(b, q, m, d, dtype=torch.float64)
    for bi in range(b):
        for qi in range(q):
            for mi in range(m):
                for li, (h, w) in enumerate(shapes):
                    img = value[bi, starts[li]:starts[li + 1], mi].T.reshape(d, h, w)
                    for pi in range(n_p):
                        x, y = locations[bi, qi, mi, li, pi].tolist()
                        out[bi, qi, mi] += weights[bi, qi, mi, li, pi].double() * _bilinear(img, x, y)
    return out.reshape(b, q, m * d)


@pytest.mark.parametrize("per_point", [False, True])
def test_core_matches_naive_bilinear_loop(per_point):
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (2, 3), (4, 2)]
    b, q, m, d, n_p = 2, 3, 2, 4, 3
    value = torch.randn(b, sum(h * w for h, w in shapes), m, d, generator=g)
    # include locations outside [0, 1] to exercise zero padding
    locations = torch.rand(b, q, m, len(shapes), n_p, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(b, q, m, len(shapes), n_p, generator=g)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    got = ms_deform_attn_core(value, shapes, locations, weights, per_point=per_point)
    ref = naive_ms_deform_attn(value, shapes, locations, weights)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def test_module_zero_offsets_sample_reference_point():
    """With zero offsets and uniform weights every head reads the value at the reference point."""
    attn = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=2)
    torch.nn.init.zeros_(attn.sampling_offsets.bias)
    for lin in (attn.value_proj, attn.output_proj):
        torch.nn.init.eye_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    h, w = 4, 6
    value = torch.randn(1, h * w, 8)
    # reference point = centre of pixel (row 2, col 3)
    ref = torch.tensor([[[[(3 + 0.5) / w, (2 + 0.5) / h]]]])  # 1, 1, L, 2
    out = attn(torch.randn(1, 1, 8), ref, value, [(h, w)])
    torch.testing.assert_close(out[0, 0], value[0, 2 * w + 3])


def test_module_uses_per_level_in_training_and_per_point_in_eval(monkeypatch):
    """Both forms give the same output; which one runs follows the module's mode (see ms_deform_attn_core)."""
    from vlt_training.modeling.pixel_decoder import ms_deform_attn as module

    calls = []
    real = module.ms_deform_attn_core
    monkeypatch.setattr(module, "ms_deform_attn_core", lambda *a, per_point: calls.append(per_point) or
                        real(*a, per_point=per_point))
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=3)
    shapes = [(4, 6), (2, 3)]
    query, value = torch.randn(2, 5, 8), torch.randn(2, 30, 8)
    ref = torch.rand(2, 5, 2, 2)
    trained = attn.train()(query, ref, value, shapes)
    inferred = attn.eval()(query, ref, value, shapes)
    assert calls == [False, True]
    torch.testing.assert_close(inferred, trained)


def test_pixel_decoder_shapes():
    dec = MSDeformAttnPixelDecoder([16, 16, 16, 16], conv_dim=32, mask_dim=24, encoder_layers=1,
                                   encoder_ffn_dim=32, encoder_heads=4)
    feats = {"res2": torch.randn(2, 16, 16, 32), "res3": torch.randn(2, 16, 8, 16),
             "res4": torch.randn(2, 16, 4, 8), "res5": torch.randn(2, 16, 2, 4)}
    mask_features, multi = dec(feats)
    assert mask_features.shape == (2, 24, 16, 32)
    assert [tuple(x.shape) for x in multi] == [(2, 32, 2, 4), (2, 32, 4, 8), (2, 32, 8, 16)]
