"""Models of street objects (vehicles, people, trees, poles, signs, traffic lights) as groups of parts."""
from __future__ import annotations

import numpy as np

from semdepth.data.synthcity.scene import (BOX, ELLIPSOID, M_BUS, M_CABIN, M_CAR, M_CARGO, M_CLOTH, M_LEAVES,
                                           M_POLE, M_SIGN, M_SKIN, M_TLIGHT, M_TRUNK, M_WHEEL, SceneBuilder)
from semdepth.data.synthcity.style import Style


def pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def jitter(rng: np.random.Generator, rgb, amount: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(rgb) * (1.0 + rng.uniform(-amount, amount, 3)), 0.02, 0.95)


def add_car(b: SceneBuilder, rng: np.random.Generator, style: Style, role: str, s: float, l: float, v: float,
            rev: bool, moving: bool) -> int:
    o = b.obj(role, s, l, v, rev, moving)
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.9)
    paint = jitter(rng, pick(rng, style.cars), 0.1)
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
    cab = jitter(rng, ((0.75, 0.75, 0.75), (0.6, 0.1, 0.08), (0.1, 0.2, 0.5), (0.9, 0.9, 0.9))[int(rng.integers(4))])
    cargo = jitter(rng, ((0.82, 0.82, 0.80), (0.5, 0.5, 0.52), (0.7, 0.6, 0.3))[int(rng.integers(3))])
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
    paint = jitter(rng, pick(rng, ((0.85, 0.80, 0.20), (0.75, 0.15, 0.12), (0.15, 0.35, 0.65), (0.9, 0.9, 0.9))))
    b.box(o, 0.0, 0.0, 0.35, length / 2, width / 2, 2.7, "bus", M_BUS, paint, (length, width, 0, 0), seed)
    for a in (length / 2 - 2.5, -length / 2 + 2.8):
        b.part(o, BOX, (a, 0.0, 0.5), (0.5, width / 2 + 0.02, 0.5), "bus", M_WHEEL, (0.04, 0.04, 0.04),
               (0, 0, 0, 0), seed)
    return o


def add_person(b: SceneBuilder, rng: np.random.Generator, s: float, l: float, z0: float, v: float,
               moving: bool) -> int:
    o = b.obj("person", s, l, v, v < 0, moving)
    h = rng.uniform(1.55, 1.9)
    seed = int(rng.integers(1 << 30))
    trousers = jitter(rng, ((0.1, 0.1, 0.15), (0.25, 0.25, 0.3), (0.35, 0.3, 0.25), (0.1, 0.15, 0.3)
                             )[int(rng.integers(4))], 0.2)
    shirt = np.clip(rng.uniform(0.05, 0.8, 3), 0.03, 0.9)
    skin = jitter(rng, ((0.75, 0.55, 0.45), (0.55, 0.38, 0.28), (0.35, 0.24, 0.18))[int(rng.integers(3))], 0.1)
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
    b.box(o, 0.0, 0.0, z0 - 0.2, 0.13, 0.13, trunk_h + 0.8, "vegetation", M_TRUNK, jitter(rng, (0.28, 0.2, 0.14)),
          (0, 0, 0, 0), seed)
    r = float(np.clip(rng.uniform(1.6, 2.8) * (0.9 + 0.3 * density), 1.2, max(max_radius, 1.2)))
    rz = r * rng.uniform(0.9, 1.3)
    leaves = jitter(rng, pick(rng, style.leaves), 0.15)
    b.part(o, ELLIPSOID, (0.0, 0.0, z0 + trunk_h + rz * 0.9), (r, r, rz), "vegetation",
           M_LEAVES, leaves, (0, 0, 0, 0), seed)
    if rng.random() < 0.5:  # a second, offset lobe breaks the perfect ellipsoid
        r2 = r * rng.uniform(0.6, 0.8)
        b.part(o, ELLIPSOID, (rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.6), z0 + trunk_h + r * 1.3),
               (r2, r2, r2), "vegetation", M_LEAVES, leaves * 1.08, (0, 0, 0, 0), seed + 7)


def add_lamp(b: SceneBuilder, rng: np.random.Generator, s: float, l: float, z0: float, side: int) -> None:
    o = b.obj("pole", s, l)
    h = rng.uniform(6.0, 8.5)
    grey = jitter(rng, (0.35, 0.36, 0.38), 0.2)
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
