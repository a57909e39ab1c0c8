"""A tiny synthetic benchmark shared by the dataset-reader tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from vlt_training.synthetic.benchmark import generate_benchmark

    out = tmp_path_factory.mktemp("synth")
    generate_benchmark(out, num_train=2, num_val=2, height=48, width=96, seed=1, conditions=["fog", "night"])
    return out
