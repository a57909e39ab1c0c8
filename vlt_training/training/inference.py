"""What ``vlt_perception``'s PyTorch engine runs from a checkpoint: the one entry point of vlt_training it imports.

The engine (``vlt_perception.engines.torch_engine``) must rebuild the model, which only the trainer can do; it
imports this module lazily, and the import contracts (setup.cfg ``[importlinter]``) allow exactly that import
(docs/architecture.md says why it is not inverted).
"""

from __future__ import annotations

import os

from torch import nn

from vlt_perception.metadata import ModelMetadata
from vlt_training.evaluation.tta import tta_export_module
from vlt_training.training.checkpoint import load_model


def load_export_module(path: str | os.PathLike, tta: bool = False) -> tuple[nn.Module, ModelMetadata]:
    """The deployment module of a checkpoint folder or run folder (newest checkpoint) and its metadata.

    ``tta``: segmentation labels from multi-scale + flip averaged scores (:func:`tta_export_module`).
    Raises :class:`~vlt_training.training.checkpoint.CheckpointError` (a RuntimeError), OSError, ValueError or
    KeyError for a checkpoint that cannot be loaded.
    """
    model, metadata = load_model(path)
    module = tta_export_module(model) if tta else model.export_module()
    return module, metadata
