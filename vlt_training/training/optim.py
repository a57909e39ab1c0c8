"""Optimisers with VLTSeg's parameter groups: backbone lr multiplier, optional layer-wise decay, no weight decay
on norms / biases / position embeddings / tokens / query embeddings.

Every trainable parameter lands in one named group:

=====================  =================================  ==============================================
group                  parameters                          lr / weight decay
=====================  =================================  ==============================================
``backbone``           the tower (``backbone.*``)          ``lr * backbone_lr_mult`` (x layer decay) / wd
``adapter``            the tower's block hook              ``lr`` / wd: an adapter trained from scratch
                       (``backbone.block_hook.*``: Rein)   (w1oves/Rein: ``lr_mult=1.0`` for its tokens,
                                                           scale and MLPs)
``head``               everything else                     ``lr`` / wd
=====================  =================================  ==============================================

each with a ``/no_decay`` twin (weight decay 0) for norms, biases, embedding tables, Rein's tokens and scale
(w1oves/Rein: ``decay_mult=0.0`` for ``learnable_tokens`` and ``reins.scale``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

from vlt_training.config import OptimConfig

# Parameter names (lower case) that never get weight decay, besides 1-D tensors (norm weights, biases).
_NO_DECAY_KEYS = ("pos_embed", "positional_embedding", "cls_token", "class_embedding", "query_embed", "query_feat",
                  "level_embed", "rel_pos", "mask_token", "reg_token", "relative_position_bias_table")
# The tower's block hook (Rein's tokens and MLPs, FAMix's style mixing) is new, not pretrained: head lr.
_ADAPTER = "block_hook."
# Rein's learnable tokens (low-rank factors) and output scale: no weight decay, as in w1oves/Rein.
_ADAPTER_NO_DECAY = ("block_hook.tokens_", "block_hook.scale")
_BLOCK_INDEX = re.compile(r"\.(?:blocks|resblocks|layers)\.(\d+)\.")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights, biases and embedding tables are not regularised (as in timm / mmseg's paramwise_cfg)."""
    lowered = name.lower()
    return (param.ndim <= 1 or lowered.endswith(".bias") or any(key in lowered for key in _NO_DECAY_KEYS)
            or any(key in name for key in _ADAPTER_NO_DECAY))


def backbone_layer_id(name: str, num_layers: int) -> int:
    """0 for the patch embedding / tokens, ``i + 1`` for transformer block ``i``, ``num_layers + 1`` otherwise."""
    match = _BLOCK_INDEX.search("." + name)
    if match:
        return int(match.group(1)) + 1
    if any(k in name for k in ("patch_embed", "conv1", "pos_embed", "positional_embedding", "cls_token",
                               "class_embedding", "ln_pre")):
        return 0
    return num_layers + 1


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split trainable parameters into groups with their own ``lr`` and ``weight_decay``.

    Each group's ``lr`` is the base lr times its multiplier; the schedule later scales every group alike.
    ``group`` names the group (``backbone``, ``adapter``, ``head``, ``+ "/no_decay"``; ``backbone.layer<i>`` with
    layer decay) and ``names`` lists its parameters (for inspection and tests; dropped by :func:`build_optimizer`).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    backbone = [n for n, _ in named if n.startswith(cfg.backbone_prefix)]
    num_layers = 0
    if cfg.layer_decay is not None:
        ids = [int(m.group(1)) + 1 for n in backbone if (m := _BLOCK_INDEX.search("." + n))]
        num_layers = max(ids, default=0)
    adapter = cfg.backbone_prefix + _ADAPTER
    groups: dict[tuple[str, float, float], dict] = {}
    for name, param in named:
        mult, kind = 1.0, "head"
        if name.startswith(adapter):
            kind = "adapter"
        elif name.startswith(cfg.backbone_prefix):
            mult, kind = cfg.backbone_lr_mult, "backbone"
            if cfg.layer_decay is not None:
                layer = backbone_layer_id(name, num_layers)
                mult *= cfg.layer_decay ** (num_layers + 1 - layer)
                kind = f"backbone.layer{layer}"
        no_decay = no_weight_decay(name, param)
        decay = 0.0 if no_decay else cfg.weight_decay
        label = kind + ("/no_decay" if no_decay else "")
        key = (label, mult, decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "group": label, "lr": cfg.lr * mult, "lr_mult": mult,
                           "weight_decay": decay}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (torch), LAMB (timm) or SGD with momentum (torch) over :func:`param_groups`."""
    groups = param_groups(model, cfg)
    for group in groups:
        group.pop("names")  # optimisers keep unknown keys in state_dict; names are only for inspection/tests
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay, fused=_fused_supported(groups))
    if cfg.name == "lamb":
        from timm.optim import Lamb

        return Lamb(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":  # FAMix's recipe: SGD with momentum, weight decay per group
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; expected adamw, lamb or sgd")


def _fused_supported(groups: list[dict]) -> bool:
    """Fused AdamW (one kernel for all tensors) where torch has it: several times faster than the per-tensor
    loop for models with many small parameters on CPU (the tiny VLTSeg's 208 tensors)."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and not p.is_sparse and p.device.type in ("cpu", "cuda")
                                for p in params)


def trainable_names(groups: Iterable[dict]) -> list[str]:
    return [n for g in groups for n in g.get("names", [])]
