"""Per-dataset / per-condition evaluation: segmentation here, detection in ``detection.py``.

``runner.evaluate`` drives any task through its hooks (``vlt_training.tasks.registry``) and adds retention.
"""
