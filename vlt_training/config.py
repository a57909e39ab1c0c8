"""Training configuration: dataclasses filled from YAML, a base file plus small diffs, dotted overrides.

A config file is a YAML mapping whose sections mirror :class:`Config`. ``_base_: other.yaml`` (a path relative to
the file, or a list of them) names files merged first; mappings merge key by key, every other value (lists
included) replaces the base value. Command-line overrides are ``dotted.key=value`` strings whose value is parsed
with ``yaml.safe_load`` (``train.max_iters=10``, ``data.crop_size=[128,256]``, ``data.train.0.limit=4``).
Unknown keys are rejected with a message naming the file and the key, so a typo never silently trains the default.

Every config key means exactly what the argument it is mapped onto means; the mapping happens in one place per
consumer (``vlt_training.training.trainer`` for optimiser/schedule/loop, ``vlt_training.data`` for datasets).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlt_perception.atomic import atomic_write_text
from vlt_perception.resources import resolve_config
from vlt_training.model_args import loading_arguments
from vlt_training.mode_args import FAMixArgs, ReinArgs

TASKS = ("segmentation", "detection", "multitask", "clip_pretrain", "vision_pretrain")
AMP_MODES = ("none", "bf16", "fp16")
EVAL_MODES = ("whole", "slide")
OPTIMIZERS = ("adamw", "lamb", "sgd")
MODEL_MODES = ("full", "frozen", "rein", "famix")
SCHEDULES = ("poly", "cosine")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file (or override) and the key."""


@dataclass
class ReinOptions(ReinArgs):
    """Rein's options: exactly the model's (:class:`vlt_training.mode_args.ReinArgs`, defaults there)."""


@dataclass
class FAMixOptions(FAMixArgs):
    """FAMix's options: the model's (:class:`vlt_training.mode_args.FAMixArgs`: ``freeze_blocks``, ``style_block``,
    ``grid``, ``beta``, ``label_smoothing``) plus the style mining before training
    (:func:`vlt_training.training.mode_setup.prepare_mode`), whose defaults are the reference's (astra-vision/FAMix):

    ``mine_images`` un-augmented source crops (``None``: the whole training set, in batches, with a progress bar);
    PIN runs ``pin_steps`` steps of ``pin_optimizer`` (``sgd``: lr ``pin_lr``, momentum ``pin_momentum``; ``adam``:
    lr ``pin_lr``) on up to ``pin_batch`` patches at a time, each patch's tokens pooled to the tower's pre-training
    grid first (``pin_pool``; the reference pools to 56 x 56, its CLIP ResNet's native layer1 size);
    ``style_words`` and ``templates`` (empty: the pretraining corpus's style words,
    ``famix.default_style_words()``, and CLIP's 80 ImageNet templates) make the prompts. ``cache`` is the
    safetensors style bank (relative paths: under the run folder), reused while tower, data and options match.
    """

    mine_images: int | None = None
    pin_steps: int = 100
    pin_lr: float = 1.0
    pin_optimizer: str = "sgd"
    pin_momentum: float = 0.9
    pin_batch: int = 64
    pin_pool: bool = True
    style_words: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    cache: str = "famix_styles.safetensors"
    seed: int = 0


@dataclass
class ModeOptions:
    """Options of the training modes; only the selected mode's section is used."""

    rein: ReinOptions = field(default_factory=ReinOptions)
    famix: FAMixOptions = field(default_factory=FAMixOptions)


@dataclass
class ModelConfig:
    """What ``vlt_training.modeling.create_model(name, **overrides)`` builds.

    ``pretrained`` (an open_clip tag such as ``merged2b_s4b_b131k`` or a local checkpoint path) is passed to the
    factory as ``pretrained=``; ``None`` leaves the factory's own default (random init for the tiny model).
    ``mode`` is the training recipe (``full`` fine-tuning, ``frozen`` backbone, ``rein``, ``famix``), passed as
    the model's ``mode=`` with the model-side options of ``mode_options.<mode>`` as ``mode_options=``.
    ``init_from`` (a checkpoint or run folder of this package) then replaces the tensors under ``init_prefixes``
    with that run's, e.g. VLTDet's tower from a VLTSeg run on the same tower; a resumed run skips it (its own
    checkpoint has them).
    """

    name: str = "vltseg_tiny_mask2former"
    pretrained: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    init_prefixes: list[str] = field(default_factory=lambda: ["backbone."])
    mode: str = "full"
    mode_options: ModeOptions = field(default_factory=ModeOptions)


