"""Surface textures, Lambertian light, sky, ego hood and camera response.

Every texture is a function of the hit point in world coordinates (ground) or in the frame of the
part it lies on (objects, so a moving car carries its texture along), and of the pixel footprint
only through the anti-aliasing fade (noise.lod / noise.lines). Light is a fixed sun per snippet
plus sky ambient; no shadows (they would need a second ray per pixel).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semdepth.data.synthcity import noise as nz
from semdepth.data.synthcity.camera import Intrinsics
from semdepth.data.synthcity.raycast import Hits
from semdepth.data.synthcity.world import (BOX, L, M_BUS, M_CABIN, M_CAR, M_CARGO, M_CLOTH, M_FACADE, M_FENCE,
                                           M_KERB, M_LEAVES, M_POLE, M_ROAD, M_SIDEWALK, M_SIGN, M_SKIN, M_TERRAIN,
                                           M_TLIGHT, M_TRUNK, M_WALL, M_WHEEL, Scene)

HOOD_CENTER, HOOD_EDGE = 0.085, 0.045  # hood height (share of rows) at the image centre and at the sides


def hood_mask(height: int, width: int) -> np.ndarray:
    """[H,W] bool: the ego vehicle's bonnet, a fixed curved shape in the bottom ~8% of rows.

    Its lowest HOOD_EDGE share of rows is hood across the full width (tests rely on this).
    """
    u = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    rows = height * (HOOD_EDGE + (HOOD_CENTER - HOOD_EDGE) * (1.0 - u * u))
    v = np.arange(height)[:, None] + 0.5
    return v >= height - rows[None, :]


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

    def face_uv(self) -> tuple[np.ndarray, np.ndarray]:
        """Metric coordinates on a box face, from its lower/left edge: (along, up)."""
        a, b, z = self.a + self.ha, self.b + self.hb, self.z + self.hz
        u = np.where(self.axis == 0, b, a)
        v = np.where(self.axis == 2, b, z)
        return u, v


def _mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    return a + (b - a) * w[:, None]


def _disc(x: np.ndarray, y: np.ndarray, r: float, f: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a disc of radius r at the origin."""
    return np.clip((r - np.sqrt(x * x + y * y)) / np.maximum(f, 1e-4) + 0.5, 0.0, 1.0)


