"""Procedural street of one snippet: road cross-section, lots, furniture, vehicles, people, light.

Everything is drawn from one `numpy.random.Generator` seeded by (seed, split, snippet index), so a
snippet is the same in any process and in any order of rendering.

Objects are rigid groups of parts (boxes or ellipsoids) in an object frame: a = along the road,
b = to its right, z = up. An object has a road position (s, l) and a speed along s; parts are
placed in the world per frame from it (`Scene.parts_at`). Static structure is the same mechanism
with speed 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from cityscapesscripts.helpers.labels import name2label

from semdepth.data.synthcity.camera import Trajectory
from semdepth.data.synthcity.road import Road
from semdepth.data.synthcity.style import Style

L = {name: name2label[name].id for name in (
    "unlabeled", "ego vehicle", "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "car", "truck", "bus")}

BOX, ELLIPSOID = 0, 1

# Materials (shading.py implements each). Ground materials are < 10.
M_ROAD, M_SIDEWALK, M_KERB, M_TERRAIN = 0, 1, 2, 3
(M_FACADE, M_FENCE, M_WALL, M_POLE, M_TLIGHT, M_SIGN, M_TRUNK, M_LEAVES, M_CAR, M_CABIN, M_WHEEL, M_CARGO,
 M_BUS, M_CLOTH, M_SKIN) = range(10, 25)

VIEW_AHEAD = 320.0  # metres of street generated ahead of the annotated camera position
FURNITURE_AHEAD = 190.0  # small objects only this far (they are sub-pixel beyond)
BEHIND = 40.0


@dataclass
class Parts:
    """Structure of arrays, one row per part (filled through `SceneBuilder`)."""

    obj: np.ndarray  # int32 object index
    kind: np.ndarray  # BOX / ELLIPSOID
    off: np.ndarray  # [N,3] centre in the object frame (a, b, z)
    half: np.ndarray  # [N,3] half extents / radii along (a, b, z)
    label: np.ndarray  # uint8 Cityscapes label id
    mat: np.ndarray  # int16 material
    color: np.ndarray  # [N,3] float32 base albedo
    prm: np.ndarray  # [N,4] float32 material parameters
    seed: np.ndarray  # int64 texture seed


@dataclass
class Objects:
    s: np.ndarray  # float64 road position at t = 0
    l: np.ndarray
    v: np.ndarray  # speed along +s (negative: driving towards -s)
    rev: np.ndarray  # bool: object frame turned by 180 degrees (faces -s)
    moving: np.ndarray  # bool: independently moving (goes into the moving mask)
    role: list[str]


@dataclass
class Scene:
    split: str
    index: int
    city: str
    sequence: int
    road: Road
    lane: float  # lane width
    parking: bool
    road_half: float  # kerb at |l| = road_half
    lawn: float  # terrain strip width between kerb and sidewalk (0 = none)
    sidewalk: float  # sidewalk width (after the lawn)
    kerb: float  # kerb height
    zones: dict[int, tuple[np.ndarray, np.ndarray]]  # side (+1/-1) -> (s boundaries, ground material) beyond the sidewalk
    crosswalk: float | None
    traj: Trajectory
    lead_car: bool
    sun: np.ndarray  # unit vector towards the sun (world)
    sun_color: np.ndarray
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    ambient: float
    exposure: float
    white_balance: np.ndarray
    fog: float  # metres (extinction distance)
    road_color: np.ndarray
    sidewalk_color: np.ndarray
    grass_color: np.ndarray
    hood_color: np.ndarray
    tex_seed: int
    noise_seed: int
    objects: Objects
    parts: Parts
    meta: dict = field(default_factory=dict)

    def parts_at(self, t: float) -> dict[str, np.ndarray]:
        """World placement of every part at time t: centre [N,3], frame angle phi [N] (a-axis =
        (sin phi, cos phi)), plus the object's road position s (for culling)."""
        o, p = self.objects, self.parts
        s_obj = o.s + o.v * t
        x, y = self.road.to_world(s_obj, o.l)
        phi_obj = s_obj * self.road.curvature + np.where(o.rev, math.pi, 0.0)
        phi = phi_obj[p.obj]
        sa, ca = np.sin(phi), np.cos(phi)
        a, b, z = p.off[:, 0], p.off[:, 1], p.off[:, 2]
        cx = x[p.obj] + a * sa + b * ca
        cy = y[p.obj] + a * ca - b * sa
        return {"center": np.stack([cx, cy, z], axis=1), "phi": phi, "s": s_obj[p.obj]}


