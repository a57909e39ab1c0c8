"""Evaluate a checkpoint on the config's eval datasets: metrics per dataset and condition, retention.

    python -m vlt_training.cli.evaluate --checkpoint runs/x [--config cfg.yaml] [--mode whole|slide]
        [--out report.json] [dotted.key=value ...]

Without ``--config`` the checkpoint's own resolved ``config.yaml`` is used (its eval section).
"""

from __future__ import annotations

import argparse
import sys

from vlt_training.config import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlt_training.cli.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder (newest checkpoint)")
    parser.add_argument("--config", help="config YAML whose eval/data sections to use (default: the checkpoint's)")
    parser.add_argument("--mode", choices=("whole", "slide"), help="override eval.mode")
    parser.add_argument("--out", help="write the JSON report here (atomically)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast precision")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.resize=[512,1024]")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vlt_training.training.checkpoint import CONFIG_FILE, CheckpointError, load_model, resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(args.checkpoint)
        config_path = args.config or ckpt / CONFIG_FILE
        cfg = load_config(config_path, args.overrides)
        if args.mode:
            cfg.eval.mode = args.mode
        from vlt_training.training.distributed import resolve_device

        device = resolve_device(args.device)
        model, _ = load_model(ckpt, device=device)
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from vlt_training.tasks.runner import evaluate, format_table, write_json

    report = evaluate(model, cfg, device=device, amp=args.amp)
    report["checkpoint"] = str(ckpt)
    print(format_table(report))
    if args.out:
        write_json(report, args.out)
        print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
