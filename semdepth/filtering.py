"""The two-stage depth filter over the training triplets: which frames retrain may learn from.

Frames: every training triplet (semdepth.data.manifest.training_triplets: the frames retrain would
learn from), sorted by id. For each: stage-1 depth at the prepared resolution, back-projected with
the manifest's scaled intrinsics; the ground plane is fitted by RANSAC on road pixels of the
pseudo-labels (fallback: the lower-central region) and pixels more than `filter.margin` camera
heights below it are counted (semdepth/geometry/ground.py has the rules).

On SynthCity the manifest knows which snippets have a lead car at (or near) the ego speed (the
failure the filter targets), so precision and recall of the dropped frames are reported against it.

Two diagnostics come from the same stage-1 depth and change no verdict:

* **The artifact itself, measured** (`depth_ratios`): where a frame has GT depth and a moving-object
  mask (SynthCity's exact depth and moving masks; real Cityscapes has neither for its sequence frames,
  so there the columns stay empty), the stage-1 depth is median-scaled over the frame's valid pixels
  (as evaluation does) and the median of predicted/true depth is taken over the moving pixels and
  over the static ones. A depth that pushes a car far has a moving ratio well above 1. SynthCity
  writes only a binary moving mask (instance ids for annotated frames only, and no roles), so the lead-car
  pixels are the moving pixels of a lead-car frame: the lead car(s) with the oncoming traffic and
  walking people of that frame; `lead_ratio` is the moving ratio of lead-car frames, and the clean
  frames' moving ratio is the comparison (their moving objects include slower cars ahead in the ego
  lane). The ratio also depends on how far an object is when the network is poor (a depth that is
  nearly the same everywhere gives near cars ratios above 1 and far ones below), so each frame also
  has the ratio on *static* pixels at the moving pixels' GT depth (`matched_ratio`): a car pushed far
  by the network has a moving ratio well above it, a depth-blind network does not.
  `metrics/filter.json: artifact` summarises lead-car against clean frames.
* **Margin/threshold sweep** (`sweep_table`): below-ground counts at the margins of `sweep_margins`
  come out of the same RANSAC fit (semdepth/geometry/ground.py), and every threshold of
  SWEEP_THRESHOLDS_PX is applied to them afterwards: recall on lead-car frames and the share of clean
  frames dropped for each (margin, threshold) pair, the configured pair included.

RANSAC draws come from one generator seeded with `seed` and consumed batch after batch, so results
are reproducible for the same params (filter.batch_size included).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from semdepth import SemdepthError
from semdepth.config import FilterConfig
from semdepth.data.frames import FrameDataset, read_label_u8, read_rgb_u8
from semdepth.data.labels import TRAIN_IDS
from semdepth.data.manifest import frame_sizes, intrinsics, training_triplets
from semdepth.geometry.depth import disp_to_depth
from semdepth.geometry.ground import GroundResult, analyse_ground, below_threshold, hood_row
from semdepth.io import read_table, resolve
from semdepth.models.sde import load_sde
from semdepth.progress import track
from semdepth.viz import save_filter_sweep, save_ground_figure

# moving_px: valid moving-object pixels; *_ratio: median of median-scaled predicted / true depth on the
# static pixels, the static pixels at the moving pixels' GT depth (matched), the moving pixels, and the
# moving pixels of lead-car frames (NaN: no GT, or no such pixels)
RATIO_COLUMNS = ["moving_px", "static_ratio", "matched_ratio", "moving_ratio", "lead_ratio"]
COLUMNS = ["id", "normal_x", "normal_y", "normal_z", "offset", "inlier_ratio", "below_count", "threshold",
           "enough_ground", "kept", *RATIO_COLUMNS]

# The sweep grid: margins (camera heights) joined with filter.margin; thresholds in pixels at
# filter.reference_area (the paper's 10 px at 640x192), joined with filter.threshold_px.
SWEEP_MARGINS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SWEEP_THRESHOLDS_PX = (0.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
ARTIFACT_RATIO = 1.5  # a moving ratio above this counts as "pushed far" in metrics/filter.json: artifact
MATCH_BAND = 1.25  # matched static pixels: GT depth within this factor of the moving pixels' median GT depth


@dataclass(frozen=True)
class FilterInputs:
    manifest: Path
    pseudolabels: Path  # the pseudo-label table; its train-id maps give the road pixels
    model: Path  # the stage-1 SDE checkpoint


@dataclass
class FigureFrame:
    """The frame the figure shows: the dropped frame with the most below-ground pixels (or, when
    nothing was dropped, the kept frame with the most), with what the figure draws."""

    dropped: bool
    below_count: int
    index: int  # row of the filter table
    enough_ground: bool
    below: np.ndarray  # HxW bool
    candidates: np.ndarray  # HxW bool: the ground candidates the plane was fitted to
    depth: np.ndarray  # HxW stage-1 depth

    @property
    def rank(self) -> tuple[bool, int]:
        """Dropped frames first, then by below-ground count (the larger, the better an example)."""
        return self.dropped, self.below_count


@dataclass
class FilterRun:
    table: pd.DataFrame  # COLUMNS, one row per training triplet, sorted by id
    metrics: dict[str, Any]
    figure: FigureFrame
    figure_image: Path
    sweep: pd.DataFrame  # one row per (margin, threshold_px): drops, recall, clean frames dropped


@dataclass(frozen=True)
class DepthRatios:
    """One frame's artifact measure (NaN where the frame has no such valid pixels)."""

    moving_px: int
    static: float
    matched: float  # static pixels whose GT depth is within MATCH_BAND of the moving pixels' median
    moving: float


