"""Matching and losses of mask-classification models."""

from vlt_training.modeling.criterion.matcher import HungarianMatcher
from vlt_training.modeling.criterion.point_sample import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from vlt_training.modeling.criterion.set_criterion import (
    SetCriterion,
    batch_sem_seg_to_instances,
    sem_seg_to_instances,
)

__all__ = [
    "HungarianMatcher", "SetCriterion", "batch_sem_seg_to_instances", "get_uncertain_point_coords_with_randomness",
    "point_sample", "sem_seg_to_instances",
]
