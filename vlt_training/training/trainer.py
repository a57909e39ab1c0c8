"""The training loop: one flat function, resumable, DDP-ready.

``train(cfg, run_dir)`` builds the model, data, optimiser and schedule from the config, resumes from the newest
checkpoint in ``run_dir`` if there is one (weights, optimiser, scheduler, grad scaler, step, RNG), and runs
``train.max_iters`` optimiser steps. Under torchrun every process runs it; only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from vlt_perception.labels import CITYSCAPES_PALETTE
from vlt_perception.metadata import ModelMetadata
from vlt_training.amp import autocast, grad_scaler
from vlt_training.config import Config, ModelConfig, save_config
from vlt_training.data.records import load_train_records
from vlt_training.data.sampler import StepSampler
from vlt_training.training import checkpoint as ckpt
from vlt_training.training import distributed
from vlt_training.training.mode_setup import mode_summary, model_mode_kwargs, prepare_mode
from vlt_training.training.optim import build_optimizer
from vlt_training.training.schedule import build_scheduler
from vlt_training.tasks.registry import TaskHooks, get_task


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    model: nn.Module
    last_losses: dict[str, float] = field(default_factory=dict)


def build_model(cfg: ModelConfig) -> nn.Module:
    """``create_model(cfg.name, **cfg.overrides, pretrained=cfg.pretrained)`` (pretrained only when set)."""
    from vlt_training.modeling import create_model

    mode = model_mode_kwargs(cfg)
    kwargs = {**cfg.overrides, **mode}
    if cfg.pretrained is not None:
        kwargs["pretrained"] = cfg.pretrained
    try:
        return create_model(cfg.name, **kwargs)
    except TypeError as exc:
        if mode and "mode" in str(exc):
            raise ValueError(f"model {cfg.name!r} has no training modes: model.mode={cfg.mode!r} needs a VLTSeg "
                             f"model ({exc})") from exc
        raise


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_metadata(model: nn.Module, cfg: Config, hooks: TaskHooks, step: int) -> ModelMetadata:
    """What travels with the checkpoint: classes, palette, normalisation, input size (= crop size), provenance."""
    from vlt_training.modeling.registry import model_norm

    mean, std = model_norm(model)
    names = list(model.class_names)
    palette = getattr(model, "palette", None) or [list(c) for c in CITYSCAPES_PALETTE]
    if len(palette) < len(names):  # a custom label space: extend with deterministic colours
        rng = np.random.default_rng(0)
        palette = list(palette) + rng.integers(0, 256, (len(names) - len(palette), 3)).tolist()
    return ModelMetadata(
        task=hooks.metadata_task, model_name=model.model_name, class_names=names, palette=[list(c) for c in palette],
        mean=mean, std=std, input_height=cfg.data.crop_size[0], input_width=cfg.data.crop_size[1],
        max_detections=int(getattr(model, "max_detections", 100)),  # detection: K output slots of the graph
        # multi-task models: the detection head's classes (class_names are the segmentation classes there)
        detection_class_names=list(getattr(model, "detection_class_names", None) or []),
        extra={"config_name": cfg.name, "step": step,
               "train_datasets": [f"{d.name}:{d.split}" for d in cfg.data.train], **mode_summary(model)},
    )


def maybe_generate_synthetic(cfg: Config, info: distributed.DistInfo) -> None:
    """Render the procedural benchmark into ``data.root`` when enabled and missing (rank 0; others wait)."""
    syn = cfg.data.synthetic
    root = Path(cfg.data.root)
    if syn.enabled and info.is_main and not (root.is_dir() and any(root.iterdir())):
        from vlt_training.synthetic.benchmark import generate_benchmark

        # Render next to the target and rename, so an interrupted generation is never mistaken for a dataset.
        tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
        try:
            # no conditions listed: every condition (the generator's default)
            manifest = generate_benchmark(tmp, syn.num_train, syn.num_val, syn.height, syn.width, syn.seed,
                                          syn.conditions or None)
            print(f"wrote the synthetic benchmark ({manifest['num_train']} train, {manifest['num_val']} val x "
                  f"(source + {len(manifest['conditions'])} conditions)) to {root}", flush=True)
            if root.exists():
                root.rmdir()
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    distributed.barrier(info)


class CsvLog:
    """Append-only CSV log; the header is fixed by the first row (or the existing file when resuming)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.is_file() and path.stat().st_size:
            with open(path, newline="") as fh:
                self.fields = next(csv.reader(fh), None)

    def write(self, row: dict) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: pip install tensorboard
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
            for t in targets]


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log rows past the resumed step: a killed run may have logged steps its last checkpoint lacks."""
    if not log_path.is_file():
        return
    with open(log_path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    tmp = log_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows(kept)
    os.replace(tmp, log_path)


def train(cfg: Config, run_dir: str | os.PathLike, progress: bool | None = None) -> TrainResult:
    """Train (or resume) a run in ``run_dir``; returns the final step, checkpoint and (unwrapped) model."""
    info = distributed.setup(cfg.train.device)
    try:
        return _train(cfg, Path(run_dir), info, progress)
    finally:
        distributed.cleanup(info)


def _train(cfg: Config, run_dir: Path, info: distributed.DistInfo, progress: bool | None) -> TrainResult:
    tc, device = cfg.train, info.device
    per_step = info.world_size * tc.grad_accum_steps
    if tc.batch_size % per_step:
        raise ValueError(f"train.batch_size={tc.batch_size} is not divisible by world_size x grad_accum_steps "
                         f"= {info.world_size} x {tc.grad_accum_steps}")
    micro_batch = tc.batch_size // per_step
    hooks = get_task(cfg.task)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(tc.seed)  # same seed on every rank: DDP also broadcasts rank 0's initial weights

    maybe_generate_synthetic(cfg, info)
    # Before the model: a wrong path fails fast.
    records = hooks.load_records(cfg) if hooks.load_records else load_train_records(cfg.data, hooks.record_filter)
    last = ckpt.latest_checkpoint(run_dir)
    # A resumed run has the initialised tensors in its own checkpoint; a fresh one checks the source first.
    init_from = ckpt.resolve_checkpoint(cfg.model.init_from) if cfg.model.init_from and last is None else None
    model = build_model(cfg.model).to(device)
    if init_from is not None:
        copied = ckpt.init_from_checkpoint(model, init_from, cfg.model.init_prefixes)
        if info.is_main:
            print(f"model.init_from: {copied} tensors under {cfg.model.init_prefixes} from {init_from}",
                  flush=True)
    from vlt_training.modeling.registry import model_norm

    mean, std = model_norm(model)
    dataset = hooks.build_train_dataset(records, cfg, mean, std)
    # FAMix mines (or loads) its style bank from the pretrained tower, before any resumed weights are loaded
    prepare_mode(model, cfg, dataset, run_dir, info.is_main, lambda: distributed.barrier(info))
    if info.is_main:
        summary = mode_summary(model)
        print(f"mode {summary['mode']}: {summary['trainable_params']:,} trainable of {summary['total_params']:,} "
              f"parameters ({100 * summary['trainable_params'] / max(summary['total_params'], 1):.2f}%)", flush=True)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, tc.max_iters)
    scaler = grad_scaler(device, tc.amp)

    # Resume: the same command on an existing run folder continues from its newest checkpoint.
    start_step = 0
    if last is not None:
        ckpt.load_weights(model, last, device=device)
        state = ckpt.load_trainer_state(last)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_step = int(state["step"])
        ckpt.set_rng_state(state["rng"])
        if info.is_main:
            print(f"resuming from {last} at step {start_step}", flush=True)
    if start_step >= tc.max_iters:
        if info.is_main:
            print(f"{run_dir}: already trained to step {start_step} >= train.max_iters={tc.max_iters}")
        return TrainResult(run_dir, start_step, last, model)

    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=tc.find_unused_parameters)
    sampler = StepSampler(len(dataset), seed=tc.seed, rank=info.rank, world_size=info.world_size,
                          start=start_step * micro_batch * tc.grad_accum_steps)
    loader = DataLoader(dataset, batch_size=micro_batch, sampler=sampler, num_workers=tc.num_workers,
                        collate_fn=hooks.collate, pin_memory=device.type == "cuda",
                        persistent_workers=tc.num_workers > 0,
                        # Its own generator: creating the iterator must not consume the global torch RNG, or a
                        # resumed run would draw different random numbers than an uninterrupted one.
                        generator=torch.Generator().manual_seed(tc.seed))

    log = tb = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(run_dir)
        save_config(cfg, run_dir / "config.yaml")
        _truncate_log(run_dir / "log.csv", start_step)
        log, tb = CsvLog(run_dir / "log.csv"), _tensorboard(run_dir)
    from tqdm import tqdm

    bar = tqdm(total=tc.max_iters, initial=start_step, desc=cfg.name, dynamic_ncols=True,
               disable=not info.is_main or (None if progress is None else not progress))
    params = [p for p in model.parameters() if p.requires_grad]
    data_iter = iter(loader)
    last_ckpt, terms = last, {}
    logged_step, logged_time = start_step, time.perf_counter()
    train_model.train()
    for step in range(start_step, tc.max_iters):
        optimizer.zero_grad(set_to_none=True)
        terms = {}
        for micro in range(tc.grad_accum_steps):
            images, targets = next(data_iter)
            images, targets = images.to(device, non_blocking=True), _to_device(targets, device)
            # Only the last micro-batch synchronises gradients across ranks.
            sync = micro == tc.grad_accum_steps - 1 or not info.enabled
            with contextlib.nullcontext() if sync else train_model.no_sync():
                with autocast(device, tc.amp):
                    losses = train_model(images, targets)
                loss = sum(losses.values())
                if not distributed.all_finite(loss, info):
                    raise FloatingPointError(
                        f"non-finite loss {loss.item()} at step {step + 1} (terms: "
                        f"{ {k: float(v.detach()) for k, v in losses.items()} }); lower optim.lr, enable clipping or use "
                        f"train.amp=bf16 instead of fp16")
                # Scale the loss to account for gradient accumulation: gradients add up over micro-batches.
                scaler.scale(loss / tc.grad_accum_steps).backward()
            for k, v in losses.items():  # tensors: converting each term every step would sync a GPU ~30 times
                terms[k] = terms.get(k, 0.0) + v.detach().float() / tc.grad_accum_steps
        grad_norm = None
        if tc.clip_grad_norm:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.clip_grad_norm)
        lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        done = step + 1
        if info.is_main:
            bar.update(1)
            if done % tc.log_interval == 0 or done == tc.max_iters or done == start_step + 1:
                terms = {k: float(v) for k, v in terms.items()}
                total_loss = sum(terms.values())
                now = time.perf_counter()
                row = {"step": done, "lr": lr, "loss": total_loss,
                       "grad_norm": None if grad_norm is None else float(grad_norm),
                       "images_per_s": tc.batch_size * (done - logged_step) / (now - logged_time), **terms}
                logged_step, logged_time = done, now
                bar.set_postfix(loss=f"{total_loss:.4f}", lr=f"{lr:.2e}")
                log.write(row)
                if tb is not None:
                    for key, value in row.items():
                        if key != "step" and value is not None:
                            tb.add_scalar(f"train/{key}", value, done)
        if done % tc.checkpoint_interval == 0 or done == tc.max_iters:
            if info.is_main:
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict()}
                last_ckpt = ckpt.save_checkpoint(run_dir, done, model, model_metadata(model, cfg, hooks, done),
                                                 cfg.to_yaml(), state, keep_last=tc.keep_last)
            distributed.barrier(info)
        if tc.eval_interval and (done % tc.eval_interval == 0 or done == tc.max_iters) and cfg.eval.datasets:
            if info.is_main:
                _evaluate_during_training(model, cfg, run_dir, done, device, tb)
            distributed.barrier(info)
    bar.close()
    if tb is not None:
        tb.close()
    return TrainResult(run_dir, tc.max_iters, last_ckpt if info.is_main else None, model,
                       {k: float(v) for k, v in terms.items()})


def _evaluate_during_training(model, cfg, run_dir: Path, step: int, device, tb) -> None:
    from vlt_training.tasks.runner import evaluate

    report = evaluate(model, cfg, device=device, amp=cfg.train.amp)
    metric = report["primary_metric"]
    summary = {"step": step, **{label: r["overall"][metric] for label, r in report["datasets"].items()}}
    with open(run_dir / "eval.jsonl", "a") as fh:
        fh.write(json.dumps(summary) + "\n")
    if tb is not None:
        for label, value in summary.items():
            if label != "step":
                tb.add_scalar(f"eval/{label}/{metric}", value, step)
    print(f"step {step}: " + ", ".join(f"{k} {metric} {v:.4f}" for k, v in summary.items() if k != "step"))
