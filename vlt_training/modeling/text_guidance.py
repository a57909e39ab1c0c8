"""DenseCLIP's vision-language guidance (Rao et al., "DenseCLIP: Language-Guided Dense Prediction with
Context-Aware Prompting", CVPR 2022), for the ViT towers of VLTSeg.

    class names -> tokens [SOT, name ..., EOT]
    [SOT, ctx_1 .. ctx_M, name ..., EOT]  (M learnable context vectors, CoOp)
        -> frozen open_clip text tower -> text embeddings t (K, D)
    dense image embeddings z (B, D, h, w) (the last block through the tower's own norm + projection)
    visual context [mean(z), z_1 .. z_hw] (B, 1 + hw, D)
    t' = t + gamma * ContextDecoder(t, visual context)          (gamma: D values, initialised to 1e-4)
    score maps s = <z / |z|, t' / |t'|> (B, K, h, w)
        -> concatenated to the stride-16 input of the feature pyramid (DenseCLIP's ``score_concat_index=2`` for ViTs)
        -> auxiliary pixel-text loss: cross-entropy of s / tau, upsampled bilinearly to the labels, weight 0.4
           (DenseCLIP's identity head)

The text tower stays frozen (``requires_grad=False``, always in eval mode) but now runs in training, because the
context vectors in its input learn. Its weights are part of the model's state dict, so a checkpoint alone rebuilds
the guidance. Outside training the text embeddings do not depend on the image: they are computed once and cached
(cleared on entering or leaving training, on ``.to()`` and on loading a state dict; a repeated ``.eval()`` keeps it),
so evaluation and the exported graph run only the context decoder per image; the ONNX export sees the cached (K, D)
tensor as a constant.

Differences from DenseCLIP, each for a reason: the visual context's global token is the mean of the dense
embeddings (the backbone's blocks drop the class token; DenseCLIP's ViT uses the projected class token), and the
context decoder is built from ``torch.nn.TransformerDecoderLayer`` (pre-norm, GELU) instead of hand-written
attention, which is the same computation up to where dropout sits.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_PROMPT = "a photo of a {}."


def class_prompts(class_names: Sequence[str], template: str = DEFAULT_PROMPT) -> list[str]:
    """One prompt per class name."""
    if "{}" not in template:
        raise ValueError(f"prompt template {template!r} has no '{{}}' placeholder for the class name")
    return [template.format(name) for name in class_names]


class ContextDecoder(nn.Module):
    """DenseCLIP's context decoder: text embeddings attend to the visual context and return an update.

    ``forward(text (B, K, D), visual (B, N, D)) -> (B, K, D)``: both are projected to ``width``, ``layers``
    pre-norm decoder layers (self-attention among the K classes, cross-attention to the N visual tokens, MLP) run,
    and the result is projected back to D.
    """

    def __init__(self, embed_dim: int, width: int = 256, heads: int = 4, layers: int = 3, dropout: float = 0.1):
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width), nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.layers = nn.ModuleList([
            nn.TransformerDecoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(layers)
        ])
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        memory = self.memory_proj(visual)  # B, N, W
        x = self.text_proj(text)  # B, K, W
        for layer in self.layers:
            x = layer(x, memory)
        return self.out_proj(x)  # B, K, D


class _TextTower(nn.Module):
    """The parts of an open_clip text tower that embed a token sequence (CLIP or TextTransformer attributes)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        src = clip.text if hasattr(clip, "text") else clip  # CustomTextCLIP keeps the tower in .text
        if getattr(src, "cls_emb", None) is not None or getattr(src, "use_pad_mask", False):
            raise ValueError("text towers with a class token or padding masks are not supported by the guidance")
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding  # L, W
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = src.text_projection  # Parameter (W, D) or Linear

    def forward(self, x: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``x`` (K, T, W) with the causal mask -> the EOT tokens' embeddings (K, D)."""
        t = x.shape[1]
        x = x + self.positional_embedding[:t].to(x.dtype)
        causal = torch.full((t, t), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        x = self.ln_final(self.transformer(x, attn_mask=causal))  # K, T, W
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]  # K, W
        proj = self.text_projection
        return proj(x) if isinstance(proj, nn.Module) else x @ proj  # K, D


class PromptEncoder(nn.Module):
    """CoOp prompts: ``num_context`` learnable vectors between SOT and the class name, through the frozen tower.

    With ``num_context=0`` the prompts are the fixed ``prompt_template`` sentences (no learnable context).
    ``forward() -> (K, D)`` text embeddings (not normalised).
    """

    def __init__(self, clip: nn.Module, tokenizer, class_names: Sequence[str], num_context: int = 8,
                 prompt_template: str = DEFAULT_PROMPT):
        super().__init__()
        tower = _TextTower(clip)
        texts = class_prompts(class_names, prompt_template) if num_context == 0 else list(class_names)
        tokens = tokenizer(texts)  # K, 77: SOT, text, EOT, zero padding
        eot = tokens.argmax(dim=-1)  # the EOT id is the largest in CLIP's vocabulary
        length = int(eot.max()) + 1  # drop the padding after the longest prompt
        if length + num_context > tower.positional_embedding.shape[0]:
            raise ValueError(f"{num_context} context vectors + a {length}-token class name exceed the text tower's "
                             f"{tower.positional_embedding.shape[0]} positions")
        self.register_buffer("tokens", tokens[:, :length].clone(), persistent=False)  # K, L
        self.register_buffer("eot_index", eot + num_context, persistent=False)  # K
        width = tower.token_embedding.weight.shape[1]
        self.num_context = num_context
        # DenseCLIP: trunc_normal_ with torch's defaults (std 1, cut at +-2)
        self.contexts = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, num_context, width))) \
            if num_context else None
        for p in tower.parameters():
            p.requires_grad_(False)
        self.text_tower = tower.eval()

    def train(self, mode: bool = True) -> "PromptEncoder":
        super().train(mode)
        self.text_tower.eval()  # frozen: dropout and the like stay off
        return self

    def forward(self) -> torch.Tensor:
        x = self.text_tower.token_embedding(self.tokens)  # K, L, W
        if self.contexts is not None:
            ctx = self.contexts.to(x.dtype).expand(x.shape[0], -1, -1)  # K, M, W
            x = torch.cat([x[:, :1], ctx, x[:, 1:]], dim=1)  # K, 1 + M + (L - 1), W
        return self.text_tower(x, self.eot_index)  # K, D


