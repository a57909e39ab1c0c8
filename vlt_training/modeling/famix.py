"""FAMix (Fahes et al., "A Simple Recipe for Language-guided Domain Generalized Segmentation"), for ViT towers.

Two parts, both on the patch features after one early, frozen block (``style_block``):

* **Local style mining** (offline, :func:`mine_styles`): each source crop is split into ``grid`` x ``grid``
  patches; each patch takes its dominant ground-truth class; a prompt "<random style word> <class name>" over a set
  of templates is embedded by the tower's text encoder; prompt-driven instance normalisation (PIN,
  :func:`pin_optimise`) optimises the patch's per-channel mean and standard deviation so that the tower's pooled
  image embedding of the restyled patch moves toward the prompt. The optimised statistics form class-wise style
  banks (:class:`StyleBank`), cached as safetensors and invalidated when the tower, data, words or settings change.
* **Training** (:class:`StyleMixHook`, a backbone block hook): for each patch, a style drawn from its class's bank
  is AdaIN-mixed with the patch's own statistics, ``mu = s mu_own + (1 - s) mu_style`` (same for sigma), with
  ``s ~ Beta(0.1, 0.1)`` per image and channel as in the reference. Identity in eval mode and export.

Differences from astra-vision/FAMix (ResNet-50 + DeepLabv3+): the statistics are over a patch's tokens instead of
a conv feature map's pixels, and no ReLU follows the restyling (ViT tokens are not post-ReLU activations). The
reference's other choices kept: 3 x 3 grid, Beta(0.1, 0.1), label smoothing 0.1 (here on Mask2Former's class
loss), patches whose dominant label is "ignore" get the prompt "photo" and form the fallback bank.

Style words: :func:`default_style_words`, the appearance vocabulary of the project's captioned pretraining corpus
(``vlt_training.vocabulary.style_words()``, 45 words over time of day, weather, colour cast, contrast, blur
and noise). The reference draws from a list of generic style names; a tower only moves toward prompts whose words
it has learned, and the project's own tiny CLIP learned exactly these, while a real CLIP knows them too. A list of
its own goes in ``model.mode_options.famix.style_words``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def default_style_words() -> tuple[str, ...]:
    """The style words of the pretraining corpus's vocabulary (what the project's tiny CLIP was taught)."""
    from vlt_training.vocabulary import style_words

    return tuple(style_words())


def default_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet prompt templates (open_clip's ``OPENAI_IMAGENET_TEMPLATES``) as format strings, the set
    the reference averages its prompt embeddings over."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


# A short set for CPU-sized runs (the tiny configs): 8 templates, a tenth of the text-encoder work.
SHORT_TEMPLATES = (
    "a photo of a {}.", "a blurry photo of a {}.", "a dark photo of the {}.", "a bright photo of a {}.",
    "a painting of the {}.", "a low resolution photo of the {}.", "a rendering of a {}.", "a close-up photo of the {}.",
)
IGNORE_PROMPT = "photo"
FORMAT = "vlt-famix-styles/1"


# ------------------------------------------------------------------------------------------------- patch geometry
def cell_ids(grid: tuple[int, int], cells: int) -> torch.Tensor:
    """Grid-patch index (row-major over ``cells`` x ``cells``) of every token of a (gh, gw) patch grid: (gh*gw,)."""
    gh, gw = grid
    rows = torch.arange(gh) * cells // gh  # gh
    cols = torch.arange(gw) * cells // gw  # gw
    return (rows[:, None] * cells + cols[None, :]).flatten()


def cell_stats(feats: torch.Tensor, ids: torch.Tensor, num_cells: int, eps: float = 1e-6):
    """Per grid patch channel mean and std of tokens ``feats`` (B, hw, C): two (B, G, C) tensors."""
    onehot = F.one_hot(ids.to(feats.device), num_cells).to(feats.dtype)  # hw, G
    count = onehot.sum(0).clamp_min(1.0)[None, :, None]  # 1, G, 1
    mean = torch.einsum("bnc,ng->bgc", feats, onehot) / count
    var = torch.einsum("bnc,ng->bgc", feats * feats, onehot) / count - mean * mean
    return mean, (var.clamp_min(0.0) + eps).sqrt()


def dominant_classes(labels: torch.Tensor, grid: tuple[int, int], patch_size: Sequence[int], cells: int,
                     num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Most frequent label (B, G) of each grid patch of padded labels (B, gh*p, gw*p); ``ignore_index`` counts
    as a label of its own (the reference's "255" patches)."""
    b = labels.shape[0]
    gh, gw = grid
    ph, pw = patch_size
    rows = (torch.arange(gh * ph, device=labels.device) // ph) * cells // gh
    cols = (torch.arange(gw * pw, device=labels.device) // pw) * cells // gw
    pixel_cell = (rows[:, None] * cells + cols[None, :])[None].expand(b, -1, -1)  # B, H, W
    lab = labels[:, :gh * ph, :gw * pw].long()
    lab = torch.where((lab >= 0) & (lab < num_classes), lab, torch.full_like(lab, num_classes))  # ignore -> K
    g = cells * cells
    key = (torch.arange(b, device=labels.device)[:, None, None] * g + pixel_cell) * (num_classes + 1) + lab
    counts = torch.bincount(key.flatten(), minlength=b * g * (num_classes + 1)).view(b, g, num_classes + 1)
    dominant = counts.argmax(-1)  # B, G
    return torch.where(dominant == num_classes, torch.full_like(dominant, ignore_index), dominant)


def adain_mix(feats: torch.Tensor, ids: torch.Tensor, num_cells: int, style_mean: torch.Tensor,
              style_std: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """AdaIN-mix every grid patch of ``feats`` (B, hw, C) toward a style (B, G, C) with weight ``weight`` on its own
    statistics, broadcastable to (B, G, C): 1 keeps the features exactly, 0 takes the style's statistics."""
    mean, std = cell_stats(feats, ids, num_cells, eps)  # B, G, C
    mix_mean = weight * mean + (1 - weight) * style_mean
    mix_std = weight * std + (1 - weight) * style_std
    ids = ids.to(feats.device)
    # written as increments so that weight 1 gives zero increments and the features come back bit for bit
    scale = (mix_std - std) / std  # B, G, C
    shift = mix_mean - mean
    return feats + (feats - mean[:, ids]) * scale[:, ids] + shift[:, ids]


# ------------------------------------------------------------------------------------------------- style banks
class StyleBank:
    """Class-wise banks of mined styles: ``mean[k]`` / ``std[k]`` (n_k, C) for class k; key ``ignore`` for patches
    whose dominant label is ignored, used for classes with an empty bank."""

    def __init__(self, mean: dict, std: dict, width: int):
        self.mean, self.std, self.width = mean, std, width

    def __len__(self) -> int:
        return sum(len(v) for v in self.mean.values())

    def sizes(self) -> dict:
        return {str(k): len(v) for k, v in self.mean.items()}

    def sample(self, classes: torch.Tensor, ignore_index: int, generator: Optional[torch.Generator] = None):
        """A random style (B, G, C) mean and std for each patch's class (B, G), and a (B, G) mask of the patches that
        got one (no style anywhere for the class nor in the ignore bank: mask False, statistics 0 / 1)."""
        b, g = classes.shape
        mean = torch.zeros(b, g, self.width)
        std = torch.ones(b, g, self.width)
        found = torch.zeros(b, g, dtype=torch.bool)
        flat = classes.flatten().tolist()
        for idx, k in enumerate(flat):
            key = "ignore" if k == ignore_index else int(k)
            if key not in self.mean or not len(self.mean[key]):
                key = "ignore"
            if key not in self.mean or not len(self.mean[key]):
                continue
            j = int(torch.randint(len(self.mean[key]), (1,), generator=generator))
            mean.view(-1, self.width)[idx] = self.mean[key][j]
            std.view(-1, self.width)[idx] = self.std[key][j]
            found.view(-1)[idx] = True
        return mean, std, found

    def save(self, path: str | os.PathLike, key: str) -> None:
        """Write the bank as safetensors atomically, with its inputs' ``key`` in the metadata."""
        from safetensors.torch import save_file

        tensors = {}
        for k in self.mean:
            tensors[f"mean/{k}"] = self.mean[k].contiguous()
            tensors[f"std/{k}"] = self.std[k].contiguous()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "key": key, "width": str(self.width)})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, key: Optional[str] = None) -> Optional["StyleBank"]:
        """The bank at ``path``, or None when it is missing or was mined from other inputs than ``key``."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError(f"{path}: not a FAMix style bank (format {meta.get('format')!r})")
                if key is not None and meta.get("key") != key:
                    return None
                mean, std = {}, {}
                for name in fh.keys():
                    kind, k = name.split("/", 1)
                    k = k if k == "ignore" else int(k)
                    (mean if kind == "mean" else std)[k] = fh.get_tensor(name)
        except Exception as exc:  # safetensors raises its own error types
            if isinstance(exc, ValueError) and "FAMix" in str(exc):
                raise
            raise ValueError(f"{path}: corrupt FAMix style bank: {exc}") from exc
        return cls(mean, std, int(meta["width"]))


# ------------------------------------------------------------------------------------------------- training hook
class StyleMixHook(nn.Module):
    """Backbone block hook mixing patch styles after block ``block`` in training (identity otherwise).

    Needs, per batch, the padded labels (:meth:`set_labels`, VLTSeg does it in train mode) and a
    :class:`StyleBank` (:meth:`set_bank`, the trainer does it); without either it leaves the features alone.
    No parameters: the bank is training-time data, not part of the model or its checkpoint.
    """

    def __init__(self, block: int, patch_size: Sequence[int], num_classes: int, grid: int = 3, beta: float = 0.1,
                 ignore_index: int = 255):
        super().__init__()
        self.block, self.cells, self.num_classes, self.ignore_index = block, grid, num_classes, ignore_index
        self.patch_size = tuple(patch_size)
        self.beta = beta
        self.bank: Optional[StyleBank] = None
        self._labels: Optional[torch.Tensor] = None

    def set_bank(self, bank: Optional[StyleBank]) -> None:
        self.bank = bank

    def set_labels(self, labels: Optional[torch.Tensor]) -> None:
        """Padded labels (B, H, W) of the coming training forward pass."""
        self._labels = labels

    def forward(self, x: torch.Tensor, block: int, grid: tuple, num_prefix: int) -> torch.Tensor:
        if block != self.block or not self.training or self.bank is None or self._labels is None:
            return x
        labels, self._labels = self._labels, None  # one use per forward pass
        prefix, feats = x[:, :num_prefix], x[:, num_prefix:]  # B, P, C / B, hw, C
        g = self.cells * self.cells
        ids = cell_ids(grid, self.cells)
        classes = dominant_classes(labels, grid, self.patch_size, self.cells, self.num_classes, self.ignore_index)
        mean, std, found = self.bank.sample(classes.cpu(), self.ignore_index)
        # Beta(0.1, 0.1) weights per image and channel, as in the reference (mostly near 0 or 1)
        s = torch.distributions.Beta(self.beta, self.beta).sample((feats.shape[0], 1, feats.shape[-1]))  # B, 1, C
        weight = torch.where(found[..., None], s, torch.ones(()))  # B, G, C; no style: keep own
        dev, dt = feats.device, feats.dtype
        mixed = adain_mix(feats, ids, g, mean.to(dev, dt), std.to(dev, dt), weight.to(dev, dt))
        return torch.cat([prefix, mixed], dim=1)


# ------------------------------------------------------------------------------------------------- mining
def prompt_for(class_name: Optional[str], style_words: Sequence[str], rng: random.Random) -> str:
    """"<random style word> <class name>", or "photo" for ignored patches (``class_name`` None)."""
    return IGNORE_PROMPT if class_name is None else f"{rng.choice(list(style_words))} {class_name}"


def text_targets(backbone, prompts: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Normalised mean template embedding (P, D) of each prompt."""
    texts = [t.format(p) for p in prompts for t in templates]
    emb = backbone.encode_prompts(texts).view(len(prompts), len(templates), -1).mean(1)  # P, D
    return F.normalize(emb, dim=-1)