class SceneBuilder:
    def __init__(self) -> None:
        self.objs: dict[str, list] = {k: [] for k in ("s", "l", "v", "rev", "moving", "role")}
        self.parts: dict[str, list] = {k: [] for k in ("obj", "kind", "off", "half", "label", "mat", "color",
                                                       "prm", "seed")}

    def obj(self, role: str, s: float, l: float, v: float = 0.0, rev: bool = False, moving: bool = False) -> int:
        for k, val in zip(("s", "l", "v", "rev", "moving", "role"), (s, l, v, rev, moving, role)):
            self.objs[k].append(val)
        return len(self.objs["s"]) - 1

    def part(self, obj: int, kind: int, off, half, label: str, mat: int, color, prm=(0, 0, 0, 0),
             seed: int = 0) -> None:
        for k, val in zip(self.parts, (obj, kind, off, half, L[label], mat, color, prm, seed)):
            self.parts[k].append(val)

    def box(self, obj: int, a: float, b: float, z0: float, ha: float, hb: float, height: float, label: str,
            mat: int, color, prm=(0, 0, 0, 0), seed: int = 0) -> None:
        """Box with centre (a, b) in the object frame standing on z0."""
        self.part(obj, BOX, (a, b, z0 + height / 2), (ha, hb, height / 2), label, mat, color, prm, seed)

    def build(self) -> tuple[Objects, Parts]:
        o, p = self.objs, self.parts
        objects = Objects(np.array(o["s"], np.float64), np.array(o["l"], np.float64), np.array(o["v"], np.float64),
                          np.array(o["rev"], bool), np.array(o["moving"], bool), list(o["role"]))
        parts = Parts(np.array(p["obj"], np.int32), np.array(p["kind"], np.int8),
                      np.array(p["off"], np.float64).reshape(-1, 3), np.array(p["half"], np.float64).reshape(-1, 3),
                      np.array(p["label"], np.uint8), np.array(p["mat"], np.int16),
                      np.array(p["color"], np.float32).reshape(-1, 3), np.array(p["prm"], np.float32).reshape(-1, 4),
                      np.array(p["seed"], np.int64))
        return objects, parts


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _jitter(rng: np.random.Generator, rgb, amount: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(rgb) * (1.0 + rng.uniform(-amount, amount, 3)), 0.02, 0.95)


# ----------------------------------------------------------------------------------------------
# Object models
# ----------------------------------------------------------------------------------------------
def add_car(b: SceneBuilder, rng: np.random.Generator, style: Style, role: str, s: float, l: float, v: float,
            rev: bool, moving: bool) -> int:
    o = b.obj(role, s, l, v, rev, moving)
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.9)
    paint = _jitter(rng, _pick(rng, style.cars), 0.1)
    seed = int(rng.integers(1 << 30))
    ha, hb = length / 2, width / 2
    b.box(o, 0.0, 0.0, 0.28, ha, hb, rng.uniform(0.65, 0.8), "car", M_CAR, paint, (length, width, 0, 0), seed)
    cab_len = length * rng.uniform(0.45, 0.55)
    cab_off = rng.uniform(-0.3, 0.0) * length * 0.2
    top = 0.28 + 0.72
    b.box(o, cab_off, 0.0, top - 0.05, cab_len / 2, hb - 0.08, rng.uniform(0.45, 0.6), "car", M_CABIN, paint,
          (cab_len, width, 0, 0), seed)
    for axle in (-1, 1):  # one box per axle: the wheels seen from both sides
        b.part(o, BOX, (axle * (ha - 0.85), 0.0, 0.32), (0.32, hb + 0.02, 0.32), "car", M_WHEEL, (0.04, 0.04, 0.04),
               (0, 0, 0, 0), seed)
    return o


