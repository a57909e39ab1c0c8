"""Task hooks of pretraining: ``clip_pretrain`` (image-text, ClipLoss) and ``vision_pretrain`` (supervised control).

Both train on the captioned corpus (``pretrain.corpus`` of the config) through the ordinary trainer, so resuming
after a kill, atomic checkpoints, the progress bar and the CSV / TensorBoard logs are the trainer's own. The corpus
is rendered on the fly, so the records are just the pair indices (the ``load_records`` hook) instead of a dataset
read from disk.
"""

from __future__ import annotations

import dataclasses

from vlt_perception.metadata import TASK_PRETRAINING
from vlt_training.config import Config
from vlt_training.pretrain.corpus import CorpusSpec, PretrainCorpus
from vlt_training.tasks.registry import TaskHooks, register_task


def corpus_spec(cfg: Config) -> CorpusSpec:
    """The :class:`CorpusSpec` of ``cfg.pretrain.corpus``."""
    # every field of the spec is a field of the config of the same name (the config adds loader-only options)
    return CorpusSpec(**{f.name: getattr(cfg.pretrain.corpus, f.name) for f in dataclasses.fields(CorpusSpec)})


def load_records(cfg: Config) -> list[dict]:
    """One record per training pair; the pairs themselves are rendered by the dataset."""
    spec = corpus_spec(cfg)
    if spec.num_train <= 0:
        raise ValueError(f"{cfg.name}: pretrain.corpus.num_train must be > 0")
    if [spec.height, spec.width] != list(cfg.data.crop_size):
        raise ValueError(f"{cfg.name}: pretrain.corpus size {spec.height}x{spec.width} must equal data.crop_size "
                         f"{cfg.data.crop_size} (the input size written into the checkpoints)")
    return [{"split": "train", "index": i} for i in range(spec.num_train)]


def build_train_dataset(records: list[dict], cfg: Config, mean, std) -> PretrainCorpus:
    c = cfg.pretrain.corpus
    return PretrainCorpus(corpus_spec(cfg), "train", mean, std, resample_look=c.resample_look, cache=c.cache)


def evaluate(model, records, cfg: Config, device="cpu", amp: str = "none") -> dict:
    """The held-out pretraining report in the trainer's evaluation shape (``overall`` metrics)."""
    from vlt_training.pretrain.report import pretraining_report

    report = pretraining_report(model, corpus_spec(cfg), device=device)
    overall = {"i2t_R@1": report["retrieval"]["image_to_text"]["R@1"],
               "t2i_R@1": report["retrieval"]["text_to_image"]["R@1"],
               "condition_accuracy": report["zero_shot_condition"]["accuracy"]}
    return {"overall": overall, "conditions": {}, "num_images": report["num_heldout"], "report": report}


CLIP_PRETRAIN = register_task(TaskHooks(
    name="clip_pretrain", metadata_task=TASK_PRETRAINING, build_train_dataset=build_train_dataset,
    evaluate=evaluate, primary_metric="i2t_R@1", load_records=load_records,
))


def evaluate_supervised(model, records, cfg: Config, device="cpu", amp: str = "none") -> dict:
    """The vision-only control's held-out head AUROC in the trainer's evaluation shape."""
    from vlt_training.pretrain.report import supervised_report

    report = supervised_report(model, corpus_spec(cfg), device=device)
    return {"overall": {"mean_auroc": report["mean_auroc"]}, "conditions": {}, "num_images": report["num_heldout"],
            "report": report}


VISION_PRETRAIN = register_task(TaskHooks(
    name="vision_pretrain", metadata_task=TASK_PRETRAINING, build_train_dataset=build_train_dataset,
    evaluate=evaluate_supervised, primary_metric="mean_auroc", load_records=load_records,
))
