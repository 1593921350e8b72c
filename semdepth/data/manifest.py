"""The named row sets of the prepared manifest (docs/contracts.md, "Prepared manifest").

Every stage after downsample works on one subset of data/prepared/manifest.parquet: the training
triplets, the pool of frames select may choose, the val frames evaluate scores. Each subset is a
definition that several stages must agree on (retrain learns from the triplets filter judged), so
each is written once, here. Functions that say "sorted by id" return rows in id order with a fresh
0..n-1 index, so results do not depend on the manifest's row order; the others keep the manifest's
row order (and, where noted, its index).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from semdepth import SemdepthError
from semdepth.io import read_table


def read_manifest(path: str | Path, required: Sequence[str] = ()) -> pd.DataFrame:
    """The manifest at `path`; a one-line error naming the file when a `required` column is missing."""
    df = read_table(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SemdepthError(f"{path}: missing columns {', '.join(missing)} (rerun downsample)")
    return df


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("id").reset_index(drop=True)


def _target_train_mask(m: pd.DataFrame) -> pd.Series:
    return (m["split"] == "train") & (m["domain"] == "target")


def target_train(m: pd.DataFrame) -> pd.DataFrame:
    """Train-split frames of the target domain (annotated and sequence frames); manifest order and index."""
    return m[_target_train_mask(m)]


def target_train_with(m: pd.DataFrame, column: str) -> pd.DataFrame:
    """Target-domain train frames that have a value in `column` (e.g. GT depth); manifest order and index."""
    return m[_target_train_mask(m) & m[column].notna()]


def training_triplets(m: pd.DataFrame) -> pd.DataFrame:
    """Training triplets: target-domain train frames with both neighbours prepared; sorted by id."""
    return _sorted(m[_target_train_mask(m) & m["prev_image"].notna() & m["next_image"].notna()])


def annotated_pool(m: pd.DataFrame) -> pd.DataFrame:
    """What select chooses from: the annotated (offset 0) target-domain train frames; sorted by id."""
    return _sorted(m[_target_train_mask(m) & m["annotated"].astype(bool)])


def annotated_with(m: pd.DataFrame, split: str, column: str) -> pd.DataFrame:
    """Annotated frames of `split` (any domain) with a value in `column` (depth evaluation); sorted by id."""
    return _sorted(m[(m["split"] == split) & m["annotated"].astype(bool) & m[column].notna()])


def val_frames(m: pd.DataFrame) -> pd.DataFrame:
    """Annotated target-domain val frames with a label (what evaluate scores); sorted by id."""
    sel = (m["split"] == "val") & (m["domain"] == "target") & m["annotated"].astype(bool) & m["label"].notna()
    return _sorted(m[sel])


def labelled_val(m: pd.DataFrame) -> pd.DataFrame:
    """Target-domain val frames with a label (finetune's validation summary); sorted by id."""
    return _sorted(m[(m["split"] == "val") & (m["domain"] == "target") & m["label"].notna()])


def target_frames(m: pd.DataFrame) -> pd.DataFrame:
    """Every target-domain frame (train and val, all offsets); manifest order, index 0..n-1."""
    return m[m["domain"] == "target"].reset_index(drop=True)


def labelled_source(m: pd.DataFrame) -> pd.DataFrame:
    """Source-domain frames with a label (what the pseudo-labeller trains on); manifest order, index 0..n-1."""
    return m[(m["domain"] == "source") & m["label"].notna()].reset_index(drop=True)


def intrinsics(frames: pd.DataFrame) -> np.ndarray:
    """[N,3,3] float32 camera matrices of `frames` from fx, fy, cx, cy (scaled to the working resolution)."""
    K = np.zeros((len(frames), 3, 3), dtype=np.float32)
    K[:, 0, 0], K[:, 1, 1] = frames["fx"], frames["fy"]
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = frames["cx"], frames["cy"], 1.0
    return K


def frame_sizes(frames: pd.DataFrame) -> list[tuple[int, int]]:
    """(height, width) of every frame, as the manifest states it (what the intrinsics are valid at)."""
    return [(int(h), int(w)) for h, w in zip(frames["height"], frames["width"])]
