"""Export trained models to ONNX (with metadata and a parity check) and TensorRT engines."""

from vlt_training.export.onnx_export import ExportError, export_onnx
from vlt_training.export.verify import ParityReport, compare_outputs, verify_onnx

__all__ = ["ExportError", "ParityReport", "compare_outputs", "export_onnx", "verify_onnx"]
