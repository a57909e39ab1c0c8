"""DenseCLIP guidance: context decoder, gamma start, CoOp context through the frozen text tower, stride-16 concat."""

from __future__ import annotations

import pytest
import torch

from vlt_training.modeling import create_model
from vlt_training.modeling.backbone import build_open_clip
from vlt_training.modeling.text_guidance import ContextDecoder, DenseCLIPGuidance, class_prompts

CLASSES = ["road", "car", "traffic light"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    model = build_open_clip("vlt-tiny-vit")
    import open_clip

    model.__dict__["tokenizer"] = open_clip.get_tokenizer("vlt-tiny-vit")
    return model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("vltseg_tiny_mask2former", class_names=CLASSES)


def test_context_decoder_output_shape():
    decoder = ContextDecoder(embed_dim=64, width=32, heads=4, layers=3)
    out = decoder(torch.randn(2, 5, 64), torch.randn(2, 1 + 12, 64))  # B, K, D text; B, N, D visual
    assert out.shape == (2, 5, 64)
    assert len(decoder.layers) == 3 and decoder.layers[0].norm_first  # pre-norm layers, as in DenseCLIP


def test_gamma_starts_at_1e_4(clip):
    guidance = DenseCLIPGuidance(clip, clip.tokenizer, CLASSES, embed_dim=64)
    assert guidance.gamma.shape == (64,)
    torch.testing.assert_close(guidance.gamma.detach(), torch.full((64,), 1e-4))
    assert guidance.gamma.requires_grad


def test_fixed_prompts_reproduce_open_clip_encode_text(clip):
    """With no context vectors the tower wiring must give open_clip's own text embeddings."""
    guidance = DenseCLIPGuidance(clip, clip.tokenizer, CLASSES, embed_dim=64, num_context=0)
    with torch.no_grad():
        ours = guidance.prompts()
        ref = clip.encode_text(clip.tokenizer(class_prompts(CLASSES)))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_context_vectors_feed_the_frozen_text_tower(clip):
    guidance = DenseCLIPGuidance(clip, clip.tokenizer, CLASSES, embed_dim=64, num_context=8).train()
    prompts = guidance.prompts
    assert prompts.contexts.shape == (1, 8, 64) and prompts.contexts.requires_grad
    assert prompts.tokens.shape[0] == len(CLASSES)
    tower_params = list(prompts.text_tower.parameters())
    assert tower_params and not any(p.requires_grad for p in tower_params)
    assert not prompts.text_tower.training  # frozen: eval mode even while the model trains
    scores = guidance(torch.randn(2, 64, 4, 6))  # B, D, h, w
    assert scores.shape == (2, 3, 4, 6) and scores.abs().max() <= 1.0 + 1e-5
    scores.sum().backward()
    assert prompts.contexts.grad is not None and prompts.contexts.grad.abs().sum() > 0
    assert all(p.grad is None for p in tower_params)
    before = guidance.prompts().detach()
    with torch.no_grad():
        prompts.contexts.add_(1.0)
    assert not torch.allclose(guidance.prompts(), before)  # the text tower sees the context


def test_text_embeddings_cached_outside_training(clip):
    guidance = DenseCLIPGuidance(clip, clip.tokenizer, CLASSES, embed_dim=64).eval()
    first = guidance.text_embeddings()
    assert guidance.text_embeddings() is first  # computed once per evaluation
    guidance.eval()
    assert guidance.text_embeddings() is first  # a repeated .eval() (an export does one) keeps it
    state = guidance.state_dict()
    with torch.no_grad():
        state["prompts.contexts"] = state["prompts.contexts"] + 1.0
    guidance.load_state_dict(state)
    assert not torch.allclose(guidance.text_embeddings(), first)  # a new state is never served stale
    guidance.train()
    assert guidance.text_embeddings() is not guidance.text_embeddings()  # training: recomputed with gradients
    guidance.eval()
    before_step = guidance.text_embeddings()
    guidance.train()
    with torch.no_grad():
        guidance.prompts.contexts.add_(1.0)  # an optimiser step
    guidance.eval()
    assert not torch.allclose(guidance.text_embeddings(), before_step)  # leaving training recomputes
    guidance.train().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the bf16 torch engine's first call fills the cache
        guidance(torch.randn(1, 64, 2, 3))
    assert guidance.text_embeddings().dtype == torch.float32
    guidance.train().eval()
    with torch.inference_mode():  # the torch engine's first call fills the cache
        guidance(torch.randn(1, 64, 2, 3))
    dense = torch.randn(1, 64, 2, 3, requires_grad=True)
    guidance(dense).sum().backward()  # the cached embeddings are no inference tensor
    assert dense.grad is not None


def test_vltseg_guidance_settings(tiny):
    assert tiny.pixel_text_weight == 0.4  # DenseCLIP's auxiliary (identity head) loss weight
    width, k = tiny.backbone.width, len(CLASSES)
    in_channels = [next(m for m in stage.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
                   for stage in tiny.neck.stages]
    # stride 4, 8 (transposed convs halve / quarter the channels), 16 with the K score maps, 32
    assert in_channels == [width // 4, width // 2, width + k, width]
    assert tiny.score_map_index == 2


def test_guidance_off_switch():
    model = create_model("vltseg_tiny_mask2former", class_names=CLASSES, text_guidance=False)
    assert model.pixel_text is None
    assert not any("text" in n for n, _ in model.named_parameters())  # no text tower kept
