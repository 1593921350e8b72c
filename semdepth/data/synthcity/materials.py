"""Textures of object parts, one function per material: albedo from part-frame coordinates.

Inputs are the pixels of one material (`Surf`); coordinates are metres in the frame of the part,
so a texture moves with its object. Repeating patterns (windows, bricks, slats) use the
analytically filtered `noise.lines`, noise uses `noise.fbm*`, both fed the pixel footprint.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semdepth.data.synthcity import noise as nz
from semdepth.data.synthcity.scene import (M_BUS, M_CABIN, M_CAR, M_CARGO, M_CLOTH, M_FACADE, M_FENCE, M_LEAVES,
                                           M_POLE, M_SIGN, M_SKIN, M_TLIGHT, M_TRUNK, M_WALL, M_WHEEL)


@dataclass
class Surf:
    """The pixels of one material: part-frame coordinates, footprint, base colours (planar arrays)."""

    a: np.ndarray  # hit point in the part frame, relative to the part centre
    b: np.ndarray
    z: np.ndarray
    ha: np.ndarray  # half extents / radii of the part
    hb: np.ndarray
    hz: np.ndarray
    axis: np.ndarray  # face axis 0 a, 1 b, 2 z (boxes)
    sign: np.ndarray  # face side -1/+1
    f: np.ndarray  # footprint (m per pixel)
    color: np.ndarray  # [n,3]
    prm: np.ndarray  # [n,4]
    seed: np.ndarray  # uint32
    ellipsoid: np.ndarray  # bool: the part is an ellipsoid (else a box)

    def face_uv(self) -> tuple[np.ndarray, np.ndarray]:
        """Metric coordinates on a box face, from its lower/left edge: (along, up)."""
        a, b, z = self.a + self.ha, self.b + self.hb, self.z + self.hz
        u = np.where(self.axis == 0, b, a)
        v = np.where(self.axis == 2, b, z)
        return u, v


def mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    return a + (b - a) * w[:, None]


def disc(x: np.ndarray, y: np.ndarray, r: float, f: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a disc of radius r at the origin."""
    return np.clip((r - np.sqrt(x * x + y * y)) / np.maximum(f, 1e-4) + 0.5, 0.0, 1.0)


