"""Training tuples for self-supervised depth, read from the prepared manifest: a target frame t and
its photometric sources at `sde.source_offsets` (default t-1, t+1: monodepth2's triplets).

Reproducibility and resumability drive the design: which frame lands in which batch and how it is
augmented is a pure function of (seed, global sample position). The sampler yields
(index, augmentation seed) pairs; a resumed run restarts at position step·batch and draws exactly the
same samples and augmentations, whatever the number of worker processes or DDP ranks (each rank
takes its contiguous share of every global batch).

Sources other than ±1 are found in the manifest by snippet and frame number: the frame k frames after
a target is the row of the same (split, city, sequence) whose `frame` is the target's + k. The ±1
neighbours are also the manifest's `prev_image`/`next_image` columns, which the default reads (the
same frames, docs/contracts.md), so the schema needs no column per offset.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset, Sampler

from semdepth import SemdepthError
from semdepth.data.crop import check_crop, crop_image, crop_intrinsics, random_box
from semdepth.data.frames import read_rgb
from semdepth.data.manifest import target_train, training_triplets
from semdepth.io import read_table, resolve
from semdepth.runtime import get_logger

if TYPE_CHECKING:
    import pandas as pd

TRIPLET = (-1, 1)  # monodepth2's sources: the manifest's prev_image / next_image
SNIPPET = ("split", "city", "sequence")  # the manifest columns that name a snippet
_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: decorrelates (seed, position) -> generator seed


def _seed_for(seed: int, position: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + position * 7919 + salt * 104_729 + _MIX) % (2**63 - 1)


def triplet_rows(manifest: pd.DataFrame, ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows usable as training targets: train split, target domain, both neighbours prepared
    (docs/contracts.md), optionally restricted to `ids` (retrain: the filter's kept frames)."""
    df = training_triplets(manifest)
    if ids is not None:
        wanted = set(ids)
        df = df[df["id"].isin(wanted)]
        if len(wanted - set(df["id"])):
            missing = sorted(wanted - set(df["id"]))
            raise SemdepthError(f"{len(missing)} requested training ids are not triplets in the manifest "
                                f"(e.g. {missing[0]})")
    return df.reset_index(drop=True)


def image_column(offset: int) -> str:
    """Column of `source_rows` holding the image `offset` frames from the target."""
    return f"image_{offset}"


def neighbour_images(manifest: pd.DataFrame, frames: pd.DataFrame, offset: int) -> list[str | None]:
    """The stored image path of the frame `offset` frames from each row of `frames` in its snippet (the
    manifest row of the same split, city and sequence with frame + offset); None where not prepared."""
    key = list(SNIPPET) + ["frame"]
    images = {(r[0], r[1], int(r[2]), int(r[3])): r[4] for r in manifest[key + ["image"]].itertuples(index=False)}
    return [images.get((r[0], r[1], int(r[2]), int(r[3]) + offset)) for r in frames[key].itertuples(index=False)]


