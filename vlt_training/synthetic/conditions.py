"""Domain shifts modelled on ACDC (fog, night, rain, snow) plus ``real_style`` (another camera and palette).

Every condition is a function ``shift(image, rng, strength, depth=None) -> image``: ``image`` is (H, W, 3) uint8
RGB, ``rng`` a ``numpy.random.Generator`` (the only source of randomness, so a seed reproduces the bytes),
``strength`` in [0, 1] (0 leaves the image as it is, 1 is the heaviest version; each function documents what
it scales) and ``depth`` optional (H, W) metres, which fog uses for distance-dependent attenuation (without it
depth is guessed from the row). Shifts change pixels only: labels of a scene stay valid under every condition.

>>> shifted = apply_condition("fog", image, np.random.default_rng(0))
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

ConditionFn = Callable[..., np.ndarray]

CONDITIONS: dict[str, ConditionFn] = {}
DEFAULT_STRENGTH: dict[str, float] = {}


def register_condition(name: str, default_strength: float) -> Callable[[ConditionFn], ConditionFn]:
    """Decorator adding a shift to the registry under ``name`` with its default strength."""

    def wrap(fn: ConditionFn) -> ConditionFn:
        CONDITIONS[name] = fn
        DEFAULT_STRENGTH[name] = default_strength
        return fn

    return wrap


def list_conditions() -> list[str]:
    """Names of the target conditions (``source`` is the unshifted rendering and is not listed)."""
    return list(CONDITIONS)


def apply_condition(name: str, image: np.ndarray, rng: np.random.Generator, strength: float | None = None,
                    depth: np.ndarray | None = None) -> np.ndarray:
    """Apply condition ``name`` (``source`` returns a copy) at ``strength`` (its default when None)."""
    if name == "source":
        return image.copy()
    if name not in CONDITIONS:
        raise KeyError(f"unknown condition {name!r}; known: source, {', '.join(CONDITIONS)}")
    strength = DEFAULT_STRENGTH[name] if strength is None else float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if strength == 0.0:
        return image.copy()
    return CONDITIONS[name](image, rng, strength, depth=depth)


# ---------------------------------------------------------------------------------------------------------------
def _to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) * (1.0 / 255.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _row_depth(h: int, w: int, horizon: float = 0.45) -> np.ndarray:
    """A depth guess when none is given: rows near the horizon are far (metres), the bottom row ~5 m away."""
    rows = (np.arange(h, dtype=np.float32) + 0.5) / h
    d = np.where(rows > horizon, 5.0 * (1 - horizon) / np.maximum(rows - horizon, 1e-3), 300.0)
    return np.broadcast_to(np.minimum(d, 300.0)[:, None], (h, w)).astype(np.float32)


def _blur_small(img: np.ndarray, sigma: float) -> np.ndarray:
    """A wide Gaussian blur computed at quarter resolution (same look, a fraction of the cost)."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(w // 4, 1), max(h // 4, 1)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma / 4, 0.5))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _desaturate(img: np.ndarray, amount: float) -> np.ndarray:
    grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # H, W
    return img * (1 - amount) + grey[..., None] * amount