NO_RATIOS = DepthRatios(0, float("nan"), float("nan"), float("nan"))


def sweep_margins(cfg: FilterConfig) -> list[float]:
    """The margins the sweep counts at: SWEEP_MARGINS and the configured one, ascending."""
    return sorted({*SWEEP_MARGINS, float(cfg.margin)})


def sweep_thresholds(cfg: FilterConfig) -> list[float]:
    return sorted({*SWEEP_THRESHOLDS_PX, float(cfg.threshold_px)})


def push_far(depth: np.ndarray, mask: np.ndarray, max_depth: float, factor: float | None = None) -> np.ndarray:
    """The failure the filter targets, made by hand: `depth` with the `mask` pixels pushed away,
    multiplied by `factor` (None: set to `max_depth`, the network's maximum), capped at `max_depth`."""
    far = np.full_like(depth, max_depth) if factor is None else np.minimum(depth * factor, max_depth)
    return np.where(mask, far, depth)


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if x.size else float("nan")


def depth_ratios(pred: np.ndarray, gt: np.ndarray, moving: np.ndarray, *, hood_fraction: float,
                 max_depth: float) -> DepthRatios:
    """Median of predicted/true depth on the moving and on the static pixels of one frame.

    Valid pixels: GT in (0, max_depth] (`max_depth`: the network's, what it can predict at all) above
    the hood, with a positive finite prediction. The prediction is median-scaled over all of them first,
    as evaluation does (monocular depth has no scale), but not clipped: a car pushed to the network's
    maximum should show by how much. Exact depth gives 1 everywhere; a depth with the moving pixels
    multiplied by k gives k times the static ratio on them. `matched` is the control for a network
    that gets distance wrong everywhere: static pixels at the moving pixels' distance.
    """
    pred, gt, moving = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(moving, bool)
    valid = np.isfinite(gt) & (gt > 0) & (gt <= max_depth) & np.isfinite(pred) & (pred > 0)
    valid[hood_row(gt.shape[0], hood_fraction):] = False
    if not valid.any():
        return NO_RATIOS
    ratio = pred * (np.median(gt[valid]) / np.median(pred[valid])) / np.where(valid, gt, 1.0)
    mv, st = valid & moving, valid & ~moving
    matched = float("nan")
    if mv.any():
        at = np.median(gt[mv])
        near = st & (gt >= at / MATCH_BAND) & (gt <= at * MATCH_BAND)
        matched = _median(ratio[near])
    return DepthRatios(int(mv.sum()), _median(ratio[st]), matched, _median(ratio[mv]))


def gt_sources(frames: pd.DataFrame, root: Path) -> list[tuple[Path, Path] | None]:
    """Per frame: (GT depth, moving mask) when the manifest has both, else None. GT depth is the exact
    depth (SynthCity) where present, else the disparity depth."""
    out: list[tuple[Path, Path] | None] = []
    for r in frames.to_dict("records"):
        depth = r.get("depth_exact") if isinstance(r.get("depth_exact"), str) else r.get("depth")
        moving = r.get("moving")
        ok = isinstance(depth, str) and isinstance(moving, str)
        out.append((resolve(depth, root), resolve(moving, root)) if ok else None)
    return out


