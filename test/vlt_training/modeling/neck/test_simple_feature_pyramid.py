import pytest
import torch

from vlt_training.modeling.neck import SimpleFeaturePyramid


def test_multi_level_pyramid_strides_and_channels():
    sfp = SimpleFeaturePyramid(32, 16, extra_in_channels=(0, 0, 0, 5))
    feats = [torch.randn(2, 32, 8, 16) for _ in range(3)] + [torch.randn(2, 37, 8, 16)]
    out = sfp(feats)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, 16, 32, 64), "res3": (2, 16, 16, 32), "res4": (2, 16, 8, 16), "res5": (2, 16, 4, 8)}


def test_each_level_depends_only_on_its_own_input():
    sfp = SimpleFeaturePyramid(8, 8).eval()
    feats = [torch.randn(1, 8, 4, 4) for _ in range(4)]
    base = sfp(feats)
    changed = list(feats)
    changed[0] = torch.randn(1, 8, 4, 4)  # shallowest block -> res2 only
    out = sfp(changed)
    assert not torch.allclose(out["res2"], base["res2"])
    for k in ("res3", "res4", "res5"):
        torch.testing.assert_close(out[k], base[k])


def test_single_level_vitdet_uses_last_map_and_checks_count():
    sfp = SimpleFeaturePyramid(8, 8, multi_level=False).eval()
    a = [torch.randn(1, 8, 4, 4) for _ in range(4)]
    b = [torch.randn(1, 8, 4, 4) for _ in range(3)] + [a[-1]]
    for k in ("res2", "res5"):
        torch.testing.assert_close(sfp(a)[k], sfp(b)[k])
    with pytest.raises(ValueError, match="expected 4"):
        SimpleFeaturePyramid(8, 8)(a[:3])