def _sensor_noise(img: np.ndarray, rng: np.random.Generator, shot: float, read: float) -> np.ndarray:
    """Poisson-Gaussian noise approximated by a Gaussian with signal-dependent variance (img in [0, 1])."""
    sigma = np.sqrt(np.maximum(img, 0) * shot + read ** 2)  # H, W, 3
    return img + sigma * rng.standard_normal(img.shape, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
@register_condition("fog", default_strength=0.6)
def fog(image: np.ndarray, rng: np.random.Generator, strength: float, depth: np.ndarray | None = None) -> np.ndarray:
    """Koschmieder fog ``I * t + A * (1 - t)``, ``t = exp(-beta * depth)``, plus patchy density.

    ``strength`` sets the visibility: beta = 0.06 * strength per metre (meteorological visibility ~ 3 / beta,
    i.e. about 80 m at the default 0.6 and 50 m at 1.0), and the desaturation of what remains.
    """
    h, w = image.shape[:2]
    depth = _row_depth(h, w) if depth is None else np.asarray(depth, dtype=np.float32)
    beta = 0.06 * strength * rng.uniform(0.85, 1.15)
    small = rng.random((max(h // 32, 2), max(w // 32, 2)), dtype=np.float32)
    patches = 0.75 + 0.5 * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)  # H, W density variation
    t = np.exp(-beta * np.minimum(depth, 300.0) * patches)[..., None]  # H, W, 1
    airlight = rng.uniform(0.75, 0.9) * np.array([1.0, 1.0, 1.02], dtype=np.float32)
    img = _desaturate(_to_float(image), 0.3 * strength)
    img = img * t + airlight * (1 - t)
    img = cv2.GaussianBlur(img, (0, 0), 0.4 + 0.8 * strength)
    return _to_uint8(img)


@register_condition("night", default_strength=0.7)
def night(image: np.ndarray, rng: np.random.Generator, strength: float, depth: np.ndarray | None = None) -> np.ndarray:
    """Night: exposure down by up to ~4 stops (``strength`` scales it), blue-shifted white balance, street-lamp
    and headlight glows, strong sensor noise and a dark, slightly glowing sky."""
    h, w = image.shape[:2]
    img = _to_float(image)
    gain = 2.0 ** (-4.0 * strength * rng.uniform(0.8, 1.0))
    img = np.power(img, 1.0 + 0.6 * strength) * gain
    img *= np.array([0.85, 0.92, 1.1], dtype=np.float32) ** strength
    glow = np.zeros((h, w), dtype=np.float32)
    horizon = int(h * 0.45)
    for _ in range(int(rng.integers(6, 14))):  # lamps above, lights near the horizon
        y = int(rng.uniform(0.05, 0.5) * h) if rng.random() < 0.5 else int(horizon + rng.uniform(-0.05, 0.15) * h)
        x = int(rng.uniform(0, w))
        r = max(int(rng.uniform(0.004, 0.015) * w), 1)
        cv2.circle(glow, (x, y), r, float(rng.uniform(0.6, 1.0)), -1)
    # Wide halo blurred at quarter resolution (a 40-pixel Gaussian at full size is slow), plus a sharp core.
    small = cv2.resize(glow, (max(w // 4, 1), max(h // 4, 1)), interpolation=cv2.INTER_AREA)
    halo = cv2.resize(cv2.GaussianBlur(small, (0, 0), max(w * 0.005, 0.5)), (w, h), interpolation=cv2.INTER_LINEAR)
    glow = halo * 6.0 + cv2.GaussianBlur(glow, (0, 0), 1.0)
    img = img + strength * np.clip(glow, 0, 1.5)[..., None] * np.array([1.0, 0.85, 0.6], dtype=np.float32)
    img = _sensor_noise(img, rng, shot=0.004 * strength, read=0.01 * strength)
    return _to_uint8(img)


@register_condition("rain", default_strength=0.6)
def rain(image: np.ndarray, rng: np.random.Generator, strength: float, depth: np.ndarray | None = None) -> np.ndarray:
    """Rain: overcast dimming and desaturation, slanted motion-blurred streaks (density and length scale with
    ``strength``), a wet sheen on the lower image and out-of-focus drops on the lens."""
    h, w = image.shape[:2]
    img = _to_float(image)
    img = _desaturate(img, 0.35 * strength) * (1 - 0.35 * strength) + 0.05 * strength
    # Streaks: thin slanted lines, drawn in one call (far cheaper than smearing noise with a long kernel).
    n = int(0.004 * strength * h * w / 4)
    length = h * (0.03 + 0.05 * strength)
    angle = np.deg2rad(rng.uniform(-20, 20))
    starts = np.stack([rng.uniform(0, w, n), rng.uniform(-length, h, n)], axis=1)  # N, 2
    ends = starts + length * rng.uniform(0.5, 1.0, (n, 1)) * np.array([np.sin(angle), np.cos(angle)])
    lines = np.round(np.stack([starts, ends], axis=1) * 16).astype(np.int32)  # N, 2, 2 (fixed point)
    streaks = np.zeros((h, w), dtype=np.float32)
    cv2.polylines(streaks, list(lines), False, 1.0, max(int(round(w / 1024)), 1), cv2.LINE_AA, 4)
    streaks = cv2.GaussianBlur(streaks, (3, 3), 0.6) * rng.uniform(0.6, 0.9)
    img = img + np.clip(streaks, 0, 1)[..., None] * 0.45
    # Wet road: a blurred, vertically flipped copy of the upper image blended into the lower rows.
    rows = np.clip((np.arange(h, dtype=np.float32) / h - 0.55) / 0.45, 0, 1)[:, None, None]  # H, 1, 1
    reflection = _blur_small(img[::-1], h * 0.01)
    img = img * (1 - 0.25 * strength * rows) + reflection * 0.25 * strength * rows
    # Lens drops: blurred discs.
    drops = img.copy()
    blurred = _blur_small(img, w * 0.01)
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(12 * strength)):
        cv2.circle(mask, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(max(rng.uniform(0.01, 0.03) * w, 1)),
                   1, -1)
    drops[mask > 0] = blurred[mask > 0]
    return _to_uint8(drops)


@register_condition("snow", default_strength=0.6)
def snow(image: np.ndarray, rng: np.random.Generator, strength: float, depth: np.ndarray | None = None) -> np.ndarray:
    """Snow: patchy white cover on the ground, a flat bright overcast, falling flakes of several sizes;
    ``strength`` scales cover, flake density and the loss of contrast. With ``depth`` the cover lands only where
    depth falls with the row (the ground plane), not on upright objects; without it, on the lower image."""
    h, w = image.shape[:2]
    img = _to_float(image)
    img = _desaturate(img, 0.4 * strength) * (1 - 0.3 * strength) + 0.3 * strength
    small = rng.random((max(h // 24, 2), max(w // 24, 2)), dtype=np.float32)
    patchy = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)  # H, W
    if depth is not None:
        log_d = np.log(np.maximum(np.asarray(depth, dtype=np.float32), 0.1))
        slope = np.zeros_like(log_d)
        slope[:-1] = log_d[:-1] - log_d[1:]  # > 0 where depth shrinks downwards: the ground
        ground = cv2.GaussianBlur((slope > 0.2 / h).astype(np.float32), (0, 0), 1.0)
    else:
        ground = np.broadcast_to(np.clip((np.arange(h, dtype=np.float32) / h - 0.45) / 0.2, 0, 1)[:, None], (h, w))
    cover = np.clip((patchy - (1 - strength)) * 2.5 + 0.3 * strength, 0, 1) * ground * 0.75
    fine = rng.random((h, w), dtype=np.float32) * 0.08
    img = img * (1 - cover[..., None]) + (0.9 + fine)[..., None] * cover[..., None]
    flakes = np.zeros((h, w), dtype=np.float32)
    for size, count in ((1, 1500), (2, 400), (4, 60)):
        n = int(count * strength * h * w / (512 * 1024))
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        radius = max(int(size * w / 1024), 1)
        for y, x in zip(ys, xs):
            cv2.circle(flakes, (int(x), int(y)), radius, 1.0, -1)
    flakes = cv2.GaussianBlur(flakes, (0, 0), 0.8)
    img = img * (1 - 0.8 * flakes[..., None]) + 0.95 * 0.8 * flakes[..., None]
    return _to_uint8(img)


@register_condition("real_style", default_strength=0.7)
def real_style(image: np.ndarray, rng: np.random.Generator, strength: float,
               depth: np.ndarray | None = None) -> np.ndarray:
    """Another camera and palette: a random colour-mixing matrix and gamma, a hue rotation, lens blur, chromatic
    aberration, vignetting, Poisson-Gaussian noise and JPEG blocking; ``strength`` scales each of them."""
    h, w = image.shape[:2]
    img = _to_float(image)
    mix = np.eye(3, dtype=np.float32) + rng.uniform(-0.25, 0.25, (3, 3)).astype(np.float32) * strength
    mix /= mix.sum(axis=1, keepdims=True)
    img = np.clip(img @ mix.T, 0, 1)
    img = np.power(img, float(np.exp(rng.uniform(-0.4, 0.4) * strength)))
    hsv = cv2.cvtColor(_to_uint8(img), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(rng.uniform(-12, 12) * strength)) % 180).astype(np.uint8)
    sat = np.clip(hsv[..., 1].astype(np.float32) * (1 + rng.uniform(-0.4, 0.5) * strength), 0, 255)
    hsv[..., 1] = sat.astype(np.uint8)
    img = _to_float(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    img = cv2.GaussianBlur(img, (0, 0), 0.3 + 1.2 * strength * rng.uniform(0.5, 1.0))
    shift = int(round(strength * max(w / 512, 1)))
    if shift:
        img[..., 0] = np.roll(img[..., 0], shift, axis=1)
        img[..., 2] = np.roll(img[..., 2], -shift, axis=1)
    cols = (np.arange(w, dtype=np.float32) - w / 2) / (w / 2)
    rows = (np.arange(h, dtype=np.float32) - h / 2) / (h / 2)
    img *= (1 - 0.35 * strength * (rows[:, None] ** 2 + cols[None, :] ** 2) / 2)[..., None]
    img = _sensor_noise(img, rng, shot=0.002 * strength, read=0.008 * strength)
    quality = int(95 - 65 * strength)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(_to_uint8(img), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
