"""Domain shifts: each changes pixels, never shapes or labels, is seeded, and grows with strength."""

from __future__ import annotations

import numpy as np
import pytest

from vlt_training.synthetic import render_scene
from vlt_training.synthetic.conditions import DEFAULT_STRENGTH, apply_condition, list_conditions


@pytest.fixture(scope="module")
def source():
    return render_scene(np.random.default_rng(7), 64, 128)


def test_registry_lists_the_acdc_conditions_and_real_style():
    assert set(list_conditions()) >= {"fog", "night", "rain", "snow", "real_style"}
    assert all(0 < DEFAULT_STRENGTH[c] <= 1 for c in list_conditions())


@pytest.mark.parametrize("name", ["fog", "night", "rain", "snow", "real_style"])
def test_condition_changes_the_image_deterministically(source, name):
    before = source.image.copy()
    out = apply_condition(name, source.image, np.random.default_rng(1), depth=source.depth)
    assert out.shape == source.image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - source.image).mean() > 3.0
    again = apply_condition(name, source.image, np.random.default_rng(1), depth=source.depth)
    assert out.tobytes() == again.tobytes()
    assert source.image.tobytes() == before.tobytes()  # input untouched


@pytest.mark.parametrize("name", ["fog", "night", "rain", "snow", "real_style"])
def test_strength_scales_the_shift(source, name):
    def change(strength):
        out = apply_condition(name, source.image, np.random.default_rng(2), strength, depth=source.depth)
        return np.abs(out.astype(int) - source.image).mean()

    assert change(0.0) == 0.0
    assert change(0.2) < change(1.0)


def test_fog_hides_far_more_than_near(source):
    out = apply_condition("fog", source.image, np.random.default_rng(0), 1.0, depth=source.depth).astype(float)
    far, near = source.depth > 60, source.depth < 10
    assert far.any() and near.any()
    contrast = lambda img, m: img[m].std()  # noqa: E731
    assert contrast(out, far) / contrast(source.image.astype(float), far) < \
        contrast(out, near) / contrast(source.image.astype(float), near)


def test_night_is_darker_and_snow_brighter(source):
    night = apply_condition("night", source.image, np.random.default_rng(0))
    snow = apply_condition("snow", source.image, np.random.default_rng(0))
    assert night.mean() < 0.6 * source.image.mean() < 0.6 * snow.mean()


def test_bad_arguments(source):
    with pytest.raises(KeyError, match="unknown condition"):
        apply_condition("sandstorm", source.image, np.random.default_rng(0))
    with pytest.raises(ValueError, match="strength"):
        apply_condition("fog", source.image, np.random.default_rng(0), 1.5)
    with pytest.raises(ValueError, match="uint8"):
        apply_condition("fog", source.image.astype(np.float32), np.random.default_rng(0))
