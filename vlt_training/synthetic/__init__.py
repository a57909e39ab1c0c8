"""Procedural domain-shift driving benchmark: street scenes in the Cityscapes label space, rendered cleanly
(``source``) and under ACDC-like conditions, written in the Cityscapes / ACDC / COCO layouts."""

from vlt_training.synthetic.scene import DRAWN_CLASSES, Scene, SceneConfig, render_scene

__all__ = ["DRAWN_CLASSES", "Scene", "SceneConfig", "render_scene"]
