"""Running depth evaluation over the prepared val split (used by pretrain, retrain and evaluate).

GT: the manifest's `depth_exact` (SynthCity's exact depth) when present, else `depth` (from
disparity, as real Cityscapes). Frames: the annotated val frames with GT. Class labels: GT labels,
else the pseudo-labels; moving-object masks where the manifest has them.
`eval.protocol: cityscapes` scores the test split inside ManyDepth's crop instead
(semdepth/metrics/cityscapes_depth.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from semdepth import SemdepthError
from semdepth.data.frames import read_label_u8, read_rgb
from semdepth.data.manifest import annotated_with, target_train_with
from semdepth.geometry.depth import disp_to_depth
from semdepth.io import read_table, resolve
from semdepth.metrics.cityscapes_depth import missing_split_hint, protocol_split, restrict_to_protocol
from semdepth.metrics.depth import DepthEvaluator, RowMedianPrior
from semdepth.progress import track


def gt_column(manifest: pd.DataFrame) -> str:
    if "depth_exact" in manifest and manifest["depth_exact"].notna().any():
        return "depth_exact"
    return "depth"


def _pseudo(pseudolabels: str | Path | None) -> tuple[pd.DataFrame | None, Path | None]:
    if pseudolabels is None or not Path(pseudolabels).exists():
        return None, None
    return read_table(pseudolabels).set_index("id"), Path(pseudolabels).parent


@torch.no_grad()
def predict_depth(depth_net: torch.nn.Module, images: torch.Tensor, min_depth: float, max_depth: float,
                  size: tuple[int, int] | None = None) -> torch.Tensor:
    """[B,3,H,W] in [0,1] -> depth [B,H',W'] (network units); disparity resized to `size` first."""
    disp = depth_net(images)["disp"][0].float()
    if size is not None and tuple(disp.shape[-2:]) != tuple(size):
        disp = F.interpolate(disp, size=size, mode="bilinear", align_corners=False)
    return disp_to_depth(disp, min_depth, max_depth)[1][:, 0]


def evaluate_depth_net(depth_net: torch.nn.Module, manifest_path: str | Path, *, device: torch.device,
                       net_min_depth: float, net_max_depth: float, eval_cfg: Any, hood_fraction: float,
                       pseudolabels: str | Path | None = None, batch_size: int = 16, split: str = "val",
                       description: str = "depth eval") -> dict:
    """Metrics dict (DepthEvaluator.result() plus "gt": the GT column used)."""
    manifest_path = Path(manifest_path)
    manifest = read_table(manifest_path)
    root = manifest_path.parent
    col = gt_column(manifest)
    split = protocol_split(eval_cfg.protocol, split)
    rows = annotated_with(manifest, split, col)
    if rows.empty:
        raise SemdepthError(f"{manifest_path}: no annotated {split} frames with GT depth to evaluate"
                            f"{missing_split_hint(eval_cfg.protocol)}")
    pl, pl_root = _pseudo(pseudolabels)
    ev = DepthEvaluator(eval_cfg.min_depth, eval_cfg.max_depth, hood_fraction, eval_cfg.edge_band)
    depth_net.eval()
    records = rows.to_dict("records")
    for i in track(range(0, len(records), batch_size), description, total=(len(records) + batch_size - 1) // batch_size):
        chunk = records[i:i + batch_size]
        imgs = torch.stack([read_rgb(resolve(r["image"], root)) for r in chunk]).to(device)
        gts = [restrict_to_protocol(np.load(resolve(r[col], root)).astype(np.float32), eval_cfg.protocol)
               for r in chunk]
        pred = predict_depth(depth_net, imgs, net_min_depth, net_max_depth, gts[0].shape).cpu().numpy()
        for r, p, g in zip(chunk, pred, gts):
            labels = read_label_u8(resolve(r["label"], root)) if r.get("label") else None
            pseudo = fg = None
            if pl is not None and r["id"] in pl.index:
                tid = pl.at[r["id"], "trainid"]
                if labels is None and tid is not None and isinstance(tid, str):
                    pseudo = read_label_u8(resolve(tid, pl_root))
                fg = read_label_u8(resolve(pl.at[r["id"], "foreground"], pl_root))
            moving = read_label_u8(resolve(r["moving"], root)) if r.get("moving") else None
            ev.add(p, g, labels=labels, pseudo_labels=pseudo, moving=moving, foreground=fg)
    out = ev.result()
    out["gt"] = col
    return out


def row_median_prior_metrics(manifest_path: str | Path, *, eval_cfg: Any, hood_fraction: float,
                             split: str = "val", train_ids: list[str] | None = None) -> dict:
    """The per-row median depth of the train GT as a predictor, evaluated on `split` unscaled and
    median-scaled (7 metrics each)."""
    manifest_path = Path(manifest_path)
    manifest = read_table(manifest_path)
    root = manifest_path.parent
    col = gt_column(manifest)
    train = target_train_with(manifest, col)
    if train_ids is not None:
        train = train[train["id"].isin(set(train_ids))]
    if train.empty:
        raise SemdepthError(f"{manifest_path}: no train frames with GT depth for the row-median prior")
    prior = RowMedianPrior(eval_cfg.min_depth, eval_cfg.max_depth, hood_fraction)
    for p in train[col]:
        prior.add(np.load(resolve(p, root)))
    prior.fit()
    out: dict = {"gt": col, "train_frames": int(len(train))}
    for name, scaled in (("unscaled", False), ("median_scaled", True)):
        ev = DepthEvaluator(eval_cfg.min_depth, eval_cfg.max_depth, hood_fraction, eval_cfg.edge_band,
                            median_scaling=scaled)
        for p in annotated_with(manifest, protocol_split(eval_cfg.protocol, split), col)[col]:
            g = restrict_to_protocol(np.load(resolve(p, root)).astype(np.float32), eval_cfg.protocol)
            ev.add(prior.predict(*g.shape), g)
        res = ev.result()
        out[name] = {k: res[k] for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "n_images")}
    return out
