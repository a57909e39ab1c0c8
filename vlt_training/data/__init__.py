"""Torch datasets over ``vlt_perception.datasets`` records, augmentation and the resumable sampler.

Task-specific data lives in one module per task (``segmentation``, ``detection``) that registers its hooks
with ``vlt_training.engine.tasks``.
"""