def _box(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray, f: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of the interval [lo, hi] along x."""
    f = np.maximum(f, 1e-4)
    return np.clip((x - lo) / f + 0.5, 0, 1) * np.clip((hi - x) / f + 0.5, 0, 1)


# ----------------------------------------------------------------------------------------------
# Ground
# ----------------------------------------------------------------------------------------------
def shade_ground(scene: Scene, mat: np.ndarray, p: tuple[np.ndarray, np.ndarray, np.ndarray], s: np.ndarray,
                 l: np.ndarray, f_s: np.ndarray, f_l: np.ndarray) -> np.ndarray:
    """Albedo of ground pixels: world point p (planar), road coordinates (s, l) and the pixel
    footprint along them. Looking down the road, a pixel is stretched along s by 1/cos(incidence)
    but not along l; patterns are filtered per axis, noise with the geometric mean."""
    x, y, pz = p
    f = np.sqrt(f_s * f_l)
    seed = scene.tex_seed
    out = np.zeros((len(mat), 3), np.float32)

    m = mat == M_ROAD
    if m.any():
        fx, fs, fl, xx, yy, ss, ll = f[m], f_s[m], f_l[m], x[m], y[m], s[m], l[m]
        grain = nz.fbm2(xx, yy, seed, (6.0, 1.7, 0.5, 0.15, 0.05, 0.018), fx, gain=0.85)
        patch = np.clip((nz.value2(xx / 1.7, yy / 1.7, seed + 3) - 0.68) * 5.0, 0, 1)
        tracks = sum(nz.lines(ll - c, 1e4, 0.45, fl) for c in (scene.lane / 2 - 0.8, scene.lane / 2 + 0.8,
                                                                 -scene.lane / 2 - 0.8, -scene.lane / 2 + 0.8))
        col = scene.road_color[None] * ((1.0 + 0.9 * grain) * (1.0 - 0.3 * patch) * (1.0 - 0.12 * tracks))[:, None]
        paint = nz.lines(ll, 1e4, 0.13, fl) * nz.lines(ss - 1.5, 9.0, 3.0, fs)  # dashed centre line
        if scene.parking:
            paint = np.maximum(paint, nz.lines(np.abs(ll) - scene.lane, 1e4, 0.1, fl))
        else:
            paint = np.maximum(paint, nz.lines(np.abs(ll) - (scene.road_half - 0.3), 1e4, 0.12, fl))
        if scene.crosswalk is not None:
            zebra = nz.lines(ll, 1.0, 0.5, fl) * _box(ss, scene.crosswalk, scene.crosswalk + 4.0, fs)
            paint = np.maximum(paint, zebra)
        wear = 0.75 + 0.25 * nz.value2(xx / 0.3, yy / 0.3, seed + 5)
        out[m] = _mix(col, np.full_like(col, 0.78) * wear[:, None], paint * 0.9)

    m = (mat == M_SIDEWALK)
    if m.any():
        fx, fs, fl, ss, ll = f[m], f_s[m], f_l[m], s[m], l[m]
        slab = 0.5 if scene.index % 2 else 0.3
        tint = (nz.hash_unit(np.floor(ss / slab), np.floor(ll / slab), seed=seed + 11) - 0.5) * nz.lod(slab, fs)
        grain = nz.fbm2(x[m], y[m], seed + 13, (3.0, 0.6, 0.12, 0.03, 0.012), fx)
        col = scene.sidewalk_color[None] * (1.0 + 0.35 * tint + 0.6 * grain)[:, None]
        grout = np.maximum(nz.lines(ss, slab, 0.015, fs), nz.lines(ll, slab, 0.015, fl))
        out[m] = col * (1.0 - 0.45 * grout)[:, None]

    m = mat == M_KERB
    if m.any():
        fx = f[m]
        grain = nz.fbm2(s[m], pz[m] * 3.0, seed + 17, (0.5, 0.1, 0.03), fx)
        joint = nz.lines(s[m], 1.0, 0.01, f_s[m])
        out[m] = (np.array([0.62, 0.61, 0.59])[None] * (1 + 0.5 * grain)[:, None]) * (1 - 0.4 * joint)[:, None]

    m = mat == M_TERRAIN
    if m.any():
        fx, xx, yy = f[m], x[m], y[m]
        blades = nz.fbm2(xx, yy, seed + 19, (2.5, 0.6, 0.15, 0.05, 0.018), fx, gain=0.85)
        dirt = np.clip((nz.value2(xx / 4.0, yy / 4.0, seed + 23) - 0.55) * 4.0, 0, 1)
        col = scene.grass_color[None] * (1.0 + 1.1 * blades)[:, None]
        out[m] = _mix(col, np.array([0.36, 0.29, 0.2])[None] * (1 + 0.4 * blades)[:, None], dirt * 0.8)
    return out


# ----------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------
def _facade(sf: Surf) -> np.ndarray:
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
    wall = np.where((brick > 0.5)[:, None], _mix(wall, np.full_like(wall, 0.55), mortar * 0.8), wall)
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
    shop_rows = _box(vv, 0.6, floor - 0.5, f)
    below_roof = (sf.hz * 2 - v) > 1.2
    rows = np.where(ground_floor, shop_rows, upper_rows) * below_roof
    rows_frame = np.where(ground_floor, _box(vv, 0.52, floor - 0.42, f), upper_frame) * below_roof
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
    col = _mix(wall, frame_col, frame)
    col = _mix(col, glass, win)
    roof = np.array([0.3, 0.29, 0.28])[None] * (1 + 0.3 * plaster)[:, None]
    return np.where(top[:, None], roof, col)


def _fence(sf: Surf) -> np.ndarray:
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


def _wall(sf: Surf) -> np.ndarray:
    u, v = sf.face_uv()
    row = np.floor(v / 0.25)
    joints = np.maximum(nz.lines(v, 0.25, 0.012, sf.f), nz.lines(u + 0.25 * (row % 2), 0.5, 0.012, sf.f))
    grain = nz.fbm2(u, v, sf.seed, (1.5, 0.4, 0.1, 0.03), sf.f)
    return sf.color * ((1 + 0.3 * grain) * (1 - 0.35 * joints))[:, None]


def _pole(sf: Surf) -> np.ndarray:
    u, v = sf.face_uv()
    grain = nz.fbm2(u * 4.0, v, sf.seed, (1.0, 0.2, 0.05), sf.f)
    return sf.color * (1 + 0.25 * grain)[:, None]


def _traffic_light(sf: Surf, emit: np.ndarray) -> np.ndarray:
    b, z = sf.b, sf.z
    front = (sf.axis == 0) & (sf.sign < 0)
    col = sf.color * (1 + 0.15 * nz.fbm2(b, z, sf.seed, (0.2, 0.05), sf.f))[:, None]
    lamp_cols = np.array([[1.0, 0.12, 0.08], [1.0, 0.6, 0.05], [0.2, 1.0, 0.45]])
    for i, zc in enumerate((0.27, 0.0, -0.27)):
        cov = _disc(b, z - zc, 0.095, sf.f) * front
        on = (sf.prm[:, 0] == i)
        lamp = np.where(on[:, None], lamp_cols[i][None] * 0.4, np.array([0.04, 0.04, 0.04])[None])
        col = _mix(col, lamp, cov)
        emit += np.where(on, cov, 0)[:, None] * lamp_cols[i][None] * 0.9
    return col


def _sign(sf: Surf, ellipsoid: np.ndarray) -> np.ndarray:
    b, z = sf.b, sf.z
    hb, hz = sf.hb, sf.hz
    front = np.where(ellipsoid, sf.a < 0, (sf.axis == 0) & (sf.sign < 0))
    white = np.array([0.85, 0.85, 0.85])[None]
    red = sf.color[:, 0] > 0.5 + sf.color[:, 2]
    r = np.sqrt((b / hb) ** 2 + (z / hz) ** 2)
    fr = sf.f / hb
    ring = np.clip((r - 0.75) / np.maximum(fr, 1e-4) + 0.5, 0, 1)
    round_face = np.where(red[:, None], _mix(white, sf.color, ring), _mix(sf.color, white, ring * 0.9))
    bar = _box(z, -0.12 * hz, 0.12 * hz, sf.f) * _box(b, -0.55 * hb, 0.55 * hb, sf.f)
    round_face = _mix(round_face, np.where(red[:, None], sf.color * 0.2, white), bar)
    edge = np.minimum(hb - np.abs(b), hz - np.abs(z))
    border = np.clip((0.06 - edge) / np.maximum(sf.f, 1e-4) + 0.5, 0, 1)
    glyph = nz.lines(z, 0.18, 0.05, sf.f) * _box(b, -0.6 * hb, 0.3 * hb, sf.f)
    rect_face = _mix(_mix(sf.color, white, glyph * 0.8), white, border)
    face = np.where(ellipsoid[:, None], round_face, rect_face)
    back = np.array([0.5, 0.5, 0.52])[None] * (1 + 0.2 * nz.fbm2(b, z, sf.seed, (0.3, 0.06), sf.f))[:, None]
    return np.where(front[:, None], face, back)


def _trunk(sf: Surf) -> np.ndarray:
    a, b, z = sf.a, sf.b, sf.z
    bark = nz.fbm3(a * 3, b * 3, z * 0.6, sf.seed, (0.6, 0.2, 0.06), sf.f * 3)
    return sf.color * (1 + 0.6 * bark)[:, None]


def _leaves(sf: Surf) -> np.ndarray:
    a, b, z = sf.a, sf.b, sf.z
    n = nz.fbm3(a, b, z, sf.seed, (1.2, 0.45, 0.16, 0.06, 0.025), sf.f, gain=0.85)
    holes = np.clip((nz.value3(a / 0.35, b / 0.35, z / 0.35, sf.seed + 3) - 0.72) * 5, 0, 1) * nz.lod(0.35, sf.f)
    k = np.clip(1.0 + 1.3 * n, 0.25, 2.2) * (1 - 0.6 * holes)
    yellow = np.clip(nz.value3(a / 2.0, b / 2.0, z / 2.0, sf.seed + 5) - 0.5, 0, 1)
    col = sf.color * k[:, None]
    return col + yellow[:, None] * np.array([0.08, 0.06, -0.02])[None]


def _vehicle_lights(sf: Surf, col: np.ndarray, emit: np.ndarray) -> np.ndarray:
    """Tail/head lights and a number plate on the ends (a faces) of car bodies."""
    b, z = sf.b, sf.z
    hb, hz = sf.hb, sf.hz
    end = sf.axis == 0
    rear = end & (sf.sign < 0)
    lights = _box(np.abs(b), hb - 0.42, hb - 0.08, sf.f) * _box(z, hz * 0.2, hz * 0.75, sf.f) * end
    light_col = np.where(rear[:, None], np.array([0.6, 0.04, 0.03])[None], np.array([0.85, 0.85, 0.8])[None])
    col = _mix(col, light_col, lights)
    emit += (lights * np.where(rear, 0.25, 0.1))[:, None] * light_col
    plate = _box(b, -0.26, 0.26, sf.f) * _box(z, -hz * 0.55, -hz * 0.05, sf.f) * end
    glyph = nz.lines(b, 0.07, 0.025, sf.f) * _box(z, -hz * 0.45, -hz * 0.15, sf.f)
    col = _mix(col, np.array([0.8, 0.8, 0.78])[None] * (1 - 0.8 * glyph)[:, None], plate)
    bumper = _box(z, -hz - 1, -hz * 0.6, sf.f) * (sf.axis != 2)
    return _mix(col, col * 0.35 + 0.02, bumper)


def _paint(sf: Surf) -> np.ndarray:
    u, v = sf.face_uv()
    grain = nz.fbm2(u, v + 3 * sf.axis, sf.seed, (1.5, 0.4, 0.1, 0.03), sf.f)
    sheen = np.where(sf.axis == 2, 1.15, 1.0) * (1.0 + 0.15 * (v / np.maximum(2 * sf.hz, 0.1) - 0.5))
    return sf.color * ((1 + 0.25 * grain) * sheen)[:, None]


def _glass(u: np.ndarray, v: np.ndarray, sf: Surf) -> np.ndarray:
    refl = nz.fbm2(u, v, sf.seed + 5, (1.5, 0.4, 0.1), sf.f)
    k = 0.08 + 0.06 * v / np.maximum(sf.hz * 2, 0.1) + 0.05 * refl
    return np.stack([k * 0.9, k, k * 1.15], 1)


def _cabin(sf: Surf) -> np.ndarray:
    u, v = sf.face_uv()
    paint = _paint(sf)
    w_u = np.where(sf.axis == 0, sf.hb, sf.ha) * 2
    truck = sf.prm[:, 2] > 0.5
    h = sf.hz * 2
    lo = np.where(truck, h * 0.5, 0.08)
    win = _box(u, 0.09, w_u - 0.09, sf.f) * _box(v, lo, h - 0.07, sf.f) * (sf.axis != 2)
    pillar = (sf.axis == 1) * nz.lines(u - w_u * 0.5, 1e4, 0.1, sf.f) * (~truck)
    win = win * (1 - pillar)
    return _mix(paint, _glass(u, v, sf), win)


def _wheel(sf: Surf) -> np.ndarray:
    a, z = sf.a, sf.z
    side = sf.axis == 1
    rim = _disc(a, z, 0.55 * sf.hz, sf.f) * side
    spokes = nz.lines(np.arctan2(z, a) * 0.2, 0.12, 0.04, sf.f / np.maximum(np.abs(a) + np.abs(z), 0.05))
    rubber = np.array([0.05, 0.05, 0.05])[None] * (1 + 0.3 * nz.fbm2(a, z, sf.seed, (0.1, 0.03), sf.f))[:, None]
    metal = np.array([0.5, 0.5, 0.52])[None] * (0.6 + 0.4 * spokes)[:, None]
    return _mix(rubber, metal, rim)


def _cargo(sf: Surf) -> np.ndarray:
    u, v = sf.face_uv()
    ribs = nz.lines(u, 0.45, 0.06, sf.f) * (sf.axis != 2)
    dirt = nz.fbm2(u, v, sf.seed + 3, (2.0, 0.5, 0.12, 0.03), sf.f)
    return sf.color * ((1 - 0.25 * ribs) * (1 + 0.2 * dirt))[:, None]


def _bus(sf: Surf) -> np.ndarray:
    u, v = sf.face_uv()
    paint = _paint(sf)
    band = _box(v, 1.05, 2.45, sf.f) * (sf.axis != 2)
    pillars = nz.lines(u, 1.3, 0.12, sf.f) * (sf.axis == 1)
    windscreen = (sf.axis == 0) * _box(v, 0.9, 2.55, sf.f) * _box(u, 0.1, sf.hb * 2 - 0.1, sf.f)
    win = np.maximum(band * (1 - pillars), windscreen)
    return _mix(paint, _glass(u, v, sf), win)


def _cloth(sf: Surf) -> np.ndarray:
    a, b, z = sf.a, sf.b, sf.z
    n = nz.fbm3(a, b, z, sf.seed, (0.3, 0.08, 0.025), sf.f)
    stripes = nz.lines(z, 0.12, 0.05, sf.f) * (sf.seed % 4 == 0) * (sf.prm[:, 0] < 0.5)
    return sf.color * ((1 + 0.35 * n) * (1 - 0.4 * stripes))[:, None]


def _skin(sf: Surf) -> np.ndarray:
    a, z = sf.a, sf.z
    hair = np.clip((z / sf.hz - 0.25) * 6 + (a / sf.ha) * 3, 0, 1)
    hair_col = np.where((sf.seed % 3 == 0)[:, None], np.array([0.35, 0.25, 0.12])[None],
                        np.array([0.06, 0.05, 0.04])[None])
    return _mix(sf.color, hair_col, hair)


def shade_parts(scene: Scene, part: np.ndarray, p: tuple[np.ndarray, np.ndarray, np.ndarray],
                d: tuple[np.ndarray, np.ndarray, np.ndarray], dist: np.ndarray, fx: float,
                placement: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Albedo [n,3], emitted light [n,3] and world normal (nx, ny, nz) of the pixels showing parts.

    p: world hit point, d: unit ray direction, dist: distance along the ray (planar float32 arrays).
    """
    parts = scene.parts
    center = placement["center"].astype(np.float32)
    sin_p, cos_p = np.sin(placement["phi"]).astype(np.float32), np.cos(placement["phi"]).astype(np.float32)
    half = parts.half.astype(np.float32)
    sa, ca = sin_p[part], cos_p[part]
    rx, ry = p[0] - center[part, 0], p[1] - center[part, 1]
    a = rx * sa + ry * ca
    b = rx * ca - ry * sa
    z = p[2] - center[part, 2]
    ha, hb, hz = half[part, 0], half[part, 1], half[part, 2]
    qa, qb, qz = np.abs(a) / ha, np.abs(b) / hb, np.abs(z) / hz
    axis = np.where((qa >= qb) & (qa >= qz), 0, np.where(qb >= qz, 1, 2)).astype(np.int8)
    sign = np.where(axis == 0, np.sign(a), np.where(axis == 1, np.sign(b), np.sign(z)))
    sign[sign == 0] = 1
    box = parts.kind[part] == BOX
    na = np.where(box, (axis == 0) * sign, a / (ha * ha))
    nb = np.where(box, (axis == 1) * sign, b / (hb * hb))
    nzl = np.where(box, (axis == 2) * sign, z / (hz * hz))
    nx, ny = na * sa + nb * ca, na * ca - nb * sa
    inv = 1.0 / np.sqrt(nx * nx + ny * ny + nzl * nzl)
    nx, ny, nzl = nx * inv, ny * inv, nzl * inv
    cos = np.abs(nx * d[0] + ny * d[1] + nzl * d[2])
    f = dist / (fx * np.maximum(cos, 0.2))
    mat = parts.mat[part]
    albedo = np.empty((len(part), 3), np.float32)
    emit = np.zeros((len(part), 3), np.float32)
    seeds = parts.seed.astype(np.uint32)
    order = np.argsort(mat, kind="stable")
    bounds = np.searchsorted(mat[order], np.unique(mat), side="left").tolist() + [len(order)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = order[lo:hi]
        m = int(mat[sel[0]])
        k = part[sel]
        sf = Surf(a[sel], b[sel], z[sel], ha[sel], hb[sel], hz[sel], axis[sel], sign[sel], f[sel], parts.color[k],
                  parts.prm[k], seeds[k])
        e = np.zeros((len(sel), 3), np.float32)
        if m == M_FACADE:
            col = _facade(sf)
        elif m == M_FENCE:
            col = _fence(sf)
        elif m == M_WALL:
            col = _wall(sf)
        elif m == M_POLE:
            col = _pole(sf)
        elif m == M_TLIGHT:
            col = _traffic_light(sf, e)
        elif m == M_SIGN:
            col = _sign(sf, ~box[sel])
        elif m == M_TRUNK:
            col = _trunk(sf)
        elif m == M_LEAVES:
            col = _leaves(sf)
        elif m == M_CAR:
            col = _vehicle_lights(sf, _paint(sf), e)
        elif m == M_CABIN:
            col = _cabin(sf)
        elif m == M_WHEEL:
            col = _wheel(sf)
        elif m == M_CARGO:
            col = _cargo(sf)
        elif m == M_BUS:
            col = _vehicle_lights(sf, _bus(sf), e)
        elif m == M_CLOTH:
            col = _cloth(sf)
        elif m == M_SKIN:
            col = _skin(sf)
        else:  # pragma: no cover - every material above is handled
            raise ValueError(f"unknown material {m}")
        albedo[sel] = col
        emit[sel] = e
    return albedo, emit, (nx, ny, nzl)


# ----------------------------------------------------------------------------------------------
# Light, sky, hood, camera response
# ----------------------------------------------------------------------------------------------
def sky(scene: Scene, d: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Sky colour of unit world directions d (planar): gradient, sun glow, clouds at infinity."""
    dx, dy, dz = d
    k = np.clip(dz / 0.45, 0.0, 1.0) ** 0.6
    col = scene.sky_horizon[None] + (scene.sky_zenith - scene.sky_horizon)[None] * k[:, None]
    glow = np.exp((dx * scene.sun[0] + dy * scene.sun[1] + dz * scene.sun[2] - 1.0) * 30.0)
    col = col + glow[:, None] * scene.sun_color[None] * 0.5
    up = np.maximum(dz, 0.03)
    cloud = nz.fbm2(dx / up, dy / up, scene.tex_seed + 31, (2.0, 0.7, 0.25, 0.08), np.full(len(dx), 1e-3, np.float32))
    cover = np.clip((cloud + 0.1) * 2.5, 0.0, 1.0) * np.clip(dz * 8, 0, 1)
    return _mix(col, np.full_like(col, 0.85) * (0.9 + 0.2 * cloud)[:, None], cover * 0.7).astype(np.float32)


def light(scene: Scene, albedo: np.ndarray, normal: tuple[np.ndarray, np.ndarray, np.ndarray],
          emit: np.ndarray | None = None) -> np.ndarray:
    """Lambertian sun plus hemispherical sky ambient (no shadows)."""
    sky_mean = 0.5 * (scene.sky_zenith + scene.sky_horizon)
    sky_mean = (sky_mean / max(float(sky_mean.mean()), 1e-3) * 0.8).astype(np.float32)
    nx, ny, nzz = normal
    lam = np.maximum(nx * np.float32(scene.sun[0]) + ny * np.float32(scene.sun[1]) + nzz * np.float32(scene.sun[2]), 0)
    hemi = (0.65 + 0.35 * nzz) * np.float32(scene.ambient)
    irr = lam[:, None] * scene.sun_color.astype(np.float32)[None] + hemi[:, None] * sky_mean[None]
    out = albedo * irr
    return out if emit is None else out + emit


def hood_color(scene: Scene, height: int, width: int, mask: np.ndarray) -> np.ndarray:
    """Bonnet: dark paint reflecting the sky near its edge, camera-fixed (identical in every frame)."""
    v, u = np.nonzero(mask)
    hood_top = height * (1 - HOOD_CENTER)
    k = np.clip((v - hood_top) / (height * HOOD_CENTER), 0, 1)
    x = (u - width / 2) / width
    grain = nz.fbm2(u * (512.0 / width), v * (256.0 / height), scene.tex_seed + 41, (40.0, 10.0, 3.0),
                    np.full(len(u), 1.0, np.float32))
    refl = (1 - k) ** 2 * 0.9 + 0.1
    col = scene.hood_color[None] * (0.7 + 0.2 * grain)[:, None] + refl[:, None] * scene.sky_horizon[None] * 0.35
    return col * (1 - 0.2 * np.abs(x))[:, None]


_TONE_SIZE, _TONE_MAX = 4096, 2.0  # LUT over sqrt(linear): fine steps in the shadows


def _tone_lut() -> np.ndarray:
    r = (np.arange(_TONE_SIZE, dtype=np.float64) + 0.5) / _TONE_SIZE * _TONE_MAX
    x = r * r
    return (255.0 * np.power(1.0 - np.exp(-1.6 * x), 1 / 1.8)).astype(np.float32)


_TONE = _tone_lut()


_NOISE: dict[int, np.ndarray] = {}


def _noise_table(n: int) -> np.ndarray:
    """2n standard-normal draws, made once per process; each frame reads a window at a random offset.

    Drawing n fresh normals per frame costs as much as shading a material; a window of a fixed
    table at a seeded offset is as good a sensor noise, and deterministic.
    """
    if n not in _NOISE:
        _NOISE[n] = np.random.default_rng(n).standard_normal(2 * n, dtype=np.float32) * np.float32(1.2)
    return _NOISE[n]


def camera_response(scene: Scene, linear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, soft-shoulder tone curve with gamma (a LUT), sensor noise, 8 bits."""
    x = linear * (scene.exposure * scene.white_balance).astype(np.float32)[None, None]
    np.maximum(x, 0.0, out=x)
    np.sqrt(x, out=x)
    x *= np.float32(_TONE_SIZE / _TONE_MAX)
    idx = x.astype(np.int32)
    np.minimum(idx, _TONE_SIZE - 1, out=idx)
    y = _TONE[idx]
    table = _noise_table(y.size)
    start = int(rng.integers(y.size))
    y += table[start:start + y.size].reshape(y.shape)
    y += np.float32(0.5)
    np.clip(y, 0, 255, out=y)
    return y.astype(np.uint8)
