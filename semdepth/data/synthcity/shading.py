"""Ground textures, part surfaces (normals, footprints, dispatch to materials.py), Lambertian light,
sky, ego hood and camera response.

Every texture is a function of the hit point in world coordinates (ground) or in the frame of the
part it lies on (objects, so a moving car carries its texture along), and of the pixel footprint
only through the anti-aliasing fade (noise.lod / noise.lines). Light is a fixed sun per snippet
plus sky ambient; no shadows (they would need a second ray per pixel).
"""
from __future__ import annotations

import numpy as np

from semdepth.data.synthcity import materials as mt
from semdepth.data.synthcity import noise as nz
from semdepth.data.synthcity.materials import Surf, interval, mix
from semdepth.data.synthcity.scene import BOX, M_KERB, M_ROAD, M_SIDEWALK, M_TERRAIN, Scene

HOOD_CENTER, HOOD_EDGE = 0.085, 0.045  # hood height (share of rows) at the image centre and at the sides


def hood_mask(height: int, width: int) -> np.ndarray:
    """[H,W] bool: the ego vehicle's bonnet, a fixed curved shape in the bottom ~8% of rows.

    Its lowest HOOD_EDGE share of rows is hood across the full width (tests rely on this).
    """
    u = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    rows = height * (HOOD_EDGE + (HOOD_CENTER - HOOD_EDGE) * (1.0 - u * u))
    v = np.arange(height)[:, None] + 0.5
    return v >= height - rows[None, :]


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
            zebra = nz.lines(ll, 1.0, 0.5, fl) * interval(ss, scene.crosswalk, scene.crosswalk + 4.0, fs)
            paint = np.maximum(paint, zebra)
        wear = 0.75 + 0.25 * nz.value2(xx / 0.3, yy / 0.3, seed + 5)
        out[m] = mix(col, np.full_like(col, 0.78) * wear[:, None], paint * 0.9)

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
        out[m] = mix(col, np.array([0.36, 0.29, 0.2])[None] * (1 + 0.4 * blades)[:, None], dirt * 0.8)
    return out


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
                  parts.prm[k], seeds[k], ~box[sel])
        e = np.zeros((len(sel), 3), np.float32)
        albedo[sel] = mt.BY_MATERIAL[m](sf, e)
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
    return mix(col, np.full_like(col, 0.85) * (0.9 + 0.2 * cloud)[:, None], cover * 0.7).astype(np.float32)


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
