"""Dense features from open_clip vision towers (OpenAI-style ``VisionTransformer`` and timm EVA02 towers).

The tower is built by ``open_clip.create_model`` (architecture from open_clip's JSON configs, weights from an
open_clip pretrained tag or a local checkpoint file; the plumbing is in :mod:`._builder`), then only ``.visual``
is kept. The blocks run in an explicit
loop here rather than through the tower's own forward, so that

* position embeddings are interpolated (bicubic) to any input size, including non-square 512x1024,
* the input is padded to a multiple of the patch size (the conv stem would otherwise drop the border),
* stochastic depth, activation checkpointing and a per-block adapter hook (Rein, FAMix) apply to every tower,
* the patch tokens of four intermediate blocks come out as NCHW maps.

The text tower of the same open_clip model is available at build time only: it embeds fixed prompts
(:meth:`CLIPVisionBackbone.encode_prompts`) or is handed, frozen, to DenseCLIP's guidance
(:meth:`CLIPVisionBackbone.open_clip_model`, :mod:`vlt_training.modeling.text_guidance`); then the backbone drops it.
Until then the tower's pooled image-embedding path (all blocks, pooling, projection) is kept too
(:meth:`CLIPVisionBackbone.pooled_embedding`), for FAMix's style mining, which needs both.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# The loading plumbing lives in _builder; its public names stay importable from here.
from vlt_training.modeling.backbone._builder import (  # noqa: F401
    LOCAL_DIR_PREFIX,
    SHIPPED_PREFIX,
    _import_open_clip,
    build_open_clip,
    folder_overrides,
    open_clip_folder,
    register_open_clip_configs,
    resolve_pretrained,
    resolve_quick_gelu,
    timm_variant,
    weights_loaded_next,
)

# Models whose published dense-prediction setups pick these 0-based blocks (EVA02-L in VLTSeg / EVA-02 ViTDet).
DEFAULT_OUT_INDICES = {
    "EVA02-L-14": (9, 14, 19, 23),
    "EVA02-L-14-336": (9, 14, 19, 23),
}

# A hook called after every block: (tokens (B, N, C) with prefix tokens first, block index, (gh, gw),
# number of prefix tokens) -> tokens of the same shape.
BlockHook = Callable[[torch.Tensor, int, tuple, int], torch.Tensor]


def evenly_spaced_indices(depth: int, count: int = 4) -> tuple[int, ...]:
    """``count`` block indices spread over ``depth`` blocks, always ending at the last block.

    12 blocks -> (2, 5, 8, 11); 24 blocks -> (5, 11, 17, 23).
    """
    if depth < count:
        raise ValueError(f"a tower with {depth} blocks cannot provide {count} intermediate features")
    step = depth / count
    return tuple(int(round(step * (i + 1))) - 1 for i in range(count))


def interpolate_pos_embed(pos: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                          num_prefix: int) -> torch.Tensor:
    """Resize learned absolute position embeddings to a new patch grid (bicubic, like mmseg's resize_pos_embed).

    ``pos`` is (N, C) or (1, N, C) with ``num_prefix`` leading class/register entries that are kept as they are.
    Returns (1, num_prefix + gh * gw, C).
    """
    if pos.dim() == 2:
        pos = pos[None]
    if tuple(old_grid) == tuple(new_grid):
        return pos
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    c = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2)  # 1, C, gh0, gw0
    # antialias stays off: it is an upsampling in practice and antialiased Resize needs ONNX opset 18
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c)
    return torch.cat([prefix, grid], dim=1)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth on a residual branch: drop whole samples, rescale the kept ones."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class CLIPVisionBackbone(nn.Module):
    """An open_clip vision tower returning four intermediate feature maps (B, C, H/p, W/p).

    Args:
        model_name: open_clip model config name (``ViT-B-16``, ``EVA02-L-14``, ``vlt-tiny-vit`` ...).
        pretrained: open_clip pretrained tag, local open_clip checkpoint file, or open_clip model folder
            (``local-dir:<path>`` / ``vlt-pretrained:<name>``, see :func:`build_open_clip`); ``None`` = random.
        out_indices: 0-based block indices of the four outputs; default: EVA02-L (9, 14, 19, 23), else evenly
            spread ending at the last block.
        drop_path_rate: stochastic-depth rate of the last block, linearly increasing from 0 over the blocks.
            open_clip ViTs drop whole blocks (``x + dp(block(x) - x)``); timm EVA towers use timm's own
            per-branch drop path.
        grad_checkpointing: recompute each block in the backward pass (saves activation memory in training).
        keep_projection: keep the tower's final norm + projection into the joint image-text space
            (needed by the vision-language guidance, :meth:`project_dense`).
        vision_cfg_overrides / text_cfg_overrides: merged into open_clip's config (e.g. ``{"layers": 2}``);
            ``{"timm_kwargs": {"depth": 4}}`` passes constructor arguments to a timm tower (EVA02).
        block_hook: optional adapter run after every block (``nn.ModuleList`` with one module per block, or a
            callable), see :data:`BlockHook`.
        quick_gelu: QuickGELU instead of GELU; ``None`` decides from the config and the pretrained tag
            (:func:`resolve_quick_gelu`); the decision is kept in ``self.quick_gelu``.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: Optional[str] = None,
        out_indices: Optional[Sequence[int]] = None,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
        keep_projection: bool = True,
        vision_cfg_overrides: Optional[dict] = None,
        text_cfg_overrides: Optional[dict] = None,
        block_hook: Optional[Union[nn.ModuleList, BlockHook]] = None,
        quick_gelu: Optional[bool] = None,
    ):
        super().__init__()
        # An open_clip folder brings its own input size / text tower: record the overrides that rebuild it.
        uses_folder = open_clip_folder(pretrained) is not None
        pretrained, vision_cfg_overrides, text_cfg_overrides = resolve_pretrained(
            model_name, pretrained, vision_cfg_overrides, text_cfg_overrides)
        self.architecture_overrides = (
            {"vision_cfg_overrides": dict(vision_cfg_overrides) or None,
             "text_cfg_overrides": dict(text_cfg_overrides) or None} if uses_folder else {})
        self.model_name = model_name
        is_timm = self._is_timm(model_name)
        if is_timm and drop_path_rate > 0:
            vision_cfg_overrides.setdefault("timm_drop_path", drop_path_rate)
        self.quick_gelu = resolve_quick_gelu(model_name, pretrained, quick_gelu)
        clip = build_open_clip(model_name, pretrained, vision_cfg_overrides, text_cfg_overrides, self.quick_gelu)
        visual = clip.visual
        self.pixel_mean = tuple(float(v) for v in visual.preprocess_cfg["mean"])
        self.pixel_std = tuple(float(v) for v in visual.preprocess_cfg["std"])
        # dimension of the joint image-text embedding space
        self.embed_dim = int(_import_open_clip().get_model_config(model_name)["embed_dim"])
        # Kept only until encode_prompts() ran; not a submodule, so it is not in the state dict.
        self.__dict__["_clip"] = clip

        self.is_timm = is_timm
        if is_timm:
            trunk = visual.trunk
            # the pooled image-embedding path, kept with the text tower until release_text_tower()
            self.__dict__["_pool_tail"] = {"norm": trunk.norm, "fc_norm": trunk.fc_norm, "head": trunk.head,
                                           "proj": visual.head}
            trunk.patch_embed.strict_img_size = False  # sizes are handled here
            self.trunk = trunk  # its blocks are reached through the `blocks` property (no aliasing in the state dict)
            self.width = trunk.embed_dim
            self.patch_size = tuple(trunk.patch_embed.patch_size)
            self.num_prefix_tokens = trunk.num_prefix_tokens
            self.pretrain_grid = tuple(trunk.patch_embed.grid_size)
            self.dense_norm = trunk.norm if keep_projection else None
            # timm's classifier head is the CLIP projection when open_clip adds none of its own (EVA02)
            self.dense_proj = nn.Sequential(trunk.head, visual.head) if keep_projection else None
            # unused parts of the trunk: drop them so that every trainable parameter gets a gradient
            trunk.norm = nn.Identity()
            trunk.fc_norm = nn.Identity()
            trunk.head = nn.Identity()
            if getattr(trunk, "attn_pool", None) is not None:
                trunk.attn_pool = None
            self.dp_rates = [0.0] * len(self.blocks)  # timm blocks apply their own drop path
        else:
            self.__dict__["_pool_tail"] = {}
            self.conv1 = visual.conv1
            self.class_embedding = visual.class_embedding
            self.positional_embedding = visual.positional_embedding
            self.ln_pre = visual.ln_pre
            self.resblocks = visual.transformer.resblocks
            self.width = visual.transformer.width
            self.patch_size = tuple(visual.patch_size)
            self.num_prefix_tokens = 1
            self.pretrain_grid = tuple(visual.grid_size)
            self.dense_norm = visual.ln_post if keep_projection else None
            self.dense_proj = _ProjParam(visual.proj) if keep_projection and visual.proj is not None else None
            depth = len(self.blocks)
            self.dp_rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.depth = len(self.blocks)
        if out_indices is None:
            out_indices = DEFAULT_OUT_INDICES.get(model_name) or evenly_spaced_indices(self.depth)
        out_indices = tuple(int(i) for i in out_indices)
        if len(out_indices) != 4 or any(not 0 <= i < self.depth for i in out_indices) or \
                list(out_indices) != sorted(out_indices):
            raise ValueError(f"out_indices must be 4 increasing block indices in [0, {self.depth}), got {out_indices}")
        self.out_indices = out_indices
        self.grad_checkpointing = grad_checkpointing
        self.set_block_hook(block_hook)
        # blocks after the last output are never run: drop them so they do not sit idle in the optimiser
        self.tower_depth = self.depth
        if out_indices[-1] < self.depth - 1:
            self._pool_tail["blocks"] = list(self.blocks[out_indices[-1] + 1:])
            del self.blocks[out_indices[-1] + 1:]
            self.depth = len(self.blocks)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order."""
        return self.trunk.blocks if self.is_timm else self.resblocks

    @staticmethod
    def _is_timm(model_name: str) -> bool:
        open_clip = _import_open_clip()
        register_open_clip_configs()
        cfg = open_clip.get_model_config(model_name) or {}
        return bool(cfg.get("vision_cfg", {}).get("timm_model_name"))

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (K, D) of ``prompts`` by the frozen open_clip text tower.

        Only available right after construction; the text tower is released by :meth:`release_text_tower`.
        """
        clip = self.__dict__.get("_clip")
        if clip is None:
            raise RuntimeError("the open_clip text tower was already released; encode prompts at build time")
        # the model's own context length: a pretrained folder may have shortened it
        tokenizer = _import_open_clip().get_tokenizer(self.model_name, context_length=clip.context_length)
        was_training = clip.training
        clip.eval()
        emb = clip.encode_text(tokenizer(list(prompts)), normalize=True)  # K, D
        clip.train(was_training)
        return emb.float()

    def open_clip_model(self) -> nn.Module:
        """The whole open_clip model this tower was cut from (its text tower feeds the DenseCLIP guidance), and its
        tokenizer as ``.tokenizer``. Only available until :meth:`release_text_tower`."""
        clip = self.__dict__.get("_clip")
        if clip is None:
            raise RuntimeError("the open_clip text tower was already released; take it at build time")
        clip.__dict__["tokenizer"] = _import_open_clip().get_tokenizer(self.model_name)
        return clip

    def release_text_tower(self) -> None:
        """Drop the open_clip model (text tower) kept for :meth:`encode_prompts` and the pooled-embedding path."""
        self.__dict__.pop("_clip", None)
        self.__dict__.pop("_pool_tail", None)

    @property
    def has_text_tower(self) -> bool:
        return self.__dict__.get("_clip") is not None

    def forward_tokens(self, images: torch.Tensor, last_block: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens (B, N, C) after block ``last_block`` (prefix tokens first) and the patch grid (gh, gw)."""
        h, w = int(images.shape[-2]), int(images.shape[-1])
        ph, pw = self.padded_size(h, w)
        if (ph, pw) != (h, w):
            images = F.pad(images, (0, pw - w, 0, ph - h))
        x, grid, rope = self._embed(images)
        for i in range(last_block + 1):
            x = self._apply_hook(self._run_block(i, x, rope), i, grid)
        return x, grid

    def pooled_embedding(self, tokens: torch.Tensor, start_block: int, grid: tuple[int, int]) -> torch.Tensor:
        """The tower's image embedding (B, D), not normalised, of tokens (B, N, C) entering block ``start_block``.

        Runs the remaining blocks of the whole tower (also those after ``out_indices``), then the tower's own
        pooling, final norm and projection. ``grid`` is the patch grid of the tokens (rotary tables follow it).
        Available until :meth:`release_text_tower`.
        """
        tail = self.__dict__.get("_pool_tail")
        clip = self.__dict__.get("_clip")
        if tail is None or clip is None:
            raise RuntimeError("the pooled-embedding path was released with the text tower (release_text_tower)")
        blocks = list(self.blocks) + list(tail.get("blocks", []))
        rope = self._rope(tuple(grid)) if self.is_timm else None
        x = tokens
        for blk in blocks[start_block:]:
            x = blk(x, rope=rope) if self.is_timm else blk(x)
        if self.is_timm:
            t = self.trunk
            x = tail["norm"](x)
            x = x[:, self.num_prefix_tokens:].mean(1) if t.global_pool == "avg" else x[:, 0]  # B, C
            return tail["proj"](tail["head"](tail["fc_norm"](x)))
        visual = clip.visual
        pooled, _ = visual._pool(x)  # the tower's own pooling and final norm: B, C
        return pooled @ visual.proj if visual.proj is not None else pooled

    # ------------------------------------------------------------------ forward
    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], Optional[torch.Tensor]]:
        """Patchify, add prefix tokens and resized position embeddings. Returns tokens (B, N, C), grid, rope."""
        if self.is_timm:
            t = self.trunk
            grid = (int(x.shape[-2]) // self.patch_size[0], int(x.shape[-1]) // self.patch_size[1])
            x = t.patch_embed(x)  # B, gh*gw, C (or B, gh, gw, C for NHWC patch embeds)
            if x.dim() == 4:
                x = x.flatten(1, 2)
            prefix = []
            if t.cls_token is not None:
                prefix.append(t.cls_token.expand(x.shape[0], -1, -1))
            if getattr(t, "reg_token", None) is not None:
                prefix.append(t.reg_token.expand(x.shape[0], -1, -1))
            if t.pos_embed is not None:
                n_pos_prefix = 0 if t.no_embed_class else self.num_prefix_tokens
                pos = interpolate_pos_embed(t.pos_embed, self.pretrain_grid, grid, n_pos_prefix)
                if t.no_embed_class:
                    x = torch.cat(prefix + [x + pos], dim=1)
                else:
                    x = torch.cat(prefix + [x], dim=1) + pos
            else:
                x = torch.cat(prefix + [x], dim=1)
            x = t.pos_drop(x)
            x = t.norm_pre(x)
            return x, grid, self._rope(grid)
        x = self.conv1(x)  # B, C, gh, gw
        grid = (int(x.shape[2]), int(x.shape[3]))
        x = x.flatten(2).transpose(1, 2)  # B, gh*gw, C
        cls = self.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + interpolate_pos_embed(self.positional_embedding, self.pretrain_grid, grid, 1).to(x.dtype)
        return self.ln_pre(x), grid, None

    def _rope(self, grid: tuple[int, int]) -> Optional[torch.Tensor]:
        """The timm tower's rotary table for a patch grid (None without RoPE)."""
        t = self.trunk
        if t.rope is None:
            return None
        # rebuilds the cached rotary table only when the grid changes
        t.rope.update_feat_shape(list(grid))
        rope = t.rope.get_embed()
        if rope.is_inference() and not torch.is_inference_mode_enabled():
            # the table was rebuilt under inference_mode (evaluation): autograd cannot save it
            rope = rope.clone()
        return rope

    def _run_block(self, i: int, x: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        blk = self.blocks[i]
        if self.is_timm:
            return blk(x, rope=rope)
        y = blk(x)
        rate = self.dp_rates[i]
        if blk.training and rate > 0:  # the block's own flag: frozen blocks stay in eval (no drop path)
            y = x + drop_path(y - x, rate, True)
        return y

    def set_block_hook(self, hook: Optional[Union[nn.Module, BlockHook]]) -> None:
        """Install (or with ``None`` remove) the per-block adapter hook.

        A module (``nn.ModuleList`` with one entry per block, or one module handling every block) becomes a
        submodule, so its parameters train and save with the model; a plain callable is just called.
        """
        self._modules.pop("block_hook", None)
        self.__dict__.pop("block_hook", None)
        if isinstance(hook, nn.Module):
            self.add_module("block_hook", hook)
        else:
            object.__setattr__(self, "block_hook", hook)

    def _apply_hook(self, x: torch.Tensor, i: int, grid: tuple[int, int]) -> torch.Tensor:
        hook = self.block_hook
        if hook is None:
            return x
        if isinstance(hook, nn.ModuleList):
            return hook[i](x, i, grid, self.num_prefix_tokens) if i < len(hook) else x
        return hook(x, i, grid, self.num_prefix_tokens)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """Input size after padding to a multiple of the patch size.

        Python ints on purpose: traced into ONNX, ``-(-h // p)`` on size tensors would become an integer Div,
        which truncates instead of flooring and silently crops instead of padding. Spatial sizes are static in
        the exported graphs (only the batch is dynamic).
        """
        height, width = int(height), int(width)
        ph, pw = self.patch_size
        return math.ceil(height / ph) * ph, math.ceil(width / pw) * pw

    def forward_intermediates(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Four feature maps [(B, C, gh, gw)] * 4 from blocks ``out_indices``; prefix tokens dropped.

        ``images`` (B, 3, H, W) normalised; H and W are padded (zeros on the bottom/right) up to a multiple of the
        patch size, so gh = ceil(H / p).
        """
        h, w = int(images.shape[-2]), int(images.shape[-1])
        ph, pw = self.padded_size(h, w)
        if (ph, pw) != (h, w):
            images = F.pad(images, (0, pw - w, 0, ph - h))
        x, grid, rope = self._embed(images)
        outs = []
        for i in range(len(self.blocks)):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(self._run_block, i, x, rope, use_reentrant=False)
            else:
                x = self._run_block(i, x, rope)
            x = self._apply_hook(x, i, grid)
            if i in self.out_indices:
                outs.append(self._to_map(x, grid))
        return outs

    def _to_map(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, _, c = tokens.shape
        patches = tokens[:, self.num_prefix_tokens:]  # B, gh*gw, C
        return patches.transpose(1, 2).reshape(b, c, grid[0], grid[1])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_intermediates(images)

    def project_dense(self, feature: torch.Tensor) -> torch.Tensor:
        """Map a last-block feature map (B, C, gh, gw) into the joint image-text space (B, D, gh, gw).

        Applies the tower's own final norm and projection per patch, as DenseCLIP does for ViTs.
        """
        if self.dense_proj is None:
            raise RuntimeError("backbone was built with keep_projection=False")
        x = feature.flatten(2).transpose(1, 2)  # B, N, C
        x = self.dense_proj(self.dense_norm(x))  # B, N, D
        return x.transpose(1, 2).reshape(x.shape[0], -1, feature.shape[2], feature.shape[3])


class _ProjParam(nn.Module):
    """Wraps open_clip's ``proj`` parameter (C, D) as a module so norm + projection compose."""

    def __init__(self, proj: nn.Parameter):
        super().__init__()
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.proj
