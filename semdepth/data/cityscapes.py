"""Reader of a Cityscapes-layout root and preparation of one snippet at the working resolution.

The same code reads real Cityscapes and SynthCity (which writes the Cityscapes layout plus extras),
so nothing downstream knows which one it got.

Raw layout (`{id}` = `{city}_{seq:06d}_{frame:06d}`):
    leftImg8bit/{split}/{city}/{id}_leftImg8bit.png            annotated frame of each snippet
    leftImg8bit_sequence/{split}/{city}/{id}_leftImg8bit.png   neighbouring frames
    gtFine/{split}/{city}/{id}_gtFine_labelIds.png             label ids of the annotated frame
    camera/{split}/{city}/{id}_camera.json                     intrinsics + stereo baseline
    disparity[_sequence]/{split}/{city}/{id}_disparity.png     uint16 disparity (GT depth)
  SynthCity extras: depth/…_depth.npy, pose/…_pose.json, moving/…_moving.png, snippets.csv.

Prepared layout (mirrors it; paths in the manifest are relative to the prepared root):
    leftImg8bit[_sequence]/{split}/{city}/{id}_leftImg8bit.png      area-resized RGB
    gtFine/{split}/{city}/{id}_gtFine_labelTrainIds.png             train ids, 255 = ignore
    depth/{split}/{city}/{id}_depth.npy                             metric depth from disparity
    depth_exact/{split}/{city}/{id}_depth.npy                       SynthCity exact depth
    moving/{split}/{city}/{id}_moving.png, pose/{split}/{city}/{id}_pose.json

Resampling conventions (the reason they matter: the self-supervised depth warps pixels with these
intrinsics, and a half-pixel error in cx/cy is a systematic reprojection error):
- Pixel centres lie at integer coordinates, so pixel i covers [i-0.5, i+0.5]. Resizing W -> W'
  maps a continuous coordinate u to u' = (u+0.5)*W'/W - 0.5. Hence fx' = fx*W'/W and
  cx' = (cx+0.5)*W'/W - 0.5 (same for y with H). Hoyer's code kept full-resolution intrinsics on
  half-resolution images; we do not.
- Images: cv2.INTER_AREA (box-filter antialiasing, consistent with the convention above).
- Labels, depth and masks: cv2.INTER_NEAREST_EXACT, which samples the source pixel under the
  destination pixel centre ((i+0.5)*W/W'), unlike INTER_NEAREST which is shifted by half a pixel.
  Depth is never interpolated across edges, so invalid pixels (0) stay invalid and no depth value is
  invented between a car and the background.
- Disparity: p = 0 invalid, else d = (p-1)/256 px and depth = baseline*fx/d with the full-resolution fx
  (the disparity is measured at full resolution), computed before resizing.

Offsets are relative to each snippet's annotated frame (19 in SynthCity and most of Cityscapes, where
offset = frame - 19; some Cityscapes cities number frames continuously, so the annotated frame is
whatever leftImg8bit holds).
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from semdepth import SemdepthError
from semdepth.data.labels import LABEL_TO_TRAIN

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAINID_SUFFIX = "_gtFine_labelTrainIds.png"
CAMERA_SUFFIX = "_camera.json"
DISPARITY_SUFFIX = "_disparity.png"
DEPTH_SUFFIX = "_depth.npy"
POSE_SUFFIX = "_pose.json"
MOVING_SUFFIX = "_moving.png"
SOURCE_SPLIT = "source"
VAL_SPLIT = "val"

#: Manifest columns and their Arrow types, in order (docs/contracts.md "Prepared manifest").
MANIFEST_COLUMNS: dict[str, str] = {
    "id": "string", "split": "string", "domain": "string", "city": "string", "sequence": "int64",
    "frame": "int64", "offset": "int64", "annotated": "bool", "image": "string", "prev_image": "string",
    "next_image": "string", "label": "string", "depth": "string", "depth_exact": "string",
    "moving": "string", "lead_car": "bool", "pose": "string", "fx": "float64", "fy": "float64",
    "cx": "float64", "cy": "float64", "baseline": "float64", "height": "int64", "width": "int64",
}


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------
def frame_id(city: str, sequence: int, frame: int) -> str:
    return f"{city}_{sequence:06d}_{frame:06d}"


def parse_frame_id(fid: str) -> tuple[str, int, int]:
    """`aachen_000012_000019` -> ("aachen", 12, 19); SemdepthError if it is not a Cityscapes id."""
    parts = fid.rsplit("_", 2)
    if len(parts) != 3 or not parts[0] or not (parts[1].isdigit() and parts[2].isdigit()):
        raise SemdepthError(f"{fid}: not a Cityscapes frame id ({{city}}_{{seq:06d}}_{{frame:06d}})")
    return parts[0], int(parts[1]), int(parts[2])


# --------------------------------------------------------------------------------------------
# Camera
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics (pixels) and stereo baseline (metres) at a given resolution."""

    fx: float
    fy: float
    cx: float
    cy: float
    baseline: float

    def scaled(self, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> "Camera":
        """Intrinsics for an image resized from src (H, W) to dst (H', W'); pixel-centre convention."""
        sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
        return replace(self, fx=self.fx * sx, fy=self.fy * sy,
                       cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5)


def read_camera(path: Path) -> Camera:
    """Cityscapes camera json (`intrinsic.fx/fy/u0/v0`, `extrinsic.baseline`)."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as e:
        raise SemdepthError(f"{path}: cannot read camera json ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SemdepthError(f"{path}: malformed camera json ({str(e).splitlines()[0]})") from None
    try:
        intr, extr = raw["intrinsic"], raw["extrinsic"]
        vals = {k: intr[k] for k in ("fx", "fy", "u0", "v0")}
        vals["baseline"] = extr["baseline"]
    except (KeyError, TypeError) as e:
        raise SemdepthError(f"{path}: malformed camera json (missing key {e})") from None
    for k, v in vals.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SemdepthError(f"{path}: malformed camera json ({k} = {v!r} is not a finite number)")
    if vals["fx"] <= 0 or vals["fy"] <= 0 or vals["baseline"] <= 0:
        raise SemdepthError(f"{path}: malformed camera json (fx, fy and baseline must be positive)")
    return Camera(float(vals["fx"]), float(vals["fy"]), float(vals["u0"]), float(vals["v0"]),
                  float(vals["baseline"]))


# --------------------------------------------------------------------------------------------
# Readers (each raises one line naming the file)
# --------------------------------------------------------------------------------------------
def _imread(path: Path, flags: int) -> np.ndarray:
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise SemdepthError(f"{path}: cannot read file ({e.strerror})") from None
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None:
        raise SemdepthError(f"{path}: corrupt or unreadable image")
    return img


def read_image(path: Path) -> np.ndarray:
    """8-bit colour image as stored by cv2 (BGR order; written back unchanged)."""
    img = _imread(path, cv2.IMREAD_COLOR)
    if img.dtype != np.uint8:  # pragma: no cover - IMREAD_COLOR always yields uint8
        raise SemdepthError(f"{path}: expected an 8-bit image, got {img.dtype}")
    return img


def read_gray(path: Path, dtype: type, what: str) -> np.ndarray:
    """Single-channel PNG with an exact dtype (label ids uint8, disparity uint16, masks uint8)."""
    img = _imread(path, cv2.IMREAD_UNCHANGED)
    if img.ndim == 3 and img.shape[2] in (3, 4) and dtype == np.uint8 and \
            (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all():
        img = img[..., 0]  # a grey image saved as RGB: accept, it carries the same values
    if img.ndim != 2 or img.dtype != dtype:
        shape = "x".join(map(str, img.shape))
        raise SemdepthError(f"{path}: expected a single-channel {np.dtype(dtype).name} {what} PNG, "
                            f"got {shape} {img.dtype}")
    return img


def read_depth_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise SemdepthError(f"{path}: corrupt or unreadable depth array ({str(e).splitlines()[0][:120]})") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise SemdepthError(f"{path}: expected a 2-D float depth array, got shape {arr.shape} {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def disparity_to_depth(p: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes uint16 disparity -> float32 metric depth; 0 where invalid (p == 0 or p == 1).

    d = (p-1)/256 for p > 0; p == 1 encodes d = 0 (infinitely far), which is no usable depth either.
    """
    p = p.astype(np.float64)
    depth = np.where(p > 1, (256.0 * baseline * fx) / np.maximum(p - 1.0, 1.0), 0.0)  # = b*fx/((p-1)/256)
    return depth.astype(np.float32)


def resize_area(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == tuple(hw):
        return img.copy()
    return cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def resize_nearest(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest resize sampling the source pixel under each destination pixel centre."""
    if arr.shape[:2] == tuple(hw):
        return arr.copy()
    return cv2.resize(arr, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover
        raise SemdepthError(f"{path}: PNG encoding failed")
    path.write_bytes(buf.tobytes())


def _write_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr, allow_pickle=False)


# --------------------------------------------------------------------------------------------
# Snippets
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snippet:
    """One annotated frame and the offsets of the frames prepared around it."""

    split: str
    city: str
    sequence: int
    frame: int  # the annotated frame's index
    offsets: tuple[int, ...]
    lead_car: bool | None = None

    @property
    def id(self) -> str:
        return frame_id(self.city, self.sequence, self.frame)

    @property
    def domain(self) -> str:
        return "source" if self.split == SOURCE_SPLIT else "target"


@dataclass
class Plan:
    """What a Cityscapes-layout root offers for the requested splits and offsets."""

    snippets: list[Snippet] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # split -> annotated ids lacking a neighbour

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())


class CityscapesRoot:
    """Paths into a raw Cityscapes-layout root (real Cityscapes or SynthCity)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _p(self, kind: str, split: str, city: str, fid: str, suffix: str) -> Path:
        return self.root / kind / split / city / f"{fid}{suffix}"

    def image(self, split: str, city: str, fid: str, annotated: bool) -> Path:
        if annotated:
            p = self._p("leftImg8bit", split, city, fid, IMAGE_SUFFIX)
            if p.exists():
                return p
        return self._p("leftImg8bit_sequence", split, city, fid, IMAGE_SUFFIX)

    def label(self, split: str, city: str, fid: str) -> Path:
        return self._p("gtFine", split, city, fid, LABEL_SUFFIX)

    def camera(self, split: str, city: str, fid: str) -> Path:
        return self._p("camera", split, city, fid, CAMERA_SUFFIX)

    def disparity(self, split: str, city: str, fid: str) -> Path | None:
        for kind in ("disparity", "disparity_sequence"):
            p = self._p(kind, split, city, fid, DISPARITY_SUFFIX)
            if p.exists():
                return p
        return None

    def extra(self, kind: str, split: str, city: str, fid: str) -> Path | None:
        """SynthCity extras: kind in depth / pose / moving."""
        suffix = {"depth": DEPTH_SUFFIX, "pose": POSE_SUFFIX, "moving": MOVING_SUFFIX}[kind]
        p = self._p(kind, split, city, fid, suffix)
        return p if p.exists() else None

    def lead_cars(self) -> dict[tuple[str, str, int], bool]:
        """SynthCity `snippets.csv`: (split, city, sequence) -> lead_car; empty for real Cityscapes."""
        path = self.root / "snippets.csv"
        if not path.exists():
            return {}
        out: dict[tuple[str, str, int], bool] = {}
        try:
            with path.open(newline="") as f:
                for i, row in enumerate(csv.DictReader(f), start=2):
                    try:
                        key = (row["split"], row["city"], int(row["sequence"]))
                        out[key] = bool(int(float(row["lead_car"])))
                    except (KeyError, TypeError, ValueError) as e:
                        raise SemdepthError(f"{path}: malformed row {i} ({type(e).__name__}: {e})") from None
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise SemdepthError(f"{path}: cannot read snippets table ({e})") from None
        return out

    def plan(self, splits: list[str], offsets: list[int]) -> Plan:
        """Snippets whose every required frame exists; the others are listed as skipped.

        The `source` split (the labelled other domain) needs its annotated frames only: SynthCity
        writes no sequence frames for it, and nothing trains depth on it. A `val` snippet without
        any neighbour frame (SynthCity with `synth.val_frame_offsets: [0]`) is prepared at offset 0
        only, with null prev_image/next_image: evaluation reads the annotated frame alone. A val
        snippet lacking only some neighbours is an incomplete download and skipped, as in train.
        """
        if not self.root.is_dir():
            raise SemdepthError(f"data.raw_dir: {self.root} does not exist (run `semdepth synthesize`, "
                                f"or point data.raw_dir at a Cityscapes download)")
        lead = self.lead_cars()
        plan = Plan()
        for split in dict.fromkeys(splits):  # a repeated split is prepared once
            split_dir = self.root / "leftImg8bit" / split
            if not split_dir.is_dir():
                raise SemdepthError(f"data.splits: split '{split}' not found ({split_dir} is missing)")
            offs = (0,) if split == SOURCE_SPLIT else tuple(sorted(set(offsets)))
            plan.skipped[split] = []
            for img in sorted(split_dir.glob(f"*/*{IMAGE_SUFFIX}")):
                fid = img.name[: -len(IMAGE_SUFFIX)]
                city, seq, frame = parse_frame_id(fid)
                if city != img.parent.name:
                    raise SemdepthError(f"{img}: city '{city}' in the name does not match its folder")
                missing = [o for o in offs if o != 0 and (frame + o < 0 or not self.image(
                    split, city, frame_id(city, seq, frame + o), annotated=False).exists())]
                own = offs
                if split == VAL_SPLIT and missing and len(missing) == len(offs) - 1:
                    own, missing = (0,), []
                if missing:
                    plan.skipped[split].append(fid)
                    continue
                plan.snippets.append(Snippet(split, city, seq, frame, own, lead.get((split, city, seq))))
        return plan


# --------------------------------------------------------------------------------------------
# Preparing one snippet (runs in a worker process)
# --------------------------------------------------------------------------------------------
def prepared_path(kind: str, split: str, city: str, fid: str, suffix: str) -> Path:
    """Relative path of a prepared file (under the prepared root)."""
    return Path(kind) / split / city / f"{fid}{suffix}"


@dataclass(frozen=True)
class PrepareTask:
    raw_root: str
    out_root: str
    snippet: Snippet
    height: int
    width: int


def prepare_snippet(task: PrepareTask) -> list[dict[str, Any]]:
    """Resize every frame of one snippet into `out_root`; returns its manifest rows (paths relative)."""
    raw = CityscapesRoot(task.raw_root)
    out = Path(task.out_root)
    s = task.snippet
    hw = (task.height, task.width)
    ann_id = s.id
    ann_cam_path = raw.camera(s.split, s.city, ann_id)
    if not ann_cam_path.exists():
        raise SemdepthError(f"{ann_cam_path}: camera json not found (needed for the intrinsics)")
    ann_cam = read_camera(ann_cam_path)
    images: dict[int, str] = {}
    rows: list[dict[str, Any]] = []
    for off in s.offsets:
        fnum = s.frame + off
        fid = frame_id(s.city, s.sequence, fnum)
        annotated = off == 0
        src = raw.image(s.split, s.city, fid, annotated)
        img = read_image(src)
        src_hw = img.shape[:2]
        cam_path = raw.camera(s.split, s.city, fid)
        cam = read_camera(cam_path) if (not annotated and cam_path.exists()) else ann_cam
        kind = "leftImg8bit" if annotated else "leftImg8bit_sequence"
        rel_img = prepared_path(kind, s.split, s.city, fid, IMAGE_SUFFIX)
        _write_png(out / rel_img, resize_area(img, hw))
        images[fnum] = rel_img.as_posix()

        def same_size(arr: np.ndarray, path: Path) -> np.ndarray:
            if arr.shape[:2] != src_hw:
                raise SemdepthError(f"{path}: size {arr.shape[1]}x{arr.shape[0]} does not match its image "
                                    f"{src_hw[1]}x{src_hw[0]}")
            return arr

        label = None
        lab_path = raw.label(s.split, s.city, fid)
        if annotated and lab_path.exists():
            ids = same_size(read_gray(lab_path, np.uint8, "label-id"), lab_path)
            rel = prepared_path("gtFine", s.split, s.city, fid, TRAINID_SUFFIX)
            _write_png(out / rel, LABEL_TO_TRAIN[resize_nearest(ids, hw)])
            label = rel.as_posix()

        depth = None
        disp_path = raw.disparity(s.split, s.city, fid)
        if disp_path is not None:
            disp = same_size(read_gray(disp_path, np.uint16, "disparity"), disp_path)
            rel = prepared_path("depth", s.split, s.city, fid, DEPTH_SUFFIX)
            _write_npy(out / rel, resize_nearest(disparity_to_depth(disp, cam.baseline, cam.fx), hw))
            depth = rel.as_posix()

        depth_exact = None
        p = raw.extra("depth", s.split, s.city, fid)
        if p is not None:
            d = same_size(read_depth_npy(p), p)
            d = np.where(np.isfinite(d) & (d > 0), d, 0).astype(np.float32)
            rel = prepared_path("depth_exact", s.split, s.city, fid, DEPTH_SUFFIX)
            _write_npy(out / rel, resize_nearest(d, hw))
            depth_exact = rel.as_posix()

        moving = None
        p = raw.extra("moving", s.split, s.city, fid)
        if p is not None:
            m = same_size(read_gray(p, np.uint8, "moving-mask"), p)
            rel = prepared_path("moving", s.split, s.city, fid, MOVING_SUFFIX)
            _write_png(out / rel, np.where(resize_nearest(m, hw) > 0, 255, 0).astype(np.uint8))
            moving = rel.as_posix()

        pose = None
        p = raw.extra("pose", s.split, s.city, fid)
        if p is not None:
            _check_pose(p)
            rel = prepared_path("pose", s.split, s.city, fid, POSE_SUFFIX)
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out / rel)
            pose = rel.as_posix()

        k = cam.scaled(src_hw, hw)
        rows.append({
            "id": fid, "split": s.split, "domain": s.domain, "city": s.city, "sequence": s.sequence,
            "frame": fnum, "offset": off, "annotated": annotated, "image": rel_img.as_posix(),
            "prev_image": None, "next_image": None, "label": label, "depth": depth,
            "depth_exact": depth_exact, "moving": moving, "lead_car": s.lead_car, "pose": pose,
            "fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy, "baseline": k.baseline,
            "height": hw[0], "width": hw[1],
        })
    for row in rows:
        row["prev_image"] = images.get(row["frame"] - 1)
        row["next_image"] = images.get(row["frame"] + 1)
    return rows


def _check_pose(path: Path) -> None:
    try:
        m = np.asarray(json.loads(path.read_text())["T_world_cam"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise SemdepthError(f"{path}: malformed pose json ({type(e).__name__}: {str(e)[:80]})") from None
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise SemdepthError(f"{path}: malformed pose json (T_world_cam must be a finite 4x4 matrix)")


def manifest_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with exactly the contract's columns, order and dtypes."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    for col, typ in MANIFEST_COLUMNS.items():
        if typ == "string":
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        elif typ == "bool" and col == "lead_car":
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        else:
            df[col] = df[col].astype(typ)
    return df


def manifest_schema() -> pa.Schema:
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_(), "float64": pa.float64()}
    return pa.schema([(c, types[t]) for c, t in MANIFEST_COLUMNS.items()])


def write_manifest(rows: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    """Parquet with a fixed schema, so all-null columns (no SynthCity extras) keep their types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = manifest_frame(rows)
    table = pa.Table.from_pandas(df, schema=manifest_schema(), preserve_index=False)
    pq.write_table(table, path)
    return df
