"""Train (or resume) a VLTSeg / VLTDet model.

    python -m vlt_training.cli.train --config config/train/tiny_cpu.yaml [--out runs/x] [dotted.key=value ...]
    torchrun --nproc_per_node 8 -m vlt_training.cli.train --config config/train/gta5_eva02_l14.yaml

Running the same command on an existing ``--out`` folder resumes from its newest checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from vlt_training.config import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlt_training.cli.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training config YAML (config/train/*.yaml)")
    parser.add_argument("--out", help="run folder (default runs/<config name>); resumes if it has checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_iters=10 optim.lr=2e-4")
    return parser


def train_or_report(cfg, out: str, no_progress: bool, errors: tuple[type[Exception], ...] = ()):
    """Train ``cfg`` into ``out``; the TrainResult, or None after printing a data, checkpoint or non-finite-loss
    error (or one of ``errors``) as one line. Shared by the ``train`` and ``pretrain`` commands."""
    from vlt_training.data.records import DataError
    from vlt_training.training.checkpoint import CheckpointError
    from vlt_training.training.trainer import train

    try:
        return train(cfg, out, progress=False if no_progress else None)
    except (DataError, CheckpointError, FloatingPointError, *errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = train_or_report(cfg, args.out or f"runs/{cfg.name}", args.no_progress)
    if result is None:
        return 1
    if result.checkpoint is not None:
        print(f"trained to step {result.step}; checkpoint: {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