@dataclass
class DatasetConfig:
    """One dataset split read through ``vlt_perception.datasets.get_dataset(name, root, split, **options)``.

    ``root`` relative paths are resolved against ``data.root``. ``conditions`` keeps only records whose
    ``condition`` is listed (ACDC: fog, night, rain, snow). ``limit`` keeps the first N records (sorted by
    ``image_id``), for overfitting tests. ``label`` names the dataset in reports (default ``name``).
    ``resize`` (evaluation datasets only): replaces ``eval.resize`` for this dataset, as the reference evaluates
    each target domain at its own scale.
    """

    name: str = "cityscapes"
    root: str = ""
    split: str = "train"
    conditions: list[str] | None = None
    limit: int | None = None
    label: str | None = None
    resize: list[int] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return self.label or self.name


@dataclass
class AugmentConfig:
    """mmseg / VLTSeg training augmentation.

    ``scale`` [H, W]: the image is first resized to fit this scale keeping its aspect ratio (``None``: keep the
    image size; ``keep_ratio: false``: resized to exactly H x W, like mmseg's ``Resize(scale, keep_ratio=False)``),
    then by a random ratio in ``resize_ratio``; then a random crop of ``data.crop_size`` where no
    single class covers more than ``cat_max_ratio`` of the labelled pixels (10 tries), a horizontal flip with
    probability ``flip_prob`` and mmseg's photometric distortion.
    """

    scale: list[int] | None = None
    keep_ratio: bool = True
    resize_ratio: list[float] = field(default_factory=lambda: [0.5, 2.0])
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True


@dataclass
class SyntheticConfig:
    """Generate the procedural benchmark into ``data.root`` when it is missing
    (``vlt_training.synthetic.benchmark.generate_benchmark``)."""

    enabled: bool = False
    num_train: int = 8
    num_val: int = 4
    height: int = 128
    width: int = 256
    seed: int = 0
    conditions: list[str] | None = None


@dataclass
class DataConfig:
    root: str = ""
    train: list[DatasetConfig] = field(default_factory=lambda: [DatasetConfig()])
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    ignore_index: int = 255

    def resolve_root(self, dataset: DatasetConfig) -> str:
        """The dataset's root with relative paths taken from ``data.root``."""
        if not self.root or os.path.isabs(dataset.root):
            return dataset.root
        return os.path.join(self.root, dataset.root)


@dataclass
class OptimConfig:
    """AdamW (torch), LAMB (``timm.optim.Lamb``) or SGD with ``momentum`` (FAMix's recipe), with per-group
    learning-rate multipliers (``betas`` / ``eps`` are for AdamW and LAMB, ``momentum`` for SGD).

    ``backbone_lr_mult`` scales the lr of parameters under ``backbone_prefix``; ``layer_decay`` (e.g. 0.9)
    additionally scales block ``i`` of an ``L``-block backbone by ``layer_decay ** (L - i)``. Norm weights, biases,
    position embeddings, class tokens and query embeddings get no weight decay.
    """

    name: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    backbone_lr_mult: float = 0.1
    backbone_prefix: str = "backbone."
    layer_decay: float | None = None
    momentum: float = 0.9


@dataclass
class ScheduleConfig:
    """Linear warm-up from ``warmup_ratio * lr`` over ``warmup_iters``, then ``policy`` decay to ``min_lr_ratio * lr``:
    ``poly`` (with ``power``) or ``cosine`` (half a cosine period)."""

    policy: str = "poly"
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr_ratio: float = 0.0


