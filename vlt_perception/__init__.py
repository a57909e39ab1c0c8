"""vlt_perception: robot-side runtime for VLTSeg / VLTDet models.

The runtime (engines, pipelines, metrics, dataset readers, bag tools) never imports torch at module import time;
the ROS 2 nodes in ``vlt_perception.nodes`` are thin glue over the plain-Python pipelines.
"""

__version__ = "0.1.0"
