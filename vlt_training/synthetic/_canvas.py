"""Pinhole camera and the part canvas every scene is drawn on.

A scene is painted far-to-near into one ``uint16`` *part map*: each pixel holds the index of the last part
drawn over it, which gives occlusion for free (painter's algorithm). A part is a row of a small table
(label id, instance, colour, texture, depth). Labels, instance ids, colours and depth then come out of the part map
with vectorised table look-ups, so drawing costs one ``cv2.fillPoly`` per primitive whatever the resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Sub-pixel precision of the cv2 drawing calls: coordinates are passed multiplied by 2**_SHIFT.
_SHIFT = 4
_SCALE = 1 << _SHIFT

# Texture kinds: per-part amplitudes of the shared texture fields (fine noise, blotches, coarse patches,
# vertical gradient, horizontal streaks). Classes share kinds and colour ranges, so no single cue gives the label.
TEXTURES: dict[str, tuple[float, float, float, float, float]] = {
    "smooth": (0.05, 0.04, 0.00, 0.00, 0.00),
    "metal": (0.04, 0.03, 0.02, 0.00, 0.06),
    "asphalt": (0.22, 0.08, 0.14, 0.00, 0.00),
    "paving": (0.14, 0.14, 0.06, 0.00, 0.00),
    "facade": (0.08, 0.06, 0.14, 0.00, 0.10),
    "foliage": (0.55, 0.40, 0.12, 0.00, 0.00),
    "sky": (0.01, 0.00, 0.16, -0.45, 0.00),
    "cloth": (0.10, 0.16, 0.00, 0.00, 0.00),
    "glass": (0.05, 0.10, 0.06, 0.00, 0.00),
}
TEXTURE_INDEX = {name: i for i, name in enumerate(TEXTURES)}
_TEXTURE_AMPLITUDES = np.asarray(list(TEXTURES.values()), dtype=np.float32)  # T, K

# How a part's depth is computed: a constant, the ground plane (from the row) or a facade plane (from the column).
DEPTH_CONSTANT, DEPTH_GROUND, DEPTH_FACADE = 0, 1, 2
SKY_DEPTH = 1000.0


@dataclass(frozen=True)
class Camera:
    """Level pinhole camera ``height`` metres above a flat ground; X right, Y up, Z forward (metres)."""

    focal: float  # pixels
    cx: float  # principal point column
    horizon: float  # row of the horizon (principal point row)
    height: float  # metres above the ground

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) [X, Y, Z] -> image points (N, 2) [x, y] in pixels (Z must be > 0)."""
        z = points[:, 2]
        x = self.cx + self.focal * points[:, 0] / z
        y = self.horizon + self.focal * (self.height - points[:, 1]) / z
        return np.stack([x, y], axis=1)

    def scale(self, z: float) -> float:
        """Pixels per metre on a fronto-parallel plane at depth ``z``."""
        return self.focal / z


