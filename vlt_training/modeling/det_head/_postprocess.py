"""Static-shape post-processing shared by the detection heads: one NMS call for a whole batch, fixed top-K slots.

Both heads end in the graph contract's fixed ``(B, K)`` outputs, where suppressed and below-threshold entries are
padding with score 0 (box 0, label 0). Doing this with static shapes (masks instead of boolean indexing, one
``nms`` over every image and group) is what lets the same code run PyTorch evaluation and export to one batched
ONNX graph (``NonMaxSuppression`` + ``TopK``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import nms


def batched_nms_mask(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, num_groups: int,
                     iou_threshold: float) -> torch.Tensor:
    """NMS within each (image, group) pair of a batch in one call: a (B, k) bool mask of the boxes kept.

    ``boxes`` (B, k, 4) xyxy, ``scores`` (B, k), ``groups`` (B, k) int64 in ``[0, num_groups)`` (class or pyramid level). Image and group
    are folded into one id and each id's boxes are shifted to their own region (torchvision's coordinate trick,
    written out because ``batched_nms`` switches algorithm on the number of boxes, which becomes a shape guard
    in ``torch.export``).
    """
    batch, k = scores.shape
    image_index = torch.arange(batch, device=boxes.device)[:, None].expand(-1, k)  # B, k
    ids = (image_index * num_groups + groups).reshape(-1).to(boxes.dtype)  # B*k
    flat_boxes = boxes.reshape(-1, 4)  # B*k, 4
    offsets = ids * (flat_boxes.max() + 1.0)  # B*k
    keep = nms(flat_boxes + offsets[:, None], scores.reshape(-1), iou_threshold)
    kept = torch.zeros(batch * k, dtype=torch.bool, device=boxes.device)
    kept[keep] = True
    return kept.reshape(batch, k)


def top_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                   max_detections: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``max_detections`` best of (B, k) candidates, padded when k is smaller: boxes (B, K, 4), scores (B, K),
    labels (B, K) int64, sorted by score. Candidates with score 0 (suppressed, below threshold) are padding:
    their box and label are zeroed too."""
    k = scores.shape[1]
    if k < max_detections:  # tiny inputs: fewer candidates than output slots
        pad = max_detections - k
        scores = F.pad(scores, (0, pad))
        boxes = F.pad(boxes, (0, 0, 0, pad))
        labels = F.pad(labels, (0, pad))
    out_scores, order = scores.topk(max_detections, dim=1)  # B, K
    out_boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))  # B, K, 4
    out_labels = torch.gather(labels, 1, order)  # B, K
    valid = out_scores > 0
    out_boxes = out_boxes * valid[..., None].to(out_boxes.dtype)
    out_labels = out_labels * valid.to(out_labels.dtype)
    return out_boxes, out_scores, out_labels.to(torch.int64)
