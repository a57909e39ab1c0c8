"""Checkpoints: self-describing folders written atomically, and ``load_model`` for deployment.

Layout of a run folder::

    run_dir/
      config.yaml                 resolved training config of the run
      log.csv                     training log (rank 0)
      checkpoints/
        step_00000500/
          model.safetensors       weights (safetensors: no pickle)
          meta.json               model_name, model_kwargs, metadata (ModelMetadata.to_dict()), step
          config.yaml             resolved training config
          trainer_state.pt        optimiser, scheduler, grad scaler, step, RNG states (weights_only=True)

A checkpoint is first written to a hidden temporary folder beside its final place and then renamed, so a crash
never leaves a partial ``step_*`` folder behind: every visible checkpoint is complete.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlt_perception.metadata import MetadataError, ModelMetadata

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
CONFIG_FILE = "config.yaml"
STATE_FILE = "trainer_state.pt"
CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d+)$")
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt; the message names the file."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (hidden temporary folders are not listed)."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder itself, or the newest checkpoint of a run folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    if (path / META_FILE).is_file() or (path / WEIGHTS_FILE).is_file():
        return path
    newest = latest_checkpoint(path)
    if newest is None:
        raise CheckpointError(
            f"{path}: neither a checkpoint folder (no {META_FILE}) nor a run folder with {CHECKPOINTS_DIR}/step_*"
        )
    return newest


# ---------------------------------------------------------------------------------------------------------------
# RNG state: plain tensors / ints so that torch.load(weights_only=True) reads it back.


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: nn.Module,
    metadata: ModelMetadata,
    config_yaml: str,
    trainer_state: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write ``run_dir/checkpoints/step_<step>`` atomically and prune to the newest ``keep_last``.

    ``trainer_state`` (optimiser / scheduler / scaler state dicts ...) is saved with the step and the RNG states
    added. Returns the checkpoint folder.
    """
    from safetensors.torch import save_model

    model = unwrap(model)
    parent = Path(run_dir) / CHECKPOINTS_DIR
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp_{final.name}_", dir=parent))
    try:
        # save_model handles tied / shared tensors, which safetensors' save_file refuses.
        save_model(model, str(tmp / WEIGHTS_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "model_name": model.model_name,
            "model_kwargs": dict(model.init_kwargs),
            "metadata": metadata.to_dict(),
            "step": int(step),
        }
        _write_json(tmp / META_FILE, meta)
        (tmp / CONFIG_FILE).write_text(config_yaml)
        state = dict(trainer_state or {})
        state["step"] = int(step)
        state["rng"] = rng_state()
        torch.save(state, tmp / STATE_FILE)
        _fsync_dir(tmp)
        if final.exists():
            # Re-saving a step (e.g. after a resume): move the old one aside first; os.replace needs an empty target.
            old = Path(tempfile.mkdtemp(prefix=f".old_{final.name}_", dir=parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last:
        prune_checkpoints(run_dir, keep_last)
    return final


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints; returns the removed folders."""
    ckpts = list_checkpoints(run_dir)
    removed = ckpts[:-keep_last] if keep_last > 0 else []
    for path in removed:
        # Rename first so a half-deleted folder is never visible under a step_* name.
        trash = path.with_name(f".del_{path.name}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return removed


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete hidden leftovers of writes or prunes interrupted by a kill (``.tmp_*``, ``.old_*``, ``.del_*``)."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith((".tmp_", ".old_", ".del_"))]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


# ---------------------------------------------------------------------------------------------------------------
# Reading


def read_meta(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``meta.json`` of a checkpoint folder, checked for the required keys."""
    path = Path(ckpt) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a complete checkpoint folder)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt JSON: {exc}") from exc
    missing = [k for k in ("model_name", "model_kwargs", "metadata", "step") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    return meta


def read_metadata(ckpt: str | os.PathLike) -> ModelMetadata:
    path = Path(ckpt) / META_FILE
    try:
        return ModelMetadata.from_dict(read_meta(ckpt)["metadata"])
    except MetadataError as exc:
        raise CheckpointError(f"{path}: bad metadata: {exc}") from exc


def load_weights(model: nn.Module, ckpt: str | os.PathLike, device: str | torch.device = "cpu") -> None:
    """Load ``model.safetensors`` into ``model`` (strict: every key must match)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as st_load_model

    path = Path(ckpt) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        st_load_model(unwrap(model), str(path), strict=True, device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt weights file: {exc}") from exc
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the model: {exc}") from exc


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike, prefixes: list[str] | tuple[str, ...]) -> int:
    """Copy the tensors whose names start with one of ``prefixes`` from another run's checkpoint into ``model``
    (mmdet's ``load_from``, detectron2's ``MODEL.WEIGHTS``): e.g. VLTDet's ``backbone.`` from a VLTSeg run on the
    same tower. ``path`` is a checkpoint or run folder (its newest checkpoint). Every tensor of ``model`` under the
    prefixes must be in the file with the same shape, so a tower is never half initialised; the file's other
    tensors (another task's head) are ignored. Returns the number of tensors copied."""
    from safetensors import SafetensorError, safe_open

    file = resolve_checkpoint(path) / WEIGHTS_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (model.init_from needs a checkpoint's {WEIGHTS_FILE})")
    own = {name: tensor for name, tensor in unwrap(model).state_dict().items() if name.startswith(tuple(prefixes))}
    if not own:
        raise CheckpointError(f"model.init_from={path}: the model has no tensors under {list(prefixes)}")
    loaded = {}
    try:
        with safe_open(str(file), framework="pt") as weights:
            available = set(weights.keys())
            missing = sorted(set(own) - available)
            if missing:
                raise CheckpointError(f"{file}: has no {missing[:5]} ({len(missing)} of the {len(own)} tensors "
                                      f"under {list(prefixes)}): not the same tower")
            for name, target in own.items():
                tensor = weights.get_tensor(name)
                if tensor.shape != target.shape:
                    raise CheckpointError(f"{file}: {name} is {tuple(tensor.shape)}, the model's is "
                                          f"{tuple(target.shape)}: not the same tower")
                loaded[name] = tensor
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file}: corrupt weights file: {exc}") from exc
    unwrap(model).load_state_dict(loaded, strict=False)
    return len(loaded)


def load_trainer_state(ckpt: str | os.PathLike) -> dict[str, Any]:
    """``trainer_state.pt`` read with ``weights_only=True`` (no arbitrary pickle)."""
    path = Path(ckpt) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (cannot resume training from this checkpoint)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, EOFError ...)
        raise CheckpointError(f"{path}: corrupt trainer state: {exc}") from exc


def _constructor_parameters(model_name: str) -> tuple[str, set[str]] | None:
    """(class name, keyword arguments its constructor takes) of a registered model, from its factory's return
    annotation and the ``__init__`` of the class and of the bases it passes ``**kwargs`` on to; ``None`` when the
    factory names no class or a constructor passes ``**kwargs`` on to ``nn.Module``."""
    import inspect
    import typing

    from vlt_training.modeling.registry import model_entrypoint

    try:
        cls = typing.get_type_hints(model_entrypoint(model_name)).get("return")
    except (NameError, TypeError):
        return None
    if not inspect.isclass(cls):
        return None
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is nn.Module:
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return cls.__name__, names
    return None


def check_model_kwargs(model_name: str, kwargs: Any, source: str | os.PathLike = META_FILE) -> dict[str, Any]:
    """``model_kwargs`` of a checkpoint, checked to be architecture arguments only; ``pretrained`` set to ``None``.

    A checkpoint's weights come from its own ``model.safetensors``: an argument that loads or fetches weights or
    files (``*pretrained*``, ``hf_*``, ``cache_dir``, a ``clip_model`` with a scheme ...; see
    :mod:`vlt_training.model_args`), one the constructor does not take, or an open_clip / timm override that is
    not an architecture key raises :class:`CheckpointError` naming ``source`` and the key, before anything is built.
    A recorded ``pretrained`` (the run's initial weights) is kept out of the rebuild.
    """
    from vlt_training.model_args import loading_arguments
    from vlt_training.modeling import is_model
    from vlt_training.modeling.backbone._builder import override_problems

    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: model_kwargs must be a mapping, got {type(kwargs).__name__}")
    if not is_model(model_name):
        raise CheckpointError(f"{source}: unknown model_name {model_name!r}")
    kwargs = dict(kwargs)
    if "pretrained" in kwargs:
        kwargs["pretrained"] = None
    problems = loading_arguments({k: v for k, v in kwargs.items() if k != "pretrained"})
    constructor = _constructor_parameters(model_name)
    if constructor is not None:
        cls_name, accepted = constructor
        problems += [f"'{key}' is not an argument of {cls_name}" for key in kwargs if key not in accepted]
    problems += override_problems(kwargs.get("vision_cfg_overrides"), kwargs.get("text_cfg_overrides"))
    if problems:
        raise CheckpointError(f"{source}: model_kwargs refused, a checkpoint may only set architecture arguments "
                              f"(its weights come from {WEIGHTS_FILE}): " + "; ".join(problems))
    return kwargs


def build_model(meta: dict[str, Any], source: str | os.PathLike = META_FILE) -> nn.Module:
    """Rebuild the architecture from ``meta.json`` without downloading or reading pretrained weights.

    ``model_kwargs`` are checked first (:func:`check_model_kwargs`); the build then runs with pretrained weights
    off and Hugging Face in offline mode (:func:`~vlt_training.modeling.backbone._builder.architecture_only`).
    """
    from vlt_training.modeling import create_model
    from vlt_training.modeling.backbone._builder import architecture_only

    kwargs = check_model_kwargs(meta["model_name"], meta["model_kwargs"], source)
    with architecture_only():
        return create_model(meta["model_name"], **kwargs)


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", eval_mode: bool = True
) -> tuple[nn.Module, ModelMetadata]:
    """Rebuild a trained model from a checkpoint folder (or a run folder's newest checkpoint).

    Returns ``(model, metadata)``; the model is on ``device`` and in eval mode unless ``eval_mode=False``.
    """
    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    metadata = read_metadata(ckpt)
    try:
        model = build_model(meta, ckpt / META_FILE)
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{ckpt / META_FILE}: cannot rebuild model {meta['model_name']!r} with {meta['model_kwargs']}: {exc}"
        ) from exc
    load_weights(model, ckpt, device="cpu")
    release = getattr(getattr(model, "backbone", None), "release_text_tower", None)
    if release is not None:  # kept only for FAMix's style mining, which a trained model never redoes
        release()
    model.to(device)
    if eval_mode:
        model.eval()
    return model, metadata
