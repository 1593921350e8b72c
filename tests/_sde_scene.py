"""A tiny analytic street for the SDE tests: camera driving forward (+z) between two textured
building facades over a textured road, with a textured wall far ahead. Ray casting gives exact
depth, so warping with the true depth and pose can be checked against identity."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CAM_HEIGHT = 1.5  # the road is the plane y = +1.5 (y points down)
SIDE_X = 5.0  # facades at x = ±5
FAR_Z = 60.0  # wall ahead (camera positions stay well before it)


def intrinsics(h: int, w: int) -> np.ndarray:
    return np.array([[0.6 * w, 0, (w - 1) / 2], [0, 0.6 * w, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)


def _texture(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Smooth multi-frequency colour texture of 2-D surface coordinates (metres) -> [...,3] in [0,1]."""
    rng = np.random.default_rng(seed)
    out = np.zeros(a.shape + (3,))
    for _ in range(6):
        fa, fb = rng.uniform(0.8, 3.0, 2) * rng.choice([-1, 1], 2)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.3, 1.0, 3)
        out += amp * np.sin(fa * a + fb * b + phase)[..., None]
    return 1 / (1 + np.exp(-out / 2))


def render(h: int, w: int, cam_z: float, supersample: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """RGB float [h,w,3] and depth [h,w] of the camera at (0, 0, cam_z), looking down +z."""
    K = intrinsics(h, w)
    s = supersample
    offs = (np.arange(s) + 0.5) / s - 0.5
    v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.zeros((h, w, 3))
    depth = None
    for dv in offs:
        for du in offs:
            x = (u + du - K[0, 2]) / K[0, 0]
            y = (v + dv - K[1, 2]) / K[1, 1]
            t_far = np.full_like(x, FAR_Z - cam_z)
            t_ground = np.where(y > 1e-6, CAM_HEIGHT / np.maximum(y, 1e-6), np.inf)
            t_side = np.where(np.abs(x) > 1e-6, SIDE_X / np.maximum(np.abs(x), 1e-6), np.inf)
            t = np.minimum(np.minimum(t_far, t_ground), t_side)
            px, py, pz = x * t, y * t, cam_z + t
            col = np.where((t == t_ground)[..., None], _texture(px, pz, 1),
                           np.where((t == t_side)[..., None], _texture(pz, py + 10 * np.sign(px), 2),
                                    _texture(px, py, 3)))
            img += col / (s * s)
            if du == offs[len(offs) // 2] and dv == offs[len(offs) // 2]:
                depth = t
    if s % 2 == 0:  # centre sample exactly at the pixel centre only for odd s
        raise ValueError("supersample must be odd")
    return img.astype(np.float32), depth.astype(np.float32)


def T_src_tgt(z_src: float, z_tgt: float) -> np.ndarray:
    """Target camera -> source camera for cameras translated along z (no rotation)."""
    T = np.eye(4)
    T[2, 3] = z_tgt - z_src
    return T


def write_dataset(root: Path, h: int = 64, w: int = 128, snippets: int = 4, speed: float = 0.5,
                  val_snippets: int = 1, offsets: tuple[int, ...] = (-1, 0, 1)) -> Path:
    """Prepared-layout PNGs + manifest.parquet with triplets (train) and annotated val frames with GT;
    each snippet has the frames at `offsets` around its annotated frame (as data.frame_offsets)."""
    import cv2
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    K = intrinsics(h, w)
    rows = []
    for split, n in (("train", snippets), ("val", val_snippets)):
        for s in range(n):
            base = 2.0 * s + (1.0 if split == "val" else 0.0)  # val: in between the train positions
            for off in offsets:
                fid = f"street_{s:06d}_{19 + off:06d}" if split == "train" else f"valst_{s:06d}_{19 + off:06d}"
                img, depth = render(h, w, base + off * speed)
                p = root / f"{fid}.png"
                cv2.imwrite(str(p), cv2.cvtColor((img * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
                dp = root / f"{fid}_depth.npy"
                np.save(dp, depth)
                rows.append({"id": fid, "split": split, "domain": "target", "city": fid.split("_")[0],
                             "sequence": s, "frame": 19 + off, "offset": off, "annotated": off == 0,
                             "image": p.name, "label": None, "depth": dp.name, "depth_exact": dp.name,
                             "moving": None, "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
                             "height": h, "width": w})
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        pre = r["id"].rsplit("_", 1)[0]
        prev, nxt = f"{pre}_{r['frame'] - 1:06d}", f"{pre}_{r['frame'] + 1:06d}"
        r["prev_image"] = by_id[prev]["image"] if prev in by_id else None
        r["next_image"] = by_id[nxt]["image"] if nxt in by_id else None
    path = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path
