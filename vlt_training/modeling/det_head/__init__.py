"""Detection heads for VLTDet (pyramid features -> losses in training, fixed-size boxes/scores/labels in eval)."""

from vlt_training.modeling.det_head.faster_rcnn import FasterRCNNHead
from vlt_training.modeling.det_head.fcos import FCOSDetHead

__all__ = ["FasterRCNNHead", "FCOSDetHead"]
