"""Procedural driving scenes with per-pixel Cityscapes labels, instance ids and boxes (numpy + OpenCV only).

A scene is a straight street seen from a level camera: a road of 2-4 lanes converging to the horizon, raised
sidewalks, building facades with windows (or hedges) on both sides, a distant skyline, and road users and street
furniture standing on the ground, drawn far to near so near objects occlude far ones. Everything is deterministic
for a given ``numpy.random.Generator`` state.

>>> scene = render_scene(np.random.default_rng(0), height=256, width=512)
>>> scene.image.shape, scene.label_ids.shape, scene.instance_ids.dtype
((256, 512, 3), (256, 512), dtype('uint16'))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from vlt_perception.labels import CITYSCAPES_THING_CLASSES, CITYSCAPES_CLASSES, label_ids_to_train_ids
from vlt_training.synthetic import _objects as ob
from vlt_training.synthetic._canvas import DEPTH_FACADE, DEPTH_GROUND, Camera, Canvas
from vlt_training.synthetic._objects import BUILDING, ROAD, SIDEWALK, SKY, VEGETATION

# Cityscapes labelIds of the classes the generator draws, and their train ids.
DRAWN_LABEL_IDS = (ob.ROAD, ob.SIDEWALK, ob.BUILDING, ob.POLE, ob.TRAFFIC_SIGN, ob.VEGETATION, ob.SKY, ob.PERSON,
                   ob.CAR, ob.TRUCK, ob.BUS, ob.BICYCLE)
DRAWN_CLASSES = tuple(CITYSCAPES_CLASSES[int(t)] for t in label_ids_to_train_ids(np.array(DRAWN_LABEL_IDS)))

_FACADE_COLOURS = np.array([
    (200, 185, 155), (150, 80, 62), (215, 213, 205), (220, 200, 140), (120, 130, 150), (110, 110, 112),
    (170, 168, 160), (180, 140, 110), (90, 85, 80), (190, 200, 205),
], dtype=np.float32)
_SKIES = np.array([(115, 160, 215), (185, 192, 200), (165, 188, 212), (140, 170, 205)], dtype=np.float32)


@dataclass
class Scene:
    """One rendered scene.

    ``label_ids`` are Cityscapes labelIds (what ``*_gtFine_labelIds.png`` holds); ``instance_ids`` follow the
    Cityscapes convention (``labelId * 1000 + k`` on things, ``labelId`` elsewhere); ``depth`` is metres along the
    optical axis; ``objects`` lists the visible things with tight ``bbox`` [x1, y1, x2, y2) (x2, y2 exclusive,
    so the box is ``x2 - x1`` pixels wide), ``category_id`` (index into the thing classes), ``instance_id``,
    ``label_id`` and ``area`` (visible pixels).
    """

    image: np.ndarray  # H, W, 3 uint8 RGB
    label_ids: np.ndarray  # H, W uint8
    instance_ids: np.ndarray  # H, W uint16
    objects: list[dict] = field(default_factory=list)
    _depth_fn: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)
    _depth: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def train_ids(self) -> np.ndarray:
        """(H, W) uint8 train IDs, 255 for void (e.g. the ego vehicle)."""
        return label_ids_to_train_ids(self.label_ids)

    @property
    def depth(self) -> np.ndarray:
        """(H, W) float32 metres along the optical axis; computed on first use (only fog and snow need it)."""
        if self._depth is None:
            self._depth = self._depth_fn()
            self._depth_fn = None
        return self._depth


@dataclass(frozen=True)
class SceneConfig:
    """Densities of the scene content; the defaults give about a dozen visible things per image."""

    cars: float = 5.0  # mean number of moving cars (Poisson)
    parked_car_prob: float = 0.6  # chance of a row of parked cars along each curb
    trucks: float = 0.5
    buses: float = 0.5
    people: float = 5.0
    bicycles: float = 2.0
    tree_prob: float = 0.5  # chance of a row of street trees on each side
    ego_hood_prob: float = 0.3
    max_depth: float = 70.0  # objects are placed nearer than this (metres)


def render_scene(rng: np.random.Generator, height: int = 512, width: int = 1024,
                 config: SceneConfig = SceneConfig()) -> Scene:
    """Sample and render one scene at ``height`` x ``width``."""
    if height < 16 or width < 16:
        raise ValueError(f"image size {height}x{width} is too small (need at least 16x16)")
    cam = Camera(focal=width * rng.uniform(0.85, 1.05), cx=width * rng.uniform(0.45, 0.55),
                 horizon=height * rng.uniform(0.40, 0.47), height=rng.uniform(1.3, 1.7))
    cv = Canvas(height, width)
    street = _draw_street(cv, cam, rng)
    _draw_objects(cv, cam, rng, street, config)
    if rng.random() < config.ego_hood_prob:
        ob.ego_hood(cv, rng)
    illumination = _illumination(cv, cam, rng, street)
    tint = 1.0 + rng.uniform(-0.05, 0.05, 3)  # white balance of the source camera
    image = cv2.GaussianBlur(cv.shade(rng, illumination, tint), (3, 3), 0.6)  # mild lens blur
    labels = cv.label_map()
    instance_ids, objects = _instances(cv, labels, cv.object_map())
    return Scene(image=image, label_ids=labels, instance_ids=instance_ids, objects=objects,
                 _depth_fn=lambda: cv.depth_map(cam))


# --------------------------------------------------------------------------------------------------------------
# Street: sky, skyline, ground, facades.
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Street:
    road_left: float
    road_right: float
    lane_width: float
    lanes: int
    facade_left: float
    facade_right: float
    z_near: float
    z_far: float
    sun_side: float  # -1 sun from the left, +1 from the right
    buildings: list[tuple[float, float, float, float]]  # (side, z0, z1, height) of each facade segment


def _quad_ground(cam: Camera, x0: float, x1: float, z0: float, z1: float, y: float = 0.0) -> np.ndarray:
    pts = np.array([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]])
    return cam.project(pts)


def _draw_street(cv: Canvas, cam: Camera, rng: np.random.Generator) -> _Street:
    h, w = cv.height, cv.width
    sky = ob.jitter(rng, _SKIES[rng.integers(len(_SKIES))], 6)
    cv.set_background(SKY, sky, "sky")

    lanes = int(rng.choice([2, 3, 4], p=[0.4, 0.4, 0.2]))
    lane_w = rng.uniform(3.0, 3.6)
    ego_lane = int(rng.integers(lanes))
    road_left = -(ego_lane + 0.5) * lane_w + rng.uniform(-0.4, 0.4)
    road_right = road_left + lanes * lane_w
    side_l, side_r = rng.uniform(2.5, 5.5, 2)
    facade_l, facade_r = road_left - side_l, road_right + side_r
    z_near = cam.focal * cam.height / (2.0 * h)  # ground row 2H below the horizon: off-screen
    z_far = 600.0
    street = _Street(road_left, road_right, lane_w, lanes, facade_l, facade_r, z_near, z_far,
                     sun_side=1.0 if rng.random() < 0.5 else -1.0, buildings=[])

    _draw_skyline(cv, cam, rng)
    # Ground: sidewalks (raised 15 cm, curb faces included) and the road.
    curb = 0.15
    walk = ob.jitter(rng, [(150, 150, 148), (175, 165, 145), (150, 115, 105), (125, 125, 128)][rng.integers(4)], 8)
    p_walk = cv.add_part(SIDEWALK, walk, "paving", 0, depth_kind=DEPTH_GROUND)
    p_curb = cv.add_part(SIDEWALK, walk * 1.1 + 10, "paving", 0, depth_kind=DEPTH_GROUND)
    cv.polygons(p_walk, [_quad_ground(cam, facade_l - 30, road_left, z_near, z_far, curb),
                         _quad_ground(cam, road_right, facade_r + 30, z_near, z_far, curb)])
    road_grey = rng.uniform(75, 125)
    road = np.array([road_grey, road_grey, road_grey * rng.uniform(0.97, 1.06)]) + rng.uniform(-4, 4, 3)
    p_road = cv.add_part(ROAD, road, "asphalt", 0, depth_kind=DEPTH_GROUND)
    cv.polygons(p_road, [_quad_ground(cam, road_left, road_right, z_near, z_far)])
    curb_faces = [cam.project(np.array([[x, 0, z_near], [x, 0, z_far], [x, curb, z_far], [x, curb, z_near]]))
                  for x in (road_left, road_right)]
    cv.polygons(p_curb, curb_faces)
    _draw_ground_details(cv, cam, rng, street, walk, road, curb)
    _draw_facades(cv, cam, rng, street)
    return street


def _draw_skyline(cv: Canvas, cam: Camera, rng: np.random.Generator) -> None:
    """Distant blocks of buildings and trees along the horizon."""
    z = 400.0
    x = -700.0
    colour_b = ob.jitter(rng, (150, 150, 160), 10)
    colour_v = ob.jitter(rng, (80, 100, 60), 10)
    p_b = cv.add_part(BUILDING, colour_b, "facade", z)
    p_v = cv.add_part(VEGETATION, colour_v, "foliage", z)
    blocks_b, blocks_v = [], []
    while x < 700:
        width = rng.uniform(20, 70)
        top = rng.uniform(8, 45)
        poly = cam.project(np.array([[x, 0, z], [x + width, 0, z], [x + width, top, z], [x, top, z]]))
        (blocks_b if rng.random() < 0.65 else blocks_v).append(poly)
        x += width
    cv.polygons(p_b, blocks_b)
    cv.polygons(p_v, blocks_v)


def _draw_ground_details(cv: Canvas, cam: Camera, rng: np.random.Generator, st: _Street, walk, road,
                         curb: float) -> None:
    """Lane markings, a zebra crossing, asphalt patches and paving joints: texture, not labels."""
    paint = ob.jitter(rng, (215, 215, 210), 10) * rng.uniform(0.8, 1.0)
    p_paint = cv.add_part(ROAD, paint, "asphalt", 0, depth_kind=DEPTH_GROUND)
    dash, gap = rng.uniform(2.5, 4.0), rng.uniform(5.0, 8.0)
    marks = []
    for k in range(1, st.lanes):
        xm = st.road_left + k * st.lane_width
        z = st.z_near + rng.uniform(0, dash + gap)
        while z < 120:
            marks.append(_quad_ground(cam, xm - 0.08, xm + 0.08, z, z + dash))
            z += dash + gap
    for xm in (st.road_left + 0.3, st.road_right - 0.3):  # solid edge lines
        marks.append(_quad_ground(cam, xm - 0.07, xm + 0.07, st.z_near, st.z_far))
    if rng.random() < 0.3:
        z0 = rng.uniform(10, 25)
        x = st.road_left + 0.5
        while x < st.road_right - 0.5:
            marks.append(_quad_ground(cam, x, x + 0.5, z0, z0 + 3.0))
            x += 1.0
    cv.polygons(p_paint, marks)
    p_patch = cv.add_part(ROAD, np.asarray(road) * rng.uniform(0.75, 0.9), "asphalt", 0, depth_kind=DEPTH_GROUND)
    patches = []
    for _ in range(int(rng.integers(0, 4))):
        x0 = rng.uniform(st.road_left, st.road_right - 1)
        z0 = rng.uniform(5, 40)
        patches.append(_quad_ground(cam, x0, x0 + rng.uniform(0.8, 3), z0, z0 + rng.uniform(1, 6)))
    cv.polygons(p_patch, patches)
    p_joint = cv.add_part(SIDEWALK, np.asarray(walk) * 0.8, "paving", 0, depth_kind=DEPTH_GROUND)
    step = rng.uniform(1.2, 2.5)
    joints = []
    for x0, x1 in ((st.facade_left, st.road_left), (st.road_right, st.facade_right)):
        for z in np.arange(step, 45, step):
            joints.append(cam.project(np.array([[x0, curb, z], [x1, curb, z]])))
    cv.lines(p_joint, joints, thickness=1)


def _draw_facades(cv: Canvas, cam: Camera, rng: np.random.Generator, st: _Street) -> None:
    """Buildings (with windows, doors and side walls) and hedges along both sides, far to near."""
    segments = []
    for side in (-1.0, 1.0):
        urban = rng.random() < 0.8
        z = st.z_near
        while z < 260:
            length = rng.uniform(8, 25) if z < 80 else rng.uniform(25, 60)
            kind = "building" if rng.random() < (0.85 if urban else 0.2) else "hedge"
            setback = rng.uniform(0, 1.5)
            segments.append((side, z, z + length, kind, setback))
            z += length
    segments.sort(key=lambda s: -s[1])
    for side, z0, z1, kind, setback in segments:
        x = (st.facade_left - setback) if side < 0 else (st.facade_right + setback)
        if kind == "building":
            height = rng.uniform(7, 26)
            st.buildings.append((side, z0, z1, height))
            _building(cv, cam, rng, x, side, z0, z1, height, st.sun_side)
        else:
            _hedge(cv, cam, rng, x, z0, z1)


def _building(cv: Canvas, cam: Camera, rng: np.random.Generator, x: float, side: float, z0: float, z1: float,
              height: float, sun_side: float) -> None:
    lit = 1.0 if side == sun_side else rng.uniform(0.65, 0.8)  # facades facing away from the sun are darker
    colour = ob.jitter(rng, _FACADE_COLOURS[rng.integers(len(_FACADE_COLOURS))], 10) * lit
    p_wall = cv.add_part(BUILDING, colour, "facade", abs(x), depth_kind=DEPTH_FACADE)
    cv.polygons(p_wall, [cam.project(np.array([[x, 0, z0], [x, 0, z1], [x, height, z1], [x, height, z0]]))])
    deep = x + side * 12.0  # side walls, visible where a neighbour is set back
    p_side = cv.add_part(BUILDING, colour * 0.8, "facade", z0)
    cv.polygons(p_side, [cam.project(np.array([[x, 0, z0], [deep, 0, z0], [deep, height, z0], [x, height, z0]]))])
    if z0 > 90:
        return
    glass = ob.jitter(rng, [(45, 55, 70), (90, 110, 135), (30, 32, 38)][rng.integers(3)], 8) * lit
    p_glass = cv.add_part(BUILDING, glass, "glass", abs(x), depth_kind=DEPTH_FACADE)
    floor = rng.uniform(3.0, 3.6)
    pitch = rng.uniform(2.2, 3.5)
    win_w, win_h = pitch * rng.uniform(0.4, 0.65), floor * rng.uniform(0.4, 0.6)
    ground_floor = rng.uniform(3.0, 4.5)
    vs = np.arange(ground_floor + 0.6, height - win_h - 0.5, floor)
    zs = np.arange(z0 + pitch / 2, z1 - pitch / 2, pitch)
    v, zc = (a.ravel() for a in np.meshgrid(vs, zs, indexing="ij"))  # N window centres
    corners = np.stack([  # N, 4, 3 world corners of each window
        np.stack([np.full_like(v, x), v, zc - win_w / 2], -1), np.stack([np.full_like(v, x), v, zc + win_w / 2], -1),
        np.stack([np.full_like(v, x), v + win_h, zc + win_w / 2], -1),
        np.stack([np.full_like(v, x), v + win_h, zc - win_w / 2], -1)], axis=1)
    # Shop fronts / doors on the ground floor.
    zd = np.arange(z0 + 2.0, z1 - 1.5, rng.uniform(4, 8))
    top = ground_floor - 0.6
    doors = np.stack([np.stack([np.full_like(zd, x), np.full_like(zd, 0.1), zd], -1),
                      np.stack([np.full_like(zd, x), np.full_like(zd, 0.1), zd + 1.6], -1),
                      np.stack([np.full_like(zd, x), np.full_like(zd, top), zd + 1.6], -1),
                      np.stack([np.full_like(zd, x), np.full_like(zd, top), zd], -1)], axis=1)
    quads = np.concatenate([corners, doors]).reshape(-1, 3)
    windows = cam.project(quads).reshape(-1, 4, 2) if len(quads) else np.zeros((0, 4, 2))
    cv.polygons(p_glass, windows)


def _hedge(cv: Canvas, cam: Camera, rng: np.random.Generator, x: float, z0: float, z1: float) -> None:
    greens = [(55, 90, 40), (75, 105, 45), (95, 110, 55), (50, 75, 40)]
    p = cv.add_part(VEGETATION, ob.jitter(rng, greens[rng.integers(len(greens))], 10), "foliage", abs(x),
                    depth_kind=DEPTH_FACADE)
    zs = np.linspace(z0, z1, max(int((z1 - z0) / 1.5), 2))
    tops = np.clip(rng.uniform(3.0, 9.0) + np.cumsum(rng.normal(0, 0.6, len(zs))), 2.5, 14)
    top = np.stack([np.full(len(zs), x), tops, zs], axis=1)
    bottom = np.array([[x, 0, z1], [x, 0, z0]])
    cv.polygons(p, [cam.project(np.concatenate([top, bottom]))])


# --------------------------------------------------------------------------------------------------------------
# Road users and street furniture.
# --------------------------------------------------------------------------------------------------------------
def _draw_objects(cv: Canvas, cam: Camera, rng: np.random.Generator, st: _Street, cfg: SceneConfig) -> None:
    items: list[tuple[float, Callable[[], None]]] = []  # (depth, drawer)

    def add(z: float, fn: Callable, *args, **kw) -> None:
        items.append((z, lambda: fn(cv, cam, *args, rng, **kw)))

    lane_centres = [st.road_left + (k + 0.5) * st.lane_width for k in range(st.lanes)]
    occupied: list[tuple[float, float, float]] = []  # (x, z0, z1) footprints of vehicles

    def free(x: float, z: float, length: float) -> bool:
        return all(abs(x - ox) > 2.2 or z + length < oz0 or z > oz1 for ox, oz0, oz1 in occupied)

    def place_vehicles(count: int, length: float, fn: Callable, zmin: float, **kw) -> None:
        for _ in range(count):
            for _attempt in range(6):
                x = lane_centres[rng.integers(len(lane_centres))] + rng.uniform(-0.3, 0.3)
                z = _sample_depth(rng, zmin, cfg.max_depth)
                if abs(x) < 1.5 and z < 7:  # nothing inside the ego vehicle's own space
                    continue
                if free(x, z, length):
                    occupied.append((x, z, z + length))
                    add(z, fn, x, z, **kw)
                    break

    place_vehicles(rng.poisson(cfg.trucks), 8.0, ob.truck, 9.0)
    place_vehicles(rng.poisson(cfg.buses), 12.0, ob.bus, 9.0)
    place_vehicles(rng.poisson(cfg.cars), 4.5, ob.car, 5.0, front=False)
    if rng.random() < 0.3:  # a bus crossing far ahead
        z = rng.uniform(30, 60)
        add(z, ob.bus, rng.uniform(-4, 4), z, side=True)
    for side in (-1.0, 1.0):
        if rng.random() < cfg.parked_car_prob:
            x = (st.road_left + 1.1) if side < 0 else (st.road_right - 1.1)
            z = rng.uniform(4, 12)
            while z < cfg.max_depth:
                if rng.random() < 0.7 and free(x, z, 4.5):
                    occupied.append((x, z, z + 4.5))
                    add(z, ob.car, x, z, front=rng.random() < 0.3)
                z += rng.uniform(5.0, 9.0)

    def walk_x(side: float, margin: float = 0.4) -> float:
        lo, hi = (st.facade_left + margin, st.road_left - margin) if side < 0 else \
            (st.road_right + margin, st.facade_right - margin)
        return rng.uniform(lo, hi)

    for _ in range(rng.poisson(cfg.people)):
        z = _sample_depth(rng, 4.0, 45.0)
        if rng.random() < 0.15:  # crossing the road
            x = rng.uniform(st.road_left, st.road_right)
            if not free(x, z, 0.5):
                continue
        else:
            x = walk_x(-1.0 if rng.random() < 0.5 else 1.0)
        add(z, ob.person, x, z)
    for _ in range(rng.poisson(cfg.bicycles)):
        side = -1.0 if rng.random() < 0.5 else 1.0
        x = (st.road_left - 0.8) if side < 0 else (st.road_right + 0.8)
        z = _sample_depth(rng, 4.0, 35.0)
        add(z, ob.bicycle, x, z)
    for side in (-1.0, 1.0):  # poles along the curbs
        x = (st.road_left - 0.5) if side < 0 else (st.road_right + 0.5)
        z = rng.uniform(4, 15)
        street_lights = rng.random() < 0.5
        while z < 90:
            light = street_lights and rng.random() < 0.7
            add(z, ob.pole, x, z, sign=(rng.random() < (0.35 if light else 0.8)), street_light=light,
                arm_direction=-side)
            z += rng.uniform(12, 28)
        if rng.random() < cfg.tree_prob:  # a row of trees near the facades
            xt = (st.facade_left + 1.0) if side < 0 else (st.facade_right - 1.0)
            z = rng.uniform(5, 15)
            while z < 90:
                add(z, ob.tree, xt + rng.uniform(-0.3, 0.3), z)
                z += rng.uniform(9, 16)
    items.sort(key=lambda item: -item[0])  # far to near: painter's order gives occlusion
    for _, draw in items:
        draw()


def _sample_depth(rng: np.random.Generator, z_min: float, z_max: float) -> float:
    """Depths biased towards the camera (uniform in 1 / Z would put too much far away; this is in sqrt)."""
    return float(z_min + (z_max - z_min) * rng.random() ** 1.5)


# --------------------------------------------------------------------------------------------------------------
# Lighting, camera response, instances.
# --------------------------------------------------------------------------------------------------------------
def _illumination(cv: Canvas, cam: Camera, rng: np.random.Generator, st: _Street) -> np.ndarray:
    """(H, W) float32 light: global gain, building shadows across the street, soft vignetting."""
    h, w = cv.height, cv.width
    light = np.full((h, w), rng.uniform(0.8, 1.15), dtype=np.float32)
    shadow = rng.uniform(0.55, 0.75)
    polys = []
    for side, z0, z1, height in st.buildings:
        if side == st.sun_side or z0 > 120:
            continue  # only facades on the shaded side cast shadows onto the street
        x = st.facade_left if side < 0 else st.facade_right
        reach = min(height * rng.uniform(0.3, 0.8), st.road_right - st.road_left + 6)
        polys.append(_quad_ground(cam, x, x - side * reach, z0, z1))
    if polys:
        mask = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(mask, [np.round(np.clip(p, -1e5, 1e5) * 16).astype(np.int32) for p in polys], 1,
                     cv2.LINE_8, 4)
        # Shadows only fall on the ground part of the image (below the horizon).
        mask[: int(cam.horizon) + 1] = 0
        np.multiply(light, shadow, out=light, where=mask.view(bool))
    light *= _vignette(h, w)
    return light


@lru_cache(maxsize=8)
def _vignette(h: int, w: int) -> np.ndarray:
    """(H, W) float32 soft fall-off towards the corners (read-only, shared between scenes of one size)."""
    cols = (np.arange(w, dtype=np.float32) - w / 2) / (w / 2)
    rows = (np.arange(h, dtype=np.float32) - h / 2) / (h / 2)
    v = 1.0 - 0.12 * (rows[:, None] ** 2 + cols[None, :] ** 2) / 2  # H, W
    v.setflags(write=False)
    return v


def _instances(cv: Canvas, labels: np.ndarray, objects_map: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Cityscapes instanceIds image and the visible things with tight boxes from their masks."""
    h, w = labels.shape
    instance_ids = labels.astype(np.uint16)
    objects = []
    counters: dict[int, int] = {}
    for obj in range(1, len(cv.object_labels)):
        x0, y0, x1, y1 = cv.object_extents[obj]
        x0, y0 = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
        x1, y1 = min(int(np.ceil(x1)) + 2, w), min(int(np.ceil(y1)) + 2, h)
        if x0 >= x1 or y0 >= y1:
            continue
        mask = objects_map[y0:y1, x0:x1] == obj  # h', w'
        if not mask.any():
            continue  # fully occluded or off-screen
        label_id = cv.object_labels[obj]
        k = counters.get(label_id, 0) + 1
        counters[label_id] = k
        instance_id = label_id * 1000 + k
        instance_ids[y0:y1, x0:x1][mask] = instance_id
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        name = CITYSCAPES_CLASSES[int(label_ids_to_train_ids(np.array([label_id]))[0])]
        objects.append({
            "bbox": [x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1],
            "category_id": CITYSCAPES_THING_CLASSES.index(name),
            "instance_id": instance_id,
            "label_id": label_id,
            "area": int(mask.sum()),
        })
    return instance_ids, objects
