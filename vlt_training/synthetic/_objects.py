"""Street furniture and road users, drawn as fronto-parallel billboards standing on the ground.

Every drawer takes the canvas, the camera, the ground position (X, Z) of the object's base centre, the random
generator and returns nothing; thing drawers register an object so instance ids and boxes follow their pixels.
Sizes are in metres and scale with 1 / Z, so far objects are small and near ones large.
"""

from __future__ import annotations

import numpy as np

from vlt_training.synthetic._canvas import Camera, Canvas

# Cityscapes labelIds used by the generator.
EGO_VEHICLE, ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN, VEGETATION, SKY = 1, 7, 8, 11, 17, 20, 21, 23
PERSON, CAR, TRUCK, BUS, BICYCLE = 24, 26, 27, 28, 33

CAR_COLOURS = np.array([
    (225, 225, 222), (185, 187, 190), (125, 127, 130), (40, 40, 45), (165, 30, 30), (35, 55, 140),
    (40, 75, 50), (200, 185, 150), (90, 90, 100), (20, 20, 25), (120, 25, 35), (70, 100, 160),
], dtype=np.float32)
CLOTHES = np.array([
    (30, 30, 35), (60, 60, 70), (150, 150, 150), (40, 50, 110), (140, 30, 30), (60, 90, 50), (200, 190, 160),
    (230, 230, 230), (90, 60, 40), (180, 120, 40), (100, 40, 110), (50, 110, 140),
], dtype=np.float32)
SKIN = np.array([(230, 190, 160), (200, 150, 110), (150, 100, 70), (100, 70, 50)], dtype=np.float32)


def jitter(rng: np.random.Generator, colour, amount: float = 12.0) -> np.ndarray:
    """A colour with per-channel noise and a random brightness, so every instance differs a little."""
    return np.asarray(colour, dtype=np.float32) * rng.uniform(0.85, 1.1) + rng.uniform(-amount, amount, 3)


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Axis-aligned rectangle (4, 2) in a billboard's local metres (x right, y up)."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


class Billboard:
    """Maps local metres (u right, v up, origin at the base centre) to pixels at depth ``z``."""

    def __init__(self, camera: Camera, x: float, z: float, lift: float = 0.0) -> None:
        self.z = z
        self.s = camera.scale(z)  # pixels per metre
        base = camera.project(np.array([[x, lift, z]]))[0]
        self.bx, self.by = float(base[0]), float(base[1])

    def pts(self, local: np.ndarray) -> np.ndarray:
        local = np.asarray(local, dtype=np.float64)
        return np.stack([self.bx + local[:, 0] * self.s, self.by - local[:, 1] * self.s], axis=1)

    def pt(self, u: float, v: float) -> tuple[float, float]:
        return self.bx + u * self.s, self.by - v * self.s


def car(cv: Canvas, cam: Camera, x: float, z: float, rng: np.random.Generator, front: bool = False) -> None:
    """A car seen from behind (or from the front when ``front``)."""
    b = Billboard(cam, x, z)
    obj = cv.add_object(CAR)
    w, h = rng.uniform(1.7, 1.95), rng.uniform(1.35, 1.65)
    body = jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))])
    p_body = cv.add_part(CAR, body, "metal", z, obj=obj)
    p_dark = cv.add_part(CAR, jitter(rng, (28, 28, 32), 6), "smooth", z, obj=obj)
    p_glass = cv.add_part(CAR, jitter(rng, (55, 65, 80), 10), "glass", z, obj=obj)
    p_light = cv.add_part(CAR, (235, 235, 210) if front else (200, 30, 25), "smooth", z, obj=obj)
    p_plate = cv.add_part(CAR, (215, 215, 205), "smooth", z, obj=obj)
    half = w / 2
    # Wheels, lower body, tapered cabin with the window.
    cv.polygons(p_dark, [b.pts(_box(-half + 0.05, 0, -half + 0.4, 0.35)), b.pts(_box(half - 0.4, 0, half - 0.05, 0.35))])
    cv.polygons(p_body, [b.pts(_box(-half, 0.18, half, 0.58 * h))])
    cabin = np.array([[-half, 0.58 * h], [half, 0.58 * h], [half * 0.78, h], [-half * 0.78, h]])
    cv.polygons(p_body, [b.pts(cabin)])
    win = np.array([[-half * 0.85, 0.62 * h], [half * 0.85, 0.62 * h], [half * 0.72, 0.95 * h], [-half * 0.72, 0.95 * h]])
    cv.polygons(p_glass, [b.pts(win)])
    cv.polygons(p_light, [b.pts(_box(-half + 0.05, 0.4 * h, -half + 0.35, 0.52 * h)),
                          b.pts(_box(half - 0.35, 0.4 * h, half - 0.05, 0.52 * h))])
    cv.polygons(p_plate if not front else p_dark, [b.pts(_box(-0.26, 0.22, 0.26, 0.34))])


