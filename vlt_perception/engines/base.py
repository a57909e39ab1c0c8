"""The inference-engine interface: load, warm up, infer (ndarray in, dict of ndarrays out).

Implementations: ``onnxruntime_engine.OnnxRuntimeEngine``, ``tensorrt_engine.TensorRTEngine`` and
``torch_engine.TorchEngine``. None of them is imported here, so importing this module needs only numpy.
The graph contract (input ``images``; outputs ``labels``/``confidence`` or ``boxes``/``scores``/``labels`` [+
``masks``]) is
documented on :class:`vlt_perception.metadata.ModelMetadata`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from vlt_perception.metadata import ModelMetadata


class EngineError(RuntimeError):
    """A model could not be loaded or run; the message names the file and the problem."""


class EngineUnavailableError(EngineError):
    """The requested engine's library or device is not present (e.g. TensorRT requested but not installed)."""


@dataclass
class EngineInfo:
    """What actually runs, for logs, diagnostics and benchmark output."""

    engine: str  # "tensorrt" | "onnxruntime" | "torch"
    precision: str  # "fp32" | "fp16" | "bf16" | "int8"
    device: str  # e.g. "cpu", "cuda:0"
    providers: list[str] = field(default_factory=list)  # ONNX Runtime providers that really run
    model_path: str = ""


class InferenceEngine(ABC):
    """One loaded model. ``infer`` takes a normalised float32 batch (B, 3, H, W) at the metadata's input size."""

    metadata: ModelMetadata
    info: EngineInfo

    @abstractmethod
    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run the network; returns the graph outputs by name (see ModelMetadata for the contract)."""

    def warmup(self, iterations: int = 2) -> None:
        """Run a few dummy batches so that lazy initialisation does not hit the first real frame."""
        dummy = np.zeros((1, 3, self.metadata.input_height, self.metadata.input_width), dtype=np.float32)
        for _ in range(iterations):
            self.infer(dummy)

    def close(self) -> None:
        """Free device memory. Safe to call twice."""


class PacedEngine(InferenceEngine):
    """Wraps an engine so that every ``infer`` takes at least ``min_ms``: emulates a slower accelerator.

    For reproducing overload on a fast machine (a camera faster than the model, frames dropped, latency
    bounded) independent of how fast this CPU happens to be; the nodes' ``min_inference_ms`` parameter, 0 = off.
    """

    def __init__(self, inner: InferenceEngine, min_ms: float) -> None:
        if min_ms <= 0:
            raise ValueError(f"min_ms must be > 0, got {min_ms}")
        self.inner = inner
        self.min_s = min_ms / 1e3
        self.metadata = inner.metadata
        self.info = inner.info

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        started = time.monotonic()
        outputs = self.inner.infer(images)
        remaining = self.min_s - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        return outputs

    def close(self) -> None:
        self.inner.close()
