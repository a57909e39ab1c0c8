"""Model registry (timm style): every model variant is a small factory that only sets keyword arguments.

    @register_model
    def vltseg_vit_b16_mask2former(**kwargs):
        return VLTSeg(**{**dict(clip_model="ViT-B-16"), **kwargs})

``create_model(name, **overrides)`` calls the factory and stamps ``model.model_name``; the model itself records
its full constructor arguments in ``model.init_kwargs`` so ``create_model(model.model_name, **model.init_kwargs)``
rebuilds it.
"""

from __future__ import annotations

import difflib
from typing import Callable

import torch
from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is already registered by {_MODELS[name].__module__}")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "") -> list[str]:
    """Registered model names (containing ``pattern``), sorted."""
    return sorted(n for n in _MODELS if pattern in n)


def is_model(name: str) -> bool:
    return name in _MODELS


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory registered under ``name`` (its return annotation names the model class)."""
    return _MODELS[name]


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` are the model constructor's keyword arguments."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} Registered: {list_models()}")
    model = _MODELS[name](**overrides)
    model.model_name = name
    return model


def model_norm(model: nn.Module) -> tuple[list[float], list[float]]:
    """The model's pixel_mean / pixel_std as plain lists (they may be tuples or tensors)."""
    mean = torch.as_tensor(model.pixel_mean, dtype=torch.float32).flatten().tolist()
    std = torch.as_tensor(model.pixel_std, dtype=torch.float32).flatten().tolist()
    return mean, std