def add_truck(b: SceneBuilder, rng: np.random.Generator, role: str, s: float, l: float, v: float, rev: bool,
              moving: bool) -> int:
    o = b.obj(role, s, l, v, rev, moving)
    cargo_len, width = rng.uniform(5.0, 8.0), 2.45
    cab_len = 2.2
    seed = int(rng.integers(1 << 30))
    cab = _jitter(rng, ((0.75, 0.75, 0.75), (0.6, 0.1, 0.08), (0.1, 0.2, 0.5), (0.9, 0.9, 0.9))[int(rng.integers(4))])
    cargo = _jitter(rng, ((0.82, 0.82, 0.80), (0.5, 0.5, 0.52), (0.7, 0.6, 0.3))[int(rng.integers(3))])
    total = cab_len + cargo_len
    front = total / 2
    b.box(o, front - cab_len / 2, 0.0, 0.5, cab_len / 2, width / 2 - 0.05, 2.5, "truck", M_CABIN, cab,
          (cab_len, width, 1, 0), seed)
    b.box(o, front - cab_len - cargo_len / 2 - 0.1, 0.0, 0.9, cargo_len / 2, width / 2, rng.uniform(2.4, 3.0),
          "truck", M_CARGO, cargo, (cargo_len, width, 0, 0), seed)
    for a in (front - 1.2, front - cab_len - cargo_len + 1.2, front - cab_len - cargo_len + 2.4):
        b.part(o, BOX, (a, 0.0, 0.48), (0.48, width / 2 + 0.02, 0.48), "truck", M_WHEEL, (0.04, 0.04, 0.04),
               (0, 0, 0, 0), seed)
    return o


def add_bus(b: SceneBuilder, rng: np.random.Generator, role: str, s: float, l: float, v: float, rev: bool,
            moving: bool) -> int:
    o = b.obj(role, s, l, v, rev, moving)
    length, width = rng.uniform(10.0, 12.0), 2.5
    seed = int(rng.integers(1 << 30))
    paint = _jitter(rng, ((0.85, 0.80, 0.20), (0.75, 0.15, 0.12), (0.15, 0.35, 0.65), (0.9, 0.9, 0.9))[int(rng.integers(4))])
    b.box(o, 0.0, 0.0, 0.35, length / 2, width / 2, 2.7, "bus", M_BUS, paint, (length, width, 0, 0), seed)
    for a in (length / 2 - 2.5, -length / 2 + 2.8):
        b.part(o, BOX, (a, 0.0, 0.5), (0.5, width / 2 + 0.02, 0.5), "bus", M_WHEEL, (0.04, 0.04, 0.04), (0, 0, 0, 0), seed)
    return o


def add_person(b: SceneBuilder, rng: np.random.Generator, s: float, l: float, z0: float, v: float,
               moving: bool) -> int:
    o = b.obj("person", s, l, v, v < 0, moving)
    h = rng.uniform(1.55, 1.9)
    seed = int(rng.integers(1 << 30))
    trousers = _jitter(rng, ((0.1, 0.1, 0.15), (0.25, 0.25, 0.3), (0.35, 0.3, 0.25), (0.1, 0.15, 0.3)
                             )[int(rng.integers(4))], 0.2)
    shirt = np.clip(rng.uniform(0.05, 0.8, 3), 0.03, 0.9)
    skin = _jitter(rng, ((0.75, 0.55, 0.45), (0.55, 0.38, 0.28), (0.35, 0.24, 0.18))[int(rng.integers(3))], 0.1)
    leg_h = 0.47 * h
    b.box(o, 0.0, 0.0, z0, 0.13, 0.17, leg_h, "person", M_CLOTH, trousers, (1, 0, 0, 0), seed)
    torso_h = 0.33 * h
    b.box(o, 0.0, 0.0, z0 + leg_h, 0.14, 0.23, torso_h, "person", M_CLOTH, shirt, (0, 0, 0, 0), seed + 1)
    r = 0.1 * h / 1.75
    b.part(o, ELLIPSOID, (0.0, 0.0, z0 + leg_h + torso_h + r * 1.1), (r, r * 0.9, r * 1.2), "person", M_SKIN, skin,
           (0, 0, 0, 0), seed)
    return o