def pin_optimise(backbone, tokens: torch.Tensor, grid: tuple[int, int], start_block: int, targets: torch.Tensor,
                 steps: int = 100, lr: float = 1.0, eps: float = 1e-6, optimizer: str = "sgd",
                 momentum: float = 0.9) -> dict:
    """PIN on one grid patch per row: optimise the channel mean / std of patch tokens so that the tower's pooled
    embedding approaches the target text embedding (objective: mean of 1 - cosine similarity).

    ``optimizer`` ``sgd`` (lr 1, momentum 0.9, 100 steps) is the reference's. ``adam`` is the alternative for ViT
    towers whose token channels differ in scale by orders of magnitude (a few massive channels, most small): blocks
    start with a LayerNorm, so plain gradient steps barely move the small channels, while Adam's per-parameter step
    of about ``lr`` does (the tiny CPU configs use it, with lr 0.1).

    Args:
        tokens: (P, prefix + ch*cw, C) tokens after block ``start_block - 1``: prefix tokens, then the patch's.
        grid: the patches' token grid (ch, cw).
        targets: normalised text embeddings (P, D).
    Returns ``{"mean", "std"}`` (P, C) optimised statistics, ``"loss"`` per step (mean of 1 - cos) and ``"cos"``
    (P,) before and after.
    """
    num_prefix = tokens.shape[1] - grid[0] * grid[1]
    prefix, feats = tokens[:, :num_prefix].detach(), tokens[:, num_prefix:].detach()  # P, np, C / P, n, C
    mean0 = feats.mean(1, keepdim=True)  # P, 1, C
    std0 = (feats.var(1, unbiased=False, keepdim=True) + eps).sqrt()
    content = (feats - mean0) / std0
    mean = nn.Parameter(mean0.clone())
    std = nn.Parameter(std0.clone())
    if optimizer == "sgd":
        opt = torch.optim.SGD([mean, std], lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam([mean, std], lr=lr)
    else:
        raise ValueError(f"PIN optimizer {optimizer!r}: expected 'sgd' or 'adam'")

    def cosine() -> torch.Tensor:
        restyled = content * std + mean  # P, n, C
        emb = backbone.pooled_embedding(torch.cat([prefix, restyled], 1), start_block, grid)  # P, D
        return F.cosine_similarity(emb, targets.to(emb.dtype), dim=-1)  # P

    with torch.no_grad():
        cos_before = cosine()
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = 1 - cosine()  # P
        # summed, not averaged: each patch's gradient is its own, so results do not depend on pin_batch (SGD)
        loss.sum().backward()
        opt.step()
        losses.append(float(loss.detach().mean()))
    with torch.no_grad():
        cos_after = cosine()
    return {"mean": mean.detach()[:, 0], "std": std.detach()[:, 0].abs(), "loss": losses,
            "cos": (cos_before, cos_after)}


def mine_styles(model, samples, class_names: Sequence[str], *, style_block: int, grid: int = 3,
                style_words: Optional[Sequence[str]] = None, templates: Optional[Sequence[str]] = None,
                pin_steps: int = 100, pin_lr: float = 1.0, pin_optimizer: str = "sgd", pin_momentum: float = 0.9,
                pin_batch: int = 64, pin_pool: bool = True, seed: int = 0, ignore_index: int = 255,
                total: Optional[int] = None, progress: bool = False) -> StyleBank:
    """Mine class-wise style banks from ``samples`` (an iterable of (image (3, H, W) normalised, sem_seg (H, W))).

    Uses ``model.backbone`` (its frozen early blocks, pooled-embedding path and text tower, which must not be
    released yet); its parameters are not changed. Every grid patch of every crop is one PIN problem; they are
    independent (the optimisers' steps are per parameter), so patches are optimised ``pin_batch`` at a time as the
    samples stream in: memory holds one batch of patches plus the mined statistics, whatever the data size. A patch
    is the top-left (gh // grid, gw // grid) tokens of its grid cell, so that all patches of a crop size share a
    shape; with ``pin_pool`` its tokens are average-pooled to at most the tower's pre-training grid first (the
    reference pools its ResNet features to 56 x 56, the size its CLIP tower was trained at). ``templates``:
    ``None`` = CLIP's 80 ImageNet templates. ``progress``: a tqdm bar over the samples (``total`` of them).
    """
    backbone = model.backbone
    if not backbone.has_text_tower:
        raise RuntimeError("FAMix mining needs the backbone's text tower; build the model with mode='famix' and mine "
                           "before release_text_tower()")
    style_words = list(style_words) if style_words else list(default_style_words())
    templates = list(templates) if templates else list(default_templates())
    rng = random.Random(seed)
    was_training = backbone.training
    backbone.eval()
    requires = [p.requires_grad for p in backbone.parameters()]
    for p in backbone.parameters():
        p.requires_grad_(False)  # PIN optimises statistics only
    means: dict = {}
    stds: dict = {}
    pending: dict = {}  # patch shape -> patches waiting for a full batch

    text_cache: dict = {}  # prompt -> embedding: at most (style words x classes) prompts, each encoded once

    def run(shape, chunk) -> None:
        new = sorted({p[2] for p in chunk} - set(text_cache))
        if new:
            text_cache.update(zip(new, text_targets(backbone, new, templates)))
        targets = torch.stack([text_cache[p[2]] for p in chunk])  # P, D
        result = pin_optimise(backbone, torch.stack([p[0] for p in chunk]), shape, style_block + 1, targets,
                              pin_steps, pin_lr, optimizer=pin_optimizer, momentum=pin_momentum)
        for (_, key, _), m, sd in zip(chunk, result["mean"], result["std"]):
            means.setdefault(key, []).append(m)
            stds.setdefault(key, []).append(sd)

    if progress:
        from tqdm import tqdm

        samples = tqdm(samples, total=total, desc="FAMix style mining", unit="crop")
    try:
        for image, sem_seg in samples:
            pool = backbone.pretrain_grid if pin_pool else None
            for shape, patch in _crop_patches(backbone, image, sem_seg, class_names, style_block, grid,
                                              style_words, rng, ignore_index, pool):
                queue = pending.setdefault(shape, [])
                queue.append(patch)
                if len(queue) >= pin_batch:
                    run(shape, queue)
                    pending[shape] = []
        for shape, queue in pending.items():
            if queue:
                run(shape, queue)
    finally:
        for p, r in zip(backbone.parameters(), requires):
            p.requires_grad_(r)
        backbone.train(was_training)
    bank = StyleBank({k: torch.stack(v) for k, v in means.items()}, {k: torch.stack(v) for k, v in stds.items()},
                     backbone.width)
    log.info("FAMix: mined %d styles (%s)", len(bank), bank.sizes())
    return bank


def _crop_patches(backbone, image, sem_seg, class_names, style_block, grid, style_words, rng, ignore_index,
                  pool: Optional[Sequence[int]]):
    """The ``grid`` x ``grid`` patches of one crop: ``[((ch, cw), (prefix + patch tokens (np + ch*cw, C), bank key,
    prompt)), ...]``; with ``pool`` the patch tokens are average-pooled to at most ``pool`` (rows, columns)."""
    npre = backbone.num_prefix_tokens
    with torch.no_grad():
        tokens, (gh, gw) = backbone.forward_tokens(image[None], style_block)  # 1, N, C
    if gh < grid or gw < grid:
        raise ValueError(f"FAMix mining: a {gh}x{gw} patch grid cannot be split into {grid}x{grid} patches")
    ph, pw = backbone.padded_size(*sem_seg.shape[-2:])
    labels = F.pad(sem_seg[None], (0, pw - sem_seg.shape[-1], 0, ph - sem_seg.shape[-2]), value=ignore_index)
    classes = dominant_classes(labels, (gh, gw), backbone.patch_size, grid, len(class_names), ignore_index)[0]
    spatial = tokens[0, npre:].view(gh, gw, -1)  # gh, gw, C
    ids = cell_ids((gh, gw), grid).view(gh, gw)
    ch, cw = gh // grid, gw // grid
    out_h, out_w = (min(ch, pool[0]), min(cw, pool[1])) if pool is not None else (ch, cw)
    out = []
    for cell in range(grid * grid):
        rows, cols = (ids == cell).nonzero(as_tuple=True)
        r0, c0 = int(rows.min()), int(cols.min())
        patch = spatial[r0:r0 + ch, c0:c0 + cw]  # ch, cw, C
        if (out_h, out_w) != (ch, cw):
            patch = F.adaptive_avg_pool2d(patch.permute(2, 0, 1), (out_h, out_w)).permute(1, 2, 0)  # out_h, out_w, C
        k = int(classes[cell])
        name = None if k == ignore_index else class_names[k]
        out.append(((out_h, out_w), (torch.cat([tokens[0, :npre], patch.reshape(out_h * out_w, -1)], 0),
                                     "ignore" if k == ignore_index else k, prompt_for(name, style_words, rng))))
    return out


def tower_fingerprint(backbone) -> str:
    """Hash of the weights the mining depends on: the whole open_clip model (vision and text) kept by the
    backbone, plus the backbone's own (frozen early) parameters."""
    h = hashlib.blake2b(digest_size=16)
    clip = backbone.__dict__.get("_clip")
    states = [backbone.state_dict()] + ([clip.state_dict()] if clip is not None else [])
    tail = backbone.__dict__.get("_pool_tail") or {}
    for blk in tail.get("blocks", []):
        states.append(blk.state_dict())
    for state in states:
        for name in sorted(state):
            t = state[name].detach().cpu().contiguous()
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")  # buffer: no copy
    return h.hexdigest()


def cache_key(backbone, data_ids: Sequence[str], settings: dict) -> str:
    """What a cached bank depends on: tower weights, the mined samples and the mining settings (words included)."""
    payload = json.dumps({"tower": tower_fingerprint(backbone), "data": list(data_ids), "settings": settings},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