def frame_ratios(pred: np.ndarray, source: tuple[Path, Path] | None, *, hood_fraction: float,
                 max_depth: float) -> DepthRatios:
    """depth_ratios of one frame's stage-1 depth [H,W] against its GT files (NO_RATIOS without them)."""
    if source is None:
        return NO_RATIOS
    gt = np.load(source[0]).astype(np.float32)
    moving = read_label_u8(source[1]) > 0
    for path, arr in zip(source, (gt, moving)):
        if arr.shape != pred.shape:
            raise SemdepthError(f"{path}: size {arr.shape}, the stage-1 depth is {pred.shape}; rerun downsample")
    return depth_ratios(pred, gt, moving, hood_fraction=hood_fraction, max_depth=max_depth)


def ratio_columns(ratios: list[DepthRatios], lead_car: pd.Series) -> dict[str, Any]:
    """RATIO_COLUMNS for the table; `lead_ratio` is the moving ratio where the frame has a lead car."""
    moving = np.array([r.moving for r in ratios], np.float64)
    lead = lead_car.where(lead_car.notna(), False).astype(bool).to_numpy()
    measured = np.array([not np.isnan(r.static) for r in ratios])
    return {"moving_px": pd.array([r.moving_px if m else None for r, m in zip(ratios, measured)], dtype="Int64"),
            "static_ratio": np.array([r.static for r in ratios], np.float64),
            "matched_ratio": np.array([r.matched for r in ratios], np.float64), "moving_ratio": moving,
            "lead_ratio": np.where(lead, moving, np.nan)}


def _ratio_summary(table: pd.DataFrame, sel: np.ndarray) -> dict[str, Any]:
    """Over the frames `sel`: medians of the per-frame ratios, the share of frames whose moving ratio
    is above ARTIFACT_RATIO, and the same for moving/matched (the excess over static pixels as far)."""
    rows = table.loc[sel]
    mv = rows["moving_ratio"].dropna().to_numpy()
    excess = (rows["moving_ratio"] / rows["matched_ratio"]).dropna().to_numpy()

    def med(x: np.ndarray) -> float | None:
        return float(np.median(x)) if x.size else None

    return {"frames": int(sel.sum()), "frames_with_moving": int(mv.size),
            "moving_ratio_median": med(mv), "moving_ratio_p90": float(np.percentile(mv, 90)) if mv.size else None,
            "static_ratio_median": med(rows["static_ratio"].dropna().to_numpy()),
            "matched_ratio_median": med(rows["matched_ratio"].dropna().to_numpy()),
            "excess_median": med(excess),
            "share_moving_ratio_above": float((mv > ARTIFACT_RATIO).mean()) if mv.size else None,
            "share_excess_above": float((excess > ARTIFACT_RATIO).mean()) if excess.size else None}


def artifact_metrics(table: pd.DataFrame, lead_car: pd.Series) -> dict[str, Any] | None:
    """The measured artifact: ratio summaries over all measured frames and, where the manifest knows
    lead cars, over lead-car and clean frames. None when no frame has GT depth and a moving mask."""
    measured = table["static_ratio"].notna().to_numpy()
    if not measured.any():
        return None
    out: dict[str, Any] = {"above": ARTIFACT_RATIO,
                           "lead_pixels": "moving mask of lead-car frames (binary mask: lead cars with the "
                                          "frame's other moving objects)",
                           "all": _ratio_summary(table, measured)}
    known = lead_car.notna().to_numpy()
    if known.any():
        lead = lead_car.where(lead_car.notna(), False).astype(bool).to_numpy()
        out["lead_car"] = _ratio_summary(table, measured & lead)
        out["clean"] = _ratio_summary(table, measured & known & ~lead)
    return out


