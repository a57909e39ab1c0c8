"""Pretrain a tiny CLIP (or the vision-only control) on captioned procedural scenes, through the trainer.

    python -m vlt_training.cli.pretrain --config config/pretrain/tiny_clip.yaml [--out runs/x] [dotted.key=value ...]
    ros2 run vlt_training pretrain --config config/pretrain/tiny_clip.yaml

The run folder is the trainer's (checkpoints/, log.csv, tb/, config.yaml; the same command resumes after a kill)
and, once training is done, also an open_clip model folder: ``open_clip_config.json`` + ``open_clip_model.safetensors``
(``open_clip.create_model_and_transforms('local-dir:<out>')``, usable as ``model.pretrained`` of VLTSeg / VLTDet)
with the held-out report ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import argparse
import sys

from vlt_training.config import ConfigError, load_config

PRETRAIN_TASKS = ("clip_pretrain", "vision_pretrain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlt_training.cli.pretrain", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="pretraining config YAML (config/pretrain/*.yaml)")
    parser.add_argument("--out", help="run + open_clip folder (default runs/<config name>); resumes if it has "
                                      "checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_iters=10")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if cfg.task not in PRETRAIN_TASKS:
            raise ConfigError(f"{args.config}: 'task' must be one of {PRETRAIN_TASKS} for pretraining "
                              f"(got {cfg.task!r}; use vlt_training.cli.train for it)")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from vlt_training.cli.train import train_or_report
    from vlt_training.modeling.meta_arch.clip_pretrain import export_open_clip
    from vlt_training.pretrain.report import pretraining_report, supervised_report, write_report
    from vlt_training.tasks.pretraining import corpus_spec

    out = args.out or f"runs/{cfg.name}"
    result = train_or_report(cfg, out, args.no_progress, errors=(ValueError,))
    if result is None:
        return 1
    if result.checkpoint is None:  # not rank 0 under torchrun
        return 0
    provenance = {"config_name": cfg.name, "task": cfg.task, "step": result.step, "seed": cfg.train.seed,
                  "corpus": cfg.to_dict()["pretrain"]["corpus"],
                  "command": "python -m vlt_training.cli.pretrain " + " ".join(argv)}
    export_open_clip(result.model, out, fp16=cfg.pretrain.export_fp16, provenance=provenance)
    print(f"trained to step {result.step}; open_clip folder: {out} (local-dir:{out})")
    if cfg.pretrain.report:
        model = result.model.to("cpu")
        spec = corpus_spec(cfg)
        if cfg.task == "clip_pretrain":
            report = pretraining_report(model, spec)
            r = report["retrieval"]
            print(f"held-out ({report['num_heldout']} pairs): image->text R@1 {r['image_to_text']['R@1']:.3f}, "
                  f"text->image R@1 {r['text_to_image']['R@1']:.3f} (chance {r['chance']['R@1']:.3f}); "
                  f"zero-shot condition accuracy {report['zero_shot_condition']['accuracy']:.3f} "
                  f"(chance {report['zero_shot_condition']['chance']:.3f})")
        else:
            report = supervised_report(model, spec)
            print(f"held-out ({report['num_heldout']} pairs): mean head AUROC {report['mean_auroc']:.3f} "
                  "(chance 0.500)")
        report["provenance"] = provenance
        json_path, _ = write_report(report, out, title=f"Pretraining report: {cfg.name}")
        print(f"report: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