def truck(cv: Canvas, cam: Camera, x: float, z: float, rng: np.random.Generator) -> None:
    """A box truck seen from behind: tall uniform box with a door seam over dark wheels."""
    b = Billboard(cam, x, z)
    obj = cv.add_object(TRUCK)
    w, h = rng.uniform(2.3, 2.55), rng.uniform(3.2, 3.9)
    colours = [(230, 230, 228), (200, 200, 195), (60, 90, 150), (170, 40, 30), (230, 200, 60), (110, 110, 110)]
    p_box = cv.add_part(TRUCK, jitter(rng, colours[rng.integers(len(colours))]), "metal", z, obj=obj)
    p_dark = cv.add_part(TRUCK, jitter(rng, (30, 30, 32), 6), "smooth", z, obj=obj)
    p_light = cv.add_part(TRUCK, (200, 40, 30), "smooth", z, obj=obj)
    half = w / 2
    cv.polygons(p_dark, [b.pts(_box(-half + 0.1, 0, half - 0.1, 0.75))])
    cv.polygons(p_box, [b.pts(_box(-half, 0.7, half, h))])
    cv.polygons(p_dark, [b.pts(_box(-0.03, 0.75, 0.03, h - 0.1)), b.pts(_box(-half, 0.6, half, 0.72))])
    cv.polygons(p_light, [b.pts(_box(-half + 0.05, 0.75, -half + 0.3, 0.95)),
                          b.pts(_box(half - 0.3, 0.75, half - 0.05, 0.95))])


