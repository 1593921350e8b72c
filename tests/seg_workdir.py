"""A tiny, self-made project directory for the finetune/evaluate/predict tests.

Written directly (manifest, PNGs, selection table, pseudo-labels, randomly initialised SDE checkpoints)
so these tests do not depend on the upstream stages running; the files follow docs/contracts.md.
Scenes are simple: sky on top, a building band, road below and a car block, with per-class colours plus
noise, so a segmenter can learn something in a few steps, and GT depth that grows towards the horizon.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
H, W = 64, 64
ROAD, BUILDING, SKY, CAR = 0, 2, 10, 13
COLOURS = {ROAD: (128, 64, 128), BUILDING: (70, 70, 70), SKY: (70, 130, 180), CAR: (0, 0, 142)}


def scene(rng: np.random.Generator, shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rgb uint8, train ids uint8, depth float32 m, moving uint8 0/255) of one frame."""
    lab = np.full((H, W), ROAD, np.uint8)
    lab[: H // 4] = SKY
    lab[H // 4: H // 2] = BUILDING
    x0 = 8 + shift
    lab[H // 2 - 4: H // 2 + 12, x0: x0 + 16] = CAR
    lab[-3:] = 255  # a few ignored rows (the hood)
    img = np.zeros((H, W, 3), np.float32)
    for c, col in COLOURS.items():
        img[lab == c] = col
    img += rng.normal(0, 12, img.shape)
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    rows = np.arange(H, dtype=np.float32)[:, None].repeat(W, 1)
    depth = np.where(rows > H // 2, 2.0 + 40.0 * (H - rows) / H, 30.0).astype(np.float32)
    depth[lab == CAR] = 8.0
    depth[lab == SKY] = 0.0
    moving = np.where(lab == CAR, 255, 0).astype(np.uint8)
    return rgb, lab, depth, moving


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), arr)


def write_params(work: Path, **finetune) -> Path:
    raw = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    raw["data"].update(height=H, width=W)
    raw["tracking"]["enabled"] = False
    raw["compute"].update(num_workers=0, device="cpu")
    raw["select"].update(n_labels=3, rounds=[3], student_steps=[1])
    raw["finetune"].update(steps=3, batch_labeled=2, batch_unlabeled=2, checkpoint_every=2)
    raw["finetune"].update(finetune)
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def build(work: Path, train_snippets: int = 4, val_snippets: int = 2, seed: int = 0) -> Path:
    """Write the tiny project into `work` and return it."""
    import torch

    from semdepth.data.cityscapes import write_manifest
    from semdepth.io import write_table
    from semdepth.models.sde import build_depth_net, build_pose_net, save_sde

    rng = np.random.default_rng(seed)
    prepared = work / "data" / "prepared"
    pseudo = work / "data" / "pseudolabels"
    rows, pl_rows = [], []
    for split, n in (("train", train_snippets), ("val", val_snippets)):
        for seq in range(n):
            city = "tinyville" if split == "train" else "valtown"
            for off in (-1, 0, 1):
                fid = f"{city}_{seq:06d}_{19 + off:06d}"
                rgb, lab, depth, moving = scene(rng, shift=2 * seq + off)
                d = prepared / split / city
                _png(d / f"{fid}_leftImg8bit.png", rgb)
                nb = lambda o: f"{split}/{city}/{city}_{seq:06d}_{19 + o:06d}_leftImg8bit.png"  # noqa: E731
                row = {"id": fid, "split": split, "domain": "target", "city": city, "sequence": seq,
                       "frame": 19 + off, "offset": off, "annotated": off == 0,
                       "image": f"{split}/{city}/{fid}_leftImg8bit.png",
                       "prev_image": nb(off - 1) if off > -1 else None,
                       "next_image": nb(off + 1) if off < 1 else None,
                       "label": None, "depth": None, "depth_exact": None, "moving": None, "lead_car": False,
                       "pose": None, "fx": 0.58 * W, "fy": 1.16 * H, "cx": W / 2 - 0.5, "cy": H / 2 - 0.5,
                       "baseline": 0.2, "height": H, "width": W}
                if off == 0:
                    _png(d / f"{fid}_trainIds.png", lab)
                    np.save(d / f"{fid}_depth.npy", depth)
                    _png(d / f"{fid}_moving.png", moving)
                    row.update(label=f"{split}/{city}/{fid}_trainIds.png", depth=f"{split}/{city}/{fid}_depth.npy",
                               depth_exact=f"{split}/{city}/{fid}_depth.npy", moving=f"{split}/{city}/{fid}_moving.png")
                rows.append(row)
                pd_ = pseudo / split / city
                plab = lab.copy()
                plab[plab == 255] = ROAD
                _png(pd_ / f"{fid}_trainid.png", plab)
                _png(pd_ / f"{fid}_conf.png", np.full((H, W), 250, np.uint8))
                _png(pd_ / f"{fid}_fg.png", (plab == CAR).astype(np.uint8))
                pl_rows.append({"id": fid, "split": split, "trainid": f"{split}/{city}/{fid}_trainid.png",
                                "confidence": f"{split}/{city}/{fid}_conf.png", "foreground": f"{split}/{city}/{fid}_fg.png"})
    write_manifest(rows, prepared / "manifest.parquet")
    import pandas as pd

    write_table(pd.DataFrame(pl_rows), pseudo / "pseudolabels.parquet")
    annotated = sorted(r["id"] for r in rows if r["split"] == "train" and r["annotated"])
    sel = pd.DataFrame({"id": annotated, "rank": list(range(len(annotated))), "round": [0] * len(annotated),
                        "distance": [0.0] * len(annotated), "uncertainty": [0.0] * len(annotated)})
    write_table(sel, work / "data" / "selection" / "selection.parquet")
    params = write_params(work)
    from semdepth.config import load_params, to_dict

    sde_cfg = to_dict(load_params(params).sde)
    for i, name in enumerate(("sde_stage1.pt", "sde_stage2.pt")):
        torch.manual_seed(100 + i)
        save_sde(work / "data" / "models" / name, build_depth_net(sde_cfg), build_pose_net(sde_cfg), sde_cfg,
                 {"stage": i + 1})
    return work
