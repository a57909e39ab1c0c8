"""Evidence that a pretrained CLIP learned: held-out retrieval and zero-shot figures, each beside its chance level.

:func:`pretraining_report` embeds the held-out pairs of the corpus (fixed looks, scenes never trained on) and
measures

- image -> text and text -> image recall@1 / @5 among the N held-out pairs (chance k / N);
- zero-shot appearance: the five-way condition (clear / fog / night / rain / snow) and each binned continuous
  style, by the nearest prompt embedding (chance 1 / K; the majority-bin rate is given too), plus a one-vs-rest
  AUROC per style bin (chance 0.5);
- zero-shot presence per class: AUROC of the similarity to ``"a photo with a <class>"`` between images that contain
  the class and images that don't (chance 0.5; ``null`` for classes the generator never draws).

:func:`write_report` writes it as JSON and Markdown, atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from vlt_perception.atomic import atomic_write_text
from vlt_perception.labels import CITYSCAPES_CLASSES
from vlt_training.pretrain.corpus import CorpusSpec, PretrainCorpus, image_to_tensor
from vlt_training.vocabulary import CLASS_WORDS, CONDITION_WORDS, CONDITIONS, STYLE_BINS

_CONDITION_PROMPTS = ("a {} photo of a street", "a {} street scene", "a {} driving scene with cars")
_STYLE_PROMPTS = ("a {} photo of a street", "a {} street scene", "a {} dashcam frame")
_PRESENCE_PROMPTS = ("a photo with a {}", "a street with {}")


def recall_at_k(similarity: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Recall@k of matching row i to column i in an (N, N) similarity matrix."""
    target = similarity.diagonal().unsqueeze(1)  # N, 1
    rank = (similarity > target).sum(dim=1)  # N: how many candidates beat the true one
    return {f"R@{k}": float((rank < k).float().mean()) for k in ks}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); None without both classes."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def _prompt_embeddings(model, classes: list[list[str]]) -> torch.Tensor:
    """(K, D): the normalised mean embedding of each class's prompts (prompt ensembling, as CLIP does)."""
    out = []
    for prompts in classes:
        emb = model.encode_text(prompts).float().mean(0)
        out.append(emb / emb.norm())
    return torch.stack(out)


def _zero_shot(image_emb: torch.Tensor, prompt_emb: torch.Tensor, labels: np.ndarray) -> dict:
    """Accuracy of the nearest prompt against integer ``labels`` (N,), with chance and majority rate."""
    pred = (image_emb @ prompt_emb.T).argmax(1).numpy()
    k = prompt_emb.shape[0]
    counts = np.bincount(labels, minlength=k)
    return {"accuracy": float((pred == labels).mean()), "chance": 1.0 / k,
            "majority": float(counts.max() / counts.sum()), "num_images": int(len(labels)), "classes": k}


@torch.no_grad()
def embed_heldout(model, spec: CorpusSpec, device="cpu", batch_size: int = 64) -> dict:
    """Image and caption embeddings of the held-out pairs, with their appearance and content."""
    data = PretrainCorpus(spec, "heldout", model.pixel_mean, model.pixel_std, cache=False)
    images, texts, looks, present = [], [], [], []
    for start in range(0, len(data), batch_size):
        pairs = [data.pair(i) for i in range(start, min(start + batch_size, len(data)))]
        batch = torch.stack([image_to_tensor(p.image, data.mean, data.std) for p in pairs]).to(device)  # B, 3, H, W
        images.append(model.encode_image(batch).float().cpu())
        texts.append(model.encode_text([p.caption for p in pairs]).float().cpu())
        looks += [p.appearance for p in pairs]
        present += [p.content.presence_vector() for p in pairs]
    return {"image": torch.cat(images), "text": torch.cat(texts), "appearance": looks,
            "present": np.stack(present)}


