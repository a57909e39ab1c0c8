"""A vision-language "pretrained" tiny tower for tests (not collected by pytest): ``vlt-tiny-vit`` trained for a few
dozen CLIP steps (open_clip's ClipLoss) on solid-colour images captioned with their colour, saved as an open_clip
checkpoint. Stands in for the project's own pretrained tiny CLIP where a test needs a tower of its own.
"""

from __future__ import annotations

from pathlib import Path

import torch

COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.1, 0.1, 1.0), "yellow": (1.0, 1.0, 0.1),
           "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def colour_images(names, size, generator, mean, std) -> torch.Tensor:
    """Normalised (B, 3, size, size) images of the named colours with a little noise."""
    rgb = torch.tensor([COLOURS[n] for n in names])[:, :, None, None]  # B, 3, 1, 1
    images = (rgb + 0.05 * torch.randn(len(names), 3, size, size, generator=generator)).clamp(0, 1)
    return (images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def train_tiny_clip(path: Path, steps: int = 60, seed: int = 0) -> Path:
    """Align the vision tower to the (random, fixed) text tower's caption embeddings with open_clip's ClipLoss
    (LiT-style with the roles swapped: only the image side trains, which is all PIN's test needs and cheap)."""
    import open_clip

    from vlt_training.modeling.backbone.clip_vit import register_open_clip_configs

    register_open_clip_configs()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = open_clip.create_model("vlt-tiny-vit")
    tokenizer = open_clip.get_tokenizer("vlt-tiny-vit")
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    names = list(COLOURS)
    with torch.no_grad():
        text = model.encode_text(tokenizer([f"a photo of a {n} thing." for n in names]), normalize=True)  # K, D
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.visual.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    # one thread: on the shared 2-core machine two threads spin on each other's small ops (20x slower measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(model, loss_fn, opt, text, names, steps, g, mean, std)
    finally:
        torch.set_num_threads(threads)
    torch.save(model.state_dict(), path)
    return path


def _fit(model, loss_fn, opt, text, names, steps, g, mean, std) -> None:
    for _ in range(steps):
        images = colour_images(names, 128, g, mean, std)  # one image per caption: no false negatives
        image = model.encode_image(images, normalize=True)
        loss = loss_fn(image, text, model.logit_scale.exp().detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
