"""vlt_training: the offline trainer for VLTSeg / VLTDet (pure PyTorch, never imports rclpy).

Models (``vlt_training.modeling``), data pipelines, the training loop, evaluation and export; it imports the
runtime library ``vlt_perception`` (metrics, dataset readers, metadata), never the reverse. Entry points live in
``vlt_training.cli`` (``python -m vlt_training.cli.train --help``).
"""

__version__ = "0.1.0"
