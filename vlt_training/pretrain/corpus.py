"""Captioned image-text pairs rendered on the fly from the procedural scene generator.

A pair ``(split, index)`` is a pure function of the corpus seed: the scene comes from its own generator
(:func:`scene_rng`, streams ``vlt-pretrain/<split>``, which no benchmark stream uses, so no benchmark scene can appear
in the corpus), and its look (appearance + caption wording) from a second generator. For training, the look is drawn
from the trainer's per-sample seed, so every epoch shows each scene in a new appearance with a new caption while
resuming still replays exactly the same pairs. Held-out pairs (split ``heldout``) have a fixed look.

Rendering a 128 x 256 scene costs tens of milliseconds; with ``cache`` the clean scene (image, depth, content) is
kept in memory after its first use and only the look is re-rendered.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from vlt_training.pretrain.appearance import Appearance, apply_appearance, sample_appearance
from vlt_training.pretrain.captions import SceneContent, make_caption, scene_content
from vlt_training.synthetic.scene import SceneConfig, render_scene
from vlt_training.vocabulary import CONDITIONS, STYLE_BINS

STREAM = "vlt-pretrain"  # prefix of every generator stream of the corpus
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class CorpusSpec:
    """Which pairs: ``seed``, sizes of the two splits, image size, and whether dark looks are left out."""

    seed: int = 0
    num_train: int = 4096
    num_heldout: int = 256
    height: int = 128
    width: int = 256
    exclude_dark: bool = False

    def size(self, split: str) -> int:
        if split not in SPLITS:
            raise ValueError(f"unknown corpus split {split!r}; expected one of {SPLITS}")
        return self.num_train if split == "train" else self.num_heldout


@dataclass
class Pair:
    image: np.ndarray  # H, W, 3 uint8 RGB
    caption: str
    content: SceneContent
    appearance: Appearance


def stream_name(split: str, part: str = "scene") -> str:
    return f"{STREAM}/{split}/{part}"


def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    # Same construction as the benchmark's image_rng, on streams of our own: (seed, crc32(stream), index).
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode()), int(index)])


def scene_rng(spec: CorpusSpec, split: str, index: int) -> np.random.Generator:
    """The generator of the scene of pair ``index`` of ``split``."""
    return _rng(spec.seed, stream_name(split), index)


def look_rng(spec: CorpusSpec, split: str, index: int, sample_seed: int | None = None) -> np.random.Generator:
    """The generator of a pair's look: fixed per (split, index), or the trainer's ``sample_seed`` when given."""
    if sample_seed is not None:
        return np.random.default_rng([int(spec.seed), zlib.crc32(stream_name(split, "look").encode()),
                                      int(sample_seed)])
    return _rng(spec.seed, stream_name(split, "look"), index)


def render_clean(spec: CorpusSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray, SceneContent]:
    """(clean image (H, W, 3) uint8, depth (H, W) float32, content) of one scene."""
    if not 0 <= index < spec.size(split):
        raise IndexError(f"pair {index} out of range for corpus split {split!r} of {spec.size(split)} pairs")
    scene = render_scene(scene_rng(spec, split, index), spec.height, spec.width, SceneConfig())
    return scene.image, scene.depth, scene_content(scene)


def dress(spec: CorpusSpec, image: np.ndarray, depth: np.ndarray, content: SceneContent,
          rng: np.random.Generator) -> Pair:
    """Give a clean scene its look: sample an appearance, render it, caption the result (all from ``rng``)."""
    appearance = sample_appearance(rng, exclude_dark=spec.exclude_dark)
    shown = apply_appearance(image, appearance, rng, depth=depth)
    return Pair(shown, make_caption(content, appearance.bins(), rng), content, appearance)


def render_pair(spec: CorpusSpec, split: str, index: int, sample_seed: int | None = None) -> Pair:
    """Pair ``index`` of ``split`` (its look from ``sample_seed`` when given)."""
    image, depth, content = render_clean(spec, split, index)
    return dress(spec, image, depth, content, look_rng(spec, split, index, sample_seed))


# ---------------------------------------------------------------------------------------------------------------
# Supervised targets of the vision-only control: classes present + appearance attributes.

def attribute_vector(pair: Pair) -> np.ndarray:
    """(19 + A,) float32 multi-label target: classes present, then one-hot condition and attribute bins."""
    bins = pair.appearance.bins()
    onehot = [float(pair.appearance.condition == c) for c in CONDITIONS]
    onehot += [float(bins[attr] == b) for attr, values in STYLE_BINS.items() for b in values]
    return np.concatenate([pair.content.presence_vector(), np.array(onehot, dtype=np.float32)])


def image_to_tensor(image: np.ndarray, mean, std) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised with ``mean`` / ``std`` on [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)  # 3, H, W
    m = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - m) / s


class PretrainCorpus(Dataset):
    """Pairs of one split as ``(image (3, H, W), {"caption": str, "labels": (19 + A,) float})``.

    Indexed with ``(index, sample_seed)`` like every trainer dataset; with ``resample_look`` the look comes from
    ``sample_seed`` (a new appearance and caption every epoch), else it is the pair's fixed look. Captions stay
    text: the model tokenises them with its own tokenizer.
    """

    def __init__(self, spec: CorpusSpec, split: str, mean, std, resample_look: bool = False,
                 cache: bool = True) -> None:
        self.spec, self.split = spec, split
        self.mean, self.std = tuple(mean), tuple(std)
        self.resample_look = resample_look
        self.cache = cache
        self._scenes: dict[int, tuple[np.ndarray, np.ndarray, SceneContent]] = {}
        self._fixed: dict[int, Pair] = {}

    def __len__(self) -> int:
        return self.spec.size(self.split)

    def clean(self, index: int) -> tuple[np.ndarray, np.ndarray, SceneContent]:
        hit = self._scenes.get(index)
        if hit is None:
            image, depth, content = render_clean(self.spec, self.split, index)
            hit = (image, depth.astype(np.float16), content)  # half-precision depth: only fog / snow read it
            if self.cache:
                self._scenes[index] = hit
        return hit

    def pair(self, index: int, sample_seed: int | None = None) -> Pair:
        if not self.resample_look and index in self._fixed:
            return self._fixed[index]
        image, depth, content = self.clean(index)
        seed = sample_seed if self.resample_look else None
        pair = dress(self.spec, image, depth.astype(np.float32), content, look_rng(self.spec, self.split, index, seed))
        if self.cache and not self.resample_look:  # a fixed look: keep the finished pair instead of the scene
            self._fixed[index] = pair
            self._scenes.pop(index, None)
        return pair

    def __getitem__(self, item):
        index, sample_seed = item if isinstance(item, tuple) else (item, None)
        pair = self.pair(int(index), sample_seed)
        target = {"caption": pair.caption, "labels": torch.from_numpy(attribute_vector(pair))}
        return image_to_tensor(pair.image, self.mean, self.std), target
