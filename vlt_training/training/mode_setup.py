"""The trainer's side of the training modes: config -> model arguments, and FAMix's style mining before training.

``model.mode`` and ``model.mode_options.<mode>`` (:class:`vlt_training.config.ModeOptions`) map onto the model's
``mode=`` / ``mode_options=`` constructor arguments here (:func:`model_mode_kwargs`, the fields of
:mod:`vlt_training.mode_args`); the mining-only FAMix options (crops, PIN optimiser and steps, words, templates,
cache) are used by :func:`prepare_mode`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
from torch import nn

from vlt_training.config import Config, ModelConfig
from vlt_training.modeling.modes import MODE_OPTION_KEYS, parameter_counts


def model_mode_kwargs(cfg: ModelConfig) -> dict:
    """``{"mode": ..., "mode_options": {...}}`` for the model constructor; ``{}`` for ``full`` (so models without
    modes, e.g. detection, are built as before)."""
    if cfg.mode == "full":
        return {}
    section = getattr(cfg.mode_options, cfg.mode, None)
    values = dataclasses.asdict(section) if section is not None else {}
    return {"mode": cfg.mode, "mode_options": {k: values[k] for k in MODE_OPTION_KEYS[cfg.mode] if k in values}}


def mode_summary(model: nn.Module) -> dict:
    """Mode and parameter counts, for the training log and the checkpoint metadata."""
    counts = parameter_counts(model)
    return {"mode": getattr(model, "mode", "full"), "trainable_params": counts["trainable"],
            "total_params": counts["total"]}


def _data_ids(dataset, indices) -> list[str]:
    """What identifies the mined samples: each record's files with their sizes and modification times."""
    ids = []
    for i in indices:
        rec = dataset.records[i]
        for key in ("file_name", "sem_seg_file_name"):
            path = rec.get(key)
            stat = os.stat(path) if path and os.path.exists(path) else None
            ids.append(f"{path}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1}")
    return ids


def style_bank_path(cfg: Config, run_dir: Path) -> Path:
    path = Path(cfg.model.mode_options.famix.cache)
    return path if path.is_absolute() else Path(run_dir) / path


def mining_dataset(dataset):
    """The training records as un-augmented crops, as the reference mines its styles: the scale fit and the
    cat-max-ratio random crop stay (every crop has the training size), ratio jitter, flip and photometric
    distortion go. Datasets of another kind are used as they are."""
    from vlt_training.data.segmentation import SegmentationTrainDataset

    if not isinstance(dataset, SegmentationTrainDataset):
        return dataset
    plain = dataclasses.replace(dataset.augment, resize_ratio=[1.0, 1.0], flip_prob=0.0, photometric=False)
    return SegmentationTrainDataset(dataset.records, dataset.crop_size, plain, dataset.mean, dataset.std,
                                    dataset.ignore_index)


def prepare_mode(model: nn.Module, cfg: Config, dataset, run_dir: Path, is_main: bool = True,
                 barrier=lambda: None) -> None:
    """Before training: FAMix loads its style bank from the cache or mines it (rank 0 writes; the others wait and
    read), installs it in the style-mixing hook and releases the text tower. Other modes: nothing.

    Mining reads ``mine_images`` un-augmented crops (``None``: the whole training set) one at a time and runs PIN
    ``pin_batch`` patches at a time, with a progress bar; the bank is cached under a key of the tower's weights,
    the crops' files and every mining option, so a second run with the same inputs reads it back."""
    if getattr(model, "mode", "full") != "famix":
        return
    from vlt_training.modeling import famix

    opts = cfg.model.mode_options.famix
    if opts.pin_optimizer not in ("sgd", "adam"):
        raise ValueError(f"model.mode_options.famix.pin_optimizer: {opts.pin_optimizer!r}, expected 'sgd' or 'adam'")
    backbone = model.backbone
    source = mining_dataset(dataset)
    count = len(source) if opts.mine_images is None else min(opts.mine_images, len(source))
    seeds = np.random.default_rng(opts.seed).integers(0, 2**31 - 1, count)
    indices = list(range(count))
    words = list(opts.style_words) or list(famix.default_style_words())
    templates = list(opts.templates) or list(famix.default_templates())
    settings = {"style_block": backbone.block_hook.block, "grid": backbone.block_hook.cells,
                "pin_steps": opts.pin_steps, "pin_lr": opts.pin_lr, "pin_optimizer": opts.pin_optimizer,
                "pin_momentum": opts.pin_momentum, "pin_pool": opts.pin_pool, "pin_batch": opts.pin_batch,
                "words": words, "templates": templates, "seed": opts.seed, "crop_size": list(cfg.data.crop_size),
                "augment": dataclasses.asdict(getattr(source, "augment", cfg.data.augment)),
                "class_names": list(model.class_names), "seeds": [int(s) for s in seeds]}
    key = famix.cache_key(backbone, _data_ids(source, indices), settings)
    path = style_bank_path(cfg, run_dir)
    bank = famix.StyleBank.load(path, key) if is_main else None
    if bank is None and is_main:
        print(f"FAMix: mining styles from {count} crops into {path}", flush=True)
        start = time.perf_counter()
        samples = ((img, tgt["sem_seg"]) for img, tgt in (source[(i, int(s))] for i, s in zip(indices, seeds)))
        bank = famix.mine_styles(model, samples, model.class_names, style_block=settings["style_block"],
                                 grid=settings["grid"], style_words=words, templates=templates,
                                 pin_steps=opts.pin_steps, pin_lr=opts.pin_lr, pin_optimizer=opts.pin_optimizer,
                                 pin_momentum=opts.pin_momentum, pin_batch=opts.pin_batch, pin_pool=opts.pin_pool,
                                 seed=opts.seed, ignore_index=model.ignore_index, total=count, progress=True)
        bank.save(path, key)
        print(f"FAMix: mined {len(bank)} styles in {time.perf_counter() - start:.1f} s ({bank.sizes()})", flush=True)
    elif is_main:
        print(f"FAMix: style bank {path} is up to date ({len(bank)} styles)", flush=True)
    barrier()
    if bank is None:
        bank = famix.StyleBank.load(path, key)
        if bank is None:
            raise RuntimeError(f"{path}: FAMix style bank missing or stale after rank 0 mined it")
    backbone.block_hook.set_bank(bank)
    backbone.release_text_tower()
