"""Collectives of the detection losses under DDP (a no-op in one process)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_reduce_num_positives(num_positives: torch.Tensor | float, device: torch.device | None = None) -> torch.Tensor:
    """The normaliser of a loss summed over positives (foreground anchors, matched boxes): this process's count
    under a single process, the count averaged over ranks under DDP, at least 1.

    DDP averages gradients over ranks, so a rank's ``loss_sum / normaliser`` with this normaliser gives exactly the
    gradient of one process's ``total_loss_sum / total_positives`` on the global batch. Normalising by each rank's
    own count instead (torchvision's FCOS) weights the positives of a rank with few of them more than the others.
    Every rank must call it (it is a collective) whenever one does.
    """
    num = torch.as_tensor(num_positives, dtype=torch.float32, device=device).detach().reshape(())
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        num = num.clone()
        dist.all_reduce(num)  # sum over ranks
        num = num / dist.get_world_size()
    return num.clamp_min(1.0)
