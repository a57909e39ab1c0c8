"""DenseCLIP's auxiliary pixel-text loss at the labels' resolution (its identity head: mmseg's decode-head loss
upsamples ``score_map / tau`` bilinearly, ``align_corners=False``, to the label size)."""

from __future__ import annotations

import math

import torch

from vlt_training.modeling import create_model


def _bilinear_half_pixel(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """(K, h, w) -> (K, H, W), written out: sample at ((i + 0.5) * h / H - 0.5), clamped, as align_corners=False."""
    k, h, w = x.shape
    out = torch.empty(k, out_h, out_w, dtype=torch.float64)
    for i in range(out_h):
        y = min(max((i + 0.5) * h / out_h - 0.5, 0.0), h - 1)
        y0 = int(math.floor(y)); y1 = min(y0 + 1, h - 1); wy = y - y0
        for j in range(out_w):
            xx = min(max((j + 0.5) * w / out_w - 0.5, 0.0), w - 1)
            x0 = int(math.floor(xx)); x1 = min(x0 + 1, w - 1); wx = xx - x0
            out[:, i, j] = ((1 - wy) * ((1 - wx) * x[:, y0, x0] + wx * x[:, y0, x1])
                            + wy * ((1 - wx) * x[:, y1, x0] + wx * x[:, y1, x1]))
    return out


def test_aux_loss_upsamples_scores_to_the_labels():
    torch.manual_seed(0)
    guidance = create_model("vltseg_tiny_mask2former", class_names=["road", "car", "pole"]).pixel_text
    scores = torch.rand(1, 3, 3, 4) * 2 - 1  # B, K, h, w cosine similarities
    labels = torch.zeros(1, 12, 16, dtype=torch.long)
    labels[0, :, 5] = 2  # a one-pixel-wide pole: nearest-downsampled labels (stride 4) would miss it
    labels[0, 8:, :] = 1
    labels[0, 0, :3] = 255
    loss = guidance.loss(scores, labels)

    logits = _bilinear_half_pixel(scores[0].double() / guidance.temperature, 12, 16)  # K, H, W
    log_p = logits - torch.logsumexp(logits, dim=0, keepdim=True)
    valid = labels[0] != 255
    expected = -log_p.gather(0, labels[0].clamp(max=2)[None])[0][valid].mean()
    assert torch.allclose(loss.double(), expected, atol=1e-5), (float(loss), float(expected))