def interval(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray, f: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of the interval [lo, hi] along x."""
    f = np.maximum(f, 1e-4)
    return np.clip((x - lo) / f + 0.5, 0, 1) * np.clip((hi - x) / f + 0.5, 0, 1)


def facade(sf: Surf, emit: np.ndarray) -> np.ndarray:
    u, v = sf.face_uv()
    f, base = sf.f, sf.color
    brick, spacing, floor, win_w = sf.prm[:, 0], sf.prm[:, 1], sf.prm[:, 2], sf.prm[:, 3]
    top = sf.axis == 2
    # wall: bricks or plaster
    bh, bl = 0.075, 0.24
    row = np.floor(v / bh)
    uu = u + 0.5 * bl * (row % 2)
    btint = (nz.hash_unit(np.floor(uu / bl), row, seed=sf.seed) - 0.5) * nz.lod(bh, f)
    mortar = np.maximum(nz.lines(v, bh, 0.012, f), nz.lines(uu, bl, 0.012, f))
    plaster = nz.fbm2(u + 0.37 * v, v, sf.seed + 3, (4.0, 1.0, 0.25, 0.06, 0.02), f, gain=0.7)
    grain = np.where(brick > 0.5, 0.5 * btint + 0.25 * plaster, 0.7 * plaster)
    wall = base * (1.0 + grain)[:, None]
    wall = np.where((brick > 0.5)[:, None], mix(wall, np.full_like(wall, 0.55), mortar * 0.8), wall)
    # floors: cornice band, windows with frames; the ground floor has taller shop windows
    vv = v - 0.5
    cornice = nz.lines(vv, floor, 0.18, f) * (vv > floor * 0.5)
    wall = wall * (1.0 - 0.3 * cornice)[:, None]
    ground_floor = vv < floor
    col_w = np.where(ground_floor, np.minimum(win_w * 1.5, spacing - 0.3), win_w)
    cols = nz.lines(u - spacing / 2, spacing, col_w, f)
    cols_frame = nz.lines(u - spacing / 2, spacing, col_w + 0.16, f)
    upper_rows = nz.lines(vv - floor * 0.55, floor, floor * 0.45, f)
    upper_frame = nz.lines(vv - floor * 0.55, floor, floor * 0.45 + 0.16, f)
    shop_rows = interval(vv, 0.6, floor - 0.5, f)
    below_roof = (sf.hz * 2 - v) > 1.2
    rows = np.where(ground_floor, shop_rows, upper_rows) * below_roof
    rows_frame = np.where(ground_floor, interval(vv, 0.52, floor - 0.42, f), upper_frame) * below_roof
    win = cols * rows
    frame = np.clip(cols_frame * rows_frame - win, 0, 1)
    wi, wj = np.floor(u / spacing), np.floor(vv / floor)
    glass_tint = nz.hash_unit(wi, wj, seed=sf.seed + 7)
    refl = nz.fbm2(u, v, sf.seed + 9, (3.0, 0.8), f)
    glass = np.stack([0.07 + 0.1 * glass_tint, 0.09 + 0.1 * glass_tint, 0.12 + 0.12 * glass_tint], 1)
    glass = glass * (1.0 + 0.6 * refl)[:, None]
    lit = (glass_tint > 0.85)[:, None]
    glass = np.where(lit, np.array([0.55, 0.5, 0.38])[None] * (0.7 + 0.3 * glass_tint[:, None]), glass)
    frame_col = np.where((sf.seed % 3 == 0)[:, None], np.array([0.75, 0.74, 0.7])[None], base * 0.55)
    col = mix(wall, frame_col, frame)
    col = mix(col, glass, win)
    roof = np.array([0.3, 0.29, 0.28])[None] * (1 + 0.3 * plaster)[:, None]
    return np.where(top[:, None], roof, col)


def fence(sf: Surf, emit: np.ndarray) -> np.ndarray:
    u, v = sf.face_uv()
    mesh = sf.prm[:, 0] > 0.5
    slats = nz.lines(u, 0.14, 0.09, sf.f)
    wires = np.maximum(nz.lines(u + v, 0.12, 0.02, sf.f), nz.lines(u - v, 0.12, 0.02, sf.f))
    posts = nz.lines(u, 2.5, 0.08, sf.f)
    rail = nz.lines(v - sf.hz * 2 + 0.05, 1e4, 0.08, sf.f)
    grain = nz.fbm2(u, v, sf.seed, (0.5, 0.1, 0.03), sf.f)
    k = np.where(mesh, 0.35 + 0.8 * wires, 0.45 + 0.6 * slats)
    k = np.maximum(k, np.maximum(posts, rail) * 0.9)
    return sf.color * (k * (1 + 0.25 * grain))[:, None]


def wall(sf: Surf, emit: np.ndarray) -> np.ndarray:
    u, v = sf.face_uv()
    row = np.floor(v / 0.25)
    joints = np.maximum(nz.lines(v, 0.25, 0.012, sf.f), nz.lines(u + 0.25 * (row % 2), 0.5, 0.012, sf.f))
    grain = nz.fbm2(u, v, sf.seed, (1.5, 0.4, 0.1, 0.03), sf.f)
    return sf.color * ((1 + 0.3 * grain) * (1 - 0.35 * joints))[:, None]


def pole(sf: Surf, emit: np.ndarray) -> np.ndarray:
    u, v = sf.face_uv()
    grain = nz.fbm2(u * 4.0, v, sf.seed, (1.0, 0.2, 0.05), sf.f)
    return sf.color * (1 + 0.25 * grain)[:, None]


def traffic_light(sf: Surf, emit: np.ndarray) -> np.ndarray:
    b, z = sf.b, sf.z
    front = (sf.axis == 0) & (sf.sign < 0)
    col = sf.color * (1 + 0.15 * nz.fbm2(b, z, sf.seed, (0.2, 0.05), sf.f))[:, None]
    lamp_cols = np.array([[1.0, 0.12, 0.08], [1.0, 0.6, 0.05], [0.2, 1.0, 0.45]])
    for i, zc in enumerate((0.27, 0.0, -0.27)):
        cov = disc(b, z - zc, 0.095, sf.f) * front
        on = (sf.prm[:, 0] == i)
        lamp = np.where(on[:, None], lamp_cols[i][None] * 0.4, np.array([0.04, 0.04, 0.04])[None])
        col = mix(col, lamp, cov)
        emit += np.where(on, cov, 0)[:, None] * lamp_cols[i][None] * 0.9
    return col


def sign(sf: Surf, emit: np.ndarray) -> np.ndarray:
    ellipsoid = sf.ellipsoid
    b, z = sf.b, sf.z
    hb, hz = sf.hb, sf.hz
    front = np.where(ellipsoid, sf.a < 0, (sf.axis == 0) & (sf.sign < 0))
    white = np.array([0.85, 0.85, 0.85])[None]
    red = sf.color[:, 0] > 0.5 + sf.color[:, 2]
    r = np.sqrt((b / hb) ** 2 + (z / hz) ** 2)
    fr = sf.f / hb
    ring = np.clip((r - 0.75) / np.maximum(fr, 1e-4) + 0.5, 0, 1)
    round_face = np.where(red[:, None], mix(white, sf.color, ring), mix(sf.color, white, ring * 0.9))
    bar = interval(z, -0.12 * hz, 0.12 * hz, sf.f) * interval(b, -0.55 * hb, 0.55 * hb, sf.f)
    round_face = mix(round_face, np.where(red[:, None], sf.color * 0.2, white), bar)
    edge = np.minimum(hb - np.abs(b), hz - np.abs(z))
    border = np.clip((0.06 - edge) / np.maximum(sf.f, 1e-4) + 0.5, 0, 1)
    glyph = nz.lines(z, 0.18, 0.05, sf.f) * interval(b, -0.6 * hb, 0.3 * hb, sf.f)
    rect_face = mix(mix(sf.color, white, glyph * 0.8), white, border)
    face = np.where(ellipsoid[:, None], round_face, rect_face)
    back = np.array([0.5, 0.5, 0.52])[None] * (1 + 0.2 * nz.fbm2(b, z, sf.seed, (0.3, 0.06), sf.f))[:, None]
    return np.where(front[:, None], face, back)


def trunk(sf: Surf, emit: np.ndarray) -> np.ndarray:
    a, b, z = sf.a, sf.b, sf.z
    bark = nz.fbm3(a * 3, b * 3, z * 0.6, sf.seed, (0.6, 0.2, 0.06), sf.f * 3)
    return sf.color * (1 + 0.6 * bark)[:, None]


def leaves(sf: Surf, emit: np.ndarray) -> np.ndarray:
    a, b, z = sf.a, sf.b, sf.z
    n = nz.fbm3(a, b, z, sf.seed, (1.2, 0.45, 0.16, 0.06, 0.025), sf.f, gain=0.85)
    holes = np.clip((nz.value3(a / 0.35, b / 0.35, z / 0.35, sf.seed + 3) - 0.72) * 5, 0, 1) * nz.lod(0.35, sf.f)
    k = np.clip(1.0 + 1.3 * n, 0.25, 2.2) * (1 - 0.6 * holes)
    yellow = np.clip(nz.value3(a / 2.0, b / 2.0, z / 2.0, sf.seed + 5) - 0.5, 0, 1)
    col = sf.color * k[:, None]
    return col + yellow[:, None] * np.array([0.08, 0.06, -0.02])[None]


def vehicle_lights(sf: Surf, col: np.ndarray, emit: np.ndarray) -> np.ndarray:
    """Tail/head lights and a number plate on the ends (a faces) of car bodies."""
    b, z = sf.b, sf.z
    hb, hz = sf.hb, sf.hz
    end = sf.axis == 0
    rear = end & (sf.sign < 0)
    lights = interval(np.abs(b), hb - 0.42, hb - 0.08, sf.f) * interval(z, hz * 0.2, hz * 0.75, sf.f) * end
    light_col = np.where(rear[:, None], np.array([0.6, 0.04, 0.03])[None], np.array([0.85, 0.85, 0.8])[None])
    col = mix(col, light_col, lights)
    emit += (lights * np.where(rear, 0.25, 0.1))[:, None] * light_col
    plate = interval(b, -0.26, 0.26, sf.f) * interval(z, -hz * 0.55, -hz * 0.05, sf.f) * end
    glyph = nz.lines(b, 0.07, 0.025, sf.f) * interval(z, -hz * 0.45, -hz * 0.15, sf.f)
    col = mix(col, np.array([0.8, 0.8, 0.78])[None] * (1 - 0.8 * glyph)[:, None], plate)
    bumper = interval(z, -hz - 1, -hz * 0.6, sf.f) * (sf.axis != 2)
    return mix(col, col * 0.35 + 0.02, bumper)


def paint(sf: Surf) -> np.ndarray:
    u, v = sf.face_uv()
    grain = nz.fbm2(u, v + 3 * sf.axis, sf.seed, (1.5, 0.4, 0.1, 0.03), sf.f)
    sheen = np.where(sf.axis == 2, 1.15, 1.0) * (1.0 + 0.15 * (v / np.maximum(2 * sf.hz, 0.1) - 0.5))
    return sf.color * ((1 + 0.25 * grain) * sheen)[:, None]


def glass(u: np.ndarray, v: np.ndarray, sf: Surf) -> np.ndarray:
    refl = nz.fbm2(u, v, sf.seed + 5, (1.5, 0.4, 0.1), sf.f)
    k = 0.08 + 0.06 * v / np.maximum(sf.hz * 2, 0.1) + 0.05 * refl
    return np.stack([k * 0.9, k, k * 1.15], 1)


def cabin(sf: Surf, emit: np.ndarray) -> np.ndarray:
    u, v = sf.face_uv()
    body = paint(sf)
    w_u = np.where(sf.axis == 0, sf.hb, sf.ha) * 2
    truck = sf.prm[:, 2] > 0.5
    h = sf.hz * 2
    lo = np.where(truck, h * 0.5, 0.08)
    win = interval(u, 0.09, w_u - 0.09, sf.f) * interval(v, lo, h - 0.07, sf.f) * (sf.axis != 2)
    pillar = (sf.axis == 1) * nz.lines(u - w_u * 0.5, 1e4, 0.1, sf.f) * (~truck)
    win = win * (1 - pillar)
    return mix(body, glass(u, v, sf), win)


def wheel(sf: Surf, emit: np.ndarray) -> np.ndarray:
    a, z = sf.a, sf.z
    side = sf.axis == 1
    rim = disc(a, z, 0.55 * sf.hz, sf.f) * side
    spokes = nz.lines(np.arctan2(z, a) * 0.2, 0.12, 0.04, sf.f / np.maximum(np.abs(a) + np.abs(z), 0.05))
    rubber = np.array([0.05, 0.05, 0.05])[None] * (1 + 0.3 * nz.fbm2(a, z, sf.seed, (0.1, 0.03), sf.f))[:, None]
    metal = np.array([0.5, 0.5, 0.52])[None] * (0.6 + 0.4 * spokes)[:, None]
    return mix(rubber, metal, rim)


def cargo(sf: Surf, emit: np.ndarray) -> np.ndarray:
    u, v = sf.face_uv()
    ribs = nz.lines(u, 0.45, 0.06, sf.f) * (sf.axis != 2)
    dirt = nz.fbm2(u, v, sf.seed + 3, (2.0, 0.5, 0.12, 0.03), sf.f)
    return sf.color * ((1 - 0.25 * ribs) * (1 + 0.2 * dirt))[:, None]


def bus_body(sf: Surf) -> np.ndarray:
    u, v = sf.face_uv()
    body = paint(sf)
    band = interval(v, 1.05, 2.45, sf.f) * (sf.axis != 2)
    pillars = nz.lines(u, 1.3, 0.12, sf.f) * (sf.axis == 1)
    windscreen = (sf.axis == 0) * interval(v, 0.9, 2.55, sf.f) * interval(u, 0.1, sf.hb * 2 - 0.1, sf.f)
    win = np.maximum(band * (1 - pillars), windscreen)
    return mix(body, glass(u, v, sf), win)


def cloth(sf: Surf, emit: np.ndarray) -> np.ndarray:
    a, b, z = sf.a, sf.b, sf.z
    n = nz.fbm3(a, b, z, sf.seed, (0.3, 0.08, 0.025), sf.f)
    stripes = nz.lines(z, 0.12, 0.05, sf.f) * (sf.seed % 4 == 0) * (sf.prm[:, 0] < 0.5)
    return sf.color * ((1 + 0.35 * n) * (1 - 0.4 * stripes))[:, None]


def skin(sf: Surf, emit: np.ndarray) -> np.ndarray:
    a, z = sf.a, sf.z
    hair = np.clip((z / sf.hz - 0.25) * 6 + (a / sf.ha) * 3, 0, 1)
    hair_col = np.where((sf.seed % 3 == 0)[:, None], np.array([0.35, 0.25, 0.12])[None],
                        np.array([0.06, 0.05, 0.04])[None])
    return mix(sf.color, hair_col, hair)


def car(sf: Surf, emit: np.ndarray) -> np.ndarray:
    return vehicle_lights(sf, paint(sf), emit)


def bus(sf: Surf, emit: np.ndarray) -> np.ndarray:
    return vehicle_lights(sf, bus_body(sf), emit)


# material id -> texture function(surf, emit) -> albedo [n,3] (adds any emitted light to `emit`)
BY_MATERIAL = {M_FACADE: facade, M_FENCE: fence, M_WALL: wall, M_POLE: pole, M_TLIGHT: traffic_light, M_SIGN: sign,
               M_TRUNK: trunk, M_LEAVES: leaves, M_CAR: car, M_CABIN: cabin, M_WHEEL: wheel, M_CARGO: cargo,
               M_BUS: bus, M_CLOTH: cloth, M_SKIN: skin}
