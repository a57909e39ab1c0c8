"""The model-side arguments of the Rein and FAMix training modes, with their defaults, in one place.

:func:`vlt_training.modeling.modes.apply_mode` builds the adapters from these; the training config's
``model.mode_options.rein`` / ``.famix`` sections (:mod:`vlt_training.config`) extend them (FAMix adds its
mining options), so a default is written once. No torch import: the config module uses them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass
class ReinArgs:
    """Rein (Wei et al., CVPR 2024), defaults of w1oves/Rein.

    ``num_tokens`` per block (``None``: the decoder's ``num_queries``, as the reference links one token to each
    query), factorised as (num_tokens x rank) @ (rank x width) (``LoRAReins``: ``lora_dim=16``); ``scale_init``
    multiplies the refinement at start (reference 1e-3); ``link_queries`` turns the tokens into the Mask2Former
    queries (reference ``link_token_to_query=True``).
    """

    num_tokens: int | None = None
    rank: int = 16
    scale_init: float = 1.0e-3
    link_queries: bool = True


@dataclass
class FAMixArgs:
    """FAMix (Fahes et al., CVPR 2024), model side.

    ``freeze_blocks``: the first blocks frozen (``None``: :func:`vlt_training.modeling.modes.default_freeze_blocks`,
    the reference's ResNet rule mapped onto ViT blocks); ``style_block``: the block after which styles are mixed;
    ``grid`` x ``grid`` patches per crop (reference 3 x 3 of a 768 crop); ``beta``: Beta(beta, beta) mixing weights
    (reference 0.1); ``label_smoothing`` of the class loss (reference 0.1).
    """

    freeze_blocks: int | None = None
    style_block: int = 0
    grid: int = 3
    beta: float = 0.1
    label_smoothing: float = 0.1


MODE_ARGS: dict[str, type | None] = {"full": None, "frozen": None, "rein": ReinArgs, "famix": FAMixArgs}


def mode_arg_names(mode: str) -> tuple[str, ...]:
    """The model-side option names of ``mode`` (empty for ``full`` / ``frozen``)."""
    cls = MODE_ARGS[mode]
    return tuple(f.name for f in dataclasses.fields(cls)) if cls is not None else ()


def mode_args(mode: str, options: Mapping[str, Any] | None = None):
    """``options`` as the mode's dataclass (``None`` values take the default); ValueError naming unknown keys."""
    if mode not in MODE_ARGS:
        raise ValueError(f"unknown mode {mode!r}; expected one of {tuple(MODE_ARGS)}")
    names = mode_arg_names(mode)
    options = dict(options or {})
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"mode {mode!r}: unknown mode_options {unknown} (known: {list(names)})")
    cls = MODE_ARGS[mode]
    if cls is None:
        return None
    return cls(**{k: v for k, v in options.items() if v is not None})
