"""downsample: Cityscapes-layout reader, resizing, intrinsics, labels, disparity, atomic output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, Tree
from semdepth import SemdepthError
from semdepth.data import labels as L
from semdepth.data.cityscapes import MANIFEST_COLUMNS, Camera, disparity_to_depth, resize_area, resize_nearest
from semdepth.data.prepare import prepare

OFFSETS = [-2, -1, 0, 1, 2]
SPLITS = ["train", "val", "source"]
H, W = 64, 128  # working resolution: half of the tree's 128x256


def run(tree: Tree, out: Path, workers: int = 1, **kw) -> tuple[dict, pd.DataFrame]:
    args = dict(height=H, width=W, offsets=OFFSETS, splits=SPLITS, workers=workers) | kw
    metrics = prepare(tree.root, out, **args)
    return metrics, pd.read_parquet(out / "manifest.parquet")


def no_leftovers(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))


# ---------------------------------------------------------------------------------------------
def test_names_neighbours_and_skips(cityscapes_tree: Tree, tmp_path: Path) -> None:
    metrics, df = run(cityscapes_tree, tmp_path / "prepared")
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert metrics["snippets_skipped"] == 2
    assert metrics["snippets_skipped_by_split"] == {"train": 1, "val": 1, "source": 0}
    assert metrics["frames"] == {"train": 15, "val": 5, "source": 1} and metrics["frames_total"] == len(df) == 21
    assert metrics["labelled_frames"] == 5

    bochum = df[df.city == "bochum"].set_index("offset").sort_index()
    assert list(bochum.index) == OFFSETS
    assert list(bochum.id) == [f"bochum_000000_{f:06d}" for f in range(311, 316)]
    assert list(bochum.frame) == list(range(311, 316))
    assert bochum.loc[0, "annotated"] and not bochum.loc[1, "annotated"]
    assert bochum.loc[0, "image"] == "leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png"
    assert bochum.loc[1, "image"] == "leftImg8bit_sequence/train/bochum/bochum_000000_000314_leftImg8bit.png"
    assert bochum.loc[0, "prev_image"] == bochum.loc[-1, "image"]
    assert bochum.loc[0, "next_image"] == bochum.loc[1, "image"]
    assert bochum.loc[-2, "prev_image"] is None or pd.isna(bochum.loc[-2, "prev_image"])
    assert pd.isna(bochum.loc[2, "next_image"])
    assert bochum.loc[0, "label"] == "gtFine/train/bochum/bochum_000000_000313_gtFine_labelTrainIds.png"
    assert pd.isna(bochum.loc[1, "label"]) and pd.isna(bochum.loc[1, "depth"])
    assert set(df[df.split == "val"].domain) == {"target"}

    skipped = set(cityscapes_tree.skipped["train"] + cityscapes_tree.skipped["val"])
    assert not any(fid.rsplit("_", 1)[0] == s.rsplit("_", 1)[0] for fid in df.id for s in skipped)
    src = df[df.split == "source"]
    assert list(src.id) == ["lindau_000000_000019"] and src.iloc[0].domain == "source"
    assert src.iloc[0].annotated and pd.isna(src.iloc[0].prev_image)
    # SynthCity extras are absent from a real Cityscapes tree: null, with their types kept.
    assert df.depth_exact.isna().all() and df.moving.isna().all() and df.pose.isna().all()
    assert df.lead_car.isna().all()
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "prepared" / "manifest.parquet")
    assert str(schema.field("depth_exact").type) == "string" and str(schema.field("lead_car").type) == "bool"
    for col in ("image", "prev_image", "next_image", "label", "depth"):
        for p in df[col].dropna():
            assert not Path(p).is_absolute() and (tmp_path / "prepared" / p).is_file()
    img = cv2.imread(str(tmp_path / "prepared" / bochum.loc[0, "image"]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8


def test_images_area_resized(cityscapes_tree: Tree, tmp_path: Path) -> None:
    _, df = run(cityscapes_tree, tmp_path / "prepared")
    fid = "aachen_000001_000020"
    raw = cv2.imread(str(cityscapes_tree.path("leftImg8bit_sequence", "train", fid, "_leftImg8bit.png")))
    row = df[df.id == fid].iloc[0]
    got = cv2.imread(str(tmp_path / "prepared" / row.image)).astype(np.float64)
    box = raw.astype(np.float64).reshape(H, 2, W, 2, 3).mean(axis=(1, 3))  # 2x2 box average
    assert np.abs(got - box).max() <= 1.0


def test_intrinsics_scaled_exactly(cityscapes_tree: Tree, tmp_path: Path) -> None:
    c = cityscapes_tree.camera
    _, df = run(cityscapes_tree, tmp_path / "prepared")
    sx, sy = W / cityscapes_tree.width, H / cityscapes_tree.height
    assert (df.fx == c.fx * sx).all() and (df.fy == c.fy * sy).all()
    assert (df.cx == (c.u0 + 0.5) * sx - 0.5).all() and (df.cy == (c.v0 + 0.5) * sy - 0.5).all()
    assert (df.baseline == c.baseline).all() and (df.height == H).all() and (df.width == W).all()

    # Non-uniform scale, by 4 across and by 2 down, at 32x64 from 128x256 (via the stage too).
    _, df4 = run(cityscapes_tree, tmp_path / "p4", height=64, width=64)
    assert np.allclose(df4.cx, (c.u0 + 0.5) / 4 - 0.5) and np.allclose(df4.cy, (c.v0 + 0.5) / 2 - 0.5)
    assert np.allclose(df4.fx, c.fx / 4) and np.allclose(df4.fy, c.fy / 2)


def test_intrinsics_convention_matches_area_resize() -> None:
    """A point projected at (u, v) at full resolution lands where the resized image shows it."""
    cam = Camera(fx=500.0, fy=500.0, cx=203.0, cy=101.0, baseline=0.2)
    img = np.zeros((200, 400), np.float32)
    img[96:104, 196:212] = 1.0  # a blob centred on (u, v) = (203.5, 99.5) in pixel-centre coordinates
    u, v = 203.5, 99.5
    small = resize_area(img, (50, 100))  # by 4
    ys, xs = np.mgrid[0:50, 0:100]
    cu, cv_ = (small * xs).sum() / small.sum(), (small * ys).sum() / small.sum()
    k = cam.scaled((200, 400), (50, 100))
    # A 3-D point on the optical ray through (u, v) projects at u' = fx'*(u-cx)/fx + cx' in the small image.
    assert cu == pytest.approx(k.fx * (u - cam.cx) / cam.fx + k.cx, abs=1e-4)
    assert cv_ == pytest.approx(k.fy * (v - cam.cy) / cam.fy + k.cy, abs=1e-4)


def test_resize_nearest_samples_pixel_centres() -> None:
    src = np.arange(16, dtype=np.uint8)[None].repeat(4, 0)
    out = resize_nearest(src, (1, 4))  # by 4: destination centre i covers source 4i..4i+3, centre 4i+1.5
    assert set(out[0] - np.array([0, 4, 8, 12])) <= {1, 2}  # never the border pixel of the block


def test_label_ids_mapped(cityscapes_tree: Tree, tmp_path: Path) -> None:
    _, df = run(cityscapes_tree, tmp_path / "prepared")
    for _, row in df[df.annotated].iterrows():
        got = cv2.imread(str(tmp_path / "prepared" / row.label), cv2.IMREAD_UNCHANGED)
        ids = cityscapes_tree.labels[row.id][::2, ::2]  # 4x4 constant blocks: nearest is exact
        assert got.dtype == np.uint8 and got.shape == (H, W)
        assert np.array_equal(got, L.LABEL_TO_TRAIN[ids])
        for label_id, train_id in ((7, 0), (8, 1), (11, 2), (26, 13), (24, 11), (33, 18), (1, 255), (9, 255), (0, 255)):
            if (ids == label_id).any():
                assert (got[ids == label_id] == train_id).all()
        assert set(np.unique(got)) <= set(range(19)) | {255}


def test_label_tables_from_cityscapesscripts() -> None:
    from cityscapesscripts.helpers.labels import labels

    for lab in labels:
        if 0 <= lab.id < 256:
            want = lab.trainId if 0 <= lab.trainId < 19 else 255
            assert L.LABEL_TO_TRAIN[lab.id] == want, lab.name
            if 0 <= lab.trainId < 19:
                assert L.TRAIN_NAMES[lab.trainId] == lab.name and tuple(L.TRAIN_COLORS[lab.trainId]) == lab.color
    assert L.LABEL_TO_TRAIN.shape == (256,) and L.LABEL_TO_TRAIN.dtype == np.uint8
    assert (L.LABEL_TO_TRAIN[34:] == 255).all()
    assert L.NUM_CLASSES == 19 and len(L.TRAIN_NAMES) == 19
    assert L.FOREGROUND_TRAIN_IDS == (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    rgb = L.colorize(np.array([[0, 13], [255, 10]]))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 142) and tuple(rgb[1, 0]) == (0, 0, 0)


def test_disparity_decoded_to_depth(cityscapes_tree: Tree, tmp_path: Path) -> None:
    c = cityscapes_tree.camera
    _, df = run(cityscapes_tree, tmp_path / "prepared")
    rows = df[df.depth.notna()]
    assert set(rows.id) == {i for ids in cityscapes_tree.snippets.values() for i in ids}
    for _, row in rows.iterrows():
        got = np.load(tmp_path / "prepared" / row.depth)
        assert got.dtype == np.float32 and got.shape == (H, W)
        p = cityscapes_tree.disparity[row.id][::2, ::2].astype(np.float64)
        truth = cityscapes_tree.depth[row.id][::2, ::2]
        valid = p > 0
        assert np.array_equal(got > 0, valid) and (got[~valid] == 0).all()
        # exactly what the encoding says (full-resolution fx, d = (p-1)/256) ...
        np.testing.assert_allclose(got[valid], c.baseline * c.fx / ((p[valid] - 1) / 256), rtol=1e-6)
        # ... which is the depth that was encoded, up to the 1/256 px quantisation
        np.testing.assert_allclose(got[valid], truth[valid], rtol=5e-3)
        assert got[valid].min() > 2.4 and got[valid].max() < 81


def test_disparity_edge_cases() -> None:
    p = np.array([[0, 1, 257, 513]], np.uint16)
    d = disparity_to_depth(p, baseline=0.5, fx=100.0)
    assert d.dtype == np.float32 and list(d[0]) == [0.0, 0.0, 50.0, 25.0]  # p=1: zero disparity, no depth


def test_workers_give_identical_output(cityscapes_tree: Tree, tmp_path: Path) -> None:
    _, one = run(cityscapes_tree, tmp_path / "w1", workers=1)
    _, two = run(cityscapes_tree, tmp_path / "w2", workers=2)
    pd.testing.assert_frame_equal(one, two)
    files = sorted(p.relative_to(tmp_path / "w1") for p in (tmp_path / "w1").rglob("*") if p.is_file())
    assert len(files) == 21 + 5 + 5 + 2  # images, labels, depth; manifest and fingerprint
    for f in files:
        assert (tmp_path / "w1" / f).read_bytes() == (tmp_path / "w2" / f).read_bytes(), f


def _add_synthcity_extras(tree: Tree) -> dict:
    """depth/, pose/, moving/ for every written frame and snippets.csv, as SynthCity writes them."""
    rng = np.random.default_rng(1)
    truth = {}
    for img in sorted(tree.root.glob("leftImg8bit*/*/*/*_leftImg8bit.png")):
        split, city, fid = img.parts[-3], img.parts[-2], img.name[: -len("_leftImg8bit.png")]
        depth = np.kron(rng.uniform(1, 60, size=(32, 64)), np.ones((4, 4))).astype(np.float32)
        depth[:8] = 0  # sky
        moving = np.zeros((tree.height, tree.width), np.uint8)
        moving[40:80, 100:180] = 255
        for kind, suffix in (("depth", "_depth.npy"), ("pose", "_pose.json"), ("moving", "_moving.png")):
            (tree.root / kind / split / city).mkdir(parents=True, exist_ok=True)
        np.save(tree.root / "depth" / split / city / f"{fid}_depth.npy", depth)
        pose = np.eye(4)
        pose[2, 3] = int(fid[-6:]) * 0.5
        (tree.root / "pose" / split / city / f"{fid}_pose.json").write_text(json.dumps({"T_world_cam": pose.tolist()}))
        cv2.imwrite(str(tree.root / "moving" / split / city / f"{fid}_moving.png"), moving)
        truth[fid] = (depth, pose)
    (tree.root / "snippets.csv").write_text(
        "split,city,sequence,lead_car,speed\n"
        "train,aachen,0,1,7.5\ntrain,aachen,1,0,9.0\ntrain,bochum,0,0,6.0\nval,frankfurt,0,1,12.0\n"
        "source,lindau,0,0,8.0\n")
    return truth


def test_synthcity_extras(cityscapes_tree: Tree, tmp_path: Path) -> None:
    truth = _add_synthcity_extras(cityscapes_tree)
    _, df = run(cityscapes_tree, tmp_path / "prepared")
    assert df.depth_exact.notna().all() and df.moving.notna().all() and df.pose.notna().all()
    lead = df.groupby(["city", "sequence"]).lead_car.first().to_dict()
    assert lead == {("aachen", 0): True, ("aachen", 1): False, ("bochum", 0): False, ("frankfurt", 0): True,
                    ("lindau", 0): False}
    row = df[df.id == "aachen_000000_000021"].iloc[0]
    d = np.load(tmp_path / "prepared" / row.depth_exact)
    assert d.dtype == np.float32 and np.array_equal(d, truth[row.id][0][::2, ::2])
    m = cv2.imread(str(tmp_path / "prepared" / row.moving), cv2.IMREAD_UNCHANGED)
    assert m.shape == (H, W) and set(np.unique(m)) == {0, 255} and (m[20:40, 50:90] == 255).all()
    pose = json.loads((tmp_path / "prepared" / row.pose).read_text())["T_world_cam"]
    assert np.allclose(pose, truth[row.id][1])


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file, nothing half-written.
def _one_line_naming(err: Exception, path: Path) -> None:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg, msg


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_png_rejected(cityscapes_tree: Tree, tmp_path: Path, damage: str) -> None:
    bad = cityscapes_tree.path("leftImg8bit_sequence", "val", "frankfurt_000000_000021", "_leftImg8bit.png")
    data = bad.read_bytes()
    bad.write_bytes({"garbage": b"\x89PNG not really" * 10, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    out = tmp_path / "prepared"
    with pytest.raises(SemdepthError) as e:
        run(cityscapes_tree, out, workers=2)
    _one_line_naming(e.value, bad)
    assert no_leftovers(out)  # train snippets were already written into the temporary directory


def test_corrupt_label_and_disparity_rejected(cityscapes_tree: Tree, tmp_path: Path) -> None:
    lab = cityscapes_tree.path("gtFine", "train", "aachen_000001_000019", "_gtFine_labelIds.png")
    cv2.imwrite(str(lab), np.zeros((8, 8), np.uint16))  # wrong dtype: not a labelIds PNG
    with pytest.raises(SemdepthError) as e:
        run(cityscapes_tree, tmp_path / "a")
    _one_line_naming(e.value, lab)
    cv2.imwrite(str(lab), cityscapes_tree.labels["aachen_000001_000019"])
    disp = cityscapes_tree.path("disparity", "train", "bochum_000000_000313", "_disparity.png")
    cv2.imwrite(str(disp), np.zeros((64, 128), np.uint16))  # wrong size for its image
    with pytest.raises(SemdepthError, match="does not match its image") as e:
        run(cityscapes_tree, tmp_path / "b")
    _one_line_naming(e.value, disp)
    assert no_leftovers(tmp_path / "a") and no_leftovers(tmp_path / "b")


@pytest.mark.parametrize("text", [
    '{"intrinsic": {"fx": 2262.5,',
    '{"intrinsic": {"fx": 1, "fy": 1, "u0": 1}, "extrinsic": {"baseline": 0.2}}',
    '{"intrinsic": {"fx": "big", "fy": 1, "u0": 1, "v0": 1}, "extrinsic": {"baseline": 0.2}}',
    "[]",
], ids=["truncated", "missing-v0", "not-a-number", "not-an-object"])
def test_malformed_camera_json_rejected(cityscapes_tree: Tree, tmp_path: Path, text: str) -> None:
    bad = cityscapes_tree.path("camera", "val", "frankfurt_000000_000019", "_camera.json")
    bad.write_text(text)
    out = tmp_path / "prepared"
    with pytest.raises(SemdepthError, match="malformed camera json") as e:
        run(cityscapes_tree, out)
    _one_line_naming(e.value, bad)
    assert no_leftovers(out)


def test_missing_inputs_rejected(cityscapes_tree: Tree, tmp_path: Path) -> None:
    with pytest.raises(SemdepthError, match="data.raw_dir: .* does not exist"):
        prepare(tmp_path / "nowhere", tmp_path / "o", H, W, OFFSETS, SPLITS, 1)
    with pytest.raises(SemdepthError, match="data.splits: split 'test' not found"):
        run(cityscapes_tree, tmp_path / "o", splits=["train", "test"])
    cam = cityscapes_tree.path("camera", "train", "aachen_000000_000019", "_camera.json")
    cam.unlink()
    with pytest.raises(SemdepthError, match="camera json not found") as e:
        run(cityscapes_tree, tmp_path / "o")
    _one_line_naming(e.value, cam)
    assert no_leftovers(tmp_path / "o")


# ---------------------------------------------------------------------------------------------
# The stage through the CLI, and killed midway.
KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    import semdepth.data.prepare as prep
    import stages.downsample as ds
    real, calls = prep.prepare_snippet, []
    def prepare_then_die(task):
        calls.append(task)
        if len(calls) == 3:  # two snippets are on disk in the temporary directory
            os.kill(os.getpid(), signal.SIGKILL)
        return real(task)
    prep.prepare_snippet = prepare_then_die
    ds.main("params.yaml")
""")


