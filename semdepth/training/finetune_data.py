"""Batches for finetune: one dataset item = everything one optimisation step needs.

Why a step-indexed dataset: item `i` is drawn from a generator seeded by (seed, i) only, so the data
of step i does not depend on the number of DataLoader workers, on earlier steps or on a resume point;
a resumed run sees exactly the batches the uninterrupted run would have seen.

Each step has a *labelled* batch (the selected frames with their ground truth, never mixed) and a
*mixing* batch drawn from labelled ∪ unlabelled frames (Hoyer: labelled frames contribute one-hot
ground truth, unlabelled ones teacher predictions). Frames with both temporal neighbours also carry
them and their intrinsics for the multi-task self-supervised depth loss. Random horizontal flips
mirror image, label, neighbours and intrinsics together; `finetune.crop_height/crop_width` then cut
all of them (and shift the intrinsics) to one random box per sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from torch.utils.data import Dataset

from semdepth.data.crop import box_at, check_crop, crop_image, crop_intrinsics
from semdepth.data.frames import read_label, read_rgb
from semdepth.geometry.camera import flip_intrinsics, intrinsics_matrix

if TYPE_CHECKING:
    import pandas as pd

IGNORE = 255


@dataclass
class FramePool:
    """Frames to draw from: images, optional GT labels (None = unlabelled), neighbours, intrinsics."""

    image: list[Path]
    label: list[Path | None]
    prev: list[Path | None]
    next: list[Path | None]
    K: torch.Tensor  # [N,3,3]

    def __len__(self) -> int:
        return len(self.image)

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, table_dir: Path, use_labels: bool) -> FramePool:
        """Manifest rows -> pool; `use_labels=False` drops GT (unlabelled frames must never see it)."""
        from semdepth.io import resolve

        col = lambda name: [resolve(v, table_dir) if isinstance(v, str) else None for v in rows[name]]  # noqa: E731
        K = intrinsics_matrix(*(rows[c].to_numpy(dtype="float64", copy=True) for c in ("fx", "fy", "cx", "cy")))
        K = K.reshape(-1, 3, 3)
        labels = col("label") if use_labels else [None] * len(rows)
        return cls(col("image"), labels, col("prev_image"), col("next_image"), K)

    @classmethod
    def concat(cls, pools: Sequence["FramePool"]) -> "FramePool":
        return cls([p for x in pools for p in x.image], [p for x in pools for p in x.label],
                   [p for x in pools for p in x.prev], [p for x in pools for p in x.next],
                   torch.cat([x.K for x in pools]))

    def has_neighbours(self, i: int) -> bool:
        return self.prev[i] is not None and self.next[i] is not None

    def load(self, idx: Sequence[int], flips: torch.Tensor, neighbours: bool, crop: tuple[int, int] | None = None,
             corners: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Stacked tensors for rows `idx`; rows with flips[k] are mirrored (with their intrinsics), then,
        with a `crop`, cut to the box whose corner sits at `corners[k]` (fractions, crop.box_at)."""
        imgs, labs, prevs, nexts, nb = [], [], [], [], []
        for i in idx:
            img = read_rgb(self.image[i])
            lab = read_label(self.label[i]) if self.label[i] is not None else torch.full(img.shape[1:], IGNORE)
            imgs.append(img)
            labs.append(lab.long())
            ok = neighbours and self.has_neighbours(i)
            nb.append(ok)
            if neighbours:
                prevs.append(read_rgb(self.prev[i]) if ok else img)
                nexts.append(read_rgb(self.next[i]) if ok else img)
        out = {"image": torch.stack(imgs), "label": torch.stack(labs),
               "labelled": torch.tensor([self.label[i] is not None for i in idx]),
               "K": self.K[list(idx)].clone(), "has_nb": torch.tensor(nb, dtype=torch.bool)}
        if neighbours:
            out["prev"], out["next"] = torch.stack(prevs), torch.stack(nexts)
        w = out["image"].shape[-1]
        f = flips.bool()
        if bool(f.any()):
            for key in ("image", "label", "prev", "next"):
                if key in out:
                    out[key][f] = out[key][f].flip(-1)
            out["K"][f] = flip_intrinsics(out["K"][f], w)
        if crop is not None:
            h = out["image"].shape[-2]
            check_crop("finetune", crop, h, w)
            boxes = [box_at(u, h, w, crop) for u in corners]
            for key in ("image", "label", "prev", "next"):
                if key in out:
                    out[key] = torch.stack([crop_image(x, b) for x, b in zip(out[key], boxes)])
            out["K"] = torch.stack([crop_intrinsics(k, b) for k, b in zip(out["K"], boxes)])
        return out


def _draw(n: int, b: int, g: torch.Generator) -> list[int]:
    """b distinct indices when the pool allows it, else with replacement."""
    if n >= b:
        return torch.randperm(n, generator=g)[:b].tolist()
    return torch.randint(0, n, (b,), generator=g).tolist()


class StepBatches(Dataset):
    """Item `step` -> {"l_*": labelled batch, "m_*": mixing batch, "seed": per-step seed for mixing}."""

    def __init__(self, labelled: FramePool, mixing: FramePool, batch_labeled: int, batch_mixing: int,
                 seed: int, steps: int, start: int = 0, neighbours: bool = False, with_mixing: bool = True,
                 flip_prob: float = 0.5, crop: tuple[int, int] | None = None) -> None:
        if len(labelled) == 0:
            raise ValueError("no labelled frames")
        self.labelled, self.mixing = labelled, mixing
        self.bl, self.bm = batch_labeled, batch_mixing
        self.seed, self.steps, self.start = seed, steps, start
        self.neighbours, self.with_mixing, self.flip_prob = neighbours, with_mixing, flip_prob
        self.crop = crop

    def __len__(self) -> int:
        return self.steps - self.start

    def step_seed(self, step: int) -> int:
        return (self.seed * 1_000_003 + step * 7919 + 17) % (2**63 - 1)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        step = self.start + k
        g = torch.Generator().manual_seed(self.step_seed(step))
        out: dict[str, torch.Tensor] = {"step": torch.tensor(step),
                                        "mix_seed": torch.randint(0, 2**62, (), generator=g)}
        li = _draw(len(self.labelled), self.bl, g)
        lf = torch.rand(self.bl, generator=g) < self.flip_prob
        mixing = self.with_mixing or self.neighbours
        if mixing:
            mi = _draw(len(self.mixing), self.bm, g)
            mf = torch.rand(self.bm, generator=g) < self.flip_prob
        # crop corners drawn after everything else, and only with a crop: whole-frame runs keep their stream
        lc = torch.rand(self.bl, 2, generator=g) if self.crop else None
        mc = torch.rand(self.bm, 2, generator=g) if self.crop and mixing else None
        for key, v in self.labelled.load(li, lf, self.neighbours, self.crop, lc).items():
            out[f"l_{key}"] = v
        if mixing:
            for key, v in self.mixing.load(mi, mf, self.neighbours, self.crop, mc).items():
                out[f"m_{key}"] = v
        return out
