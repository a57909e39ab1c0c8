"""Training modes of VLTSeg: which parts of the model train, and the adapters the recipes add.

=========  ==========================================================================================
``full``    everything trains (VLTSeg's fine-tuning).
``frozen``  the whole open_clip tower (blocks, embeddings, final norm / projection) is frozen; neck, pixel
            decoder and Mask2Former decoder train.
``rein``    the tower is frozen; :class:`~vlt_training.modeling.rein.Rein` tokens refine every block and
            (``link_queries``) supply the decoder's queries; Rein and the heads train.
``famix``   the patch / position embeddings and the first ``freeze_blocks`` blocks are frozen; the rest trains;
            :class:`~vlt_training.modeling.famix.StyleMixHook` mixes mined styles after ``style_block``; the
            class loss uses label smoothing.
=========  ==========================================================================================

Frozen parameters have ``requires_grad=False`` (the optimiser only takes trainable ones) and the modules holding
only frozen parameters are kept in eval mode by ``VLTSeg.train()``, so no dropout or drop path runs in them.
The mode and its options are constructor arguments of the model, so they are in ``init_kwargs`` and every
checkpoint rebuilds the same architecture.
"""

from __future__ import annotations

from torch import nn

MODES = ("full", "frozen", "rein", "famix")
# model-side options of each mode (constructor arguments of the mode's modules); anything else is rejected
MODE_OPTION_KEYS = {
    "full": (),
    "frozen": (),
    "rein": ("num_tokens", "rank", "scale_init", "link_queries"),
    "famix": ("freeze_blocks", "style_block", "grid", "beta", "label_smoothing"),
}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"trainable": ..., "total": ...}`` parameter counts (shared tensors counted once)."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"trainable": trainable, "total": total}


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def frozen_module_names(model: nn.Module) -> list[str]:
    """Outermost submodules whose parameters are all frozen (those to keep in eval mode)."""
    names: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(n + ".") for n in names):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            names.append(name)
    return names


def default_freeze_blocks(depth: int) -> int:
    """FAMix freezes most of the tower (the reference trains only the last ResNet stage or less): 3/4 of it."""
    return max(1, (3 * depth) // 4)


def _freeze_embeddings(backbone) -> None:
    if backbone.is_timm:
        t = backbone.trunk
        freeze(t.patch_embed)
        for name in ("cls_token", "reg_token", "pos_embed"):
            p = getattr(t, name, None)
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)
        for name in ("norm_pre", "rope"):
            if isinstance(getattr(t, name, None), nn.Module):
                freeze(getattr(t, name))
    else:
        for module in (backbone.conv1, backbone.ln_pre):
            freeze(module)
        backbone.class_embedding.requires_grad_(False)
        backbone.positional_embedding.requires_grad_(False)


def _check_options(mode: str, options: dict) -> dict:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    unknown = sorted(set(options) - set(MODE_OPTION_KEYS[mode]))
    if unknown:
        raise ValueError(f"mode {mode!r}: unknown mode_options {unknown} (known: {list(MODE_OPTION_KEYS[mode])})")
    return {k: v for k, v in options.items() if v is not None}


def apply_mode(model: nn.Module, mode: str, options: dict | None = None) -> list[str]:
    """Freeze and extend a VLTSeg model for ``mode``; returns the names of the modules to keep in eval mode."""
    options = _check_options(mode, dict(options or {}))
    backbone = model.backbone
    if mode in ("frozen", "rein"):
        freeze(backbone)
    if mode == "rein":
        from vlt_training.modeling.rein import Rein

        link = bool(options.get("link_queries", True))
        predictor = model.predictor
        num_queries = predictor.query_feat.num_embeddings
        num_tokens = int(options.get("num_tokens", num_queries))
        if link and num_tokens != num_queries:
            raise ValueError(f"rein: link_queries needs num_tokens == num_queries, got {num_tokens} tokens for "
                             f"{num_queries} queries (set mode_options.num_tokens or num_queries)")
        rein = Rein(backbone.depth, backbone.width, patch_size=backbone.patch_size[0], num_tokens=num_tokens,
                    rank=int(options.get("rank", 16)), scale_init=float(options.get("scale_init", 1e-3)),
                    query_dim=predictor.hidden_dim if link else None)
        backbone.set_block_hook(rein)
        if link:
            # the decoder takes its queries from the tokens: its own tables would sit unused in the optimiser
            predictor.query_feat = None
            predictor.query_embed = None
    if mode == "famix":
        from vlt_training.modeling.famix import StyleMixHook

        depth = backbone.depth
        n = int(options.get("freeze_blocks", default_freeze_blocks(depth)))
        style_block = int(options.get("style_block", 0))
        if not 0 <= style_block < n <= depth:
            raise ValueError(f"famix: need 0 <= style_block < freeze_blocks <= depth ({depth}), got style_block="
                             f"{style_block}, freeze_blocks={n}: styles must be mined on frozen features")
        _freeze_embeddings(backbone)
        for blk in list(backbone.blocks)[:n]:
            freeze(blk)
        backbone.set_block_hook(StyleMixHook(style_block, backbone.patch_size, model.num_classes,
                                             grid=int(options.get("grid", 3)), beta=float(options.get("beta", 0.1)),
                                             ignore_index=model.ignore_index))
        model.criterion.label_smoothing = float(options.get("label_smoothing", 0.1))
    return frozen_module_names(model)
