"""The appearance family of the pretraining corpus: continuous, broad, and its own randomisation.

An :class:`Appearance` holds continuous parameters (darkness, fog, rain and snow strengths, colour cast, saturation,
contrast, blur, sensor noise). :func:`sample_appearance` draws them; :func:`apply_appearance` renders them onto a
clean scene, reusing the benchmark's physically motivated weather shifts (:mod:`vlt_training.synthetic.conditions`)
at *continuous* strengths plus camera effects of its own; :meth:`Appearance.bins` names each parameter's bin with the
words of :data:`vlt_training.vocabulary.STYLE_BINS`.

The benchmark's targets are five fixed conditions at fixed strengths; here every strength is drawn from a range and
combined with camera styles, so the corpus covers a much wider family than the benchmark evaluates on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from vlt_training.synthetic.conditions import apply_condition
from vlt_training.vocabulary import CONDITIONS

# Relative frequency of the dominant condition of a pair.
CONDITION_WEIGHTS = {"clear": 0.28, "fog": 0.18, "night": 0.18, "rain": 0.18, "snow": 0.18}
# Bin edges of the continuous parameters (lower edges of the non-neutral bins).
DUSK, NIGHT = 0.2, 0.55
WEATHER_LIGHT, WEATHER_HEAVY = 0.15, 0.5
# Darkness at or above this is "dark / night-like": what ``exclude_dark`` removes (dusk included).
DARK_LIMIT = DUSK

_CAST_DIRECTIONS = {  # RGB gain directions of the colour casts
    "warm": np.array([1.0, 0.15, -1.0], dtype=np.float32),
    "cool": np.array([-0.8, 0.0, 1.0], dtype=np.float32),
    "green": np.array([-0.6, 1.0, -0.6], dtype=np.float32),
}


@dataclass(frozen=True)
class Appearance:
    """Continuous appearance parameters of one image (0 / 1 are the neutral values)."""

    condition: str = "clear"  # dominant condition: one of vocabulary.CONDITIONS
    darkness: float = 0.0  # 0 full daylight ... 1 deep night (strength of the night shift)
    fog: float = 0.0  # fog shift strength (visibility ~ 50 m at 1)
    rain: float = 0.0
    snow: float = 0.0
    cast: str = "neutral"  # colour-cast family: neutral / warm / cool / green
    cast_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB gains of the cast
    saturation: float = 1.0  # 0 greyscale, 1 unchanged, > 1 more saturated
    contrast: float = 1.0  # < 1 flatter
    blur: float = 0.0  # Gaussian sigma in pixels at 256 px width
    noise: float = 0.0  # additive Gaussian sensor noise (std, image in [0, 1])

    def bins(self) -> dict[str, str]:
        """The bin of every attribute of :data:`~vlt_training.vocabulary.STYLE_BINS`."""

        def weather(value: float) -> str:
            return "none" if value < WEATHER_LIGHT else ("light" if value < WEATHER_HEAVY else "heavy")

        sat = self.saturation
        return {
            "time": "day" if self.darkness < DUSK else ("dusk" if self.darkness < NIGHT else "night"),
            "fog": {"none": "none", "light": "haze", "heavy": "fog"}[weather(self.fog)],
            "rain": weather(self.rain),
            "snow": weather(self.snow),
            "cast": self.cast,
            "saturation": "monochrome" if sat < 0.25 else ("muted" if sat < 0.7 else
                                                            ("vibrant" if sat > 1.35 else "normal")),
            "contrast": "low" if self.contrast < 0.75 else "normal",
            "blur": "blurry" if self.blur >= 1.0 else "sharp",
            "noise": "grainy" if self.noise >= 0.03 else "clean",
        }

    @property
    def is_dark(self) -> bool:
        return self.darkness >= DARK_LIMIT

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sample_appearance(rng: np.random.Generator, exclude_dark: bool = False) -> Appearance:
    """Draw one appearance: a dominant condition at a random strength, a time of day, and camera styles.

    ``exclude_dark`` leaves out every dark / night-like appearance (no night, no dusk): arm (d) of the
    comparison, whose corpus never shows the model a dark street.
    """
    names = [c for c in CONDITIONS if not (exclude_dark and c == "night")]
    weights = np.array([CONDITION_WEIGHTS[c] for c in names])
    condition = str(rng.choice(names, p=weights / weights.sum()))
    strength = float(rng.uniform(0.25, 1.0))
    params: dict = {"condition": condition}
    if condition == "night":
        params["darkness"] = float(rng.uniform(NIGHT, 1.0))
    elif not exclude_dark and rng.random() < 0.3:
        params["darkness"] = float(rng.uniform(DUSK, NIGHT - 0.05))  # dusk under any weather
    else:
        params["darkness"] = float(rng.uniform(0.0, 0.12))
    if condition in ("fog", "rain", "snow"):
        params[condition] = strength
    if rng.random() < 0.3:
        cast = str(rng.choice(list(_CAST_DIRECTIONS)))
        amount = rng.uniform(0.08, 0.3)
        gains = 1.0 + amount * (_CAST_DIRECTIONS[cast] + rng.uniform(-0.25, 0.25, 3))
        params["cast"], params["cast_gains"] = cast, tuple(float(g) for g in gains)
    if rng.random() < 0.35:
        params["saturation"] = float(rng.uniform(0.0, 1.9))
    if rng.random() < 0.2:
        params["contrast"] = float(rng.uniform(0.4, 0.72))
    if rng.random() < 0.2:
        params["blur"] = float(rng.uniform(1.0, 2.5))
    if rng.random() < 0.2:
        params["noise"] = float(rng.uniform(0.03, 0.08))
    return Appearance(**params)


def apply_appearance(image: np.ndarray, appearance: Appearance, rng: np.random.Generator,
                     depth: np.ndarray | None = None) -> np.ndarray:
    """Render ``appearance`` onto a clean (H, W, 3) uint8 RGB scene; ``depth`` (H, W) metres helps fog and snow."""
    a = appearance
    for name, strength in (("fog", a.fog), ("rain", a.rain), ("snow", a.snow)):
        if strength > 0:
            image = apply_condition(name, image, rng, min(strength, 1.0), depth=depth)
    if a.darkness > 0.02:
        image = apply_condition("night", image, rng, min(a.darkness, 1.0))
    img = image.astype(np.float32) * (1.0 / 255.0)  # H, W, 3 in [0, 1]
    if DUSK <= a.darkness < NIGHT:
        img *= np.array([1.12, 0.97, 0.82], dtype=np.float32)  # low sun: warm light
    if a.cast_gains != (1.0, 1.0, 1.0):
        img *= np.asarray(a.cast_gains, dtype=np.float32)
    if a.saturation != 1.0:
        grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # H, W
        img = grey[..., None] + (img - grey[..., None]) * a.saturation
    if a.contrast != 1.0:
        mean = img.mean(axis=(0, 1), keepdims=True)
        img = mean + (img - mean) * a.contrast
    if a.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), a.blur * image.shape[1] / 256.0)
    if a.noise > 0:
        img = img + a.noise * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
