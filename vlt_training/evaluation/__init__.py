"""Per-dataset / per-condition evaluation: segmentation in ``segmentation.py``, detection in ``detection.py``.

``vlt_training.tasks.runner.evaluate`` drives any task through its hooks over every eval dataset and adds
retention.
"""
