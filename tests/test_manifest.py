"""The manifest's named row sets (semdepth/data/manifest.py): exact rows, order and index."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from semdepth import SemdepthError
from semdepth.data import manifest as M


def _manifest() -> pd.DataFrame:
    """One row per combination that a filter may include or exclude, in a scrambled order."""
    rows = []
    for split, domain in (("train", "target"), ("val", "target"), ("source", "source")):
        for annotated in (True, False):
            for neighbours in (True, False):
                for labelled in (True, False):
                    for has_depth in (True, False):
                        i = len(rows)
                        rows.append({
                            "id": f"{split}_{i:03d}", "split": split, "domain": domain, "annotated": annotated,
                            "image": f"img/{i}.png", "prev_image": f"img/{i}p.png" if neighbours else None,
                            "next_image": f"img/{i}n.png" if neighbours else None,
                            "label": f"lab/{i}.png" if labelled else None,
                            "depth": f"depth/{i}.npy" if has_depth else None,
                            "fx": 100.0 + i, "fy": 101.0 + i, "cx": 50.5, "cy": 24.25, "height": 48, "width": 96})
    order = np.random.default_rng(0).permutation(len(rows))
    return pd.DataFrame([rows[k] for k in order], index=np.arange(len(rows)) * 3 + 7)  # an index that is not 0..n-1


def _ids(df: pd.DataFrame) -> list[str]:
    return df["id"].tolist()


def _fresh_index(df: pd.DataFrame) -> bool:
    return df.index.tolist() == list(range(len(df)))


def test_training_triplets_are_sorted_target_train_rows_with_both_neighbours():
    m = _manifest()
    got = M.training_triplets(m)
    want = sorted(r.id for r in m.itertuples() if r.split == "train" and r.domain == "target"
                  and pd.notna(r.prev_image) and pd.notna(r.next_image))
    assert _ids(got) == want and len(want) == 8 and _fresh_index(got)


def test_annotated_pool_and_val_frames():
    m = _manifest()
    pool = M.annotated_pool(m)
    assert _ids(pool) == sorted(r.id for r in m.itertuples() if r.split == "train" and r.annotated)
    assert len(pool) == 8 and _fresh_index(pool)
    val = M.val_frames(m)
    assert _ids(val) == sorted(r.id for r in m.itertuples()
                               if r.split == "val" and r.annotated and pd.notna(r.label))
    assert len(val) == 4 and _fresh_index(val)
    labelled = M.labelled_val(m)  # annotated or not
    assert _ids(labelled) == sorted(r.id for r in m.itertuples() if r.split == "val" and pd.notna(r.label))
    assert len(labelled) == 8 and _fresh_index(labelled)


def test_annotated_with_column_takes_any_domain():
    m = _manifest()
    got = M.annotated_with(m, "source", "depth")
    assert _ids(got) == sorted(r.id for r in m.itertuples()
                               if r.split == "source" and r.annotated and pd.notna(r.depth))
    assert len(got) == 4 and _fresh_index(got)
    assert _ids(M.annotated_with(m.assign(annotated=m["annotated"].astype(int)), "source", "depth")) == _ids(got)


def test_target_train_keeps_manifest_order_and_index():
    m = _manifest()
    train = M.target_train(m)
    assert train.index.tolist() == [i for i, r in m.iterrows() if r.split == "train"] and len(train) == 16
    with_depth = M.target_train_with(m, "depth")
    assert with_depth.index.tolist() == [i for i, r in m.iterrows() if r.split == "train" and pd.notna(r.depth)]
    assert len(with_depth) == 8


def test_target_frames_and_labelled_source_keep_order_with_fresh_index():
    m = _manifest()
    target = M.target_frames(m)
    assert _ids(target) == [r.id for r in m.itertuples() if r.domain == "target"] and _fresh_index(target)
    source = M.labelled_source(m)
    assert _ids(source) == [r.id for r in m.itertuples() if r.domain == "source" and pd.notna(r.label)]
    assert len(source) == 8 and _fresh_index(source)


def test_row_order_of_the_manifest_does_not_change_sorted_sets():
    m = _manifest()
    rev = m.iloc[::-1]
    for f in (M.training_triplets, M.annotated_pool, M.val_frames, M.labelled_val):
        pd.testing.assert_frame_equal(f(m), f(rev))


def test_intrinsics_and_sizes():
    m = _manifest().iloc[:3]
    K = M.intrinsics(m)
    assert K.shape == (3, 3, 3) and K.dtype == np.float32
    np.testing.assert_array_equal(K[:, 0, 0], m["fx"].to_numpy(np.float32))
    np.testing.assert_array_equal(K[:, 1, 2], m["cy"].to_numpy(np.float32))
    assert (K[:, 2, 2] == 1).all() and (K[:, 1, 0] == 0).all()
    assert M.frame_sizes(m) == [(48, 96)] * 3 and all(type(h) is int for h, _ in M.frame_sizes(m))


def test_read_manifest_names_missing_columns(tmp_path):
    path = tmp_path / "manifest.parquet"
    _manifest().drop(columns=["height"]).to_parquet(path)
    assert len(M.read_manifest(path, ("id", "split"))) == 48
    with pytest.raises(SemdepthError, match=r"manifest.parquet: missing columns height, city \(rerun downsample\)"):
        M.read_manifest(path, ("id", "height", "city"))
