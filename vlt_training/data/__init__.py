"""Torch datasets over ``vlt_perception.datasets`` records, augmentation and the resumable sampler.

Task-specific data lives in one module per task (``segmentation``, ``detection``); the trainer's hooks that use
them are in :mod:`vlt_training.tasks`.
"""