def sweep_table(margin_counts: np.ndarray, margins: list[float], thresholds_px: list[float],
                enough: np.ndarray, sizes: list[tuple[int, int]], lead_car: pd.Series,
                reference_area: int) -> pd.DataFrame:
    """Drops at every (margin, threshold_px) from the per-frame counts [N, len(margins)], with the
    verdict rule of analyse_ground (dropped: enough ground and count > the area-scaled threshold)."""
    known = lead_car.notna().to_numpy()
    lead = lead_car.where(lead_car.notna(), False).astype(bool).to_numpy() & known
    clean = known & ~lead
    n = len(enough)
    rows = []
    for j, margin in enumerate(margins):
        for t in thresholds_px:
            thr = np.array([below_threshold(h, w, t, reference_area) for h, w in sizes], np.float64)
            dropped = enough & (margin_counts[:, j].astype(np.float64) > thr)
            rows.append({"margin": margin, "threshold_px": t, "threshold": float(thr[0]) if n else float("nan"),
                         "dropped": int(dropped.sum()), "share_dropped": float(dropped.mean()) if n else 0.0,
                         "recall": float((dropped & lead).sum() / lead.sum()) if lead.any() else float("nan"),
                         "clean_dropped": float((dropped & clean).sum() / clean.sum()) if clean.any()
                         else float("nan")})
    return pd.DataFrame(rows)


def attach_pseudolabels(frames: pd.DataFrame, pl: pd.DataFrame, table: Path) -> list[Path | None]:
    """Per frame: the train-id PNG of the pseudo-label table at `table` (None when the labels are
    binary only): the road mask."""
    missing = sorted(set(frames["id"]) - set(pl["id"]))
    if missing:
        raise SemdepthError(f"{table}: no pseudo-labels for {len(missing)} training frames "
                            f"(e.g. {missing[0]}); rerun pseudolabel")
    by_id = pl.set_index("id")
    return [resolve(by_id.at[i, "trainid"], table.parent) for i in frames["id"]]


def predict_depth(depth_net: torch.nn.Module, batch: dict, sde_cfg: dict, device: torch.device) -> torch.Tensor:
    """Stage-1 depth [B,1,H,W] at the input resolution (the network's own min/max depth range)."""
    # eval mode: guided networks read only the image (`.needs` lists training-batch keys)
    with torch.inference_mode():
        out = depth_net(batch["image"].to(device))
        _, depth = disp_to_depth(out["disp"][0], float(sde_cfg["min_depth"]), float(sde_cfg["max_depth"]))
    return depth.float()