def add_tree(b: SceneBuilder, rng: np.random.Generator, style: Style, s: float, l: float, z0: float,
             density: float, max_radius: float = 4.0) -> None:
    """Trunk and one or two crown lobes; the crown starts above the trunk (never at camera height)."""
    o = b.obj("tree", s, l)
    seed = int(rng.integers(1 << 30))
    trunk_h = rng.uniform(2.5, 4.0)
    b.box(o, 0.0, 0.0, z0 - 0.2, 0.13, 0.13, trunk_h + 0.8, "vegetation", M_TRUNK, _jitter(rng, (0.28, 0.2, 0.14)),
          (0, 0, 0, 0), seed)
    r = float(np.clip(rng.uniform(1.6, 2.8) * (0.9 + 0.3 * density), 1.2, max(max_radius, 1.2)))
    rz = r * rng.uniform(0.9, 1.3)
    leaves = _jitter(rng, _pick(rng, style.leaves), 0.15)
    b.part(o, ELLIPSOID, (0.0, 0.0, z0 + trunk_h + rz * 0.9), (r, r, rz), "vegetation",
           M_LEAVES, leaves, (0, 0, 0, 0), seed)
    if rng.random() < 0.5:  # a second, offset lobe breaks the perfect ellipsoid
        r2 = r * rng.uniform(0.6, 0.8)
        b.part(o, ELLIPSOID, (rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.6), z0 + trunk_h + r * 1.3),
               (r2, r2, r2), "vegetation", M_LEAVES, leaves * 1.08, (0, 0, 0, 0), seed + 7)


def add_lamp(b: SceneBuilder, rng: np.random.Generator, s: float, l: float, z0: float, side: int) -> None:
    o = b.obj("pole", s, l)
    h = rng.uniform(6.0, 8.5)
    grey = _jitter(rng, (0.35, 0.36, 0.38), 0.2)
    b.box(o, 0.0, 0.0, z0 - 0.1, 0.08, 0.08, h, "pole", M_POLE, grey)
    arm = rng.uniform(1.2, 2.0)
    b.box(o, 0.0, -side * arm / 2, z0 + h - 0.25, 0.05, arm / 2, 0.1, "pole", M_POLE, grey)
    b.box(o, 0.0, -side * arm, z0 + h - 0.45, 0.2, 0.35, 0.22, "pole", M_POLE, grey * 0.8)


def add_sign(b: SceneBuilder, rng: np.random.Generator, s: float, l: float, z0: float) -> None:
    o = b.obj("sign", s, l)
    seed = int(rng.integers(1 << 30))
    h = rng.uniform(2.2, 3.0)
    b.box(o, 0.0, 0.0, z0 - 0.1, 0.04, 0.04, h + 0.1, "pole", M_POLE, (0.45, 0.46, 0.47))
    kind = int(rng.integers(3))  # 0 round, 1 rectangle, 2 two stacked plates
    color = ((0.75, 0.08, 0.06), (0.06, 0.22, 0.65), (0.85, 0.70, 0.05))[int(rng.integers(3))]
    if kind == 0:
        r = rng.uniform(0.3, 0.4)
        b.part(o, ELLIPSOID, (-0.06, 0.0, z0 + h + r - 0.1), (0.025, r, r), "traffic sign", M_SIGN, color,
               (0, 0, 0, 0), seed)
    else:
        w, hh = rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.7)
        b.box(o, -0.06, 0.0, z0 + h - 0.1, 0.025, w / 2, hh, "traffic sign", M_SIGN, color, (1, 0, 0, 0), seed)
        if kind == 2:
            b.box(o, -0.06, 0.0, z0 + h - 0.2 - 0.35, 0.025, w / 2, 0.3, "traffic sign", M_SIGN, (0.9, 0.9, 0.9),
                  (1, 0, 0, 0), seed + 3)


