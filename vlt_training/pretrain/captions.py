"""Captions of procedural scenes: what is in the image (classes, counts, where) and how it looks.

:func:`scene_content` reads a rendered :class:`~vlt_training.synthetic.scene.Scene` (its label map and visible
objects) into a :class:`SceneContent`; :func:`make_caption` writes one caption from the content and the appearance
bins with one of :data:`TEMPLATES` (every one names the road users), drawing every choice (template, synonyms, which classes to mention) from the
given generator, so a caption is a pure function of (scene, appearance, generator state). Captions only name classes
that are present in the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vlt_perception.labels import CITYSCAPES_CLASSES, CITYSCAPES_THING_CLASSES
from vlt_training.vocabulary import CLASS_WORDS, STYLE_BINS

# A thing is "in the image" when at least this share of the image shows it (24 px at 128 x 256).
MIN_THING_FRACTION = 24 / (128 * 256)
# A stuff class is "in the image" when it covers at least this share of the image.
MIN_STUFF_FRACTION = 0.01
_STUFF = tuple(c for c in CITYSCAPES_CLASSES if c not in CITYSCAPES_THING_CLASSES)
_COUNT_WORDS = {1: ("a", "one"), 2: ("two",), 3: ("three",), 4: ("four", "a few"), 5: ("five", "a few")}

# {adj}: appearance adjectives ("foggy grainy"); {cond}: appearance phrases ("in dense fog at night");
# {things}: counted objects ("two cars and a bus"); {place}: the street ("a wide road between tall buildings");
# {stuff}: background classes ("trees and traffic signs").
TEMPLATES: tuple[str, ...] = (
    "a {adj} photo of {things} on {place}",
    "{things} on {place} {cond}",
    "a street {cond} with {things}",
    "dashcam view {cond}: {things} and {stuff}",
    "a {adj} driving scene with {things}",
    "{place} {cond} with {things}",
    "a {adj} image of a city street with {things} and {stuff}",
    "there are {things} on {place} {cond}",
    "a car camera picture {cond} showing {things}",
    "{adj} street, {things}",
    "a photo of {place} {cond}: {things} among {stuff}",
    "looking down {place} {cond}, {things} ahead",
    "an urban road {cond} with {things}",
    "a {adj} view from a car: {things} near {stuff}",
    "traffic {cond}: {things}",
    "a {adj} dashcam frame with {stuff} and {things}",
    "{things} {cond} in a city",
    "the road ahead {cond}, {things} and {stuff}",
    "a {adj} picture of {things}",
    "a street scene {cond} with {stuff} and {things}",
    "a {adj} town street with {things} {cond}",
    "{things} and {stuff}, {adj} weather",
    "a {adj} photo of a street with {things}",
    "driving {cond} past {things}",
)


@dataclass
class SceneContent:
    """What an image shows: counts of visible things, image share of each class, object positions."""

    counts: dict[str, int] = field(default_factory=dict)  # thing class -> number of visible instances
    fractions: dict[str, float] = field(default_factory=dict)  # class -> share of the image's pixels
    positions: dict[str, list[float]] = field(default_factory=dict)  # thing class -> centre x / width per instance

    @property
    def present(self) -> set[str]:
        """Cityscapes classes that are in the image (things by count, stuff by area)."""
        things = {c for c, n in self.counts.items() if n > 0}
        stuff = {c for c in _STUFF if self.fractions.get(c, 0.0) >= MIN_STUFF_FRACTION}
        return things | stuff

    def presence_vector(self) -> np.ndarray:
        """(19,) float32: 1 where the Cityscapes class (train-id order) is present."""
        present = self.present
        return np.array([c in present for c in CITYSCAPES_CLASSES], dtype=np.float32)


def scene_content(scene) -> SceneContent:
    """Counts, shares and positions of a rendered scene, from its train-id map and visible objects."""
    train_ids = scene.train_ids
    h, w = train_ids.shape
    hist = np.bincount(train_ids.ravel(), minlength=256)[: len(CITYSCAPES_CLASSES)] / float(h * w)
    content = SceneContent(fractions={c: float(hist[i]) for i, c in enumerate(CITYSCAPES_CLASSES) if hist[i] > 0})
    min_area = MIN_THING_FRACTION * h * w
    for obj in scene.objects:
        if obj["area"] < min_area:
            continue
        name = CITYSCAPES_THING_CLASSES[obj["category_id"]]
        content.counts[name] = content.counts.get(name, 0) + 1
        x1, _, x2, _ = obj["bbox"]
        content.positions.setdefault(name, []).append((x1 + x2) / (2.0 * w))
    return content


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _class_word(rng: np.random.Generator, name: str, plural: bool) -> str:
    singular, plural_form = _pick(rng, CLASS_WORDS[name])
    return plural_form if plural else singular


def things_phrase(content: SceneContent, rng: np.random.Generator, max_classes: int = 3) -> str:
    """``"two cars, a bus and a pedestrian on the left"``: up to ``max_classes`` counted thing classes."""
    names = sorted((c for c, n in content.counts.items() if n > 0), key=lambda c: -content.counts[c])
    if not names:
        return _pick(rng, ("no traffic", "nobody", "no vehicles or people"))
    chosen = [names[0]] + [c for c in names[1:] if rng.random() < 0.7]
    parts = []
    for name in chosen[:max_classes]:
        n = content.counts[name]
        count = _pick(rng, _COUNT_WORDS[n]) if n in _COUNT_WORDS else _pick(rng, ("many", "several", "lots of"))
        word = _class_word(rng, name, plural=n > 1)
        part = f"{count} {word}"
        if n == 1 and rng.random() < 0.5:  # where a single object is
            x = content.positions[name][0]
            part += " " + ("on the left" if x < 0.38 else ("on the right" if x > 0.62 else "ahead"))
        parts.append(part)
    return _join(parts)


def place_phrase(content: SceneContent, rng: np.random.Generator) -> str:
    """``"a wide road between tall buildings"`` from the shares of road, building and vegetation."""
    road = content.fractions.get("road", 0.0)
    width = "a wide" if road > 0.3 else ("a narrow" if road < 0.18 else "a")
    noun = _pick(rng, ("road", "street"))
    side = ""
    if content.fractions.get("building", 0.0) > 0.25:
        side = " " + _pick(rng, ("between tall buildings", "between buildings", "lined with buildings"))
    elif content.fractions.get("vegetation", 0.0) > 0.12:
        side = " " + _pick(rng, ("lined with trees", "between trees and hedges", "with vegetation"))
    return f"{width} {noun}{side}"


def stuff_phrase(content: SceneContent, rng: np.random.Generator, max_classes: int = 2) -> str:
    """``"trees and traffic signs"``: up to ``max_classes`` background classes that are present."""
    present = [c for c in _STUFF if content.fractions.get(c, 0.0) >= MIN_STUFF_FRACTION and c not in ("road",)]
    if not present:
        return "the road"
    order = rng.permutation(len(present))[:max_classes]
    return _join([_class_word(rng, present[i], plural=True) for i in sorted(order)])


def appearance_words(bins: dict[str, str], rng: np.random.Generator, max_camera: int = 2) -> tuple[str, str]:
    """(adjectives, phrases) naming the appearance: weather, time of day, then up to ``max_camera`` camera styles."""
    adjectives, phrases = [], []
    weather = [a for a in ("fog", "rain", "snow") if STYLE_BINS[a][bins[a]][0]]
    camera = [a for a in ("cast", "saturation", "contrast", "blur", "noise") if STYLE_BINS[a][bins[a]][0]]
    camera = [camera[i] for i in sorted(rng.permutation(len(camera))[:max_camera])]
    clear_day = not weather and bins["time"] == "day"
    for attribute in weather + ["time"] + camera:
        adj, phr = STYLE_BINS[attribute][bins[attribute]]
        if attribute == "time" and bins["time"] == "day" and not clear_day and rng.random() < 0.6:
            continue  # "a foggy street" rarely says it is daytime
        if attribute == "time" and clear_day:
            adj = adj + ("clear",)
            phr = phr + ("on a clear day",)
        adjectives.append(_pick(rng, adj))
        phrases.append(_pick(rng, phr))
    return " ".join(adjectives), " ".join(phrases)


def make_caption(content: SceneContent, bins: dict[str, str], rng: np.random.Generator) -> str:
    """One caption of a scene with appearance ``bins``; every choice is drawn from ``rng``."""
    template = _pick(rng, TEMPLATES)
    adjectives, phrases = appearance_words(bins, rng)
    return template.format(adj=adjectives, cond=phrases, things=things_phrase(content, rng),
                           place=place_phrase(content, rng), stuff=stuff_phrase(content, rng))
