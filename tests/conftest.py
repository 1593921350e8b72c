"""Shared fixtures.

- `cityscapes_tree`: a tiny tree in the real Cityscapes layout, names and encodings (8-bit PNGs,
  label *ids* from cityscapesscripts, camera json, uint16 disparity), written here with plain cv2 and
  json so the reader is checked against the format rather than against itself.
- `tiny_workdir`: a session-wide temporary project running synthesize + downsample on
  profiles/tiny.yaml, for the tests of later stages.

MLflow tracking is off for tests (SEMDEPTH_TRACKING=0); tests/test_tracking.py turns it back on.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

os.environ["SEMDEPTH_TRACKING"] = "0"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]

# Real Cityscapes label ids (cityscapesscripts): unlabeled 0, ego vehicle 1, road 7, sidewalk 8,
# parking 9 (ignored in training), building 11, vegetation 21, sky 23, person 24, car 26, bicycle 33.
LABEL_IDS_USED = (0, 1, 7, 8, 9, 11, 21, 23, 24, 26, 33)


@dataclass
class CamSpec:
    fx: float = 262.5
    fy: float = 263.0
    u0: float = 127.3
    v0: float = 61.9
    baseline: float = 0.209313


@dataclass
class Tree:
    """What the fixture wrote, so tests can compare the prepared output with the truth."""

    root: Path
    height: int  # raw resolution
    width: int
    camera: CamSpec
    offsets: tuple[int, ...]
    snippets: dict[str, list[str]] = field(default_factory=dict)  # split -> complete annotated ids
    skipped: dict[str, list[str]] = field(default_factory=dict)  # split -> ids lacking a neighbour
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # annotated id -> label ids (raw)
    depth: dict[str, np.ndarray] = field(default_factory=dict)  # id -> true depth behind the disparity
    disparity: dict[str, np.ndarray] = field(default_factory=dict)  # id -> uint16 disparity PNG content

    def path(self, kind: str, split: str, fid: str, suffix: str) -> Path:
        return self.root / kind / split / fid.rsplit("_", 2)[0] / f"{fid}{suffix}"


def _fid(city: str, seq: int, frame: int) -> str:
    return f"{city}_{seq:06d}_{frame:06d}"


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _blocky(rng: np.random.Generator, h: int, w: int, values: np.ndarray, block: int = 4) -> np.ndarray:
    """Piecewise-constant map of `block`x`block` cells (nearest resizing by 2 or 4 keeps it exact)."""
    cells = rng.choice(values, size=(h // block, w // block))
    return np.kron(cells, np.ones((block, block), dtype=cells.dtype))


def build_cityscapes_tree(root: Path, height: int = 128, width: int = 256, seed: int = 0) -> Tree:
    """Write a Cityscapes-layout tree.

    train: aachen seq 0 and 1 (annotated frame 19), bochum seq 0 (annotated frame 313: Cityscapes
    cities that number frames continuously); aachen seq 2 lacks frame +1 (skipped).
    val: frankfurt seq 0; frankfurt seq 1 lacks frame -2 (skipped).
    source: lindau seq 0, annotated frame only (as SynthCity's source split).
    Sequence frames are written for offsets -2..2 (frame 19 also into leftImg8bit_sequence, as
    Cityscapes does); disparity for the annotated frames only (disparity_trainvaltest).
    """
    rng = np.random.default_rng(seed)
    cam = CamSpec()
    tree = Tree(root=root, height=height, width=width, camera=cam, offsets=(-2, -1, 0, 1, 2))
    layout = {
        "train": [("aachen", 0, 19, None), ("aachen", 1, 19, None), ("bochum", 0, 313, None), ("aachen", 2, 19, 1)],
        "val": [("frankfurt", 0, 19, None), ("frankfurt", 1, 19, -2)],
        "source": [("lindau", 0, 19, "source")],
    }
    for split, snippets in layout.items():
        tree.snippets[split], tree.skipped[split] = [], []
        for city, seq, ann, missing in snippets:
            aid = _fid(city, seq, ann)
            (tree.skipped[split] if isinstance(missing, int) else tree.snippets[split]).append(aid)
            offsets = (0,) if missing == "source" else tree.offsets
            for off in offsets:
                if off == missing:
                    continue
                fid = _fid(city, seq, ann + off)
                img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
                if off == 0:
                    _write_png(tree.path("leftImg8bit", split, aid, "_leftImg8bit.png"), img)
                if missing != "source":
                    _write_png(tree.path("leftImg8bit_sequence", split, fid, "_leftImg8bit.png"), img)
            labels = _blocky(rng, height, width, np.array(LABEL_IDS_USED, dtype=np.uint8))
            _write_png(tree.path("gtFine", split, aid, "_gtFine_labelIds.png"), labels)
            tree.labels[aid] = labels
            cam_json = {"extrinsic": {"baseline": cam.baseline, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1,
                                      "yaw": -0.0195, "z": 1.22},
                        "intrinsic": {"fx": cam.fx, "fy": cam.fy, "u0": cam.u0, "v0": cam.v0}}
            p = tree.path("camera", split, aid, "_camera.json")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(cam_json, indent=4))
            # Disparity that encodes a known depth: p = round(256 * baseline * fx / depth) + 1, 0 = invalid.
            depth = _blocky(rng, height, width, np.array([0.0, 2.5, 5.0, 11.0, 30.0, 80.0]))
            disp = np.where(depth > 0, np.round(256.0 * cam.baseline * cam.fx / np.maximum(depth, 1e-9)) + 1, 0)
            disp = disp.astype(np.uint16)
            _write_png(tree.path("disparity", split, aid, "_disparity.png"), disp)
            tree.depth[aid], tree.disparity[aid] = depth, disp
    return tree


@pytest.fixture
def cityscapes_tree(tmp_path: Path) -> Tree:
    return build_cityscapes_tree(tmp_path / "cityscapes")


def write_params(path: Path, **data_overrides) -> Path:
    """profiles/tiny.yaml with `data.*` overridden, written to `path`."""
    raw = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    raw["data"].update(data_overrides)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def stage_dir(tmp_path: Path, cityscapes_tree: Tree, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with params.yaml pointing data.raw_dir at `cityscapes_tree`; cwd set to it."""
    work = tmp_path / "work"
    work.mkdir()
    write_params(work / "params.yaml", raw_dir=str(cityscapes_tree.root), splits=["train", "val", "source"],
                 workers=1)
    monkeypatch.chdir(work)
    return work


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary project on profiles/tiny.yaml (as params.yaml) after `synthesize` and `downsample`.

    Built once per session. The working directory is restored right after building, so the rest of the
    session does not silently run elsewhere: run a later stage with `monkeypatch.chdir(tiny_workdir)`
    (or the `in_tiny_workdir` fixture), or `with contextlib.chdir(tiny_workdir):` in wider fixtures.
    """
    from stages import downsample, synthesize

    work = tmp_path_factory.mktemp("tiny")
    shutil.copyfile(REPO / "profiles" / "tiny.yaml", work / "params.yaml")
    with contextlib.chdir(work):
        synthesize.main("params.yaml")
        downsample.main("params.yaml")
    return work


@pytest.fixture
def in_tiny_workdir(tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`tiny_workdir`, with the current directory set to it for this test."""
    monkeypatch.chdir(tiny_workdir)
    return tiny_workdir


@pytest.fixture
def one_thread():
    """One torch thread per test: steadier timings and no oversubscription on 2-core CI."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