def source_rows(manifest: pd.DataFrame, source_offsets: Sequence[int] = TRIPLET,
                ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Training targets for these sources, sorted by id, with an `image_{o}` column per source offset.

    [-1, 1] (the default) are the training triplets (`triplet_rows`). Other offsets: the target-domain
    train frames that have a prepared frame at every offset ([-2, 2] on data.frame_offsets [-2..2]: only
    the annotated centre frames). `ids` (retrain: the frames the filter kept, judged as triplets) may
    name triplets that lack one of these sources: they are left out, with a log line; ids that are not
    even triplets are an error, as in `triplet_rows`.
    """
    offsets = tuple(source_offsets)
    if offsets == TRIPLET:
        df = triplet_rows(manifest, ids)
        return df.assign(**{image_column(-1): df["prev_image"], image_column(1): df["next_image"]})
    df = target_train(manifest)
    df = df.assign(**{image_column(o): neighbour_images(manifest, df, o) for o in offsets})
    df = df[df[[image_column(o) for o in offsets]].notna().all(axis=1)]
    if ids is not None:
        wanted = set(ids)
        unknown = wanted - set(df["id"]) - set(training_triplets(manifest)["id"])
        if unknown:
            raise SemdepthError(f"{len(unknown)} requested training ids are not triplets in the manifest "
                                f"(e.g. {sorted(unknown)[0]})")
        left_out = len(wanted - set(df["id"]))
        if left_out:
            get_logger("semdepth.sde").info("%d of the %d requested training frames lack a source at "
                                            "sde.source_offsets %s: not trained on", left_out, len(wanted),
                                            list(offsets))
        df = df[df["id"].isin(wanted)]
    return df.sort_values("id").reset_index(drop=True)


def _no_rows_error(path: Path, manifest: pd.DataFrame, offsets: tuple[int, ...], ids: Sequence[str] | None) -> str:
    """Why there is nothing to train on, in one line naming the parameters to change."""
    if offsets == TRIPLET:
        return f"{path}: no training triplets (split train, domain target, both neighbours)"
    if ids is not None:
        return (f"{path}: none of the {len(set(ids))} requested training frames has a prepared frame at every "
                f"offset of sde.source_offsets {list(offsets)}")
    prepared = sorted({int(o) for o in target_train(manifest)["offset"].dropna()})
    return (f"sde.source_offsets: {list(offsets)} needs frames the prepared data does not have ({path}: no "
            f"training frame has a prepared frame at every one of these offsets; its train frames are at offsets "
            f"{prepared}: widen data.frame_offsets and rerun downsample)")


class ColorJitter:
    """monodepth2's jitter (brightness, contrast, saturation ±0.2, hue ±0.1, random order), with
    parameters drawn once per sample so all frames of a triplet get the same change."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.1):
        self.b, self.c, self.s, self.h = brightness, contrast, saturation, hue

    def sample(self, g: torch.Generator) -> list[tuple[str, float]]:
        u = torch.rand(5, generator=g).tolist()
        factors = [("brightness", 1 + self.b * (2 * u[0] - 1)), ("contrast", 1 + self.c * (2 * u[1] - 1)),
                   ("saturation", 1 + self.s * (2 * u[2] - 1)), ("hue", self.h * (2 * u[3] - 1))]
        order = torch.randperm(4, generator=g).tolist()
        return [factors[i] for i in order]

    @staticmethod
    def apply(img: torch.Tensor, ops: list[tuple[str, float]]) -> torch.Tensor:
        for name, f in ops:
            img = getattr(TF, f"adjust_{name}")(img, f)
        return img.clamp(0, 1)


class TripletDataset(Dataset):
    """Item = {"color_{o}": raw [3,H,W] (loss targets), "aug_{o}": jittered (network inputs) for o in
    0 and each of `source_offsets` (default -1, 1), "K"/"inv_K": [3,3] (flipped with the images),
    "index"} + "foreground" [1,H,W] when pseudo-labels are given + "depth" [1,H,W] (0 = invalid) when
    `depth` names a manifest depth column (supervised probes: benchmarks/sde_convergence.py). Indexed by
    (row index, augmentation seed) pairs from `TripletSampler`.

    `source_offsets` () gives the target frame alone (every target-domain train frame, or `ids`).
    `crop` (height, width): every tensor of an item is cut to one random box of that size and K follows
    it (semdepth/data/crop.py); None trains on whole frames."""

    def __init__(self, manifest_path: str | Path, ids: Sequence[str] | None = None, flip_prob: float = 0.5,
                 jitter_prob: float = 0.5, pseudolabels: str | Path | None = None,
                 source_offsets: Sequence[int] = TRIPLET, depth: str | None = None,
                 crop: tuple[int, int] | None = None) -> None:
        manifest_path = Path(manifest_path)
        root = manifest_path.parent
        self.source_offsets = tuple(int(o) for o in source_offsets)
        manifest = read_table(manifest_path)
        rows = source_rows(manifest, self.source_offsets, ids)
        if rows.empty:
            raise SemdepthError(_no_rows_error(manifest_path, manifest, self.source_offsets, ids))
        self.ids = rows["id"].tolist()
        self.offsets = tuple(sorted(self.source_offsets + (0,)))
        columns = [image_column(o) if o else "image" for o in self.offsets]
        self.paths = [[resolve(r[c], root) for c in columns] for r in rows.to_dict("records")]
        self.depth: list[Path] | None = None
        if depth is not None:
            if depth not in rows or rows[depth].isna().any():
                raise SemdepthError(f"{manifest_path}: not every training frame has a {depth!r} map")
            self.depth = [resolve(p, root) for p in rows[depth]]
        self.K = torch.tensor(np.stack([[[r.fx, 0, r.cx], [0, r.fy, r.cy], [0, 0, 1]] for r in rows.itertuples()]),
                              dtype=torch.float32)
        self.height, self.width = int(rows["height"].iloc[0]), int(rows["width"].iloc[0])
        check_crop("sde", crop, self.height, self.width)
        self.crop = crop
        self.flip_prob, self.jitter_prob = flip_prob, jitter_prob
        self.jitter = ColorJitter()
        self.foreground: list[Path] | None = None
        if pseudolabels is not None:
            pl_path = Path(pseudolabels)
            pl = read_table(pl_path).set_index("id")
            missing = [i for i in self.ids if i not in pl.index]
            if missing:
                raise SemdepthError(f"{pl_path}: no pseudo-label for {len(missing)} training frames (e.g. {missing[0]})")
            self.foreground = [resolve(pl.at[i, "foreground"], pl_path.parent) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        g = torch.Generator().manual_seed(seed)
        flip = bool(torch.rand(1, generator=g) < self.flip_prob)
        jitter = bool(torch.rand(1, generator=g) < self.jitter_prob)
        ops = self.jitter.sample(g)  # drawn always: the stream does not depend on the coin flips
        # drawn last, and only with a crop: whole-frame runs keep their stream bit for bit
        box = random_box(g, self.height, self.width, self.crop) if self.crop else None
        cut = (lambda x: crop_image(x, box).contiguous()) if box else (lambda x: x)  # noqa: E731
        K = self.K[index].clone()
        item: dict = {"index": index}
        for o, p in zip(self.offsets, self.paths[index]):
            img = read_rgb(p)
            if img.shape[-2:] != (self.height, self.width):
                raise SemdepthError(f"{p}: size {tuple(img.shape[-2:])} differs from the manifest's "
                                    f"{self.height}x{self.width}")
            if flip:
                img = img.flip(-1)
            # jitter before the cut: contrast and saturation use the frame's mean, so a crop is exactly
            # a box of the whole-frame item
            item[f"aug_{o}"] = cut(self.jitter.apply(img, ops)) if jitter else cut(img)
            item[f"color_{o}"] = cut(img)
        if flip:
            K[0, 2] = (self.width - 1) - K[0, 2]
        if box:
            K = crop_intrinsics(K, box)
        item["K"], item["inv_K"] = K, torch.linalg.inv(K)
        if self.foreground is not None:
            from semdepth.data.frames import read_label_u8

            fg = torch.from_numpy(read_label_u8(self.foreground[index]).astype(np.float32))[None]
            item["foreground"] = cut(fg.flip(-1) if flip else fg)
        if self.depth is not None:
            d = torch.from_numpy(np.load(self.depth[index]).astype(np.float32))[None]
            item["depth"] = cut(d.flip(-1) if flip else d)
        return item


class TripletSampler(Sampler):
    """Infinite stream of this rank's batches of (index, aug seed); epoch e is a permutation seeded by
    (seed, e). Global position p = step·global_batch + j; rank r takes j in [r·b, (r+1)·b)."""

    def __init__(self, n: int, global_batch: int, seed: int, start_step: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if global_batch % world_size:
            raise SemdepthError(f"sde.batch_size: {global_batch} is not divisible by the {world_size} processes")
        self.n, self.batch, self.seed = n, global_batch, seed
        self.step, self.rank, self.local = start_step, rank, global_batch // world_size
        self._perm_epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch = position // self.n
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(_seed_for(self.seed, epoch, salt=1))
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
        return self._perm[position % self.n]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.step
        while True:
            base = step * self.batch + self.rank * self.local
            yield [(self._index(p), _seed_for(self.seed, p)) for p in range(base, base + self.local)]
            step += 1


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers only decode and augment; the main process owns the cores


def triplet_loader(dataset: TripletDataset, global_batch: int, seed: int, start_step: int = 0,
                   num_workers: int = 1, rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    sampler = TripletSampler(len(dataset), global_batch, seed, start_step, rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                      worker_init_fn=_worker_init if num_workers else None,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None,
                      generator=torch.Generator().manual_seed(seed))
