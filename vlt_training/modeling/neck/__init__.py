"""Necks turning single-resolution ViT features into a multi-scale pyramid."""

from vlt_training.modeling.neck.simple_feature_pyramid import SimpleFeaturePyramid

__all__ = ["SimpleFeaturePyramid"]
