"""RoIAlign with torchvision's forward and a vectorised CPU backward.

Why not torchvision's backward on the CPU: its kernel is single-threaded and, for every output element
(RoI x channel x bin), recomputes the bin's sampling grid and bilinear weights before scattering four values. On the
tiny detector that is 35 % of a training step (torch profiler, docs/detection.md). The weights do not depend on the
channel, so here they are computed once per (RoI, bin, sample) with tensor ops, and the gradient is one sparse x
dense matrix product (``torch.sparse.mm``) over whole channel rows. The maths is torchvision's
(``roi_align_kernel.cpp``): the same sample positions, boundary rules and averaging, so values and gradients agree
to float rounding (test_roi_align.py).

Only the backward is replaced, and only on the CPU in training; inference and ONNX export call torchvision's op.
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align


def _axis_weights(start: torch.Tensor, size: torch.Tensor, grid: int, pooled: int,
                  length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis for every (RoI, bin, sample): (R, P, G, 2) positions and weights.

    ``start`` / ``size``: (R,) RoI start and extent in feature pixels; ``grid``: samples per bin; ``length``: the
    feature's extent along this axis. Samples outside ``[-1, length]`` get weight 0 (torchvision drops the whole
    sample: the product of both axes' weights does that).
    """
    bin_size = size / pooled  # R
    bins = torch.arange(pooled, dtype=start.dtype, device=start.device)  # P
    samples = torch.arange(grid, dtype=start.dtype, device=start.device)  # G
    # the kernel's order of operations, for the same float rounding
    coord = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
             + (samples[None, None, :] + 0.5) * bin_size[:, None, None] / grid)  # R, P, G
    inside = (coord >= -1.0) & (coord <= length)  # R, P, G
    coord = coord.clamp(min=0)
    low = coord.floor().long()  # coord >= 0: floor == the kernel's (int) cast
    at_edge = low >= length - 1
    low = torch.where(at_edge, torch.full_like(low, length - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low.to(coord.dtype))  # R, P, G
    positions = torch.stack([low, high], dim=-1)  # R, P, G, 2
    weights = torch.stack([1.0 - frac, frac], dim=-1) * inside[..., None].to(coord.dtype)  # R, P, G, 2
    return positions, weights


def _fixed_grid_weights(boxes: torch.Tensor, images: torch.Tensor, roi_ids: torch.Tensor, grid_h: int, grid_w: int,
                        height: int, width: int, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`roi_align_sample_weights` for RoIs that all sample ``grid_h`` x ``grid_w`` points per bin."""
    rows, wy = _axis_weights(boxes[:, 1], boxes[:, 3] - boxes[:, 1], grid_h, s, height)  # R, S, Gh, 2
    cols, wx = _axis_weights(boxes[:, 0], boxes[:, 2] - boxes[:, 0], grid_w, s, width)  # R, S, Gw, 2
    # (R, S_h, S_w, Gh, Gw, 2, 2): every sample's four taps, the product of the two axes' taps, averaged.
    weights = wy[:, :, None, :, None, :, None] * wx[:, None, :, None, :, None, :] / (grid_h * grid_w)
    image = images[:, None, None, None, None, None, None]  # R, 1, 1, 1, 1, 1, 1
    positions = (image * height + rows[:, :, None, :, None, :, None]) * width + cols[:, None, :, None, :, None, :]
    cells = torch.arange(s * s, device=boxes.device).view(1, s, s)  # 1, S, S
    bins = (roi_ids.view(-1, 1, 1) * (s * s) + cells)[..., None, None, None, None]  # R, S, S, 1, 1, 1, 1
    shape = weights.shape
    return positions.expand(shape).reshape(-1), bins.expand(shape).reshape(-1), weights.reshape(-1)


def roi_align_sample_weights(rois: torch.Tensor, height: int, width: int, output_size: int,
                             spatial_scale: float, sampling_ratio: int, aligned: bool
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sparse matrix RoIAlign applies: output row ``bins[e]`` gets ``weights[e]`` x feature row
    ``positions[e]``, where output rows are ``roi * S * S + ph * S + pw`` and feature rows are
    ``image * H * W + y * W + x``. Returns three (E,) tensors: positions, bins, weights (some taps weigh 0)."""
    boxes = rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)  # R, 4 (feature pixels)
    if not aligned:  # torchvision forces malformed RoIs to 1 x 1 in the legacy mode
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
    if sampling_ratio > 0:
        grids = torch.full((rois.shape[0], 2), sampling_ratio, dtype=torch.long, device=rois.device)
    else:  # adaptive: ceil(extent / bins) samples per bin, per RoI and axis
        grids = torch.ceil((boxes[:, 2:] - boxes[:, :2]).flip(1) / output_size).clamp(min=0).long()  # R, (h, w)
    images = rois[:, 0].long()
    parts = []
    # One pass per distinct sampling grid (a few on a pyramid level): no padding to the largest grid.
    for grid_h, grid_w in torch.unique(grids, dim=0).tolist():
        if grid_h == 0 or grid_w == 0:  # an empty RoI: no samples, zero output
            continue
        ids = torch.where((grids[:, 0] == grid_h) & (grids[:, 1] == grid_w))[0]
        parts.append(_fixed_grid_weights(boxes[ids], images[ids], ids, grid_h, grid_w, height, width, output_size))
    if not parts:
        empty = torch.zeros(0, dtype=torch.long, device=rois.device)
        return empty, empty, rois.new_zeros(0)
    return tuple(torch.cat(column) for column in zip(*parts))


class _RoIAlignFastBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float,
                sampling_ratio: int, aligned: bool) -> torch.Tensor:
        ctx.save_for_backward(rois)
        ctx.settings = (features.shape, output_size, spatial_scale, sampling_ratio, aligned)
        return roi_align(features, rois, output_size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                         aligned=aligned)  # R, C, S, S

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rois,) = ctx.saved_tensors
        (batch, channels, height, width), size, scale, ratio, aligned = ctx.settings
        if rois.shape[0] == 0:  # a level no RoI was assigned to
            return grad.new_zeros(batch, channels, height, width), None, None, None, None, None
        positions, bins, weights = roi_align_sample_weights(rois, height, width, size, scale, ratio, aligned)
        grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, channels)  # R*S*S, C
        # d features = W^T grad: one multi-threaded sparse x dense product instead of a per-element scatter.
        transposed = torch.sparse_coo_tensor(torch.stack([positions, bins]), weights.to(grad.dtype),
                                             (batch * height * width, grad_rows.shape[0]),
                                             check_invariants=False)  # B*H*W, R*S*S: built valid here
        grad_features = torch.sparse.mm(transposed, grad_rows)  # B*H*W, C
        grad_features = grad_features.view(batch, height, width, channels).permute(0, 3, 1, 2)  # B, C, H, W
        return grad_features, None, None, None, None, None


def roi_align_train(features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float,
                    sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:
    """``torchvision.ops.roi_align`` (square ``output_size``, (R, 5) ``rois``) whose gradient, on the CPU, is
    computed by :class:`_RoIAlignFastBackward`; elsewhere (CUDA, no gradient, tracing) torchvision's op as is."""
    fast = (features.device.type == "cpu" and features.requires_grad and torch.is_grad_enabled()
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())
    if not fast:
        return roi_align(features, rois, output_size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                         aligned=aligned)
    return _RoIAlignFastBackward.apply(features, rois, output_size, spatial_scale, sampling_ratio, aligned)


__all__ = ["roi_align_sample_weights", "roi_align_train"]
