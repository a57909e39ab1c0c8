"""Puts this folder on sys.path so that the node tests share ``node_graph`` and ``tiny_onnx``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