def bus(cv: Canvas, cam: Camera, x: float, z: float, rng: np.random.Generator, side: bool = False) -> None:
    """A bus: rear view (big dark window over a coloured body) or a long side view with a window band."""
    b = Billboard(cam, x, z)
    obj = cv.add_object(BUS)
    colours = [(200, 40, 35), (235, 190, 40), (40, 80, 160), (225, 225, 220), (60, 140, 80)]
    p_body = cv.add_part(BUS, jitter(rng, colours[rng.integers(len(colours))]), "metal", z, obj=obj)
    p_glass = cv.add_part(BUS, jitter(rng, (40, 50, 65), 8), "glass", z, obj=obj)
    p_dark = cv.add_part(BUS, jitter(rng, (25, 25, 28), 5), "smooth", z, obj=obj)
    h = rng.uniform(3.0, 3.3)
    if side:
        length = rng.uniform(10.0, 12.0)
        half = length / 2
        cv.polygons(p_body, [b.pts(_box(-half, 0.3, half, h))])
        n = int(length // 1.6)
        xs = np.linspace(-half + 0.5, half - 0.5, n + 1)
        cv.polygons(p_glass, [b.pts(_box(a + 0.1, 1.4, c - 0.1, h - 0.35)) for a, c in zip(xs[:-1], xs[1:])])
        cv.polygons(p_glass, [b.pts(_box(-half + 2.0, 0.35, -half + 3.1, h - 0.35))])  # door
        for u in (-half + 2.5, half - 2.5):
            cv.circle(p_dark, b.pt(u, 0.5), 0.5 * b.s)
    else:
        w = rng.uniform(2.4, 2.55)
        half = w / 2
        cv.polygons(p_dark, [b.pts(_box(-half + 0.1, 0, half - 0.1, 0.4))])
        cv.polygons(p_body, [b.pts(_box(-half, 0.3, half, h))])
        cv.polygons(p_glass, [b.pts(_box(-half + 0.15, 1.7, half - 0.15, h - 0.25))])
        cv.polygons(p_dark, [b.pts(_box(-half + 0.4, h - 0.22, half - 0.4, h - 0.05))])


def person(cv: Canvas, cam: Camera, x: float, z: float, rng: np.random.Generator) -> None:
    """A pedestrian: legs (standing or mid-stride), torso, arms, head."""
    b = Billboard(cam, x, z)
    obj = cv.add_object(PERSON)
    h = rng.uniform(1.55, 1.9)
    p_skin = cv.add_part(PERSON, jitter(rng, SKIN[rng.integers(len(SKIN))], 8), "smooth", z, obj=obj)
    p_top = cv.add_part(PERSON, jitter(rng, CLOTHES[rng.integers(len(CLOTHES))]), "cloth", z, obj=obj)
    p_legs = cv.add_part(PERSON, jitter(rng, CLOTHES[rng.integers(len(CLOTHES))]), "cloth", z, obj=obj)
    p_hair = cv.add_part(PERSON, jitter(rng, (40, 30, 25), 15), "cloth", z, obj=obj)
    stride = rng.uniform(0.0, 0.22)
    hip = 0.5 * h
    legs = [np.array([[-0.14 - stride, 0], [0.0 - stride, 0], [0.08, hip], [-0.12, hip]]),
            np.array([[0.0 + stride, 0], [0.14 + stride, 0], [0.12, hip], [-0.08, hip]])]
    cv.polygons(p_legs, [b.pts(leg) for leg in legs])
    width = rng.uniform(0.36, 0.48)
    torso = np.array([[-width / 2 + 0.03, hip - 0.04], [width / 2 - 0.03, hip - 0.04],
                      [width / 2, 0.82 * h], [-width / 2, 0.82 * h]])
    cv.polygons(p_top, [b.pts(torso)])
    swing = rng.uniform(-0.12, 0.12)
    arms = [np.array([[-width / 2 - 0.1 + swing, hip + 0.02], [-width / 2 + 0.02 + swing, hip + 0.02],
                      [-width / 2 + 0.05, 0.8 * h], [-width / 2 - 0.05, 0.8 * h]]),
            np.array([[width / 2 - 0.02 - swing, hip + 0.02], [width / 2 + 0.1 - swing, hip + 0.02],
                      [width / 2 + 0.05, 0.8 * h], [width / 2 - 0.05, 0.8 * h]])]
    cv.polygons(p_top, [b.pts(arm) for arm in arms])
    cv.polygons(p_skin, [b.pts(_box(-0.05, 0.8 * h, 0.05, 0.86 * h))])
    r = 0.075 * h
    cv.ellipse(p_skin, b.pt(0, h - r), (r * 0.85 * b.s, r * b.s))
    cv.ellipse(p_hair, b.pt(0, h - 0.6 * r), (r * 0.9 * b.s, r * 0.5 * b.s))


def bicycle(cv: Canvas, cam: Camera, x: float, z: float, rng: np.random.Generator) -> None:
    """A parked bicycle seen from the side: two filled wheels (tyre + spokes) and a thick frame."""
    b = Billboard(cam, x, z)
    obj = cv.add_object(BICYCLE)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    r = rng.uniform(0.33, 0.36)
    frames = [(20, 20, 22), (180, 30, 30), (30, 60, 150), (200, 200, 200), (40, 120, 60), (230, 190, 40)]
    p_tyre = cv.add_part(BICYCLE, jitter(rng, (25, 25, 25), 5), "smooth", z, obj=obj)
    p_spoke = cv.add_part(BICYCLE, jitter(rng, (150, 150, 155), 10), "metal", z, obj=obj)
    p_frame = cv.add_part(BICYCLE, jitter(rng, frames[rng.integers(len(frames))]), "metal", z, obj=obj)
    rear, front = -0.55 * flip, 0.55 * flip
    for u in (rear, front):
        cv.circle(p_tyre, b.pt(u, r), r * b.s)
        cv.circle(p_spoke, b.pt(u, r), r * 0.8 * b.s)
    seat, bar = (-0.15 * flip, 0.92), (0.42 * flip, 1.0)
    crank = (0.0, r)
    frame = [[(rear, r), seat, crank, (rear, r)], [crank, bar, (front, r)], [seat, (0.36 * flip, 0.85)]]
    mapped = [b.pts(np.array(poly)) for poly in frame]
    cv.lines(p_frame, mapped, thickness=max(0.07 * b.s, 1.5))
    cv.polygons(p_tyre, [b.pts(_box(-0.25 * flip - 0.12, 0.92, -0.25 * flip + 0.12, 0.98))])
    cv.lines(p_tyre, [b.pts(np.array([[0.32 * flip, 1.02], [0.55 * flip, 1.02]]))], thickness=max(0.05 * b.s, 1.5))


def pole(cv: Canvas, cam: Camera, x: float, z: float, rng: np.random.Generator, *, sign: bool,
         street_light: bool, arm_direction: float) -> None:
    """A pole, optionally carrying a traffic sign facing the camera or a street-light arm over the road."""
    b = Billboard(cam, x, z)
    grey = rng.uniform(95, 175)
    colour = (grey, grey, grey * rng.uniform(0.95, 1.05)) if rng.random() < 0.8 else (40, 60, 45)
    p_pole = cv.add_part(POLE, jitter(rng, colour, 6), "metal", z)
    height = rng.uniform(6.5, 9.0) if street_light else rng.uniform(3.0, 4.5)
    w = rng.uniform(0.16, 0.26) if street_light else rng.uniform(0.1, 0.16)
    cv.polygons(p_pole, [b.pts(_box(-w / 2, 0, w / 2, height))])
    if street_light:
        arm = 1.6 * arm_direction
        cv.polygons(p_pole, [b.pts(np.array([[0, height - 0.12], [arm, height + 0.15], [arm, height + 0.3],
                                             [0, height + 0.05]]))])
        cv.polygons(p_pole, [b.pts(_box(arm - 0.15 if arm > 0 else arm - 0.45, height - 0.05,
                                        arm + 0.45 if arm > 0 else arm + 0.15, height + 0.2))])
    if sign:
        _traffic_sign(cv, b, rng, height - rng.uniform(0.3, 0.9) if not street_light else rng.uniform(2.4, 3.0))


def _traffic_sign(cv: Canvas, b: Billboard, rng: np.random.Generator, centre_v: float) -> None:
    z = b.z
    size = rng.uniform(0.7, 0.95)
    kind = rng.integers(4)
    if kind == 0:  # prohibitory: red ring, white face
        ring = cv.add_part(TRAFFIC_SIGN, jitter(rng, (200, 30, 30), 10), "smooth", z)
        face = cv.add_part(TRAFFIC_SIGN, jitter(rng, (235, 235, 235), 8), "smooth", z)
        cv.circle(ring, b.pt(0, centre_v), size / 2 * b.s)
        cv.circle(face, b.pt(0, centre_v), size * 0.36 * b.s)
    elif kind == 1:  # mandatory: blue disc with a white arrow bar
        disc = cv.add_part(TRAFFIC_SIGN, jitter(rng, (30, 70, 170), 10), "smooth", z)
        mark = cv.add_part(TRAFFIC_SIGN, jitter(rng, (235, 235, 235), 8), "smooth", z)
        cv.circle(disc, b.pt(0, centre_v), size / 2 * b.s)
        cv.polygons(mark, [b.pts(_box(-0.06, centre_v - size * 0.3, 0.06, centre_v + size * 0.3))])
    elif kind == 2:  # warning: white triangle with a red border
        border = cv.add_part(TRAFFIC_SIGN, jitter(rng, (200, 30, 30), 10), "smooth", z)
        face = cv.add_part(TRAFFIC_SIGN, jitter(rng, (235, 230, 220), 8), "smooth", z)
        tri = np.array([[-size / 2, centre_v - size * 0.4], [size / 2, centre_v - size * 0.4], [0, centre_v + size * 0.5]])
        inner = np.array([[-size * 0.32, centre_v - size * 0.3], [size * 0.32, centre_v - size * 0.3],
                          [0, centre_v + size * 0.3]])
        cv.polygons(border, [b.pts(tri)])
        cv.polygons(face, [b.pts(inner)])
    else:  # information: blue / green / yellow rectangle
        colour = [(30, 70, 170), (30, 120, 60), (230, 190, 30)][rng.integers(3)]
        panel = cv.add_part(TRAFFIC_SIGN, jitter(rng, colour, 10), "smooth", z)
        cv.polygons(panel, [b.pts(_box(-size * 0.55, centre_v - size * 0.4, size * 0.55, centre_v + size * 0.4))])


def tree(cv: Canvas, cam: Camera, x: float, z: float, rng: np.random.Generator) -> None:
    """A street tree: trunk and a canopy of overlapping discs (all vegetation, as in Cityscapes)."""
    b = Billboard(cam, x, z)
    p_trunk = cv.add_part(VEGETATION, jitter(rng, (80, 62, 45), 10), "cloth", z)
    greens = [(60, 100, 40), (45, 85, 35), (90, 120, 50), (70, 90, 45), (110, 115, 55)]
    p_leaf = cv.add_part(VEGETATION, jitter(rng, greens[rng.integers(len(greens))], 10), "foliage", z)
    trunk_h = rng.uniform(2.2, 3.2)
    tw = rng.uniform(0.25, 0.4)
    cv.polygons(p_trunk, [b.pts(_box(-tw / 2, 0, tw / 2, trunk_h + 0.5))])
    radius = rng.uniform(1.5, 2.6)
    cy = trunk_h + radius * 0.9
    for _ in range(int(rng.integers(4, 8))):
        du, dv = rng.normal(0, radius * 0.45, 2)
        cv.circle(p_leaf, b.pt(du, cy + dv), radius * rng.uniform(0.55, 0.85) * b.s)


def ego_hood(cv: Canvas, rng: np.random.Generator) -> None:
    """The ego vehicle's bonnet across the bottom rows (labelId 1 -> ignored in train IDs)."""
    h, w = cv.height, cv.width
    part = cv.add_part(EGO_VEHICLE, jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))] * 0.6), "metal", 1.0)
    top = h * rng.uniform(0.88, 0.94)
    xs = np.linspace(-0.05 * w, 1.05 * w, 24)
    ys = top + (h - top) * 0.6 * ((xs - w / 2) / (0.55 * w)) ** 2
    poly = np.concatenate([np.stack([xs, ys], 1), [[1.05 * w, h + 2], [-0.05 * w, h + 2]]])
    cv.polygons(part, [poly])