@dataclass
class TrainConfig:
    """The loop. ``batch_size`` is the global batch of one optimiser step, split over processes and accumulation
    steps (it must divide evenly), so a recipe means the same thing on 1 or 8 GPUs."""

    max_iters: int = 5000
    batch_size: int = 16
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = 0.01
    amp: str = "none"
    checkpoint_interval: int = 1000
    keep_last: int = 3
    log_interval: int = 50
    eval_interval: int = 0
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"
    find_unused_parameters: bool = False
    deterministic: bool = False


@dataclass
class EvalConfig:
    """Evaluation datasets and inference mode.

    ``mode`` whole: the (optionally ``resize``d, keep-ratio) image in one pass, padded to ``size_divisor``;
    slide: ``crop_size`` windows every ``stride`` pixels, scores averaged where windows overlap.
    ``source`` is the label of the source-domain dataset for retention (default: the first dataset).
    ``min_box_area`` (detection): ground-truth objects smaller than this many pixels (original image) are ignored,
    as COCO ignores objects outside an area range (see ``vlt_perception.metrics.detection``).
    ``tta`` (segmentation): test-time augmentation, the inference above run at each of ``tta_scales`` (ratios of
    the test scale) and, with ``tta_flip``, mirrored; class scores averaged (``vlt_training.evaluation.tta``).
    """

    datasets: list[DatasetConfig] = field(default_factory=list)
    mode: str = "whole"
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    stride: list[int] = field(default_factory=lambda: [426, 426])
    resize: list[int] | None = None
    size_divisor: int = 32
    batch_size: int = 1
    source: str | None = None
    min_box_area: float = 0.0
    tta: bool = False
    tta_scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    tta_flip: bool = True


@dataclass
class CorpusConfig:
    """The captioned procedural corpus of ``vlt_training.pretrain`` (its own seeds, disjoint from the benchmark's).

    ``num_train`` scenes for training and ``num_heldout`` for the report, rendered at ``height`` x ``width``.
    ``resample_look``: every epoch shows a scene in a new appearance with a new caption (drawn from the trainer's
    per-sample seed). ``exclude_dark`` leaves out night and dusk. ``cache`` keeps rendered scenes in memory.
    """

    seed: int = 0
    num_train: int = 4096
    num_heldout: int = 256
    height: int = 128
    width: int = 256
    exclude_dark: bool = False
    resample_look: bool = True
    cache: bool = True


