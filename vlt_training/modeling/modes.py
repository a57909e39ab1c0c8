"""Training modes of VLTSeg: which parts of the model train, and the adapters the recipes add.

=========  ==========================================================================================
``full``    everything trains (VLTSeg's fine-tuning).
``frozen``  the whole open_clip tower (blocks, embeddings, final norm / projection) is frozen; neck, pixel
            decoder and Mask2Former decoder train.
``rein``    the tower is frozen; :class:`~vlt_training.modeling.rein.Rein` tokens refine every block and
            (``link_queries``) supply the decoder's queries; Rein and the heads train.
``famix``   the patch / position embeddings and the first ``freeze_blocks`` blocks are frozen (default: the
            reference's ResNet rule by share of depth, :func:`default_freeze_blocks`); the rest trains;
            :class:`~vlt_training.modeling.famix.StyleMixHook` mixes mined styles after ``style_block``; the
            class loss uses label smoothing.
=========  ==========================================================================================

Frozen parameters have ``requires_grad=False`` (the optimiser only takes trainable ones) and the modules holding
only frozen parameters are kept in eval mode by ``VLTSeg.train()``, so no dropout or drop path runs in them.
The mode and its options are constructor arguments of the model, so they are in ``init_kwargs`` and every
checkpoint rebuilds the same architecture.
"""

from __future__ import annotations

import math

from torch import nn

from vlt_training.mode_args import MODE_ARGS, mode_arg_names, mode_args

MODES = tuple(MODE_ARGS)
# model-side options of each mode (the fields of vlt_training.mode_args' dataclasses); anything else is rejected
MODE_OPTION_KEYS = {mode: mode_arg_names(mode) for mode in MODES}


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


# FAMix's reference (ResNet-50, 3 + 4 + 6 + 3 = 16 bottleneck blocks) trains only layer4[2], the last block, on
# GTA5 and all of layer4, the last 3 blocks, on Cityscapes. On a ViT the same share of the depth trains.
RESNET50_BLOCKS = 16
FAMIX_TRAINED_RESNET_BLOCKS = {"gta5": 1, "cityscapes": 3}


def default_freeze_blocks(depth: int, source: str = "gta5") -> int:
    """Blocks FAMix freezes on a ``depth``-block tower: the reference's ResNet rule mapped by share of depth,
    ``depth - ceil(depth * n / 16)`` with n = 1 trained ResNet block for a synthetic source (GTA5, the default) and
    n = 3 for Cityscapes: ViT-L/24 trains 2 (GTA5) / 5 (Cityscapes) blocks, ViT-B/12 1 / 3, the 4-block tiny 1."""
    trained = math.ceil(depth * FAMIX_TRAINED_RESNET_BLOCKS[source] / RESNET50_BLOCKS)
    return max(1, depth - trained)


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


def apply_mode(model: nn.Module, mode: str, options: dict | None = None) -> list[str]:
    """Freeze and extend a VLTSeg model for ``mode``; returns the names of the modules to keep in eval mode."""
    args = mode_args(mode, options)  # ValueError on unknown options
    backbone = model.backbone
    if mode in ("frozen", "rein"):
        freeze(backbone)
    if mode == "rein":
        from vlt_training.modeling.rein import Rein

        link = bool(args.link_queries)
        predictor = model.predictor
        num_queries = predictor.query_feat.num_embeddings
        num_tokens = int(args.num_tokens if args.num_tokens is not None else num_queries)
        if link and num_tokens != num_queries:
            raise ValueError(f"rein: link_queries needs num_tokens == num_queries, got {num_tokens} tokens for "
                             f"{num_queries} queries (set mode_options.num_tokens or num_queries)")
        rein = Rein(backbone.depth, backbone.width, patch_size=backbone.patch_size[0], num_tokens=num_tokens,
                    rank=int(args.rank), scale_init=float(args.scale_init),
                    query_dim=predictor.hidden_dim if link else None)
        backbone.set_block_hook(rein)
        if link:
            # the decoder takes its queries from the tokens: its own tables would sit unused in the optimiser
            predictor.query_feat = None
            predictor.query_embed = None
    if mode == "famix":
        from vlt_training.modeling.famix import StyleMixHook

        depth = backbone.depth
        n = int(args.freeze_blocks if args.freeze_blocks is not None else default_freeze_blocks(depth))
        style_block = int(args.style_block)
        if not 0 <= style_block < n <= depth:
            raise ValueError(f"famix: need 0 <= style_block < freeze_blocks <= depth ({depth}), got style_block="
                             f"{style_block}, freeze_blocks={n}: styles must be mined on frozen features")
        _freeze_embeddings(backbone)
        for blk in list(backbone.blocks)[:n]:
            freeze(blk)
        backbone.set_block_hook(StyleMixHook(style_block, backbone.patch_size, model.num_classes,
                                             grid=int(args.grid), beta=float(args.beta),
                                             ignore_index=model.ignore_index))
        model.criterion.label_smoothing = float(args.label_smoothing)
    return frozen_module_names(model)
