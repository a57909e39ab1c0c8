"""``export_onnx``: a model's ``export_module()`` -> a self-describing ONNX file following the graph contract.

Graph: input ``images`` float32 (B, 3, H, W) with static H, W and (optionally) dynamic batch; outputs named and
typed as in :class:`vlt_perception.metadata.ModelMetadata`; standard ONNX ops only (opset >= 17), so ONNX Runtime
and TensorRT both load it; ``metadata_props`` from ``ModelMetadata.to_onnx_props()``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from vlt_perception.metadata import TASK_DETECTION, TASK_MULTITASK, ModelMetadata

log = logging.getLogger(__name__)

MIN_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")
ONNX_PRECISIONS = ("fp32", "fp16")
STANDARD_DOMAINS = ("", "ai.onnx")
# Contract dtypes by output name (ONNX TensorProto enums: FLOAT=1, UINT8=2, INT64=7). Detection's "masks"
# (B, K, M, M) mask probabilities in each box's frame, is optional: Mask R-CNN graphs have it, others do not.
_SEG_OUTPUTS = {"labels": 2, "confidence": 1}
_DET_OUTPUTS = {"boxes": 1, "scores": 1, "labels": 7, "masks": 1}
# Multi-task graphs: the segmentation outputs, then the detection outputs under det_* names (det_masks optional).
_MULTITASK_OUTPUTS = {**_SEG_OUTPUTS, **{f"det_{name}": dtype for name, dtype in _DET_OUTPUTS.items()}}


class ExportError(RuntimeError):
    """Export or its verification failed; the message says which file and what went wrong."""


def contract_outputs(metadata: ModelMetadata) -> dict[str, int]:
    if metadata.task == TASK_MULTITASK:
        return dict(_MULTITASK_OUTPUTS)
    return dict(_DET_OUTPUTS if metadata.task == TASK_DETECTION else _SEG_OUTPUTS)


class _NamedOutputs(nn.Module):
    """Wraps an export module so that it returns a tuple in a fixed order (dict outputs -> names)."""

    def __init__(self, module: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.module = module
        self.names = names

    def forward(self, images: torch.Tensor):
        outputs = self.module(images)
        if isinstance(outputs, dict):
            return tuple(outputs[name] for name in self.names)
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def output_names_of(module: nn.Module, example: torch.Tensor, metadata: ModelMetadata) -> list[str]:
    """Output names of the export module: its dict keys, or the contract order for tuple outputs."""
    with torch.inference_mode():
        outputs = module(example)
    expected = list(contract_outputs(metadata))
    if isinstance(outputs, dict):
        names = list(outputs)
        unknown = [n for n in names if n not in expected]
        if unknown:
            raise ExportError(f"export_module() returned {unknown}, not in the {metadata.task} contract {expected}")
        return [n for n in expected if n in names]
    count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    if metadata.task == TASK_MULTITASK and count not in (5, 6):
        raise ExportError(f"multi-task export_module() must return labels, confidence, det_boxes, det_scores, "
                          f"det_labels [, det_masks]; got {count} outputs")
    if metadata.task == TASK_DETECTION and count not in (3, 4):
        raise ExportError(f"detection export_module() must return boxes, scores, labels [, masks]; got {count} "
                          "outputs")
    return expected[:count]


def atomic_save_onnx(model, path: Path) -> None:
    """onnx.save to a temporary file beside ``path`` and rename, so readers never see half a model."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _torch_export(wrapper: nn.Module, example: torch.Tensor, path: Path, names: list[str], opset: int,
                  dynamic_batch: bool, exporter: str) -> None:
    kwargs = dict(input_names=["images"], output_names=names, opset_version=opset)
    if exporter == "torchscript":
        axes = {n: {0: "batch"} for n in ["images", *names]} if dynamic_batch else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)  # the TorchScript exporter is "legacy"
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False, dynamic_axes=axes,
                              do_constant_folding=True, **kwargs)
    else:
        # The dynamo exporter implements opset 18+ only; asking for 17 triggers a lossy down-conversion.
        kwargs["opset_version"] = max(opset, 18)
        shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic_batch else None
        program = torch.onnx.export(wrapper, (example,), dynamo=True, dynamic_shapes=shapes, **kwargs)
        program.save(str(path))


