"""Hungarian matching and Mask2Former losses on hand-made cases."""

import torch

from vlt_training.modeling.criterion import (
    HungarianMatcher,
    SetCriterion,
    batch_sem_seg_to_instances,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    sem_seg_to_instances,
)
from vlt_training.modeling.criterion.set_criterion import dice_loss, sigmoid_ce_loss

K = 3  # classes


def _targets():
    sem = torch.full((16, 16), 255)
    sem[:8, :] = 0
    sem[8:, :8] = 2
    sem[8:, 8:] = 1
    sem[0, 0] = 255
    return [sem_seg_to_instances(sem, K)], sem


def _outputs_for(targets, query_of_target, num_queries=6, good=True):
    """Predictions where query ``query_of_target[t]`` predicts target t (class and mask); the rest say no-object."""
    tgt = targets[0]
    logits = torch.full((1, num_queries, K + 1), -10.0)
    logits[0, :, K] = 10.0
    masks = torch.full((1, num_queries) + tuple(tgt["masks"].shape[-2:]), -10.0)
    for t, q in enumerate(query_of_target):
        label = int(tgt["labels"][t]) if good else (int(tgt["labels"][t]) + 1) % K
        logits[0, q, K] = -10.0
        logits[0, q, label] = 10.0
        masks[0, q] = torch.where(tgt["masks"][t] > 0.5, 10.0, -10.0) if good else -masks[0, q]
    return {"pred_logits": logits, "pred_masks": masks}


def test_sem_seg_to_instances_one_mask_per_present_class():
    targets, sem = _targets()
    inst = targets[0]
    assert inst["labels"].tolist() == [0, 1, 2]
    assert inst["masks"].shape == (3, 16, 16)
    assert inst["masks"][0].sum() == 8 * 16 - 1  # the ignored pixel belongs to no mask
    assert inst["masks"][:, 0, 0].sum() == 0


def test_matcher_recovers_permuted_queries():
    targets, _ = _targets()
    query_of_target = [4, 1, 2]
    indices = HungarianMatcher(num_points=512)(_outputs_for(targets, query_of_target), targets)
    src, tgt = indices[0]
    assert dict(zip(tgt.tolist(), src.tolist())) == {0: 4, 1: 1, 2: 2}


def test_perfect_prediction_has_near_zero_loss():
    # on the sampled points themselves the losses of an exact prediction vanish ...
    t = (torch.rand(3, 500) > 0.5).float()
    logits = 20.0 * (2 * t - 1)
    assert sigmoid_ce_loss(logits, t, 3) < 1e-6 and dice_loss(logits, t, 3) < 1e-6
    assert sigmoid_ce_loss(-logits, t, 3) > 5 and dice_loss(-logits, t, 3) > 0.9
    # ... and through the criterion (matching + class CE + point sampling) they are near zero: whole-image masks,
    # since sampled targets are fractional within half a pixel of a mask boundary or the image border
    targets = [sem_seg_to_instances(torch.full((64, 64), c), K) for c in (0, 2)]
    outputs = [_outputs_for([t], [3]) for t in targets]
    outputs = {k: torch.cat([o[k] for o in outputs]) for k in ("pred_logits", "pred_masks")}
    torch.manual_seed(0)
    losses = SetCriterion(K, HungarianMatcher(num_points=1024), num_points=1024, importance_sample_ratio=0.0,
                          oversample_ratio=1.0)(outputs, targets)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    assert losses["loss_ce"] < 1e-3
    # what remains is the half-pixel border band (~3% of the points) times the mask weight 5
    assert losses["loss_mask"] < 0.5 and losses["loss_dice"] < 0.05, losses


def test_wrong_prediction_costs_much_more_than_right_one():
    torch.manual_seed(0)
    targets, _ = _targets()
    crit = SetCriterion(K, HungarianMatcher(num_points=1024), num_points=1024)
    right = crit(_outputs_for(targets, [4, 1, 2]), targets)
    wrong = crit(_outputs_for(targets, [4, 1, 2], good=False), targets)
    assert right["loss_ce"] < 1e-3
    for key in ("loss_ce", "loss_mask", "loss_dice"):
        assert wrong[key] > 1.0 and wrong[key] > 5 * right[key], (key, right[key], wrong[key])


