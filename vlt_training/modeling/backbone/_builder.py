"""Loading plumbing of the open_clip towers: config registration, pretrained tag / file / folder resolution,
QuickGELU choice, the timm adapter and the open_clip model factory call.

:mod:`vlt_training.modeling.backbone.clip_vit` holds the backbone module and re-exports these names. A tower's
weights come from ``pretrained`` (an open_clip tag, a local open_clip file or an open_clip model folder); every
other argument only shapes the architecture.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import importlib.resources
import inspect
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, Optional

from torch import nn

# The JSON configs are package data (setup.py installs them), found through the installed package.
_CONFIG_PACKAGE = "vlt_training.modeling.backbone"
_registered_configs = False


def _import_open_clip():
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the VLTSeg backbone needs open_clip: pip install -r requirements/train.txt (open_clip_torch)"
        ) from exc
    return open_clip


def register_open_clip_configs() -> None:
    """Make the project's own open_clip model configs (``vlt-tiny-vit`` ...) known to open_clip."""
    global _registered_configs
    if not _registered_configs:
        config_dir = Path(str(importlib.resources.files(_CONFIG_PACKAGE) / "model_configs"))
        _import_open_clip().add_model_config(config_dir)
        _registered_configs = True


def timm_variant(base_name: str, timm_kwargs: dict) -> str:
    """Name of a timm entrypoint building ``base_name`` with extra constructor kwargs (e.g. ``{"depth": 4}``).

    open_clip's timm adapter passes only a few arguments through to timm; this registers (once) a derived timm
    entrypoint so that ``vision_cfg_overrides={"timm_kwargs": {...}}`` can change others (tests shrink EVA towers
    this way). Checkpoints of the original architecture only load if the change keeps the parameter shapes.
    """
    import re

    from timm import models as timm_models

    suffix = "_".join(f"{k}{v}" for k, v in sorted(timm_kwargs.items()))
    name = re.sub(r"\W", "_", f"{base_name}__vlt_{suffix}")
    if not timm_models.is_model(name):
        base = timm_models.model_entrypoint(base_name)

        def entrypoint(pretrained: bool = False, **kwargs):
            return base(pretrained=pretrained, **{**kwargs, **timm_kwargs})

        entrypoint.__name__ = name
        entrypoint.__qualname__ = name
        timm_models.register_model(entrypoint)
    return name


def _is_checkpoint_path(pretrained: str) -> bool:
    return os.path.isfile(pretrained) or os.sep in pretrained or pretrained.endswith(
        (".pt", ".pth", ".bin", ".safetensors"))


def resolve_quick_gelu(model_name: str, pretrained: Optional[str] = None,
                       quick_gelu: Optional[bool] = None) -> bool:
    """Whether the tower of ``model_name`` must use QuickGELU (``x * sigmoid(1.702 x)``) instead of GELU.

    OpenAI's CLIP weights (tag ``openai``) and a few others were trained with QuickGELU, but open_clip's plain
    ``ViT-B-16`` / ``ViT-L-14`` configs build GELU towers and only warn when such weights are loaded into them:
    the model then runs with the wrong activation. The decision, in order:

    * ``quick_gelu`` given (True / False): that (a checkpoint's recorded choice, or a local file of OpenAI weights);
    * the model config asks for it (the ``-quickgelu`` configs);
    * ``pretrained`` is an open_clip tag whose pretrained config says QuickGELU, or the tag is ``openai``.

    A local checkpoint file says nothing about its activation: pass ``quick_gelu=True`` for OpenAI weights.
    """
    if quick_gelu is not None:
        return bool(quick_gelu)
    open_clip = _import_open_clip()
    register_open_clip_configs()
    if (open_clip.get_model_config(model_name) or {}).get("quick_gelu", False):
        return True
    if not pretrained or _is_checkpoint_path(pretrained):
        return False
    if pretrained.lower() == "openai":
        return True
    return bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu", False))


LOCAL_DIR_PREFIX = "local-dir:"  # open_clip's own scheme for a model folder
SHIPPED_PREFIX = "vlt-pretrained:"  # a tower shipped in the package (vlt_training/pretrained/<name>)
_FOLDER_CONFIG = "open_clip_config.json"
_FOLDER_WEIGHTS = "open_clip_model.safetensors"


