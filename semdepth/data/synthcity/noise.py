"""Hash-based value noise, evaluated at world (or object) coordinates.

Textures must be functions of the surface point, never of the pixel, so that a point looks the same
from every frame (the photometric loss of self-supervised depth relies on it). Lattice values come
from an integer hash instead of a stored table: no state, identical in every worker process.

Every octave is faded out once its wavelength drops below ~2 pixel footprints (a cheap mip-map):
without it, fine grain aliases into noise that changes from frame to frame.
"""
from __future__ import annotations

import numpy as np

_P1, _P2, _P3 = np.uint32(0x8DA6B343), np.uint32(0xD8163841), np.uint32(0xCB1AB31F)
_F1, _F2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)
_S16, _S13 = np.uint32(16), np.uint32(13)


def _seed_u32(seed: int | np.ndarray) -> np.ndarray | np.uint32:
    """Python ints are scrambled here; uint32 arrays (per-pixel part seeds) are used as they are."""
    if isinstance(seed, np.ndarray):
        return seed if seed.dtype == np.uint32 else seed.astype(np.int64).astype(np.uint32)
    return np.uint32((int(seed) * 0x632BE5AB + 0x5BD1E995) & 0xFFFFFFFF)


def _u32(k: np.ndarray | int) -> np.ndarray:
    """Integer lattice coordinate as uint32 (two's complement wrap for negatives)."""
    k = np.asarray(k)
    if k.dtype == np.int32:
        return k.view(np.uint32)
    return k.astype(np.int64).astype(np.uint32)


def _fmix(h: np.ndarray) -> np.ndarray:
    """Murmur3 finaliser: avalanches a linear combination of the coordinates."""
    h = h ^ (h >> _S16)
    h *= _F1
    h ^= h >> _S13
    h *= _F2
    h ^= h >> _S16
    return h


def hash_u32(*ints: np.ndarray | int, seed: int | np.ndarray = 0) -> np.ndarray:
    """Well-mixed uint32 hash of integer lattice coordinates (wrapping arithmetic is intended).

    `seed` may be an array (one texture seed per pixel, e.g. per part).
    """
    with np.errstate(over="ignore"):
        h = _seed_u32(seed) + _u32(ints[0]) * _P1
        for k, p in zip(ints[1:], (_P2, _P3)):
            h = h + _u32(k) * p
        return _fmix(h)


def _unit(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def hash_unit(*ints: np.ndarray | int, seed: int | np.ndarray = 0) -> np.ndarray:
    """Hash mapped to float32 in [0, 1)."""
    return _unit(hash_u32(*ints, seed=seed))


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _cell(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lattice cell (uint32, wrapped) and smoothed fractional position."""
    xf = np.floor(x)
    return xf.astype(np.int32).view(np.uint32), _fade((x - xf).astype(np.float32))


def value2(x: np.ndarray, y: np.ndarray, seed: int | np.ndarray) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1] with unit lattice spacing.

    The corner hashes share one linear base (x*P1 + y*P2 + seed); neighbours only add P1/P2.
    """
    xi, tx = _cell(x)
    yi, ty = _cell(y)
    with np.errstate(over="ignore"):
        base = xi * _P1 + yi * _P2 + _seed_u32(seed)
        a = _unit(_fmix(base))
        b = _unit(_fmix(base + _P1))
        c = _unit(_fmix(base + _P2))
        d = _unit(_fmix(base + (_P1 + _P2)))
    top = a + (b - a) * tx
    return top + ((c + (d - c) * tx) - top) * ty


def value3(x: np.ndarray, y: np.ndarray, z: np.ndarray, seed: int | np.ndarray) -> np.ndarray:
    """Smooth 3-D value noise in [0, 1] with unit lattice spacing."""
    xi, tx = _cell(x)
    yi, ty = _cell(y)
    zi, tz = _cell(z)
    out = np.zeros(np.shape(x), np.float32)
    with np.errstate(over="ignore"):
        base = xi * _P1 + yi * _P2 + zi * _P3 + _seed_u32(seed)
        for dz in (0, 1):
            wz = tz if dz else 1.0 - tz
            for dy in (0, 1):
                wy = ty if dy else 1.0 - ty
                corner = base + (np.uint32(dy) * _P2 + np.uint32(dz) * _P3)
                a = _unit(_fmix(corner))
                b = _unit(_fmix(corner + _P1))
                out += (a + (b - a) * tx) * (wy * wz)
    return out


def _seed_add(seed: int | np.ndarray, k: int) -> int | np.ndarray:
    if isinstance(seed, np.ndarray) and seed.dtype == np.uint32:
        return seed + np.uint32(k * 0x9E3779B1 & 0xFFFFFFFF)
    return seed + k


def lod(wavelength: float, footprint: np.ndarray) -> np.ndarray:
    """Weight in [0, 1] of detail of this wavelength given the pixel footprint (metres per pixel)."""
    return np.clip(wavelength / (3.0 * footprint) - 0.5, 0.0, 1.0).astype(np.float32)


def fbm2(x: np.ndarray, y: np.ndarray, seed: int, wavelengths: tuple[float, ...], footprint: np.ndarray,
         gain: float = 0.6) -> np.ndarray:
    """Sum of value-noise octaves (largest wavelength first), centred on 0, roughly in [-1, 1].

    Octaves too fine for the footprint contribute their mean (0) instead of aliasing.
    """
    out = np.zeros(np.shape(x), np.float32)
    amp, total = 1.0, 0.0
    for k, lam in enumerate(wavelengths):
        total += amp
        w = lod(lam, footprint)
        if w.any():  # octaves finer than every pixel's footprint are skipped
            out += (value2(x / lam, y / lam, _seed_add(seed, 101 * k)) - 0.5) * (w * (amp * 2.0))
        amp *= gain
    return out / total


def fbm3(x: np.ndarray, y: np.ndarray, z: np.ndarray, seed: int, wavelengths: tuple[float, ...],
         footprint: np.ndarray, gain: float = 0.6) -> np.ndarray:
    """3-D version of `fbm2` (vegetation crowns, whose surface is not a plane)."""
    out = np.zeros(np.shape(x), np.float32)
    amp, total = 1.0, 0.0
    for k, lam in enumerate(wavelengths):
        total += amp
        w = lod(lam, footprint)
        if w.any():
            out += (value3(x / lam, y / lam, z / lam, _seed_add(seed, 101 * k)) - 0.5) * (w * (amp * 2.0))
        amp *= gain
    return out / total


def lines(coord: np.ndarray, period: float, width: float, footprint: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] of thin lines (mortar, grout, slats) every `period` metres.

    Box-filtered analytically: at distance a line of width w seen through a pixel of footprint f
    covers ~w/f of it, so the colour converges to the average instead of flickering.
    """
    f = np.maximum(footprint, np.float32(1e-4))
    x = coord / period
    d = x - np.floor(x + 0.5)
    np.abs(d, out=d)
    d *= period  # distance to the nearest line centre
    sharp = (width * 0.5 - d) / f
    sharp += 0.5
    np.clip(sharp, 0.0, 1.0, out=sharp)
    mean = np.minimum(np.divide(width, period), 1.0)
    blend = f / (0.7 * period)
    blend -= 0.5
    np.clip(blend, 0.0, 1.0, out=blend)  # footprint comparable to the period: average
    return (sharp + (mean - sharp) * blend).astype(np.float32, copy=False)
