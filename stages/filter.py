"""filter stage: drop training frames whose stage-1 depth puts pixels below the ground (METHOD.md §4).

Frames: every training triplet of the target-domain train split (the frames retrain would learn
from), sorted by id. For each: stage-1 depth (data/models/sde_stage1.pt) at the prepared resolution,
back-projected with the manifest's scaled intrinsics; the ground plane is fitted by RANSAC on road
pixels of the pseudo-labels (fallback: the lower-central region) and pixels more than
`filter.margin` camera heights below it are counted (semdepth/geometry/ground.py has the rules).

Writes data/filter/frames.parquet (docs/contracts.md "Downstream tables"; retrain reads `kept`),
metrics/filter.json and metrics/figures/filter/dropped.png. On SynthCity the manifest knows which
snippets have a same-speed lead car (the failure the filter targets), so precision and recall of
the dropped frames are reported against it.

RANSAC draws come from one generator seeded with `seed` and consumed batch after batch, so results
are reproducible for the same params (filter.batch_size included).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from semdepth import SemdepthError
from semdepth.io import atomic_dir, read_table, resolve, write_table
from stages._common import FIGURES_DIR, stage

PREPARED = Path("data/prepared")
MANIFEST = PREPARED / "manifest.parquet"
PSEUDO = Path("data/pseudolabels")
PSEUDO_TABLE = PSEUDO / "pseudolabels.parquet"
MODEL = Path("data/models/sde_stage1.pt")
OUT_DIR = Path("data/filter")
TABLE = "frames.parquet"
FIG_DIR = FIGURES_DIR / "filter"
COLUMNS = ["id", "normal_x", "normal_y", "normal_z", "offset", "inlier_ratio", "below_count", "threshold",
           "enough_ground", "kept"]


def triplet_frames(manifest: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """Training triplets (docs/contracts.md): train split, target domain, both neighbours prepared."""
    m = manifest
    sel = (m["split"] == "train") & (m["domain"] == "target") & m["prev_image"].notna() & m["next_image"].notna()
    return m[sel].sort_values("id").reset_index(drop=True)


def attach_pseudolabels(frames: "pd.DataFrame", pl: "pd.DataFrame") -> list:  # noqa: F821
    """Per frame: the train-id PNG path (None when the labels are binary only): the road mask."""
    missing = sorted(set(frames["id"]) - set(pl["id"]))
    if missing:
        raise SemdepthError(f"{PSEUDO_TABLE}: no pseudo-labels for {len(missing)} training frames "
                            f"(e.g. {missing[0]}); rerun pseudolabel")
    by_id = pl.set_index("id")
    trainid = [resolve(by_id.at[i, "trainid"], PSEUDO) for i in frames["id"]]
    return trainid


class _Frames:
    """Dataset: image, pseudo-label train ids (all 255 without them), intrinsics."""

    def __init__(self, frames: "pd.DataFrame", trainid: list) -> None:  # noqa: F821
        self.images = [resolve(p, PREPARED) for p in frames["image"]]
        self.trainid = trainid
        self.K = np.zeros((len(frames), 3, 3), dtype=np.float32)
        self.K[:, 0, 0], self.K[:, 1, 1] = frames["fx"], frames["fy"]
        self.K[:, 0, 2], self.K[:, 1, 2], self.K[:, 2, 2] = frames["cx"], frames["cy"], 1.0
        self.size = list(zip(frames["height"].astype(int), frames["width"].astype(int)))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        import torch

        from semdepth.data.frames import read_label_u8, read_rgb

        img = read_rgb(self.images[i])
        if tuple(img.shape[1:]) != self.size[i]:  # the intrinsics are only valid at the manifest's size
            raise SemdepthError(f"{self.images[i]}: image is {tuple(img.shape[1:])}, the manifest says {self.size[i]}; "
                                f"rerun downsample")
        lab = (torch.from_numpy(read_label_u8(self.trainid[i]).copy()) if self.trainid[i] is not None
               else torch.full(img.shape[1:], 255, dtype=torch.uint8))
        if lab.shape != img.shape[1:]:
            raise SemdepthError(f"{self.trainid[i]}: pseudo-label size {tuple(lab.shape)} differs from the image "
                                f"{tuple(img.shape[1:])}; rerun pseudolabel")
        item = {"index": i, "image": img, "trainid": lab, "K": torch.from_numpy(self.K[i])}
        return item


def predict_depth(depth_net, batch: dict, sde_cfg: dict, device) -> "torch.Tensor":  # noqa: F821
    """Stage-1 depth [B,1,H,W] at the input resolution (the network's own min/max depth range)."""
    import torch

    from semdepth.models.sde import disp_to_depth

    # eval mode: guided networks read only the image (`.needs` lists training-batch keys)
    with torch.inference_mode():
        out = depth_net(batch["image"].to(device))
        _, depth = disp_to_depth(out["disp"][0], float(sde_cfg["min_depth"]), float(sde_cfg["max_depth"]))
    return depth.float()


def filter_metrics(table: "pd.DataFrame", lead_car: "pd.Series", fallback: np.ndarray,  # noqa: F821
                   timing: dict[str, float]) -> dict[str, Any]:
    """Shares, counts and (when the manifest knows lead cars) precision/recall of the drops."""
    n = len(table)
    dropped = ~table["kept"].to_numpy(bool)
    enough = table["enough_ground"].to_numpy(bool)
    counts = table["below_count"].to_numpy(np.int64)
    m: dict[str, Any] = {
        "frames": n, "dropped": int(dropped.sum()), "kept": int(n - dropped.sum()),
        "share_dropped": float(dropped.mean()) if n else 0.0,
        "threshold_px": float(table["threshold"].iloc[0]) if n else 0.0,
        "not_enough_ground": int((~enough).sum()),
        "share_not_enough_ground": float((~enough).mean()) if n else 0.0,
        "fallback_frames": int(fallback.sum()),
        "mean_inlier_ratio": float(table.loc[enough, "inlier_ratio"].mean()) if enough.any() else 0.0,
        "below_count": {"mean": float(counts.mean()) if n else 0.0,
                        "median": float(np.median(counts)) if n else 0.0,
                        "p95": float(np.percentile(counts, 95)) if n else 0.0,
                        "nonzero_share": float((counts > 0).mean()) if n else 0.0},
        "timing": timing,
    }
    known = lead_car.notna().to_numpy()
    if known.any():
        lead = lead_car.where(lead_car.notna(), False).astype(bool).to_numpy() & known
        clean = known & ~lead
        tp = int((dropped & lead).sum())
        m["synthcity"] = {
            "lead_car_frames": int(lead.sum()), "clean_frames": int(clean.sum()),
            "dropped_lead_car": tp, "dropped_clean": int((dropped & clean).sum()),
            "precision": tp / int((dropped & known).sum()) if (dropped & known).any() else None,
            "recall": tp / int(lead.sum()) if lead.any() else None,
            "clean_wrongly_dropped": float((dropped & clean).sum() / clean.sum()) if clean.any() else None,
        }
    return m


def save_figure(path: Path, image: np.ndarray, depth: np.ndarray, below: np.ndarray, candidates: np.ndarray,
                title: str) -> None:
    """Frame with below-ground pixels (red) and the ground candidates (green) | stage-1 inverse depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    over = image.astype(np.float32) / 255.0
    over[candidates] = 0.6 * over[candidates] + 0.4 * np.array([0.0, 1.0, 0.0])
    over[below] = np.array([1.0, 0.0, 0.0])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    ax[0].imshow(over)
    ax[0].set_title("below ground (red), ground candidates (green)", fontsize=8)
    ax[1].imshow(1.0 / np.maximum(depth, 1e-6), cmap="magma")
    ax[1].set_title("stage-1 inverse depth", fontsize=8)
    for a in ax:
        a.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(params_path: str | Path) -> None:
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader

    from semdepth.data.frames import read_rgb_u8
    from semdepth.data.labels import TRAIN_IDS
    from semdepth.geometry.ground import analyse_ground
    from semdepth.models.sde import load_sde
    from semdepth.progress import track

    with stage("filter", params_path, ["filter"]) as ctx:
        cfg, hood = ctx.params.filter, ctx.params.data.hood_fraction
        frames = triplet_frames(read_table(MANIFEST))
        if frames.empty:
            raise SemdepthError(f"{MANIFEST}: no training triplets (train split, target domain, both neighbours)")
        trainid = attach_pseudolabels(frames, read_table(PSEUDO_TABLE))
        depth_net, _, sde_cfg = load_sde(MODEL, ctx.device)
        ds = _Frames(frames, trainid)
        loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=ctx.params.compute.num_workers)
        gen = torch.Generator().manual_seed(ctx.params.seed)
        road_id = TRAIN_IDS["road"]

        cols: dict[str, list] = {c: [] for c in COLUMNS[1:]}
        fallback: list[np.ndarray] = []
        t_depth = t_ransac = 0.0
        best: tuple | None = None  # (dropped, count, index, enough, below, candidates, depth) for the figure
        for batch in track(loader, "filter: ground planes"):
            t0 = time.perf_counter()
            depth = predict_depth(depth_net, batch, sde_cfg, ctx.device)
            t1 = time.perf_counter()
            road = batch["trainid"].to(ctx.device) == road_id
            res = analyse_ground(depth, batch["K"].to(ctx.device), road, cfg, hood, gen)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            t_depth, t_ransac = t_depth + (t1 - t0), t_ransac + (t2 - t1)
            normal = res.normal.cpu().numpy()
            for j, c in enumerate(("normal_x", "normal_y", "normal_z")):
                cols[c].extend(normal[:, j].tolist())
            cols["offset"].extend(res.offset.cpu().tolist())
            cols["inlier_ratio"].extend(res.inlier_ratio.cpu().tolist())
            count = res.below_count.cpu()
            cols["below_count"].extend(count.tolist())
            cols["threshold"].extend([res.threshold] * len(count))
            cols["enough_ground"].extend(res.enough_ground.cpu().tolist())
            cols["kept"].extend(res.kept.cpu().tolist())
            fallback.append(res.fallback.cpu().numpy())
            key = [(not k, int(c)) for k, c in zip(res.kept.cpu().tolist(), count.tolist())]
            j = max(range(len(key)), key=lambda i: key[i])
            if best is None or key[j] > best[:2]:
                best = (*key[j], int(batch["index"][j]), bool(res.enough_ground[j]), res.below[j].cpu().numpy(),
                        res.candidates[j].cpu().numpy(), depth[j, 0].cpu().numpy())

        table = pd.DataFrame({"id": frames["id"].tolist(), **cols})[COLUMNS]
        table["below_count"] = table["below_count"].astype("int64")
        table["enough_ground"] = table["enough_ground"].astype(bool)
        table["kept"] = table["kept"].astype(bool)
        n = len(table)
        timing = {"seconds": ctx.elapsed(), "depth_seconds": t_depth, "ransac_seconds": t_ransac,
                  "depth_fps": n / t_depth if t_depth > 0 else 0.0, "ransac_fps": n / t_ransac if t_ransac > 0 else 0.0}
        lead = frames["lead_car"] if "lead_car" in frames else pd.Series([None] * n)
        metrics = filter_metrics(table, lead.reset_index(drop=True), np.concatenate(fallback), timing)

        with atomic_dir(OUT_DIR) as tmp:
            write_table(table, Path(tmp) / TABLE)
        with atomic_dir(FIG_DIR) as tmp:
            dropped, count, idx, enough, below, cand, depth = best
            fid, thr = table["id"].iloc[idx], table["threshold"].iloc[0]
            title = (f"dropped: {fid}, {count} px below ground (threshold {thr:.1f})" if dropped
                     else f"nothing dropped; highest count: {fid}, {count} px below ground (threshold {thr:.1f})"
                     + ("" if enough else "; no ground plane found in this frame"))
            save_figure(Path(tmp) / "dropped.png", read_rgb_u8(ds.images[idx]), depth, below, cand, title)
        ctx.tracker.log_artifact(FIG_DIR / "dropped.png")
        ctx.write_metrics(metrics)
        sc = metrics.get("synthcity", {})
        ctx.log.info("filter: %d/%d frames dropped (%.1f%%), %d without enough ground; lead-car recall %s, "
                     "precision %s", metrics["dropped"], n, 100 * metrics["share_dropped"],
                     metrics["not_enough_ground"], sc.get("recall"), sc.get("precision"))
