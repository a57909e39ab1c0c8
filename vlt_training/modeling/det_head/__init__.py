"""Detection heads for VLTDet (pyramid features -> losses in training, fixed-size boxes/scores/labels in eval)."""

from vlt_training.modeling.det_head.fcos import FCOSDetHead

__all__ = ["FCOSDetHead"]
