"""Vectorised ray casting of the analytic street: ground with raised sidewalks, boxes, ellipsoids.

Rays are z-normalised in the camera, so every hit parameter t is the z-depth directly. The ground is
solved for all pixels at once; each part is intersected only with the rays of its screen rectangle
(the projected bounding box after clipping it against the near plane), so the work per frame is
about the visible area of the parts, not parts x pixels. A z-buffer keeps the nearest hit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semdepth.data.synthcity.camera import Intrinsics
from semdepth.data.synthcity.scene import BOX, M_KERB, M_ROAD, M_SIDEWALK, M_TERRAIN, Scene

NEAR = 0.05  # metres
_SIGNS = np.array([[sa, sb, sz] for sa in (-1, 1) for sb in (-1, 1) for sz in (-1, 1)], np.float64)
_EDGES = np.array([(i, j) for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1])


@dataclass
class Hits:
    t: np.ndarray  # [H,W] float32 z-depth of the nearest hit, inf = sky
    ground: np.ndarray  # [H,W] int16 ground material where the ground is nearest, else -1
    part: np.ndarray  # [H,W] int32 part index where a part is nearest, else -1
    placement: dict[str, np.ndarray]  # parts_at(t) of this frame
    dirs: tuple[np.ndarray, np.ndarray, np.ndarray]  # [H,W] float32 x, y, z of the world ray directions


def ground_material(scene: Scene, s: np.ndarray, l: np.ndarray) -> np.ndarray:
    """Material of the sidewalk-level surface at (s, l) (|l| >= kerb line)."""
    al = np.abs(l)
    out = np.full(l.shape, M_SIDEWALK, np.int16)
    if scene.lawn > 0:
        out[al < scene.road_half + scene.lawn] = M_TERRAIN
    beyond = al >= scene.road_half + scene.lawn + scene.sidewalk
    for side in (1, -1):
        m = beyond & ((l > 0) if side > 0 else (l < 0))
        if m.any():
            ends, mats = scene.zones[side]
            idx = np.minimum(np.searchsorted(ends, s[m], side="right"), len(mats) - 1)
            out[m] = mats[idx]
    return out


def cast_ground(scene: Scene, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                dz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Road plane z = 0 between the kerbs, sidewalk level z = kerb beyond, vertical kerb faces between.

    A downward ray first meets z = kerb; if it is beyond the kerb line there, that is the hit.
    Otherwise it meets z = 0: on the road, or (when it crossed the kerb line on the way down) on
    the kerb face, found by the secant method on l(t) (exact for a straight road; for a gentle
    curve the secant step is refined once).
    """
    road, rh = scene.road, scene.road_half
    t_out = np.full(dz.shape, np.inf, np.float32)
    mat = np.full(dz.shape, -1, np.int16)
    down = dz < -1e-7
    if not down.any():
        return t_out, mat
    ddx, ddy, ddz = dx[down].astype(np.float64), dy[down].astype(np.float64), dz[down].astype(np.float64)
    ox, oy, oz = (float(v) for v in origin)
    t1 = (scene.kerb - oz) / ddz
    x1, y1 = ox + t1 * ddx, oy + t1 * ddy
    l1 = road.lateral(x1, y1)
    t0 = -oz / ddz
    l0 = road.lateral(ox + t0 * ddx, oy + t0 * ddy)
    top = np.abs(l1) >= rh
    on_road = ~top & (np.abs(l0) < rh)
    kerb = ~top & ~on_road
    t = np.where(top, t1, t0)
    m = np.where(top, -2, np.where(on_road, M_ROAD, M_KERB)).astype(np.int16)
    if kerb.any():
        target = np.sign(l0[kerb]) * rh
        ta, la, tb, lb = t1[kerb], l1[kerb], t0[kerb], l0[kerb]
        tk = ta + (target - la) / (lb - la) * (tb - ta)
        if road.curvature != 0.0:
            lk = road.lateral(ox + tk * ddx[kerb], oy + tk * ddy[kerb])
            tk = tk + (target - lk) / (lb - la) * (tb - ta)
        t[kerb] = np.clip(tk, ta, tb)
    if top.any():
        s, l = road.to_local(x1[top], y1[top])
        m[top] = ground_material(scene, s, l)
    t_out[down] = t
    mat[down] = m
    return t_out, mat


