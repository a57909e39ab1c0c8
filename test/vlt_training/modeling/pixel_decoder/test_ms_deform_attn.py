"""Deformable attention (grid_sample and gather forms) against an explicit bilinear loop and F.grid_sample; the
pixel decoder shapes; the exported graph has no GridSample."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlt_training.modeling.pixel_decoder import (
    SAMPLING_METHODS, MSDeformAttn, MSDeformAttnPixelDecoder, ms_deform_attn_core)


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


@pytest.mark.parametrize("method", SAMPLING_METHODS)
def test_core_matches_naive_bilinear_loop(method):
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (2, 3), (4, 2)]
    b, q, m, d, n_p = 2, 3, 2, 4, 3
    value = torch.randn(b, sum(h * w for h, w in shapes), m, d, generator=g)
    # include locations outside [0, 1] to exercise zero padding
    locations = torch.rand(b, q, m, len(shapes), n_p, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(b, q, m, len(shapes), n_p, generator=g)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    got = ms_deform_attn_core(value, shapes, locations, weights, method=method)
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


def test_module_uses_grid_sample_in_training_and_gathers_in_eval(monkeypatch):
    """Both forms give the same output; which one runs follows the module's mode (see ms_deform_attn_core)."""
    from vlt_training.modeling.pixel_decoder import ms_deform_attn as module

    calls = []
    real = module.ms_deform_attn_core
    monkeypatch.setattr(module, "ms_deform_attn_core", lambda *a, method: calls.append(method) or
                        real(*a, method=method))
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=3)
    shapes = [(4, 6), (2, 3)]
    query, value = torch.randn(2, 5, 8), torch.randn(2, 30, 8)
    ref = torch.rand(2, 5, 2, 2)
    trained = attn.train()(query, ref, value, shapes)
    inferred = attn.eval()(query, ref, value, shapes)
    assert calls == ["level", "gather"]
    torch.testing.assert_close(inferred, trained)


def _grid_sample_reference(value, shapes, locations, weights):
    """The same sampling straight from F.grid_sample (zeros padding, align_corners=False), one call per point."""
    b, _, m, d = value.shape
    _, q, _, _, n_p, _ = locations.shape
    out = torch.zeros(b, m, d, q, dtype=value.dtype)
    levels = value.split([h * w for h, w in shapes], dim=1)
    for li, ((h, w), level) in enumerate(zip(shapes, levels)):
        img = level.permute(0, 2, 3, 1).reshape(b * m, d, h, w)
        for pi in range(n_p):
            grid = (2 * locations[:, :, :, li, pi] - 1).transpose(1, 2).reshape(b * m, q, 1, 2)
            sampled = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out += (sampled.view(b, m, d, q) * weights[:, :, :, li, pi].transpose(1, 2)[:, :, None, :])
    return out.permute(0, 3, 1, 2).reshape(b, q, m * d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gather_form_equals_grid_sample_inside_outside_and_on_borders(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(16, 24), (8, 12), (4, 6), (1, 3)]
    b, q, m, d, n_p = 2, 40, 4, 8, 4
    value = torch.randn(b, sum(h * w for h, w in shapes), m, d, generator=g)
    locations = torch.rand(b, q, m, len(shapes), n_p, 2, generator=g) * 1.6 - 0.3  # about a third outside
    # Exact borders and pixel centres: 0, 1, the first and last centres, and half a pixel beyond the map.
    h0, w0 = shapes[0]
    special = torch.tensor([0.0, 1.0, 0.5 / w0, 1 - 0.5 / w0, -0.5 / w0, 1 + 0.5 / w0, 0.5, 1e-7])
    locations[0, : len(special), :, 0, 0, 0] = special[:, None]
    locations[0, : len(special), :, 0, 1, 1] = special[:, None]
    weights = torch.rand(b, q, m, len(shapes), n_p, generator=g).flatten(-2).softmax(-1).view(b, q, m, len(shapes), n_p)
    got = ms_deform_attn_core(value, shapes, locations, weights, method="gather")
    expected = _grid_sample_reference(value, shapes, locations, weights)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_gather_form_backpropagates_like_grid_sample():
    g = torch.Generator().manual_seed(3)
    shapes = [(6, 8), (3, 4)]
    value = torch.randn(1, 60, 2, 4, generator=g)
    locations = torch.rand(1, 7, 2, 2, 3, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(1, 7, 2, 2, 3, generator=g)
    grads = {}
    for method in ("level", "gather"):
        v, loc, w = (x.clone().requires_grad_(True) for x in (value, locations, weights))
        ms_deform_attn_core(v, shapes, loc, w, method=method).square().sum().backward()
        grads[method] = (v.grad, loc.grad, w.grad)
    for ours, reference in zip(grads["gather"], grads["level"]):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_unknown_sampling_is_an_error():
    with pytest.raises(ValueError, match="unknown deformable attention sampling"):
        ms_deform_attn_core(torch.zeros(1, 4, 1, 2), [(2, 2)], torch.zeros(1, 1, 1, 1, 1, 2),
                            torch.ones(1, 1, 1, 1, 1), method="bicubic")


def test_exported_pixel_decoder_has_no_grid_sample(tmp_path):
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    dec = MSDeformAttnPixelDecoder([16, 16, 16, 16], conv_dim=32, mask_dim=24, encoder_layers=1,
                                   encoder_ffn_dim=32, encoder_heads=4).eval()
    feats = {"res2": torch.randn(2, 16, 16, 32), "res3": torch.randn(2, 16, 8, 16),
             "res4": torch.randn(2, 16, 4, 8), "res5": torch.randn(2, 16, 2, 4)}

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dec = dec

        def forward(self, res2, res3, res4, res5):
            return self.dec({"res2": res2, "res3": res3, "res4": res4, "res5": res5})[0]

    path = tmp_path / "decoder.onnx"
    names = ["res2", "res3", "res4", "res5"]
    torch.onnx.export(Wrapper(), tuple(feats[n] for n in names), str(path), input_names=names,
                      output_names=["mask_features"], opset_version=17, dynamo=False,
                      dynamic_axes={n: {0: "batch"} for n in names})
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "GridSample" not in ops and "Gather" in ops, sorted(ops)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {n: feats[n].numpy() for n in names})
    with torch.no_grad():
        expected = dec(feats)[0]
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)


def test_pixel_decoder_shapes():
    dec = MSDeformAttnPixelDecoder([16, 16, 16, 16], conv_dim=32, mask_dim=24, encoder_layers=1,
                                   encoder_ffn_dim=32, encoder_heads=4)
    feats = {"res2": torch.randn(2, 16, 16, 32), "res3": torch.randn(2, 16, 8, 16),
             "res4": torch.randn(2, 16, 4, 8), "res5": torch.randn(2, 16, 2, 4)}
    mask_features, multi = dec(feats)
    assert mask_features.shape == (2, 24, 16, 32)
    assert [tuple(x.shape) for x in multi] == [(2, 32, 2, 4), (2, 32, 4, 8), (2, 32, 8, 16)]