def test_killed_stage_leaves_no_output_then_cli_runs(stage_dir: Path) -> None:
    env = dict(os.environ, SEMDEPTH_TRACKING="0")
    proc = subprocess.run([sys.executable, "-c", KILLER.format(repo=str(REPO))], cwd=stage_dir, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (stage_dir / "data" / "prepared").exists()
    leftovers = list((stage_dir / "data").glob(".prepared.tmp-*"))
    assert len(leftovers) == 1 and len(list(leftovers[0].rglob("*.png"))) >= 10  # it was midway
    assert not (stage_dir / "metrics" / "downsample.json").exists()

    proc = subprocess.run([sys.executable, str(REPO / "cli.py"), "downsample", "--params", "params.yaml"],
                          cwd=stage_dir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (stage_dir / "data" / "prepared" / "manifest.parquet").is_file()
    assert not list((stage_dir / "data").glob(".prepared.tmp-*"))  # the stale one was cleaned up
    m = json.loads((stage_dir / "metrics" / "downsample.json").read_text())
    assert m["frames"] == {"train": 15, "val": 5, "source": 1} and m["snippets_skipped"] == 2
    assert m["frames_per_s"] > 0 and m["seconds"] > 0


def test_cli_reports_corrupt_file_in_one_line(stage_dir: Path, cityscapes_tree: Tree,
                                              capsys: pytest.CaptureFixture) -> None:
    import typer

    import cli

    bad = cityscapes_tree.path("leftImg8bit", "train", "aachen_000001_000019", "_leftImg8bit.png")
    bad.write_bytes(b"not a png")
    with pytest.raises(typer.Exit) as e:
        cli._run("downsample", Path("params.yaml"))  # what `semdepth downsample` runs, in-process
    assert e.value.exit_code != 0
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: {bad}: corrupt or unreadable image"]
    assert not (stage_dir / "data" / "prepared").exists() and not list((stage_dir / "data").glob(".prepared*"))


def test_tiny_workdir_manifest(tiny_workdir: Path) -> None:
    """On SynthCity (profiles/tiny.yaml): every frame prepared with the extras present."""
    df = pd.read_parquet(tiny_workdir / "data" / "prepared" / "manifest.parquet")
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert set(df.split) == {"train", "val", "source"}
    target = df[df.domain == "target"]
    assert target.depth_exact.notna().all() and target.pose.notna().all() and target.lead_car.notna().all()
    assert (df[df.split == "source"].offset == 0).all() and df[df.annotated].label.notna().all()
