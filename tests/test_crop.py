"""Random training crops: one box per sample for every tensor, intrinsics that follow it, whole-frame
streams untouched, and one-line errors for crops the frames or the networks cannot take."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _sde_scene import write_dataset
from semdepth import SemdepthError
from semdepth.config import ConfigError, parse_params
from semdepth.data.crop import Box, box_at, crop_image, crop_intrinsics
from semdepth.data.frames import write_png
from semdepth.data.sequence import TripletDataset
from semdepth.training.finetune_data import FramePool, StepBatches

REPO = Path(__file__).resolve().parents[1]
H, W = 64, 128


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("crop") / "prep", H, W, snippets=2, speed=0.4, val_snippets=0)


def box_of(full_K: torch.Tensor, crop_K: torch.Tensor, size: tuple[int, int]) -> Box:
    """The box a cropped item was cut from, read off its shifted principal point."""
    left, top = (full_K[0, 2] - crop_K[0, 2]).item(), (full_K[1, 2] - crop_K[1, 2]).item()
    assert left == int(left) and top == int(top)
    return Box(int(top), int(left), *size)


def test_cropped_intrinsics_cast_the_same_rays():
    K = torch.tensor([[70.0, 0, 63.5], [0, 120.0, 31.5], [0, 0, 1]])
    box = Box(top=12, left=40, height=32, width=64)
    Kc = crop_intrinsics(K, box)
    u, v = torch.meshgrid(torch.arange(64.0), torch.arange(32.0), indexing="xy")
    pix_crop = torch.stack([u.flatten(), v.flatten(), torch.ones(u.numel())])
    pix_full = pix_crop + torch.tensor([[box.left], [box.top], [0.0]])
    assert torch.allclose(torch.linalg.inv(Kc) @ pix_crop, torch.linalg.inv(K) @ pix_full, atol=1e-5)
    assert Kc[0, 0] == K[0, 0] and Kc[1, 1] == K[1, 1]


@pytest.mark.parametrize("u", [(0.0, 0.0), (0.999999, 0.999999), (0.5, 0.25)])
def test_box_at_stays_inside_the_frame(u):
    b = box_at(torch.tensor(u), 64, 128, (32, 96))
    assert 0 <= b.top <= 32 and 0 <= b.left <= 32 and (b.height, b.width) == (32, 96)
    assert box_at(torch.tensor(u), 64, 128, (64, 128)) == Box(0, 0, 64, 128)


@pytest.mark.parametrize("flip", [0.0, 1.0, 0.5])
def test_triplet_crop_is_the_whole_frame_item_cut_by_one_box(manifest, flip):
    full = TripletDataset(manifest, flip_prob=flip, jitter_prob=0.5, depth="depth_exact")
    crop = TripletDataset(manifest, flip_prob=flip, jitter_prob=0.5, depth="depth_exact", crop=(32, 64))
    corners = set()
    for key in [(i, s) for i in range(len(full)) for s in range(5)]:
        a, c = full[key], crop[key]
        box = box_of(a["K"], c["K"], (32, 64))
        corners.add((box.top, box.left))
        for name in ("color_-1", "color_0", "color_1", "aug_-1", "aug_0", "aug_1", "depth"):
            assert c[name].shape[-2:] == (32, 64)
            # same flip and jitter draws as the whole-frame item: the crop is drawn after them
            assert torch.equal(c[name], crop_image(a[name], box)), name
        assert torch.allclose(c["inv_K"] @ c["K"], torch.eye(3), atol=1e-5)
    assert len(corners) > 3  # boxes move from sample to sample


def test_triplet_crop_larger_than_the_frames_names_the_param(manifest):
    with pytest.raises(SemdepthError, match=r"sde\.crop_height/crop_width: crop 96x64 is larger than the 64x128"):
        TripletDataset(manifest, crop=(96, 64))


def _pool(root: Path, n: int) -> FramePool:
    """Frames whose label is a function of the image (red = 10 x label), so misalignment shows."""
    rng = np.random.default_rng(0)
    imgs, labs, prevs, nexts = [], [], [], []
    for i in range(n):
        lab = rng.integers(0, 19, (H, W)).astype(np.uint8)
        img = np.stack([lab * 10, rng.integers(0, 255, (H, W)), rng.integers(0, 255, (H, W))], -1).astype(np.uint8)
        for kind, arr, out in (("img", img, imgs), ("lab", lab, labs), ("prev", np.roll(img, 1, 1), prevs),
                               ("next", np.roll(img, -1, 1), nexts)):
            p = root / f"{kind}{i}.png"
            write_png(p, arr)
            out.append(p)
    K = torch.tensor([[70.0, 0, 63.5], [0, 120.0, 31.5], [0, 0, 1]]).expand(n, 3, 3).clone()
    return FramePool(imgs, labs, prevs, nexts, K)


def test_finetune_crop_cuts_image_label_neighbours_and_K_alike(tmp_path):
    pool = _pool(tmp_path, 5)
    args = dict(batch_labeled=2, batch_mixing=3, seed=4, steps=6, neighbours=True, with_mixing=True)
    full = StepBatches(pool, pool, **args)
    crop = StepBatches(pool, pool, crop=(32, 96), **args)
    corners = set()
    for step in range(6):
        a, c = full[step], crop[step]
        assert torch.equal(a["mix_seed"], c["mix_seed"])
        for side in ("l", "m"):
            for k in range(len(a[f"{side}_image"])):
                box = box_of(a[f"{side}_K"][k], c[f"{side}_K"][k], (32, 96))
                corners.add((box.top, box.left))
                for name in ("image", "label", "prev", "next"):
                    got = c[f"{side}_{name}"][k]
                    assert got.shape[-2:] == (32, 96)
                    assert torch.equal(got, crop_image(a[f"{side}_{name}"][k], box)), (side, name)
            lab = c[f"{side}_label"]
            red = (c[f"{side}_image"][:, 0] * 255).round().long()
            assert torch.equal(red, lab * 10)  # label still under its pixel after flip and crop
    assert len(corners) > 3


def test_finetune_crop_larger_than_the_frames_names_the_param(tmp_path):
    pool = _pool(tmp_path, 2)
    data = StepBatches(pool, pool, 1, 2, seed=0, steps=1, crop=(96, 64))
    with pytest.raises(SemdepthError, match=r"finetune\.crop_height/crop_width"):
        data[0]


def _params(**edits) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in edits.items():
        group, name = key.split("__")
        raw[group][name] = value
    return raw


@pytest.mark.parametrize("edits, match", [
    ({"sde__crop_height": 48, "sde__crop_width": 64}, r"sde\.crop_height: 48 is not a multiple of 32 of at least 64"),
    ({"finetune__crop_width": 64}, r"finetune\.crop_height/crop_width: set both"),
    ({"sde__crop_height": 32, "sde__crop_width": 64}, r"sde\.crop_height: 32 is not a multiple of 32 of at least 64"),
    ({"sde__crop_height": 96, "sde__crop_width": 128}, r"sde\.crop_height/crop_width: crop 96x128 is larger .*64x128"),
    ({"finetune__crop_height": 64, "finetune__crop_width": 160}, r"finetune\.crop_height/crop_width: crop 64x160"),
])
def test_params_reject_crops_the_networks_or_frames_cannot_take(edits, match):
    with pytest.raises(ConfigError, match=match):
        parse_params(_params(**edits))


def test_params_accept_a_crop_that_fits():
    p = parse_params(_params(sde__crop_height=64, sde__crop_width=96, finetune__crop_height=64, finetune__crop_width=64))
    assert (p.sde.crop_height, p.sde.crop_width, p.finetune.crop_height) == (64, 96, 64)