def test_aux_losses_are_suffixed_and_weighted():
    targets, _ = _targets()
    out = _outputs_for(targets, [0, 1, 2], good=False)
    out["aux_outputs"] = [dict(out), dict(out)]
    matcher = HungarianMatcher(num_points=256)  # the same matching for both criteria
    crit = SetCriterion(K, matcher, class_weight=2.0, mask_weight=5.0, dice_weight=5.0, num_points=256)
    torch.manual_seed(0)  # same random points, hence the same matching among tied queries
    losses = crit(out, targets)
    assert {"loss_ce_0", "loss_mask_1", "loss_dice_1"} <= set(losses)
    torch.manual_seed(0)
    unweighted = SetCriterion(K, matcher, class_weight=1.0, mask_weight=1.0, dice_weight=1.0,
                              num_points=256)(out, targets)
    torch.testing.assert_close(losses["loss_ce_1"], 2.0 * unweighted["loss_ce_1"])


def test_no_object_weight_down_weights_background_queries():
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 16, 16)}]
    out = {"pred_logits": torch.zeros(1, 4, K + 1, requires_grad=True),
           "pred_masks": torch.zeros(1, 4, 8, 8, requires_grad=True)}
    losses = SetCriterion(K, HungarianMatcher(num_points=64), num_points=64)(out, targets)
    # only no-object targets: weighted mean CE is log(K + 1) regardless of the weight, mask losses are 0
    torch.testing.assert_close(losses["loss_ce"], 2.0 * torch.log(torch.tensor(K + 1.0)))
    assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0
    sum(losses.values()).backward()  # still differentiable with no ground truth


def test_point_sample_and_importance_sampling():
    logits = torch.full((1, 1, 32, 32), 10.0)
    logits[..., :, 15:17] = 0.0  # an uncertain vertical band
    torch.manual_seed(0)
    coords = get_uncertain_point_coords_with_randomness(logits, 400, 3.0, 0.75)
    assert coords.shape == (1, 400, 2) and coords.min() >= 0 and coords.max() <= 1
    x = coords[0, :, 0]
    in_band = ((x > 14 / 32) & (x < 18 / 32)).float().mean()
    # uniform sampling puts 12.5% there; the zero-padded image border is the other uncertain region
    assert in_band > 0.25
    values = point_sample(torch.arange(4.0).view(1, 1, 2, 2), torch.tensor([[[0.25, 0.25], [0.75, 0.75]]]))
    torch.testing.assert_close(values, torch.tensor([[[0.0, 3.0]]]))


def test_batch_sem_seg_to_instances_matches_unique_per_image():
    g = torch.Generator().manual_seed(0)
    sem = torch.randint(0, 5, (3, 9, 11), generator=g)
    sem[0, :4] = 255
    sem[1] = 255  # an image with nothing but ignored pixels
    sem[2][sem[2] == 3] = 1  # a class absent from one image only
    got = batch_sem_seg_to_instances(sem, 5)
    for s, inst in zip(sem, got):
        classes = torch.unique(s)
        classes = classes[classes != 255]
        assert inst["labels"].tolist() == classes.tolist()
        assert torch.equal(inst["masks"], (s[None] == classes[:, None, None]).float())
    assert got[1]["labels"].numel() == 0 and got[1]["masks"].shape == (0, 9, 11)


def test_matched_targets_sampled_in_place_equal_gathered_masks():
    g = torch.Generator().manual_seed(1)
    targets = [{"masks": (torch.rand(3, 8, 10, generator=g) > 0.5).float()},
               {"masks": torch.zeros(0, 8, 10)},
               {"masks": (torch.rand(2, 8, 10, generator=g) > 0.5).float()}]
    # image 0: only targets 2 and 0 matched (in that order); image 2: both, swapped
    indices = [(torch.tensor([5, 1]), torch.tensor([2, 0])), (torch.empty(0, dtype=torch.long),) * 2,
               (torch.tensor([0, 3]), torch.tensor([1, 0]))]
    coords = torch.rand(4, 7, 2, generator=g)
    got = SetCriterion._sample_matched_targets(targets, indices, coords)
    gathered = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices)])[:, None]  # 4, 1, H, W
    assert torch.equal(got, point_sample(gathered, coords)[:, 0])


def test_matcher_on_a_batch_equals_one_image_at_a_time():
    g = torch.Generator().manual_seed(2)
    sems = torch.randint(0, K, (3, 12, 12), generator=g)
    sems[1] = 255  # an image without targets in the middle
    targets = batch_sem_seg_to_instances(sems, K)
    outputs = {"pred_logits": torch.randn(3, 5, K + 1, generator=g), "pred_masks": torch.randn(3, 5, 6, 6, generator=g)}
    matcher = HungarianMatcher(num_points=64)
    torch.manual_seed(0)
    batched = matcher(outputs, targets)
    torch.manual_seed(0)
    single = [matcher({k: v[i:i + 1] for k, v in outputs.items()}, [t])[0] for i, t in enumerate(targets)]
    for (qb, tb), (qs, ts) in zip(batched, single):
        assert torch.equal(qb, qs) and torch.equal(tb, ts)
    assert batched[1][0].numel() == 0
