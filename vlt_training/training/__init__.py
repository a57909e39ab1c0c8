"""Trainer loop, optimisers, schedules, checkpoints, distributed helpers and the task-hook registry.

Import the submodules directly (``vlt_training.training.checkpoint``, ``.trainer``); this package imports nothing
heavy so that ``load_model`` stays cheap to reach.
"""