class Canvas:
    """Part map plus part table for one image; see the module docstring."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.part_map = np.zeros((height, width), dtype=np.uint16)  # H, W part index
        # Part table columns; part 0 is the sky-coloured background, overwritten by add_part for the real sky.
        self._label: list[int] = [0]
        self._object: list[int] = [0]
        self._colour: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
        self._texture: list[int] = [0]
        self._depth_kind: list[int] = [DEPTH_CONSTANT]
        self._depth_value: list[float] = [SKY_DEPTH]
        # Thing objects: label id per object (index 0 unused) and the pixel extent drawn so far.
        self.object_labels: list[int] = [0]
        self.object_extents: list[list[float]] = [[0.0, 0.0, 0.0, 0.0]]

    # -- table ---------------------------------------------------------------------------------------------
    def add_object(self, label_id: int) -> int:
        """Register a countable object (thing) and return its index (>= 1)."""
        self.object_labels.append(label_id)
        self.object_extents.append([np.inf, np.inf, -np.inf, -np.inf])
        return len(self.object_labels) - 1

    def add_part(self, label_id: int, colour, texture: str, depth: float, *, obj: int = 0,
                 depth_kind: int = DEPTH_CONSTANT) -> int:
        """Add a part (one colour and texture of one label) and return its index."""
        if len(self._label) >= np.iinfo(np.uint16).max:
            raise RuntimeError("too many parts in one scene")
        self._label.append(label_id)
        self._object.append(obj)
        self._colour.append(tuple(float(c) for c in np.clip(colour, 0, 255)))
        self._texture.append(TEXTURE_INDEX[texture])
        self._depth_kind.append(depth_kind)
        self._depth_value.append(float(depth))
        return len(self._label) - 1

    def set_background(self, label_id: int, colour, texture: str) -> None:
        """Make part 0 (every pixel not drawn over) a part of ``label_id``."""
        self._label[0], self._colour[0], self._texture[0] = label_id, tuple(colour), TEXTURE_INDEX[texture]

    # -- drawing -------------------------------------------------------------------------------------------
    def _grow(self, part: int, pts: np.ndarray, pad: float = 0.0) -> None:
        obj = self._object[part]
        if obj:
            ext = self.object_extents[obj]
            ext[0] = min(ext[0], float(pts[:, 0].min()) - pad)
            ext[1] = min(ext[1], float(pts[:, 1].min()) - pad)
            ext[2] = max(ext[2], float(pts[:, 0].max()) + pad)
            ext[3] = max(ext[3], float(pts[:, 1].max()) + pad)

    def polygons(self, part: int, polys: list[np.ndarray] | np.ndarray) -> None:
        """Fill image-space polygons (a list of (N, 2) float pixel arrays, or one (M, N, 2) array) with ``part``."""
        if len(polys) == 0:
            return
        if isinstance(polys, np.ndarray):
            batch = polys.astype(np.float64, copy=False)  # M, N, 2
        elif len({len(p) for p in polys}) == 1:
            batch = np.asarray(polys, dtype=np.float64)
        else:
            batch = None
        if batch is not None:
            if self._object[part]:
                self._grow(part, batch.reshape(-1, 2))
            # Clamp far-off coordinates so fixed-point values stay inside int32.
            fixed = list(np.round(np.clip(batch, -1e5, 1e5) * _SCALE).astype(np.int32))
        else:
            fixed = []
            for p in polys:
                p = np.asarray(p, dtype=np.float64)
                self._grow(part, p)
                fixed.append(np.round(np.clip(p, -1e5, 1e5) * _SCALE).astype(np.int32))
        cv2.fillPoly(self.part_map, fixed, (part,), cv2.LINE_8, _SHIFT)

    def circle(self, part: int, centre, radius: float) -> None:
        c = np.asarray(centre, dtype=np.float64)
        self._grow(part, c[None], pad=radius + 1)
        cv2.circle(self.part_map, tuple(int(round(v * _SCALE)) for v in c), max(int(round(radius * _SCALE)), 1),
                   (part,), -1, cv2.LINE_8, _SHIFT)

    def ellipse(self, part: int, centre, axes, angle: float = 0.0) -> None:
        c = np.asarray(centre, dtype=np.float64)
        self._grow(part, c[None], pad=max(axes) + 1)
        cv2.ellipse(self.part_map, tuple(int(round(v * _SCALE)) for v in c),
                    tuple(max(int(round(a * _SCALE)), 1) for a in axes), angle, 0, 360, (part,), -1,
                    cv2.LINE_8, _SHIFT)

    def lines(self, part: int, polylines: list[np.ndarray], thickness: float) -> None:
        """Draw open polylines ``thickness`` pixels wide (at least 1)."""
        if not polylines:
            return
        fixed = []
        for p in polylines:
            p = np.asarray(p, dtype=np.float64)
            self._grow(part, p, pad=thickness / 2 + 1)
            fixed.append(np.round(np.clip(p, -1e5, 1e5) * _SCALE).astype(np.int32))
        cv2.polylines(self.part_map, fixed, False, (part,), max(int(round(thickness)), 1), cv2.LINE_8, _SHIFT)

    # -- rasterisation -------------------------------------------------------------------------------------
    def label_map(self) -> np.ndarray:
        """(H, W) uint8 Cityscapes labelIds."""
        return np.asarray(self._label, dtype=np.uint8)[self.part_map]

    def object_map(self) -> np.ndarray:
        """(H, W) uint16 object index, 0 where no thing is visible."""
        return np.asarray(self._object, dtype=np.uint16)[self.part_map]

    def depth_map(self, camera: Camera) -> np.ndarray:
        """(H, W) float32 metres along the optical axis (SKY_DEPTH for the sky)."""
        kind = np.take(np.asarray(self._depth_kind, dtype=np.uint8), self.part_map)
        depth = np.take(np.asarray(self._depth_value, dtype=np.float32), self.part_map)
        ground_rows = np.flatnonzero((kind == DEPTH_GROUND).any(axis=1))
        if len(ground_rows):
            rows = ground_rows.astype(np.float32) + 0.5
            ground = camera.focal * camera.height / np.maximum(rows - camera.horizon, 0.5)  # R
            sub = depth[ground_rows]
            np.copyto(sub, np.broadcast_to(ground[:, None], sub.shape), where=kind[ground_rows] == DEPTH_GROUND)
            depth[ground_rows] = sub
        facade = kind == DEPTH_FACADE
        if facade.any():
            ys, xs = np.nonzero(facade)
            # depth value of a facade part is |X| of its plane: Z = f |X| / |x - cx|.
            depth[ys, xs] = camera.focal * depth[ys, xs] / np.maximum(np.abs(xs + 0.5 - camera.cx), 0.5)
        return np.minimum(depth, SKY_DEPTH, out=depth)

    def shade(self, rng: np.random.Generator, illumination: np.ndarray, tint=(1.0, 1.0, 1.0)) -> np.ndarray:
        """Colour image (H, W, 3) uint8: part colour x tint x (1 + texture) x illumination (H, W)."""
        h, w = self.height, self.width
        fields = _texture_fields(rng, h, w)  # K fields, each broadcastable to H, W
        tex_map = np.take(np.asarray(self._texture, dtype=np.uint8), self.part_map)  # H, W
        factor = np.ones((h, w), dtype=np.float32)
        for k, field in enumerate(fields):
            amp = _TEXTURE_AMPLITUDES[:, k]
            if amp.any():
                term = np.take(amp, tex_map)
                term *= field
                factor += term
        factor *= illumination
        colours = np.clip(np.asarray(self._colour, dtype=np.float32) * np.asarray(tint, np.float32), 0, 255)
        base = np.take(colours.round().astype(np.uint8), self.part_map, axis=0)  # H, W, 3
        # cv2.multiply saturates to 0..255 and is much faster than numpy broadcasting here.
        return cv2.multiply(base, cv2.merge([factor, factor, factor]), dtype=cv2.CV_8U)


def _texture_fields(rng: np.random.Generator, h: int, w: int) -> list[np.ndarray]:
    """Fine noise, blotches, coarse patches, vertical gradient and horizontal streaks, roughly zero-mean."""

    def upsampled(cell: int) -> np.ndarray:
        small = rng.random((max(h // cell, 2), max(w // cell, 2)), dtype=np.float32) - 0.5
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)

    fine = rng.random((h, w), dtype=np.float32)
    fine -= 0.5
    blotch = upsampled(max(h // 96, 2)) * 1.3
    coarse = upsampled(max(h // 12, 4)) * 1.6
    gradient = np.arange(h, dtype=np.float32)[:, None] / h - 0.5  # H, 1
    streaks = rng.random((h, 1), dtype=np.float32) - 0.5  # H, 1
    return [fine, blotch, coarse, gradient, streaks]