@torch.no_grad()
def pretraining_report(model, spec: CorpusSpec, device="cpu", batch_size: int = 64) -> dict:
    """All figures of the module docstring for ``model`` (a :class:`~vlt_training.modeling.meta_arch.clip_pretrain.CLIPPretrain`)."""
    was_training = model.training
    model.eval()
    try:
        emb = embed_heldout(model, spec, device, batch_size)
        img, txt = emb["image"], emb["text"]
        n = img.shape[0]
        sim = img @ txt.T  # N images, N captions
        retrieval = {"image_to_text": recall_at_k(sim), "text_to_image": recall_at_k(sim.T),
                     "chance": {"R@1": 1.0 / n, "R@5": min(5.0 / n, 1.0)}, "num_pairs": n}

        looks = emb["appearance"]
        cond_labels = np.array([CONDITIONS.index(a.condition) for a in looks])
        present_conditions = [c for c in CONDITIONS if (cond_labels == CONDITIONS.index(c)).any()]
        keep = np.isin(cond_labels, [CONDITIONS.index(c) for c in present_conditions])
        cond_prompts = _prompt_embeddings(model, [[t.format(CONDITION_WORDS[c]) for t in _CONDITION_PROMPTS]
                                                  for c in present_conditions])
        remap = {CONDITIONS.index(c): i for i, c in enumerate(present_conditions)}
        condition = _zero_shot(img[keep], cond_prompts, np.array([remap[v] for v in cond_labels[keep]]))
        condition["labels"] = present_conditions

        bins = [a.bins() for a in looks]
        styles, style_auroc = {}, {}
        for attribute, table in STYLE_BINS.items():
            worded = [b for b, (adjectives, _) in table.items() if adjectives]
            prompts = _prompt_embeddings(model, [[t.format(a) for t in _STYLE_PROMPTS for a in table[b][0]]
                                                 for b in worded])
            labels = np.array([worded.index(b[attribute]) if b[attribute] in worded else -1 for b in bins])
            scores = (img @ prompts.T).numpy()  # N, K
            for k, name in enumerate(worded):
                style_auroc[f"{attribute}={name}"] = auroc(scores[:, k], labels == k)
            if len(worded) >= 2 and (labels >= 0).sum() > 0:
                mask = labels >= 0
                styles[attribute] = {**_zero_shot(img[mask], prompts, labels[mask]), "labels": worded}

        presence = {}
        for i, name in enumerate(CITYSCAPES_CLASSES):
            singular, plural = CLASS_WORDS[name][0]
            prompt = _prompt_embeddings(model, [[_PRESENCE_PROMPTS[0].format(singular),
                                                 _PRESENCE_PROMPTS[1].format(plural)]])[0]
            positives = emb["present"][:, i] > 0
            presence[name] = {"auroc": auroc((img @ prompt).numpy(), positives),
                              "num_positive": int(positives.sum())}
        valid = [v["auroc"] for v in presence.values() if v["auroc"] is not None]
        return {
            "num_heldout": n,
            "retrieval": retrieval,
            "zero_shot_condition": condition,
            "zero_shot_styles": styles,
            "style_auroc": {"per_bin": style_auroc, "chance": 0.5},
            "zero_shot_presence": {"per_class": presence, "mean_auroc": float(np.mean(valid)) if valid else None,
                                   "chance": 0.5},
            "logit_scale": float(model.clip.logit_scale.exp()),
        }
    finally:
        model.train(was_training)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}"


