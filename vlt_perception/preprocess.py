"""Camera image -> network input: resize and normalise with numpy + OpenCV (no torch).

The same code feeds every engine, the export parity check and the TensorRT int8 calibrator, so a model sees
identical inputs in training-time verification and in deployment.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vlt_perception.metadata import ModelMetadata


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a runtime requirement
        raise ImportError("preprocessing needs OpenCV: pip install -r requirements/runtime.txt") from exc
    return cv2


class Preprocessor:
    """RGB uint8 image (H0, W0, 3) -> normalised float32 batch (1, 3, H, W) at the model input size.

    Resizes with ``cv2.INTER_LINEAR`` and applies ``(x / 255 - mean) / std`` per channel. The input is uint8, so
    the normalisation is a 256-entry float32 table per channel (``x * scale + bias``, the same float32 arithmetic
    as computing it pixel by pixel): ``cv2.extractChannel`` + ``cv2.LUT`` write straight into the channel planes
    of the output, no (H, W, 3) float image is ever materialised. At 512x1024 on the development machine the three
    tables take 0.3 ms and the three ``extractChannel`` 0.6 ms, where one ``cv2.split`` took 1.6-1.9 ms and
    numpy's multiply-add 0.9 ms.

    :meth:`batch` preprocesses the frames of a batch in parallel threads (OpenCV releases the GIL): 5 ms instead of
    14 ms for four 1080p frames on two cores.
    """

    def __init__(self, height: int, width: int, mean, std) -> None:
        if height <= 0 or width <= 0:
            raise ValueError(f"bad input size {height}x{width}")
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        if mean.shape != (3,) or std.shape != (3,) or np.any(std <= 0):
            raise ValueError(f"mean/std must be 3 values with std > 0, got {mean} / {std}")
        self.height = int(height)
        self.width = int(width)
        # (x / 255 - mean) / std == x * scale + bias
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)
        self.bias = (-mean / std).astype(np.float32)
        levels = np.arange(256, dtype=np.float32)
        self._luts = [(levels * self.scale[c] + self.bias[c]).reshape(256, 1) for c in range(3)]  # float32

    @classmethod
    def from_metadata(cls, metadata: ModelMetadata) -> "Preprocessor":
        return cls(metadata.input_height, metadata.input_width, metadata.mean, metadata.std)

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """(H0, W0, 3) uint8 -> (H, W, 3) uint8 at the model size (a no-op when the size already matches)."""
        _check_rgb(rgb)
        if rgb.shape[:2] == (self.height, self.width):
            return rgb
        return _cv2().resize(rgb, (self.width, self.height), interpolation=_cv2().INTER_LINEAR)

    def __call__(self, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Preprocess one image; pass ``out`` (1, 3, H, W) float32 to reuse a buffer across frames."""
        resized = self.resize(rgb)  # H, W, 3 uint8
        if out is None:
            out = np.empty((1, 3, self.height, self.width), dtype=np.float32)
        elif out.shape != (1, 3, self.height, self.width) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 (1, 3, {self.height}, {self.width}), got {out.dtype} {out.shape}")
        cv2 = _cv2()
        for c in range(3):
            channel = cv2.extractChannel(resized, c)  # H, W uint8
            plane = out[0, c]  # H, W view
            written = cv2.LUT(channel, self._luts[c], dst=plane if plane.flags.c_contiguous else None)
            if written is not plane:  # OpenCV allocated its own result (e.g. a strided `out`)
                plane[...] = written
        return out

    def batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Several RGB images -> (B, 3, H, W) float32, in parallel threads when there are several."""
        out = np.empty((len(images), 3, self.height, self.width), dtype=np.float32)
        if len(images) == 1:
            self(images[0], out=out)
            return out
        # list(): wait for every frame and re-raise the first error (a bad image names its shape)
        list(_frame_pool().map(lambda i: self(images[i], out=out[i : i + 1]), range(len(images))))
        return out


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _frame_pool() -> ThreadPoolExecutor:
    """One small pool per process for the frames of a batch (one thread per core, at most 4)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="preprocess")
        return _POOL


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(f"expected an RGB image as uint8 (H, W, 3), got {dtype} {shape}")