def add_traffic_light(b: SceneBuilder, rng: np.random.Generator, s: float, l: float, z0: float, side: int) -> None:
    o = b.obj("traffic light", s, l)
    seed = int(rng.integers(1 << 30))
    h = rng.uniform(2.6, 3.2)
    state = float(rng.integers(3))
    housing = (0.12, 0.12, 0.11) if rng.random() < 0.7 else (0.55, 0.45, 0.1)
    b.box(o, 0.0, 0.0, z0 - 0.1, 0.07, 0.07, h + 0.1, "pole", M_POLE, (0.3, 0.31, 0.32))
    b.box(o, -0.2, 0.0, z0 + h, 0.14, 0.17, 0.85, "traffic light", M_TLIGHT, housing, (state, 0, 0, 0), seed)
    if rng.random() < 0.6:  # mast arm with a second head over the road
        reach = rng.uniform(3.0, 5.0)
        top = z0 + h + 2.0
        b.box(o, 0.0, 0.0, z0 + h + 0.85, 0.07, 0.07, 1.3, "pole", M_POLE, (0.3, 0.31, 0.32))
        b.box(o, 0.0, -side * reach / 2, top, 0.06, reach / 2, 0.12, "pole", M_POLE, (0.3, 0.31, 0.32))
        b.box(o, -0.2, -side * reach, top - 0.9, 0.14, 0.17, 0.85, "traffic light", M_TLIGHT, housing,
              (state, 0, 0, 0), seed + 1)