def check_graph(model, metadata: ModelMetadata, source: str, dynamic_batch: bool = True) -> None:
    """The exported graph follows the contract: one float input ``images`` (B, 3, H, W) with static H, W, contract
    output names and dtypes, no custom ops."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{source}: onnx.checker rejected the export: {exc}") from exc
    custom = sorted({n.domain for n in model.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise ExportError(f"{source}: custom op domains {custom}; TensorRT / ONNX Runtime need standard ops")
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
    if inputs != [("images", onnx.TensorProto.FLOAT)]:
        raise ExportError(f"{source}: expected one float32 input 'images', got {inputs}")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if fixed[1:] != [3, metadata.input_height, metadata.input_width]:
        raise ExportError(f"{source}: input 'images' has shape {fixed}; expected (B, 3, {metadata.input_height}, "
                          f"{metadata.input_width}) with static H and W")
    if dynamic_batch and fixed[0] is not None:
        raise ExportError(f"{source}: the exporter fixed the batch at {fixed[0]} (the model specialises on it); "
                          "use --static-batch or the torchscript exporter")
    contract = contract_outputs(metadata)
    required = {name for name in contract if name not in ("masks", "det_masks", "confidence")}
    missing = sorted(required - {out.name for out in model.graph.output})
    if missing and metadata.task == TASK_MULTITASK:
        raise ExportError(f"{source}: the {metadata.task} graph lacks outputs {missing}")
    for out in model.graph.output:
        want = contract.get(out.name)
        got = out.type.tensor_type.elem_type
        if want is None or got != want:
            raise ExportError(f"{source}: output {out.name!r} has type {onnx.TensorProto.DataType.Name(got)}; "
                              f"the {metadata.task} contract wants {contract_names(contract)}")


def contract_names(contract: dict[str, int]) -> str:
    import onnx

    return ", ".join(f"{k}: {onnx.TensorProto.DataType.Name(v)}" for k, v in contract.items())


def to_fp16(model):
    """Float tensors and ops -> float16, keeping the float32 graph inputs / outputs of the contract."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ExportError("fp16 ONNX export needs onnxconverter-common: pip install -r requirements/train.txt") \
            from exc
    # Cast nodes stay as they are: the converter rewrites Cast(to=float) into Cast(to=float16) even where the
    # consumer is a node it keeps in float32 (e.g. Resize, on its default block list), which leaves a graph that
    # ONNX Runtime rejects ("Type (tensor(float16)) ... does not match expected type (tensor(float))"). Blocked
    # nodes get explicit casts around them instead.
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"
    casts = [node.name for node in model.graph.node if node.op_type == "Cast"]
    return float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=casts)


def export_onnx(model: nn.Module, metadata: ModelMetadata, out_path: str | Path, *, height: int | None = None,
                width: int | None = None, precision: str = "fp32", opset: int = MIN_OPSET,
                dynamic_batch: bool = True, exporter: str = "torchscript") -> tuple[Path, ModelMetadata]:
    """Export ``model.export_module()`` to ``out_path``; returns the path and the metadata stored in the file.

    ``height`` / ``width`` default to the metadata's input size; the graph's H and W are static (the ViT position
    embeddings and Mask2Former's attention masks are specialised to them), the batch is dynamic unless
    ``dynamic_batch=False``. The export is not verified here: see :func:`vlt_training.export.verify_onnx`.
    """
    import onnx

    if precision not in ONNX_PRECISIONS:
        raise ExportError(f"ONNX precision must be one of {ONNX_PRECISIONS}, got {precision!r} (bf16: torch engine; "
                          "int8: TensorRT build flag)")
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} < {MIN_OPSET}: LayerNormalization and friends need opset 17")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    out_path = Path(out_path)
    height, width = height or metadata.input_height, width or metadata.input_width
    metadata = dataclasses.replace(metadata, input_height=height, input_width=width,
                                   extra={**metadata.extra, "precision": precision, "opset": opset})
    module = model.export_module().eval().cpu()
    example = torch.zeros(1, 3, height, width)  # B, 3, H, W
    # this forward also fills the module's image-independent caches (DenseCLIP's text embeddings), so the
    # trace records them as constants instead of running the text tower on every frame
    names = output_names_of(module, example, metadata)
    wrapper = _NamedOutputs(module, names).eval()
    with tempfile.TemporaryDirectory(dir=out_path.parent if out_path.parent.exists() else None) as tmp:
        raw = Path(tmp) / "raw.onnx"
        # nn.MultiheadAttention's fused fast path (taken when no parameter needs a gradient, e.g. a frozen
        # tower of the frozen / Rein / FAMix modes) is an op ONNX has no symbolic for
        fastpath = torch.backends.mha.get_fastpath_enabled()
        try:
            torch.backends.mha.set_fastpath_enabled(False)
            _torch_export(wrapper, example, raw, names, opset, dynamic_batch, exporter)
        except Exception as exc:  # the exporters raise many types; the cause is what the user needs
            raise ExportError(f"{out_path}: torch.onnx.export ({exporter}) failed for {metadata.model_name or 'model'}"
                              f": {type(exc).__name__}: {str(exc)[:2000]}") from exc
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        graph = onnx.load(str(raw))
    check_graph(graph, metadata, str(out_path), dynamic_batch)
    if precision == "fp16":
        graph = to_fp16(graph)
    del graph.metadata_props[:]
    for key, value in metadata.to_onnx_props().items():
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name = "vlt_training.export"
    atomic_save_onnx(graph, out_path)
    log.info("exported %s (%s, %dx%d, opset %d, %s)", out_path, precision, height, width, opset, names)
    return out_path, metadata
