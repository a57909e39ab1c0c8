"""The vectorised RoIAlign backward against torchvision's own kernel: same values, same gradients, deterministic."""

import pytest
import torch
from torchvision.ops import roi_align

from vlt_training.modeling.det_head._roi_align import roi_align_sample_weights, roi_align_train
from vlt_training.modeling.det_head.faster_rcnn import LevelRoIAlign


def _rois(n: int, batch: int, height: int, width: int, stride: float, seed: int = 0) -> torch.Tensor:
    """(n, 5) RoIs in image pixels: mostly inside, some past the borders, some empty, some large."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([width * stride, height * stride])
    xy = torch.rand(n, 2, generator=g) * (size + 40) - 20  # up to 20 px outside the image
    wh = torch.rand(n, 2, generator=g) * size * 0.6
    wh[: n // 10] = 0.0  # empty boxes: zero output, zero gradient
    wh[n // 10: n // 5] *= 3.0  # large boxes: several samples per bin on the adaptive grid
    images = torch.randint(0, batch, (n, 1), generator=g).float()
    return torch.cat([images, xy, xy + wh], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_values_and_gradients_match_torchvision(aligned, sampling_ratio):
    torch.manual_seed(0)
    features = torch.randn(3, 8, 13, 21, dtype=torch.float64, requires_grad=True)
    rois = _rois(150, batch=3, height=13, width=21, stride=8.0).double()
    grad = torch.randn(150, 8, 7, 7, dtype=torch.float64)

    expected = roi_align(features, rois, 7, 1 / 8, sampling_ratio, aligned)
    (expected_grad,) = torch.autograd.grad(expected, features, grad)
    got = roi_align_train(features, rois, 7, 1 / 8, sampling_ratio, aligned)
    (got_grad,) = torch.autograd.grad(got, features, grad)

    assert torch.equal(got, expected)  # the forward is torchvision's op itself
    assert got_grad.abs().max() > 1.0  # gradients reach the features
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-10)


def test_backward_is_deterministic_and_thread_independent():
    torch.manual_seed(0)
    features = torch.randn(2, 16, 16, 32, requires_grad=True)
    rois = _rois(256, batch=2, height=16, width=32, stride=8.0, seed=1)
    grad = torch.randn(256, 16, 7, 7)
    first = torch.autograd.grad(roi_align_train(features, rois, 7, 1 / 8), features, grad)[0]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = torch.autograd.grad(roi_align_train(features, rois, 7, 1 / 8), features, grad)[0]
    finally:
        torch.set_num_threads(threads)
    again = torch.autograd.grad(roi_align_train(features, rois, 7, 1 / 8), features, grad)[0]
    assert torch.equal(first, again) and torch.equal(first, single)


def test_sample_weights_average_to_one_per_bin_inside_the_map():
    """Each bin of a RoI well inside the map is an average of bilinear samples: its weights sum to 1."""
    rois = torch.tensor([[0.0, 16.0, 16.0, 80.0, 60.0], [1.0, 8.0, 24.0, 200.0, 90.0]])
    positions, bins, weights = roi_align_sample_weights(rois, 16, 32, 7, 1 / 8, 0, True)
    per_bin = torch.zeros(2 * 49, dtype=weights.dtype).index_add_(0, bins, weights)
    torch.testing.assert_close(per_bin, torch.ones(2 * 49))
    image = positions // (16 * 32)
    assert torch.equal(image[bins < 49].unique(), torch.tensor([0]))
    assert torch.equal(image[bins >= 49].unique(), torch.tensor([1]))


def test_empty_level_and_no_gradient_paths():
    features = torch.randn(1, 4, 8, 8, requires_grad=True)
    none = torch.zeros(0, 5)
    out = roi_align_train(features, none, 7, 1 / 8)
    assert out.shape == (0, 4, 7, 7)
    out.sum().backward()  # a level without RoIs: zero gradient, no error
    assert torch.count_nonzero(features.grad) == 0
    with torch.no_grad():  # inference: torchvision's op unchanged
        rois = _rois(5, 1, 8, 8, 8.0)
        assert torch.equal(roi_align_train(features, rois, 7, 1 / 8), roi_align(features, rois, 7, 1 / 8, 0, True))


def test_level_roi_align_gradients_match_torchvision():
    """The head's pooler (training path) gives torchvision's gradients on every level."""
    torch.manual_seed(0)
    strides = (8.0, 16.0, 32.0)
    features = [torch.randn(2, 8, int(128 / s), int(256 / s), dtype=torch.float64, requires_grad=True)
                for s in strides]
    boxes = [_rois(60, 1, 16, 32, 8.0, seed=i)[:, 1:].double().abs() * 2 for i in range(2)]  # up to ~300 px
    pooler = LevelRoIAlign(strides, 7, 0)
    got = pooler({str(i): f for i, f in enumerate(features)}, boxes, [(128, 256)] * 2)
    grad = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, features, grad)

    rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
    levels = pooler.mapper([rois[:, 1:]])
    expected = torch.zeros_like(got)
    for level, (feature, stride) in enumerate(zip(features, strides)):
        index = torch.where(levels == level)[0]
        expected[index] = roi_align(feature, rois[index], 7, 1 / stride, 0, True)
    expected_grads = torch.autograd.grad(expected, features, grad)
    assert len(levels.unique()) >= 2  # the boxes span several levels
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
