"""Which model constructor arguments a file may set: the architecture, never a source of weights or files.

A checkpoint's ``meta.json`` (``model_kwargs``) and a training config's ``model.overrides`` are handed to the model
constructors and, through ``vision_cfg_overrides`` / ``text_cfg_overrides`` / ``timm_kwargs``, to open_clip and
timm. Those libraries also take arguments that download or read files: timm's ``pretrained_cfg_overlay={"url": ...}``
and ``cache_dir``, ``timm_model_pretrained``, Hugging Face text towers (``hf_*``), and open_clip model names with a
scheme (``hf-hub:<repo>``, ``local-dir:<path>``). Checkpoints and configs come from colleagues, vendors and public
releases, so such arguments are refused wherever they come from: a checkpoint's weights come from its own
``model.safetensors``, and a training run names its initial weights in ``model.pretrained`` only.

No torch import here: the training config (:mod:`vlt_training.config`) applies the same rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Keys that name a source of weights or files, besides every key containing "pretrained" or starting with "hf_".
_LOADING_KEYS = frozenset({"cache_dir", "checkpoint_path", "url", "file", "local_dir", "state_dict"})
# Keys whose value is a model config name: a plain name only, since open_clip and timm resolve "hf-hub:<repo>" and
# "local-dir:<path>" (and timm a path) by downloading or reading files.
NAME_KEYS = ("clip_model", "timm_model_name")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def is_loading_key(key: str) -> bool:
    """Whether an argument named ``key`` loads or fetches weights or files (``pretrained``, ``hf_*``, ...)."""
    key = key.lower()
    return "pretrained" in key or key.startswith("hf_") or key in _LOADING_KEYS


def loading_arguments(kwargs: Mapping[str, Any], prefix: str = "") -> list[str]:
    """One message per argument of ``kwargs`` (nested mappings included, keys dotted) that loads or fetches
    weights or files; empty when there is none.

    A loading key set to ``None`` or ``False`` turns loading off and passes.
    """
    problems: list[str] = []
    for key, value in kwargs.items():
        where = f"{prefix}{key}"
        if not isinstance(key, str):
            problems.append(f"'{where}' is not an argument name")
            continue
        if is_loading_key(key) and value is not None and value is not False:
            problems.append(f"'{where}' loads or fetches weights or files")
            continue
        if key in NAME_KEYS and value is not None and not (isinstance(value, str) and _PLAIN_NAME.match(value)):
            problems.append(f"'{where}' = {value!r} is not a plain model config name (a scheme such as hf-hub: or "
                            "local-dir:, or a path, makes the loader fetch or read files)")
        if isinstance(value, Mapping):
            problems += loading_arguments(value, f"{where}.")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    problems += loading_arguments(item, f"{where}.{i}.")
    return problems
