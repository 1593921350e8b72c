"""Where the photometric loss looks: auto-mask share on lead-car pixels against other pixels.

Monodepth2's auto-mask keeps a pixel only where a warped source beats the unwarped one. A car that
drives at (nearly) the camera's speed barely moves in the image, so the unwarped source explains it
and the pixel gives no gradient. Whether the stage-1 network can learn the "car at infinity"
artifact at all depends on that share, so this probe measures it on the prepared training triplets:
for a stage-1 checkpoint (and a freshly initialised network of the same config, the state at step 0)
it runs the stage's own objective (`semdepth.losses.reprojection`) without augmentation and reports,
per group of pixels, the share where an identity error wins (no gradient).

Groups: moving pixels of lead-car frames (the lead cars and any other moving object of those frames),
moving pixels of clean frames, and static pixels of all frames (hood rows excluded).

    python benchmarks/automask_lead.py [--workdir DIR] [--model data/models/sde_stage1.pt] [--out F]

One JSON row per (network, group) on stdout (and in `--out`).
"""
from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from torch.utils.data import default_collate  # noqa: E402

from semdepth.data.frames import read_label_u8  # noqa: E402
from semdepth.data.sequence import TripletDataset  # noqa: E402
from semdepth.io import read_table, resolve  # noqa: E402
from semdepth.losses.reprojection import ObjectiveConfig, self_supervised_loss  # noqa: E402
from semdepth.models.sde import build_depth_net, build_pose_net, load_sde  # noqa: E402
from semdepth.training.sde_trainer import pair_poses, pose_inputs  # noqa: E402

GROUPS = ("lead_moving", "clean_moving", "static")


@torch.no_grad()
def identity_wins(depth_net, pose_net, batch: dict, offsets, cfg: dict) -> torch.Tensor:
    """[B,H,W] bool: where an unwarped source wins the objective's per-pixel minimum at scale 0 (the
    objective itself, `semdepth.losses.reprojection`, run on the full-resolution disparity)."""
    disp = depth_net(batch["aug_0"], batch)["disp"][0]
    axisangle, translation = pose_net(*pose_inputs(batch, offsets, float(cfg.get("pose_scale", 1.0))))
    poses = pair_poses(axisangle, translation, offsets, disp.shape[0])
    # automask on whatever the checkpoint was trained with: the question is where the mask would cut
    ocfg = ObjectiveConfig(float(cfg["min_depth"]), float(cfg["max_depth"]), float(cfg["smoothness"]), automask=True)
    terms = self_supervised_loss({0: disp}, batch["color_0"], [batch[f"color_{o}"] for o in offsets], poses,
                                 batch["K"], batch["inv_K"], ocfg)
    return terms["identity_mask"][:, 0]


def measure(depth_net, pose_net, cfg: dict, ds: TripletDataset, lead: np.ndarray, moving: list[Path],
            hood_rows: int, batch: int = 16) -> dict[str, dict]:
    acc = {g: [0, 0] for g in GROUPS}  # pixels, pixels where identity wins
    for start in range(0, len(ds), batch):
        idx = list(range(start, min(start + batch, len(ds))))
        wins = identity_wins(depth_net, pose_net, default_collate([ds[(i, 0)] for i in idx]), ds.source_offsets, cfg)
        for j, i in enumerate(idx):
            mv = torch.from_numpy(read_label_u8(moving[i]) > 0)
            valid = torch.ones_like(mv)
            valid[mv.shape[0] - hood_rows:] = False
            group = "lead_moving" if lead[i] else "clean_moving"
            for g, m in ((group, mv & valid), ("static", ~mv & valid)):
                acc[g][0] += int(m.sum())
                acc[g][1] += int(wins[j][m].sum())
    return {g: {"pixels": px, "identity_wins_share": won / max(px, 1)} for g, (px, won) in acc.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--model", default="data/models/sde_stage1.pt")
    ap.add_argument("--hood-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0, help="init seed of the fresh network")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    os.chdir(args.workdir)
    manifest_path = Path("data/prepared/manifest.parquet")
    net, pose, cfg = load_sde(args.model)
    offsets = [int(o) for o in cfg["source_offsets"]]
    ds = TripletDataset(manifest_path, flip_prob=0.0, jitter_prob=0.0, source_offsets=offsets)
    man = read_table(manifest_path).set_index("id")
    rows = man.loc[ds.ids]
    lead = rows["lead_car"].fillna(False).astype(bool).to_numpy()
    moving = [resolve(p, manifest_path.parent) for p in rows["moving"]]
    hood_rows = int(round(args.hood_fraction * ds.height))
    torch.manual_seed(args.seed)
    fresh = (build_depth_net(cfg).eval(), build_pose_net(cfg).eval())
    results = []
    for name, (d, p) in (("stage1", (net, pose)), ("init", fresh)):
        t0 = time.perf_counter()
        res = measure(d, p, cfg, ds, lead, moving, hood_rows)
        secs = time.perf_counter() - t0
        for g, r in res.items():
            row = {"bench": "automask_lead", "network": name, "model": args.model, "group": g,
                   "frames": len(ds), "lead_frames": int(lead.sum()), "source_offsets": offsets,
                   "seconds": round(secs, 2), **r}
            results.append(row)
            print(json.dumps(row))
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in results))


if __name__ == "__main__":
    main()
