"""Shape-derived constants: cached once per size, equal to a fresh computation, usable after inference mode."""

import torch

from vlt_training.modeling.layers import _sine_table, cached_constant, sine_position_encoding


def test_sine_position_encoding_cached_per_size_and_dtype():
    x = torch.zeros(2, 8, 5, 7)
    pos = sine_position_encoding(x, 4)
    assert pos.shape == (2, 8, 5, 7)
    assert torch.equal(pos[0], _sine_table(5, 7, 4, 10000.0, x.device))
    assert sine_position_encoding(x, 4).data_ptr() == pos.data_ptr()  # built once
    other = sine_position_encoding(torch.zeros(1, 8, 7, 5), 4)
    assert other.shape == (1, 8, 7, 5) and not torch.equal(other[0].transpose(1, 2), pos[0])
    assert sine_position_encoding(x.to(torch.bfloat16), 4).dtype == torch.bfloat16


def test_constant_built_in_inference_mode_serves_autograd_later():
    key = ("test_constant", 3)
    with torch.inference_mode():
        cached_constant(key, torch.device("cpu"), torch.float32, lambda: torch.arange(3.0))
    w = torch.ones(3, requires_grad=True)
    c = cached_constant(key, torch.device("cpu"), torch.float32, lambda: torch.zeros(3))
    assert c.tolist() == [0.0, 1.0, 2.0]  # the first build is kept
    (w * c).sum().backward()  # an inference tensor here would raise
    assert w.grad.tolist() == [0.0, 1.0, 2.0]
