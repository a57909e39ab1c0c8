"""The scene generator: determinism, label conventions, boxes, occlusion, resolution."""

from __future__ import annotations

import numpy as np
import pytest

from vlt_perception.labels import CITYSCAPES_CLASSES, CITYSCAPES_THING_CLASSES, label_ids_to_train_ids
from vlt_training.synthetic import DRAWN_CLASSES, SceneConfig, render_scene

H, W = 64, 128


def scene(seed: int, h: int = H, w: int = W, **cfg):
    return render_scene(np.random.default_rng(seed), h, w, SceneConfig(**cfg))


def test_same_seed_gives_identical_scene():
    a, b = scene(3), scene(3)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.label_ids.tobytes() == b.label_ids.tobytes()
    assert a.instance_ids.tobytes() == b.instance_ids.tobytes()
    assert a.objects == b.objects


def test_different_seeds_differ():
    a, b = scene(1), scene(2)
    assert a.image.tobytes() != b.image.tobytes()
    assert a.label_ids.tobytes() != b.label_ids.tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_boxes_are_tight_around_visible_instance_masks(seed):
    s = scene(seed, 96, 192)
    assert s.objects, "default density should give visible things"
    for obj in s.objects:
        mask = s.instance_ids == obj["instance_id"]
        x1, y1, x2, y2 = obj["bbox"]
        ys, xs = np.nonzero(mask)
        assert obj["area"] == mask.sum() > 0
        # Encloses every pixel and touches each side (tight), x2 / y2 exclusive.
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
        assert CITYSCAPES_THING_CLASSES[obj["category_id"]] == CITYSCAPES_CLASSES[
            label_ids_to_train_ids(np.array([obj["label_id"]]))[0]]


def test_instance_ids_follow_cityscapes_convention():
    s = scene(5, 96, 192)
    things = s.instance_ids >= 1000
    assert things.any()
    np.testing.assert_array_equal(s.instance_ids[things] // 1000, s.label_ids[things])
    np.testing.assert_array_equal(s.instance_ids[~things], s.label_ids[~things])
    # Every thing pixel belongs to a listed object, and no two objects share an id.
    ids = [o["instance_id"] for o in s.objects]
    assert len(ids) == len(set(ids))
    assert set(np.unique(s.instance_ids[things]).tolist()) == set(ids)


def test_scenes_cover_the_drawn_classes_and_nothing_else():
    seen = set()
    for seed in range(12):
        seen |= set(np.unique(scene(seed, 96, 192).train_ids).tolist())
    names = {CITYSCAPES_CLASSES[t] for t in seen if t != 255}
    for required in ("road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "sky", "person", "car",
                     "bicycle"):
        assert required in names
    assert names & {"truck", "bus"}
    assert names <= set(DRAWN_CLASSES)


def test_ego_hood_is_ignored_in_train_ids():
    s = scene(0, ego_hood_prob=1.0)
    assert (s.label_ids == 1).any()
    assert (s.train_ids[s.label_ids == 1] == 255).all()
    assert s.train_ids[-1].tolist() == [255] * W  # the bottom row is bonnet


def test_near_objects_occlude_far_ones():
    # With many cars in few lanes some overlap; the visible area of an occluded car is smaller than its box.
    s = scene(11, 128, 256, cars=12.0, people=0.0, bicycles=0.0)
    fills = [o["area"] / ((o["bbox"][2] - o["bbox"][0]) * (o["bbox"][3] - o["bbox"][1])) for o in s.objects]
    assert min(fills) < 0.5 < max(fills)


@pytest.mark.parametrize("size", [(32, 32), (50, 170), (120, 90)])
def test_any_resolution(size):
    s = scene(0, *size)
    assert s.image.shape == (*size, 3) and s.label_ids.shape == size and s.depth.shape == size
    assert s.image.dtype == np.uint8 and s.label_ids.dtype == np.uint8


def test_too_small_raises():
    with pytest.raises(ValueError, match="too small"):
        scene(0, 8, 8)


def test_depth_is_positive_and_sky_is_far():
    s = scene(2)
    assert (s.depth > 0).all()
    sky = s.label_ids == 23
    assert s.depth[sky].min() > s.depth[~sky].max() * 0.5


def test_colour_alone_does_not_determine_the_class():
    # Classes share colour ranges: the same quantised colour occurs under several labels.
    s = scene(4, 128, 256)
    q = (s.image // 32).astype(np.int64)
    key = (q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).ravel()
    labels = s.train_ids.ravel()
    pairs = np.unique(key * 256 + labels)
    classes_per_colour = np.bincount(pairs // 256)
    assert (classes_per_colour >= 3).sum() >= 5
