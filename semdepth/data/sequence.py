"""Training triplets (t-1, t, t+1) for self-supervised depth, read from the prepared manifest.

Reproducibility and resumability drive the design: which frame lands in which batch and how it is
augmented is a pure function of (seed, global sample position). The sampler yields
(index, augmentation seed) pairs; a resumed run restarts at position step·batch and draws exactly the
same samples and augmentations, whatever the number of worker processes or DDP ranks (each rank
takes its contiguous share of every global batch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset, Sampler

from semdepth import SemdepthError
from semdepth.data.frames import read_rgb
from semdepth.io import read_table, resolve

OFFSETS = (-1, 0, 1)
_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: decorrelates (seed, position) -> generator seed


def _seed_for(seed: int, position: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + position * 7919 + salt * 104_729 + _MIX) % (2**63 - 1)


def triplet_rows(manifest: "pd.DataFrame", ids: Sequence[str] | None = None) -> "pd.DataFrame":  # noqa: F821
    """Rows usable as training targets: train split, target domain, both neighbours prepared
    (docs/contracts.md), optionally restricted to `ids` (retrain: the filter's kept frames)."""
    df = manifest[(manifest["split"] == "train") & (manifest["domain"] == "target")
                  & manifest["prev_image"].notna() & manifest["next_image"].notna()]
    if ids is not None:
        wanted = set(ids)
        df = df[df["id"].isin(wanted)]
        if len(wanted - set(df["id"])):
            missing = sorted(wanted - set(df["id"]))
            raise SemdepthError(f"{len(missing)} requested training ids are not triplets in the manifest "
                                f"(e.g. {missing[0]})")
    return df.sort_values("id").reset_index(drop=True)


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
    -1,0,1, "K"/"inv_K": [3,3] (flipped with the images), "index"} + "foreground" [1,H,W] when
    pseudo-labels are given. Indexed by (row index, augmentation seed) pairs from `TripletSampler`."""

    def __init__(self, manifest_path: str | Path, ids: Sequence[str] | None = None, flip_prob: float = 0.5,
                 jitter_prob: float = 0.5, pseudolabels: str | Path | None = None) -> None:
        manifest_path = Path(manifest_path)
        root = manifest_path.parent
        rows = triplet_rows(read_table(manifest_path), ids)
        if rows.empty:
            raise SemdepthError(f"{manifest_path}: no training triplets (split train, domain target, "
                                f"both neighbours)")
        self.ids = rows["id"].tolist()
        self.paths = [[resolve(r[c], root) for c in ("prev_image", "image", "next_image")]
                      for r in rows.to_dict("records")]
        self.K = torch.tensor(np.stack([[[r.fx, 0, r.cx], [0, r.fy, r.cy], [0, 0, 1]] for r in rows.itertuples()]),
                              dtype=torch.float32)
        self.height, self.width = int(rows["height"].iloc[0]), int(rows["width"].iloc[0])
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
        K = self.K[index].clone()
        item: dict = {"index": index}
        for o, p in zip(OFFSETS, self.paths[index]):
            img = read_rgb(p)
            if img.shape[-2:] != (self.height, self.width):
                raise SemdepthError(f"{p}: size {tuple(img.shape[-2:])} differs from the manifest's "
                                    f"{self.height}x{self.width}")
            if flip:
                img = img.flip(-1)
            item[f"color_{o}"] = img
            item[f"aug_{o}"] = self.jitter.apply(img, ops) if jitter else img
        if flip:
            K[0, 2] = (self.width - 1) - K[0, 2]
        item["K"], item["inv_K"] = K, torch.linalg.inv(K)
        if self.foreground is not None:
            from semdepth.data.frames import read_label_u8

            fg = torch.from_numpy(read_label_u8(self.foreground[index]).astype(np.float32))[None]
            item["foreground"] = fg.flip(-1) if flip else fg
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