@dataclass
class PretrainConfig:
    """Vision-language / vision-only pretraining (tasks ``clip_pretrain`` / ``vision_pretrain``): the corpus, the
    exported open_clip folder (``export_fp16`` halves its size) and the held-out report (``report``)."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    export_fp16: bool = False
    report: bool = True


@dataclass
class Config:
    task: str = "segmentation"
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``diff`` into a copy of ``base``: mappings merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in diff.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its ``_base_`` chain merged, as a plain dict (not yet validated)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: _base_ cycle through {[str(p) for p in _seen]}")
    data = _read_yaml(path)
    bases = data.pop("_base_", None)
    if bases is None:
        return data
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {base!r}")
        merged = merge(merged, load_raw(path.parent / base, _seen + (path,)))
    return merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.0.c=value"`` -> (["a", "b", "0", "c"], yaml.safe_load("value"))."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    return key.split("."), parsed


def apply_override(data: dict[str, Any], text: str) -> None:
    """Set one dotted override in place; list elements are addressed by index (``data.train.0.root=...``)."""
    keys, value = parse_override(text)
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[:depth])} has no element {key}")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError(f"override {text!r}: {'.'.join(keys[:depth])} is a value, not a section")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    """Turn a mapping into dataclass ``cls``, recursively, rejecting unknown keys."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where or 'top level'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (known keys in '{where or 'top level'}': {sorted(names)})"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where else name, source)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where, source)
    if _is_dataclass_type(tp):
        return _build(tp, value, where, source)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{where}' must be a list, got {value!r}")
        return [_convert(args[0], v, f"{where}.{i}", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{where}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the float it obviously is.
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{source}: '{where}' must be {tp.__name__}, got {value!r}")
    return value


def validate(cfg: Config, source: str) -> Config:
    """Cross-field checks with messages naming the source and key."""
    checks = [
        (cfg.task in TASKS, "task", f"must be one of {TASKS}"),
        (cfg.train.amp in AMP_MODES, "train.amp", f"must be one of {AMP_MODES}"),
        (cfg.eval.mode in EVAL_MODES, "eval.mode", f"must be one of {EVAL_MODES}"),
        (cfg.optim.name in OPTIMIZERS, "optim.name", f"must be one of {OPTIMIZERS}"),
        (cfg.model.mode in MODEL_MODES, "model.mode", f"must be one of {MODEL_MODES}"),
        (bool(cfg.model.init_prefixes) and all(isinstance(p, str) and p for p in cfg.model.init_prefixes),
         "model.init_prefixes", "must be a non-empty list of parameter-name prefixes"),
        (cfg.model.mode_options.famix.grid > 0, "model.mode_options.famix.grid", "must be > 0"),
        (cfg.schedule.policy in SCHEDULES, "schedule.policy", f"must be one of {SCHEDULES}"),
        (len(cfg.data.crop_size) == 2 and min(cfg.data.crop_size) > 0, "data.crop_size", "must be [H, W] > 0"),
        (len(cfg.eval.crop_size) == 2 and min(cfg.eval.crop_size) > 0, "eval.crop_size", "must be [H, W] > 0"),
        (len(cfg.eval.stride) == 2 and min(cfg.eval.stride) > 0, "eval.stride", "must be [H, W] > 0"),
        (bool(cfg.eval.tta_scales) and min(cfg.eval.tta_scales) > 0, "eval.tta_scales", "must be ratios > 0"),
        (not cfg.eval.tta or cfg.task == "segmentation", "eval.tta", "is available for segmentation only"),
        (len(cfg.data.augment.resize_ratio) == 2, "data.augment.resize_ratio", "must be [min, max]"),
        (cfg.train.max_iters > 0, "train.max_iters", "must be > 0"),
        (cfg.train.batch_size > 0, "train.batch_size", "must be > 0"),
        (cfg.train.grad_accum_steps > 0, "train.grad_accum_steps", "must be > 0"),
        (cfg.train.checkpoint_interval > 0, "train.checkpoint_interval", "must be > 0"),
        (cfg.train.keep_last > 0, "train.keep_last", "must be > 0"),
        (cfg.schedule.warmup_iters >= 0, "schedule.warmup_iters", "must be >= 0"),
        (cfg.optim.lr > 0, "optim.lr", "must be > 0"),
        (len(cfg.optim.betas) == 2, "optim.betas", "must be [beta1, beta2]"),
    ]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"{source}: '{key}' {message}")
    # model.overrides reach the constructors (and open_clip / timm): architecture only, as in a checkpoint
    loading = loading_arguments(cfg.model.overrides, "model.overrides.")
    if loading:
        raise ConfigError(f"{source}: {'; '.join(loading)}; model.overrides set the architecture only, the initial "
                          "weights are named by 'model.pretrained'")
    return cfg


def from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a plain dict (e.g. a checkpoint's config.yaml) into a :class:`Config`."""
    return validate(_build(Config, data, "", source), source)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``path`` (with its ``_base_`` chain), apply dotted ``overrides``, validate.

    Without a path the dataclass defaults are the starting point.
    """
    if path is not None:
        # config/train/tiny_cpu.yaml also works outside the source tree: from the installed share folder
        path = resolve_config(path)
    # Start from the defaults so overrides can address anything, including list elements the file doesn't set.
    data = merge(Config().to_dict(), load_raw(path) if path is not None else {})
    source = str(path) if path is not None else "config"
    for text in overrides:
        apply_override(data, text)
    if overrides:
        source += f" (with overrides {list(overrides)})"
    return from_dict(data, source)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temporary file + rename)."""
    atomic_write_text(path, cfg.to_yaml())