def open_clip_folder(pretrained: Optional[str]) -> Optional[Path]:
    """The open_clip model folder named by ``pretrained`` (``local-dir:<path>``, ``vlt-pretrained:<name>`` or a
    plain folder path), or ``None`` when ``pretrained`` is a tag or a file. A named folder must hold
    ``open_clip_config.json`` and ``open_clip_model.safetensors``."""
    if not pretrained:
        return None
    if pretrained.startswith(SHIPPED_PREFIX):
        from vlt_training.pretrained import shipped_tower

        folder = shipped_tower(pretrained[len(SHIPPED_PREFIX):])
    elif pretrained.startswith(LOCAL_DIR_PREFIX):
        folder = Path(pretrained[len(LOCAL_DIR_PREFIX):])
    elif os.path.isdir(pretrained):
        folder = Path(pretrained)
    else:
        return None
    for name in (_FOLDER_CONFIG, _FOLDER_WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing (an open_clip model folder needs {_FOLDER_CONFIG} "
                                    f"and {_FOLDER_WEIGHTS}, as vlt_training.cli.pretrain writes them)")
    return folder


def folder_overrides(model_name: str, folder: Path) -> tuple[dict, dict]:
    """(vision, text) config overrides that turn ``model_name``'s architecture into the folder's.

    The vision tower must be ``model_name``'s except for ``image_size`` (a tower pretrained at 128 x 256 serves a
    model whose config says 128; position embeddings are interpolated anyway); the text tower may differ
    (e.g. a shorter ``context_length``). Anything else raises ``ValueError`` naming the folder and the keys.
    """
    import json

    open_clip = _import_open_clip()
    register_open_clip_configs()
    path = folder / _FOLDER_CONFIG
    try:
        theirs = json.loads(path.read_text())["model_cfg"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not an open_clip folder config (need a 'model_cfg' mapping): {exc}") from exc
    ours = open_clip.get_model_config(model_name)
    if ours is None:
        raise ValueError(f"unknown open_clip model {model_name!r}")
    v_ours, v_theirs = dict(ours["vision_cfg"]), dict(theirs.get("vision_cfg", {}))
    differ = sorted(k for k in set(v_ours) | set(v_theirs) if k != "image_size" and v_ours.get(k) != v_theirs.get(k))
    if ours.get("embed_dim") != theirs.get("embed_dim"):
        differ.append("embed_dim")
    if differ:
        raise ValueError(f"{path}: its vision tower is not {model_name!r}'s (keys {differ} differ: "
                         f"{ {k: v_theirs.get(k, theirs.get(k)) for k in differ} } vs "
                         f"{ {k: v_ours.get(k, ours.get(k)) for k in differ} })")
    vision = {"image_size": v_theirs["image_size"]} if v_theirs.get("image_size") != v_ours.get("image_size") else {}
    text = {k: v for k, v in theirs.get("text_cfg", {}).items() if ours["text_cfg"].get(k) != v}
    return vision, text


def resolve_pretrained(model_name: str, pretrained: Optional[str], vision_cfg_overrides: Optional[dict] = None,
                       text_cfg_overrides: Optional[dict] = None) -> tuple[Optional[str], dict, dict]:
    """``(pretrained, vision_cfg_overrides, text_cfg_overrides)`` with an open_clip folder resolved to its weights
    file and its architecture differences added to the overrides (explicit overrides win)."""
    vision, text = dict(vision_cfg_overrides or {}), dict(text_cfg_overrides or {})
    folder = open_clip_folder(pretrained)
    if folder is None:
        return pretrained, vision, text
    v_folder, t_folder = folder_overrides(model_name, folder)
    return str(folder / _FOLDER_WEIGHTS), {**v_folder, **vision}, {**t_folder, **text}


def build_open_clip(
    model_name: str,
    pretrained: Optional[str] = None,
    vision_cfg_overrides: Optional[dict] = None,
    text_cfg_overrides: Optional[dict] = None,
    quick_gelu: Optional[bool] = None,
) -> nn.Module:
    """Build an open_clip CLIP model by config name, with optional config overrides (tests shrink towers).

    ``pretrained`` is an open_clip tag (downloads; needs network), a local checkpoint file in open_clip's own
    format (loaded with ``weights_only=True``), or an open_clip model folder (``local-dir:<path>``, a folder path,
    or ``vlt-pretrained:<name>`` for a tower shipped in the package) whose weights fit ``model_name``'s vision
    tower; see :func:`folder_overrides`. The activation follows :func:`resolve_quick_gelu`.
    """
    open_clip = _import_open_clip()
    register_open_clip_configs()
    pretrained, vision_cfg_overrides, text_cfg_overrides = resolve_pretrained(
        model_name, pretrained, vision_cfg_overrides, text_cfg_overrides)
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(
            f"unknown open_clip model {model_name!r}; see open_clip.list_models() (e.g. ViT-B-16, EVA02-L-14, "
            "vlt-tiny-vit)"
        )
    quick_gelu = resolve_quick_gelu(model_name, pretrained, quick_gelu)
    cfg = copy.deepcopy(cfg)
    vision_cfg_overrides = dict(vision_cfg_overrides or {})
    timm_kwargs = vision_cfg_overrides.pop("timm_kwargs", None)
    cfg["vision_cfg"].update(vision_cfg_overrides)
    if timm_kwargs:
        if not cfg["vision_cfg"].get("timm_model_name"):
            raise ValueError(f"timm_kwargs given but {model_name!r} is not a timm tower; override open_clip keys")
        cfg["vision_cfg"]["timm_model_name"] = timm_variant(cfg["vision_cfg"]["timm_model_name"], timm_kwargs)
    cfg["text_cfg"].update(text_cfg_overrides or {})
    if _ARCHITECTURE_ONLY.get():
        if pretrained:
            raise ValueError(f"pretrained={pretrained!r} while rebuilding an architecture only (weights come next)")
        # a config's own "load weights" switches too: the caller loads the weights right after
        cfg["vision_cfg"]["timm_model_pretrained"] = False
        cfg["text_cfg"].pop("hf_model_pretrained", None)
    if pretrained and not os.path.isfile(pretrained) and _is_checkpoint_path(pretrained):
        raise FileNotFoundError(f"{pretrained}: open_clip checkpoint file not found")
    try:
        # force_quick_gelu sets it before open_clip's tag check (no false warning); the keyword also turns it off
        return open_clip.create_model(
            model_name, pretrained=pretrained or None, vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
            weights_only=True, force_quick_gelu=quick_gelu, quick_gelu=quick_gelu,
        )
    except RuntimeError as exc:
        raise RuntimeError(f"could not build open_clip {model_name!r} with pretrained={pretrained!r}: {exc}") from exc


# open_clip logs this (root logger) whenever it builds a tower without weights
_RANDOM_INIT_WARNING = "No pretrained weights loaded for model"


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_RANDOM_INIT_WARNING)


@contextlib.contextmanager
def weights_loaded_next():
    """Build towers whose weights the caller loads right after (a checkpoint), without open_clip's warning that
    the model is "initialized randomly": true for a moment, and it made every ``evaluate`` / ``export`` log say
    that a trained model was random. Building without weights anywhere else still warns."""
    drop = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


# ---------------------------------------------------------------------------------------------------------------
# Rebuilding an architecture from arguments that came from a file (a checkpoint's meta.json)

# set while architecture_only() is active: build_open_clip then loads nothing
_ARCHITECTURE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("vlt_architecture_only", default=False)
# environment switches that keep Hugging Face's libraries (open_clip's hub access, tokenizers) off the network
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@contextlib.contextmanager
def architecture_only() -> Iterator[None]:
    """Build towers whose weights the caller loads right after (a checkpoint): no pretrained weights (open_clip's
    ``pretrained``, timm's ``timm_model_pretrained``, a Hugging Face text tower's) and Hugging Face offline mode,
    so a build that still asks for a file fails instead of fetching it. Also drops open_clip's "initialized
    randomly" warning (see :func:`weights_loaded_next`). The environment is process-wide: meant for loading a
    model, not for a thread that downloads at the same time."""
    saved_env = {name: os.environ.get(name) for name in _OFFLINE_ENV}
    hub = sys.modules.get("huggingface_hub.constants")  # reads HF_HUB_OFFLINE once, at import
    saved_hub = getattr(hub, "HF_HUB_OFFLINE", None)
    token = _ARCHITECTURE_ONLY.set(True)
    try:
        os.environ.update({name: "1" for name in _OFFLINE_ENV})
        if hub is not None:
            hub.HF_HUB_OFFLINE = True
        with weights_loaded_next():
            yield
    finally:
        _ARCHITECTURE_ONLY.reset(token)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if hub is not None:
            hub.HF_HUB_OFFLINE = saved_hub


def _timm_tower_keys() -> frozenset[str]:
    """Constructor arguments of timm's ViT towers (EVA, VisionTransformer) that ``timm_kwargs`` may set."""
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    keys = set()
    for cls in (Eva, VisionTransformer):
        keys |= set(inspect.signature(cls.__init__).parameters)
    return frozenset(keys - {"self", "device", "dtype"})


def _cfg_keys(name: str) -> frozenset[str]:
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    cls = {"vision": CLIPVisionCfg, "text": CLIPTextCfg}[name]
    return frozenset(f.name for f in dataclasses.fields(cls))


def _is_plain(value: Any) -> bool:
    """A JSON scalar or a (nested) list of them."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def override_problems(vision_cfg_overrides: Any, text_cfg_overrides: Any) -> list[str]:
    """One message per override key that is not an open_clip architecture key (``vision_cfg`` / ``text_cfg``
    fields, ``timm_kwargs`` of timm's ViT constructors). Keys that load files are left to
    :func:`vlt_training.model_args.loading_arguments`, which names them as such."""
    from vlt_training.model_args import is_loading_key

    problems: list[str] = []

    def check(where: str, value: Any, allowed: frozenset[str], plain_values: bool) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            problems.append(f"'{where}' must be a mapping, got {type(value).__name__}")
            return
        for key, item in value.items():
            if not isinstance(key, str) or is_loading_key(key):
                continue
            if key not in allowed:
                problems.append(f"'{where}.{key}' is not an architecture key")
            elif plain_values and not _is_plain(item):
                problems.append(f"'{where}.{key}' must be a number, string or list, got {type(item).__name__}")

    vision = vision_cfg_overrides if isinstance(vision_cfg_overrides, Mapping) else {}
    check("vision_cfg_overrides", vision_cfg_overrides, _cfg_keys("vision") | {"timm_kwargs"}, False)
    check("vision_cfg_overrides.timm_kwargs", vision.get("timm_kwargs"), _timm_tower_keys(), True)
    check("text_cfg_overrides", text_cfg_overrides, _cfg_keys("text"), False)
    return problems
