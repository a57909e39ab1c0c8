"""Inference engines. ``create_engine`` (in ``factory``) picks and loads one; see ``base`` for the interface.

Nothing heavy is imported here: onnxruntime, tensorrt and torch load only when their engine is created.
"""

from vlt_perception.engines.base import EngineError, EngineInfo, EngineUnavailableError, InferenceEngine
from vlt_perception.engines.factory import create_engine

__all__ = ["EngineError", "EngineInfo", "EngineUnavailableError", "InferenceEngine", "create_engine"]