def report_markdown(report: dict, title: str = "Pretraining report") -> str:
    """The report as Markdown tables (figure | chance)."""
    r = report["retrieval"]
    lines = [f"# {title}", "", f"Held-out pairs: {report['num_heldout']} (scenes never trained on, fixed looks).", "",
             "| retrieval | R@1 | R@5 | chance R@1 | chance R@5 |", "| --- | --- | --- | --- | --- |"]
    for key in ("image_to_text", "text_to_image"):
        lines.append(f"| {key.replace('_', ' ')} | {_fmt(r[key]['R@1'])} | {_fmt(r[key]['R@5'])} | "
                     f"{_fmt(r['chance']['R@1'])} | {_fmt(r['chance']['R@5'])} |")
    lines += ["", "| zero-shot appearance | accuracy | chance | majority | images | classes |",
              "| --- | --- | --- | --- | --- | --- |"]
    c = report["zero_shot_condition"]
    lines.append(f"| condition ({' / '.join(c['labels'])}) | {_fmt(c['accuracy'])} | {_fmt(c['chance'])} | "
                 f"{_fmt(c['majority'])} | {c['num_images']} | {c['classes']} |")
    for attribute, s in report["zero_shot_styles"].items():
        lines.append(f"| {attribute} ({' / '.join(s['labels'])}) | {_fmt(s['accuracy'])} | {_fmt(s['chance'])} | "
                     f"{_fmt(s['majority'])} | {s['num_images']} | {s['classes']} |")
    lines += ["", "| style bin (one vs rest) | AUROC | chance |", "| --- | --- | --- |"]
    for name, value in report["style_auroc"]["per_bin"].items():
        lines.append(f"| {name} | {_fmt(value)} | 0.500 |")
    p = report["zero_shot_presence"]
    lines += ["", f"Zero-shot presence (\"a photo with a <class>\"), mean AUROC {_fmt(p['mean_auroc'])} "
              "(chance 0.500):", "", "| class | AUROC | images with it |", "| --- | --- | --- |"]
    for name, v in p["per_class"].items():
        lines.append(f"| {name} | {_fmt(v['auroc'])} | {v['num_positive']} |")
    return "\n".join(lines) + "\n"


def supervised_markdown(report: dict, title: str = "Pretraining report") -> str:
    """The vision-only control's report (:func:`supervised_report`) as a Markdown table."""
    lines = [f"# {title}", "", f"Held-out pairs: {report['num_heldout']}; the control's own head, mean AUROC "
             f"{_fmt(report['mean_auroc'])} (chance 0.500).", "", "| label | AUROC |", "| --- | --- |"]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in report["head_auroc"].items()]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: str | Path, title: str = "Pretraining report") -> tuple[Path, Path]:
    """``out_dir/report.json`` and ``out_dir/report.md`` (a CLIP or a vision-only report), each written
    atomically (NaN as null)."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    atomic_write_text(json_path, json.dumps(report, indent=2, allow_nan=False) + "\n")
    text = report_markdown(report, title) if "retrieval" in report else supervised_markdown(report, title)
    atomic_write_text(md_path, text)
    return json_path, md_path


@torch.no_grad()
def supervised_report(model, spec: CorpusSpec, device="cpu", batch_size: int = 64) -> dict:
    """Held-out AUROC of the vision-only control's own head, per label (classes present, appearance bins)."""
    from vlt_training.pretrain.corpus import attribute_vector
    from vlt_training.vocabulary import attribute_names

    was_training = model.training
    model.eval()
    try:
        data = PretrainCorpus(spec, "heldout", model.pixel_mean, model.pixel_std, cache=False)
        logits, labels = [], []
        for start in range(0, len(data), batch_size):
            pairs = [data.pair(i) for i in range(start, min(start + batch_size, len(data)))]
            batch = torch.stack([image_to_tensor(p.image, data.mean, data.std) for p in pairs]).to(device)
            logits.append(model(batch)["logits"].float().cpu())
            labels += [attribute_vector(p) for p in pairs]
        scores, targets = torch.cat(logits).numpy(), np.stack(labels)
        names = list(CITYSCAPES_CLASSES) + attribute_names()
        per_label = {name: auroc(scores[:, i], targets[:, i] > 0) for i, name in enumerate(names)}
        valid = [v for v in per_label.values() if v is not None]
        return {"num_heldout": len(data), "head_auroc": per_label,
                "mean_auroc": float(np.mean(valid)) if valid else None, "chance": 0.5}
    finally:
        model.train(was_training)
