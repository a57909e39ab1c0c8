"""Fixtures of the bag tests; the data and model builders live in bag_fixtures.py (loaded by path: test folders
are not packages)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def load_bag_fixtures():
    """The bag_fixtures module beside this file (one instance per process)."""
    if "bag_fixtures" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bag_fixtures", Path(__file__).with_name("bag_fixtures.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["bag_fixtures"] = module
        spec.loader.exec_module(module)
    return sys.modules["bag_fixtures"]


@pytest.fixture
def fx():
    """The data / model builders (write_cityscapes, palette_model, read_png_rgb ...)."""
    return load_bag_fixtures()


@pytest.fixture
def tiny_cityscapes(tmp_path, fx) -> tuple[Path, list[dict]]:
    """A Cityscapes-layout folder with 2 clear and 2 fog frames, and its records."""
    root = tmp_path / "cityscapes"
    return root, fx.write_cityscapes(root, {"clear": 2, "fog": 2})


@pytest.fixture
def palette_onnx(tmp_path, fx) -> Path:
    return fx.palette_model(tmp_path / "palette_seg.onnx")