# ----------------------------------------------------------------------------------------------
# Street layout
# ----------------------------------------------------------------------------------------------
def _lots(b: SceneBuilder, rng: np.random.Generator, style: Style, side: int, edge: float, kerb: float,
          s_lo: float, s_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Buildings, parks and yards beyond the sidewalk on one side; returns the ground zones."""
    bounds, mats = [s_lo - 50.0], []
    s = s_lo - 50.0 + rng.uniform(0, 10)
    while s < s_hi:
        length = rng.uniform(9.0, 26.0)
        c = s + length / 2
        kind = rng.random()
        seed = int(rng.integers(1 << 30))
        if kind < style.park_share:
            bounds.append(s + length), mats.append(M_TERRAIN)
            o = b.obj("park", c, side * (edge + 0.15))
            if rng.random() < 0.7:
                b.box(o, 0.0, 0.0, kerb - 0.1, length / 2 - 0.3, 0.025, rng.uniform(1.0, 1.8), "fence", M_FENCE,
                      _jitter(rng, ((0.35, 0.38, 0.35), (0.45, 0.35, 0.25), (0.6, 0.6, 0.6))[int(rng.integers(3))]),
                      (float(rng.integers(2)), 0, 0, 0), seed)
            for _ in range(int(rng.integers(2, 6))):
                add_tree(b, rng, style, c + rng.uniform(-length / 2, length / 2), side * (edge + rng.uniform(3, 14)),
                         kerb, 1.0)
            depth = 30.0
        else:
            setback = rng.uniform(2.0, 7.0) if rng.random() < style.setback_share else rng.uniform(0.0, 0.4)
            depth = rng.uniform(10.0, 16.0)
            height = rng.uniform(*style.building_height)
            brick = rng.random() < style.brick_share
            color = _jitter(rng, _pick(rng, style.bricks if brick else style.facades), 0.06)
            spacing = rng.uniform(2.2, 3.4)
            floor = rng.uniform(2.9, 3.6)
            win_w = rng.uniform(0.9, min(1.7, spacing - 0.6))
            prm = (float(brick), spacing, floor, win_w)
            o = b.obj("building", c, side * (edge + setback + depth / 2))
            b.box(o, 0.0, 0.0, -0.5, length / 2, depth / 2, height + 0.5, "building", M_FACADE, color, prm, seed)
            if setback > 1.0:
                bounds.append(s + length), mats.append(M_TERRAIN if rng.random() < 0.6 else M_SIDEWALK)
                front = rng.random()
                y = b.obj("yard", c, side * (edge + 0.3))
                if front < style.hedge_share:
                    b.box(y, 0.0, 0.0, kerb - 0.1, length / 2 - 0.5, 0.3, rng.uniform(0.7, 1.5), "vegetation",
                          M_LEAVES, _jitter(rng, _pick(rng, style.leaves), 0.1), (1, 0, 0, 0), seed + 5)
                elif front < style.hedge_share + 0.25:
                    b.box(y, 0.0, 0.0, kerb - 0.1, length / 2 - 0.5, 0.12, rng.uniform(0.6, 1.4), "wall", M_WALL,
                          _jitter(rng, (0.55, 0.53, 0.5), 0.1), (0, 0, 0, 0), seed + 5)
                elif front < style.hedge_share + 0.5:
                    b.box(y, 0.0, 0.0, kerb - 0.1, length / 2 - 0.5, 0.025, rng.uniform(1.0, 1.6), "fence", M_FENCE,
                          _jitter(rng, (0.3, 0.32, 0.3), 0.2), (float(rng.integers(2)), 0, 0, 0), seed + 5)
            else:
                bounds.append(s + length), mats.append(M_SIDEWALK)
        # back row: taller blocks fill the skyline behind every lot
        o = b.obj("backdrop", c, side * (edge + depth + rng.uniform(8.0, 20.0)))
        bh = rng.uniform(style.building_height[0] + 6, style.building_height[1] + 14)
        color = _jitter(rng, _pick(rng, style.facades), 0.1)
        b.box(o, 0.0, 0.0, -0.5, length / 2 + 0.5, 6.0, bh, "building", M_FACADE, color,
              (0.0, rng.uniform(2.4, 3.2), rng.uniform(3.0, 3.4), 1.1), seed + 9)
        s += length + (rng.uniform(0.5, 4.0) if rng.random() < 0.3 else 0.0)
        if bounds[-1] < s:  # a gap between lots: terrain
            bounds.append(s), mats.append(M_TERRAIN)
    return np.array(bounds[1:], np.float64), np.array(mats, np.int16)


def build_scene(split: str, index: int, city: str, sequence: int, rng: np.random.Generator, style: Style,
                speed_range: tuple[float, float], lead_car_share: float, fps: float, n_before: float) -> Scene:
    """Draw one snippet's street. `n_before`: seconds before the annotated frame that are rendered."""
    straight = rng.random() < 0.45
    curvature = 0.0 if straight else float(rng.choice([-1, 1]) / rng.uniform(150.0, 600.0))
    road = Road(curvature)
    lane = rng.uniform(3.0, 3.6)
    parking = rng.random() < 0.75
    road_half = lane + (rng.uniform(2.0, 2.4) if parking else rng.uniform(0.3, 0.8))
    lawn = rng.uniform(1.0, 2.5) if rng.random() < 0.45 else 0.0
    sidewalk = rng.uniform(2.5, 5.5)
    kerb = rng.uniform(0.1, 0.16)
    edge = road_half + lawn + sidewalk

    speed = rng.uniform(*speed_range)
    traj = Trajectory(road=road, lateral=lane / 2 + rng.uniform(-0.3, 0.3), height=rng.uniform(1.2, 1.6),
                      speed=speed, pitch0=math.radians(rng.uniform(-0.5, 2.0)),
                      pitch_amp=math.radians(rng.uniform(0.05, 0.25)), pitch_freq=rng.uniform(0.3, 0.8),
                      pitch_phase=rng.uniform(0, 2 * math.pi), yaw_amp=math.radians(rng.uniform(0.02, 0.15)),
                      yaw_freq=rng.uniform(0.2, 0.5), yaw_phase=rng.uniform(0, 2 * math.pi),
                      bounce_amp=rng.uniform(0.0, 0.01), bounce_freq=rng.uniform(1.0, 2.0))
    s_lo, s_hi = -speed * n_before - BEHIND, VIEW_AHEAD
    s_furn = FURNITURE_AHEAD

    b = SceneBuilder()
    zones = {side: _lots(b, rng, style, side, edge, kerb, s_lo, s_hi) for side in (1, -1)}
    density = 1.0 if style.tree_share > 0.6 else 0.0

    # kerb-side furniture: trees, lamps, signs, traffic lights
    for side in (1, -1):
        tree_l = road_half + (lawn / 2 if lawn else 0.9)
        s = s_lo + rng.uniform(0, 8)
        while s < s_furn:
            if rng.random() < style.tree_share:
                add_tree(b, rng, style, s, side * tree_l, kerb, density, tree_l - lane / 2 - 0.9)
            s += rng.uniform(7.0, 13.0)
        s = s_lo + rng.uniform(0, 20)
        while s < s_furn:
            add_lamp(b, rng, s, side * (road_half + 0.4), kerb, side)
            s += rng.uniform(22.0, 35.0)
        s = s_lo + rng.uniform(0, 15)
        while s < s_furn:
            add_sign(b, rng, s, side * (road_half + 0.35 + rng.uniform(0, 0.3)), kerb)
            s += rng.uniform(20.0, 60.0)
    crosswalk = None
    if rng.random() < 0.6:  # a junction ahead: traffic lights on both sides, sometimes a crosswalk
        sj = rng.uniform(15.0, 70.0)
        for side in (1, -1):
            add_traffic_light(b, rng, sj + rng.uniform(-1, 1), side * (road_half + 0.5), kerb, side)
        if rng.random() < 0.6:
            crosswalk = sj + 1.5

    # people on the sidewalks
    walk_l = road_half + lawn
    for side in (1, -1):
        for _ in range(int(rng.integers(2, 9))):
            s = rng.uniform(5.0, 90.0)
            walking = rng.random() < 0.7
            v = rng.uniform(0.8, 1.7) * rng.choice([-1, 1]) if walking else 0.0
            add_person(b, rng, s, side * (walk_l + rng.uniform(0.5, sidewalk - 0.5)), kerb, v, walking)

    # parked vehicles
    if parking:
        park_l = lane + 1.15
        for side in (1, -1):
            s = s_lo + rng.uniform(0, 6)
            occupancy = rng.uniform(0.15, 0.65)
            while s < s_furn:
                if rng.random() < occupancy:
                    r = rng.random()
                    lat = side * (park_l + rng.uniform(-0.1, 0.1))
                    if r < 0.04:
                        add_truck(b, rng, "parked", s + 3, lat, 0.0, side < 0, False)
                        s += 5
                    else:
                        add_car(b, rng, style, "parked", s, lat, 0.0, side < 0, False)
                s += rng.uniform(5.5, 7.5)

    # traffic
    lead = rng.random() < lead_car_share
    lead_gap = rng.uniform(9.0, 20.0)
    if lead:
        add_car(b, rng, style, "lead", lead_gap, traj.lateral, speed, False, True)
    else:
        if rng.random() < 0.5:  # a car ahead in our lane at another speed
            add_car(b, rng, style, "ahead", rng.uniform(25.0, 80.0), lane / 2, speed * rng.uniform(0.4, 0.9), False, True)
    s0 = rng.uniform(5.0, 40.0)
    for _ in range(int(rng.integers(1, 4))):
        s0, v = s0 + rng.uniform(15.0, 60.0), -rng.uniform(6.0, 14.0)
        r = rng.random()
        if r < 0.08:
            add_bus(b, rng, "oncoming", s0, -lane / 2, v, True, True)
        elif r < 0.14:
            add_truck(b, rng, "oncoming", s0, -lane / 2, v, True, True)
        else:
            add_car(b, rng, style, "oncoming", s0, -lane / 2, v, True, True)

    objects, parts = b.build()

    elev = math.radians(rng.uniform(*style.sun_elevation))
    azim = rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)])
    tint = np.asarray(style.sun_tint)
    overcast = rng.random() < 0.2
    scene = Scene(
        split=split, index=index, city=city, sequence=sequence, road=road, lane=lane, parking=parking,
        road_half=road_half, lawn=lawn, sidewalk=sidewalk, kerb=kerb, zones=zones, crosswalk=crosswalk, traj=traj,
        lead_car=lead, sun=sun, sun_color=tint * (0.45 if overcast else 1.0) * rng.uniform(0.9, 1.1),
        sky_zenith=_jitter(rng, style.sky_zenith, 0.1) if not overcast else np.array([0.62, 0.64, 0.68]),
        sky_horizon=_jitter(rng, style.sky_horizon, 0.06) if not overcast else np.array([0.78, 0.79, 0.8]),
        ambient=rng.uniform(0.45, 0.6) if overcast else rng.uniform(0.3, 0.42),
        exposure=rng.uniform(*style.exposure), white_balance=1.0 + rng.uniform(-0.05, 0.05, 3),
        fog=rng.uniform(250.0, 700.0), road_color=_jitter(rng, (0.22, 0.22, 0.23), 0.15),
        sidewalk_color=_jitter(rng, _pick(rng, style.sidewalks), 0.05), grass_color=_jitter(rng, style.grass, 0.1),
        hood_color=_jitter(rng, (0.12, 0.12, 0.13), 0.3), tex_seed=int(rng.integers(1 << 30)),
        noise_seed=int(rng.integers(1 << 30)), objects=objects, parts=parts,
        meta={"curvature": curvature, "camera_height": traj.height, "lead_gap": lead_gap if lead else 0.0,
              "sun_elevation_deg": math.degrees(elev)})
    return scene