def filter_metrics(table: pd.DataFrame, lead_car: pd.Series, fallback: np.ndarray,
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


def _batch_best(res: GroundResult, batch: dict, depth: torch.Tensor) -> FigureFrame:
    """The batch's best figure candidate (FigureFrame.rank; the first of equals)."""
    key = [(not k, int(c)) for k, c in zip(res.kept.cpu().tolist(), res.below_count.cpu().tolist())]
    j = max(range(len(key)), key=lambda i: key[i])
    return FigureFrame(*key[j], int(batch["index"][j]), bool(res.enough_ground[j]), res.below[j].cpu().numpy(),
                       res.candidates[j].cpu().numpy(), depth[j, 0].cpu().numpy())


def _append(cols: dict[str, list], res: GroundResult) -> None:
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


def run_filter(inputs: FilterInputs, cfg: FilterConfig, *, hood_fraction: float, seed: int, device: torch.device,
               num_workers: int = 0) -> FilterRun:
    """Ground-plane verdicts for every training triplet, the filter table, its metrics and the sweep."""
    started = time.perf_counter()
    frames = training_triplets(read_table(inputs.manifest))
    if frames.empty:
        raise SemdepthError(f"{inputs.manifest}: no training triplets (train split, target domain, both neighbours)")
    trainid = attach_pseudolabels(frames, read_table(inputs.pseudolabels), inputs.pseudolabels)
    depth_net, _, sde_cfg = load_sde(inputs.model, device)
    root = inputs.manifest.parent
    ds = FrameDataset([resolve(p, root) for p in frames["image"]], trainid, intrinsics=intrinsics(frames),
                      sizes=frame_sizes(frames), label_producer="pseudolabel")
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=num_workers)
    gen = torch.Generator().manual_seed(seed)
    road_id = TRAIN_IDS["road"]
    sources, margins = gt_sources(frames, root), sweep_margins(cfg)
    max_depth = float(sde_cfg["max_depth"])

    cols: dict[str, list] = {c: [] for c in COLUMNS[1:] if c not in RATIO_COLUMNS}
    fallback: list[np.ndarray] = []
    margin_counts: list[np.ndarray] = []
    ratios: list[DepthRatios] = []
    t_depth = t_ransac = 0.0
    best: FigureFrame | None = None
    for batch in track(loader, "filter: ground planes"):
        t0 = time.perf_counter()
        depth = predict_depth(depth_net, batch, sde_cfg, device)
        t1 = time.perf_counter()
        road = batch["label"].to(device) == road_id
        res = analyse_ground(depth, batch["K"].to(device), road, cfg, hood_fraction, gen, margins=margins)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        t_depth, t_ransac = t_depth + (t1 - t0), t_ransac + (t2 - t1)
        _append(cols, res)
        fallback.append(res.fallback.cpu().numpy())
        margin_counts.append(res.margin_counts.cpu().numpy())
        pred = depth[:, 0].cpu().numpy()
        ratios.extend(frame_ratios(pred[j], sources[int(i)], hood_fraction=hood_fraction, max_depth=max_depth)
                      for j, i in enumerate(batch["index"]))
        cand = _batch_best(res, batch, depth)
        if best is None or cand.rank > best.rank:
            best = cand

    n = len(frames)
    lead = (frames["lead_car"] if "lead_car" in frames else pd.Series([None] * n)).reset_index(drop=True)
    table = pd.DataFrame({"id": frames["id"].tolist(), **cols, **ratio_columns(ratios, lead)})[COLUMNS]
    table["below_count"] = table["below_count"].astype("int64")
    table["enough_ground"] = table["enough_ground"].astype(bool)
    table["kept"] = table["kept"].astype(bool)
    timing = {"seconds": time.perf_counter() - started, "depth_seconds": t_depth, "ransac_seconds": t_ransac,
              "depth_fps": n / t_depth if t_depth > 0 else 0.0, "ransac_fps": n / t_ransac if t_ransac > 0 else 0.0}
    metrics = filter_metrics(table, lead, np.concatenate(fallback), timing)
    artifact = artifact_metrics(table, lead)
    if artifact is not None:
        metrics["artifact"] = artifact
    sweep = sweep_table(np.concatenate(margin_counts), margins, sweep_thresholds(cfg),
                        table["enough_ground"].to_numpy(bool), frame_sizes(frames), lead, cfg.reference_area)
    return FilterRun(table, metrics, best, ds.images[best.index], sweep)


def figure_title(run: FilterRun) -> str:
    f = run.figure
    fid, thr = run.table["id"].iloc[f.index], run.table["threshold"].iloc[0]
    if f.dropped:
        return f"dropped: {fid}, {f.below_count} px below ground (threshold {thr:.1f})"
    return (f"nothing dropped; highest count: {fid}, {f.below_count} px below ground (threshold {thr:.1f})"
            + ("" if f.enough_ground else "; no ground plane found in this frame"))


def save_figure(run: FilterRun, path: Path) -> None:
    """The figure frame (FigureFrame) drawn by semdepth.viz.save_ground_figure."""
    f = run.figure
    save_ground_figure(path, read_rgb_u8(run.figure_image), f.depth, f.below, f.candidates, figure_title(run))


def save_sweep_figure(run: FilterRun, cfg: FilterConfig, path: Path) -> None:
    """The sweep drawn by semdepth.viz.save_filter_sweep: recall on lead-car frames and the share of
    clean frames dropped against the margin, one line per threshold (the share of all frames dropped
    when the manifest knows no lead cars)."""
    sw = run.sweep
    margins, thresholds = sorted(sw["margin"].unique()), sorted(sw["threshold_px"].unique())

    def grid(col: str) -> np.ndarray:
        return sw.pivot(index="margin", columns="threshold_px", values=col).loc[margins, thresholds].to_numpy()

    known = sw["recall"].notna().any()
    panels = ([("recall on lead-car frames", grid("recall")), ("share of clean frames dropped", grid("clean_dropped"))]
              if known else [("share of frames dropped", grid("share_dropped"))])
    unjudged = int((~run.table["enough_ground"]).sum())
    title = (f"filter sweep on stage-1 depth ({len(run.table)} frames, {unjudged} without enough ground); "
             f"configured: margin {cfg.margin:g}, threshold {cfg.threshold_px:g} px at the reference area")
    save_filter_sweep(path, margins, thresholds, panels, (float(cfg.margin), float(cfg.threshold_px)), title)