class DenseCLIPGuidance(nn.Module):
    """Pixel-text score maps of DenseCLIP (see the module docstring) and their auxiliary loss.

    Args:
        clip: the open_clip model whose text tower embeds the prompts (it is frozen and kept as a submodule).
        tokenizer: open_clip tokenizer of that model.
        class_names: K class names.
        embed_dim: D, the joint image-text embedding size.
        num_context: learnable context vectors (DenseCLIP ViT configs: 8); 0 = fixed ``prompt_template`` prompts.
        decoder_width / decoder_heads / decoder_layers / decoder_dropout: the context decoder (DenseCLIP: 256 / 4 /
            3 / 0.1).
        gamma_init: start value of the per-channel scale of the text update (DenseCLIP: 1e-4).
        temperature: tau of the auxiliary loss's logits ``scores / tau`` (DenseCLIP: 0.07).
    """

    def __init__(self, clip: nn.Module, tokenizer, class_names: Sequence[str], embed_dim: int, num_context: int = 8,
                 prompt_template: str = DEFAULT_PROMPT, decoder_width: int = 256, decoder_heads: int = 4,
                 decoder_layers: int = 3, decoder_dropout: float = 0.1, gamma_init: float = 1e-4,
                 temperature: float = 0.07):
        super().__init__()
        self.prompts = PromptEncoder(clip, tokenizer, class_names, num_context, prompt_template)
        self.context_decoder = ContextDecoder(embed_dim, decoder_width, decoder_heads, decoder_layers,
                                              decoder_dropout)
        self.gamma = nn.Parameter(torch.full((embed_dim,), float(gamma_init)))
        self.temperature = temperature
        self._cached_text: torch.Tensor | None = None
        self._register_load_state_dict_pre_hook(self._clear_cache)

    def _clear_cache(self, *args, **kwargs) -> None:
        self._cached_text = None

    def train(self, mode: bool = True) -> "DenseCLIPGuidance":
        was_training = self.training
        super().train(mode)
        if mode or was_training:
            # training may change the weights; a repeated .eval() keeps the cache, so an export (which calls
            # .eval() on a model already in eval) traces the embeddings as a constant, not the text tower
            self._clear_cache()
        return self

    def _apply(self, fn, *args, **kwargs):
        self._clear_cache()  # .to(device / dtype): recompute where the weights now are
        return super()._apply(fn, *args, **kwargs)

    def text_embeddings(self) -> torch.Tensor:
        """(K, D) prompt embeddings before the visual update; cached outside training (they are image-independent)."""
        if self.training:
            return self.prompts()
        if self._cached_text is None:
            # a normal tensor even when first asked under inference_mode (the torch engine), so a later traced
            # export or a grad-enabled eval forward can still use it; in the weights' own precision even when first
            # asked under autocast (the bf16 torch engine): the cache outlives that call
            with torch.inference_mode(False), torch.no_grad(), \
                    torch.autocast(self.gamma.device.type, enabled=False):
                self._cached_text = self.prompts().detach()
        return self._cached_text

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        """Dense embeddings (B, D, h, w) -> score maps (B, K, h, w), cosine similarities in [-1, 1]."""
        b, d, h, w = dense.shape
        tokens = dense.flatten(2).transpose(1, 2)  # B, hw, D
        visual = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # B, 1 + hw, D
        text = self.text_embeddings().to(dense.dtype).expand(b, -1, -1)  # B, K, D
        text = text + self.gamma.to(dense.dtype) * self.context_decoder(text, visual)  # B, K, D
        return torch.einsum("bdhw,bkd->bkhw", F.normalize(dense, dim=1), F.normalize(text, dim=-1))

    def loss(self, scores: torch.Tensor, sem_seg: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """Pixel-text cross-entropy at the labels' resolution, as DenseCLIP's identity head (mmseg's decode-head
        loss): ``scores / tau`` (B, K, h, w) upsampled bilinearly (``align_corners=False``) to the labels (B, H, W).
        Every labelled pixel counts once; downsampling the labels instead would drop thin classes."""
        labels = sem_seg.long()  # B, H, W
        if (labels == ignore_index).all():
            return scores.sum() * 0.0
        logits = F.interpolate(scores.float() / self.temperature, size=labels.shape[-2:], mode="bilinear",
                               align_corners=False)  # B, K, H, W
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)