def _rects(intr: Intrinsics, cam_R: np.ndarray, cam_o: np.ndarray, center: np.ndarray, phi: np.ndarray,
           half: np.ndarray) -> np.ndarray:
    """[N,4] int pixel rectangles (u0, u1, v0, v1; exclusive ends) that can contain each part."""
    sa, ca = np.sin(phi)[:, None], np.cos(phi)[:, None]
    loc = _SIGNS[None] * half[:, None, :]  # [N,8,3] in (a, b, z)
    wx = center[:, None, 0] + loc[..., 0] * sa + loc[..., 1] * ca
    wy = center[:, None, 1] + loc[..., 0] * ca - loc[..., 1] * sa
    wz = center[:, None, 2] + loc[..., 2]
    world = np.stack([wx, wy, wz], axis=-1) - cam_o
    cam = world @ cam_R  # [N,8,3] camera coordinates (R^T p as row vectors)
    z = cam[..., 2]
    pa, pb = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]  # [N,12,3]
    za, zb = pa[..., 2], pb[..., 2]
    cross = (za - NEAR) * (zb - NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(cross, (NEAR - za) / (zb - za), 0.0)
    clip = pa + f[..., None] * (pb - pa)
    pts = np.concatenate([cam, clip], axis=1)
    ok = np.concatenate([z >= NEAR, cross], axis=1)
    zz = np.where(ok, pts[..., 2], 1.0)
    u = intr.fx * pts[..., 0] / zz + intr.cx
    v = intr.fy * pts[..., 1] / zz + intr.cy
    big = 1e9
    umin = np.where(ok, u, big).min(1)
    umax = np.where(ok, u, -big).max(1)
    vmin = np.where(ok, v, big).min(1)
    vmax = np.where(ok, v, -big).max(1)
    rect = np.stack([np.floor(umin), np.ceil(umax) + 1, np.floor(vmin), np.ceil(vmax) + 1], axis=1)
    rect[:, 0:2] = np.clip(rect[:, 0:2], 0, intr.width)
    rect[:, 2:4] = np.clip(rect[:, 2:4], 0, intr.height)
    rect[~ok.any(1)] = 0
    return rect.astype(np.int64)


SMALL = 1024  # parts covering at most this many candidate pixels are intersected in one batch


def _hit_boxes(o: tuple, d: tuple, half: tuple) -> np.ndarray:
    """Slab test in part frames: o (scalars or arrays), d (arrays), half extents; t or inf."""
    tmin = tmax = None
    for oc, dc, hc in zip(o, d, half):
        inv = np.reciprocal(dc)
        mid = inv * -oc
        ext = np.abs(inv, out=inv)
        ext *= hc
        if tmin is None:
            tmin, tmax = mid - ext, mid + ext
        else:
            np.maximum(tmin, mid - ext, out=tmin)
            mid += ext
            np.minimum(tmax, mid, out=tmax)
    return np.where((tmax >= tmin) & (tmin > NEAR), tmin, np.inf)


def _hit_ellipsoids(o: tuple, d: tuple, half: tuple) -> np.ndarray:
    """Ray-ellipsoid in part frames (radii = half): nearest t or inf."""
    q = [oc / hc for oc, hc in zip(o, half)]
    e = [dc / hc for dc, hc in zip(d, half)]
    A = e[0] * e[0] + e[1] * e[1] + e[2] * e[2]
    B = q[0] * e[0] + q[1] * e[1] + q[2] * e[2]
    C = q[0] * q[0] + q[1] * q[1] + q[2] * q[2] - 1.0
    disc = B * B - A * C
    t = (-B - np.sqrt(np.maximum(disc, 0.0))) / A
    return np.where((disc >= 0) & (t > NEAR), t, np.inf)


def cast(scene: Scene, intr: Intrinsics, cam_dirs: np.ndarray, pose: np.ndarray, time: float) -> Hits:
    """Nearest surface along every pixel ray of the camera at `pose` (T_world_cam) and `time`.

    cam_dirs: [3,H,W] camera-frame ray directions (Intrinsics.camera_rays). Large parts are
    intersected one by one with the rays of their rectangle; the many small ones (far furniture,
    wheels, people) in one batch of (pixel, part) pairs, resolved with a scatter-min.
    """
    R, o = pose[:3, :3], pose[:3, 3]
    cu, cv = cam_dirs[0], cam_dirs[1]  # cam_dirs[2] == 1
    dx, dy, dz = (cu * np.float32(R[i, 0]) + cv * np.float32(R[i, 1]) + np.float32(R[i, 2]) for i in range(3))
    zbuf, gmat = cast_ground(scene, o, dx, dy, dz)
    part = np.full(zbuf.shape, -1, np.int32)
    placed = scene.parts_at(time)
    parts = scene.parts
    rects = _rects(intr, R, o, placed["center"], placed["phi"], parts.half)
    area = np.maximum(rects[:, 1] - rects[:, 0], 0) * np.maximum(rects[:, 3] - rects[:, 2], 0)
    todo = np.nonzero(area > 0)[0]
    phi = placed["phi"][todo]
    sa_all, ca_all = np.sin(phi), np.cos(phi)
    rel = o[None] - placed["center"][todo]
    oa_all = rel[:, 0] * sa_all + rel[:, 1] * ca_all
    ob_all = rel[:, 0] * ca_all - rel[:, 1] * sa_all
    small = area[todo] <= SMALL
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # large parts, one by one (per-part scalars as Python floats: numpy scalars are slow here)
        big = np.nonzero(~small)[0]
        scal = np.stack([sa_all, ca_all, oa_all, ob_all, rel[:, 2]], 1)[big].tolist()
        for j, (sa, ca, oa, ob, oz) in zip(big.tolist(), scal):
            k = int(todo[j])
            u0, u1, v0, v1 = rects[k].tolist()
            rx, ry, rz = dx[v0:v1, u0:u1], dy[v0:v1, u0:u1], dz[v0:v1, u0:u1]
            da = rx * sa
            da += ry * ca
            db = rx * ca
            db -= ry * sa
            half = tuple(float(h) for h in parts.half[k])
            fn = _hit_boxes if parts.kind[k] == BOX else _hit_ellipsoids
            thit = fn((oa, ob, oz), (da, db, rz), half)
            zr = zbuf[v0:v1, u0:u1]
            hit = thit < zr
            np.copyto(zr, thit, where=hit)
            np.copyto(part[v0:v1, u0:u1], k, where=hit)
        # small parts, all (pixel, part) pairs at once
        sm = np.nonzero(small)[0]
        if len(sm):
            r = rects[todo[sm]]
            w, n = r[:, 1] - r[:, 0], area[todo[sm]]
            rep = np.repeat(np.arange(len(sm)), n)
            i = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
            pix = (r[rep, 2] + i // w[rep]) * intr.width + r[rep, 0] + i % w[rep]
            rx, ry, rz = dx.reshape(-1)[pix], dy.reshape(-1)[pix], dz.reshape(-1)[pix]
            sa, ca = sa_all[sm].astype(np.float32)[rep], ca_all[sm].astype(np.float32)[rep]
            da, db = rx * sa + ry * ca, rx * ca - ry * sa
            o_pair = tuple(c[sm].astype(np.float32)[rep] for c in (oa_all, ob_all, rel[:, 2]))
            k_pair = todo[sm][rep]
            half = parts.half.astype(np.float32)[k_pair]
            h_pair = (half[:, 0], half[:, 1], half[:, 2])
            box = parts.kind[k_pair] == BOX
            thit = np.where(box, _hit_boxes(o_pair, (da, db, rz), h_pair),
                            _hit_ellipsoids(o_pair, (da, db, rz), h_pair))
            zflat, pflat = zbuf.reshape(-1), part.reshape(-1)
            before = zflat[pix]
            np.minimum.at(zflat, pix, thit)
            win = (thit < before) & (thit == zflat[pix])
            pflat[pix[win]] = k_pair[win]
    gmat[part >= 0] = -1
    return Hits(zbuf, gmat, part, placed, (dx, dy, dz))
