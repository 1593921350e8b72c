"""Selection (Hoyer Alg. 1): farthest-point order, incremental distances, planted uncertainty, seeds,
BerHu, the error mask, and the stage's pool-size check."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semdepth import SemdepthError
from semdepth.selection.distance import (MinDistance, brute_force_min_distance, min_distance_to_set,
                                         nearest_neighbour_distances)
from semdepth.selection.features import normalise_disparity, pool_features, zscore
from semdepth.selection.greedy import farthest_point, select_frames
from semdepth.selection.student import berhu
from semdepth.selection.uncertainty import depth_error, dilation_kernel, valid_mask


# ------------------------------------------------------------------ distances and farthest point
def test_farthest_point_toy_line():
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0], [8.0]], dtype=torch.float64)
    state = MinDistance(pts)
    state.add(0)
    picks = farthest_point(state, 4)
    # from 0: 8 is farthest (8); then {0,8}: 3 is 3 away; then 1 and 7 tie at 1 -> lowest index first
    assert [j for j, _ in picks] == [4, 2, 1, 3]
    assert [d for _, d in picks] == [8.0, 3.0, 1.0, 1.0]


def test_farthest_point_toy_square_with_centre():
    pts = torch.tensor([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5], [1, 0]], dtype=torch.float64)
    state = MinDistance(pts)
    state.add(0)
    picks = farthest_point(state, 5)
    # opposite corner (14.1); the two other corners tie at 10 (lowest index first); the centre
    # (7.07) before the point next to the start (1)
    assert [j for j, _ in picks] == [3, 1, 2, 4, 5]
    assert [d for _, d in picks] == pytest.approx([200 ** 0.5, 10, 10, 50 ** 0.5, 1])


def test_incremental_min_distance_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 24, generator=g, dtype=torch.float64)
    state = MinDistance(x)
    order = [5, 17, 0, 59, 33, 2]
    for k in range(len(order)):
        state.add(order[k])
        ref = brute_force_min_distance(x, order[:k + 1])
        # cdist's default matrix-product path has cancellation error (~1e-7 self-distance)
        cd = torch.cdist(x, x[order[:k + 1]], compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
        assert torch.allclose(state.min_dist, ref, atol=1e-12, rtol=0)
        assert torch.allclose(state.min_dist, cd, atol=1e-9, rtol=0)
    assert torch.equal(min_distance_to_set(x, order), state.min_dist)
    with pytest.raises(ValueError):
        state.add(5)


def test_nearest_neighbour_distances():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0]], dtype=torch.float64)
    assert nearest_neighbour_distances(x).tolist() == [5.0, 1.0, 1.0]


# ------------------------------------------------------------------ methods
N, D, PLANTED = 40, 32, 17
ROUNDS = [3, 6]


def _sphere_with_centre() -> torch.Tensor:
    """39 points on a radius-5 sphere in 32-d (pairwise ~7 apart) and one at the centre (5 from all):
    diversity alone never picks the centre early."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    x = 5.0 * x / x.norm(dim=1, keepdim=True)
    x[PLANTED] = 0.0
    return x


class PlantedErrors:
    """Student stand-in: small deterministic errors, a large one on the planted frame."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], int]] = []

    def __call__(self, selected: list[int], round_done: int) -> np.ndarray:
        self.calls.append((list(selected), round_done))
        e = np.random.default_rng(len(selected)).uniform(0.0, 1e-3, N)
        e[PLANTED] = 0.1
        return e


@pytest.mark.parametrize("method", ["us", "ds_us"])
def test_planted_high_error_chosen_first_after_round_zero(method):
    x = _sphere_with_centre()
    fn = PlantedErrors()
    sel = select_frames(x, method, ROUNDS, seed=3, uncertainty_weight=1000.0, error_fn=fn)
    assert PLANTED not in sel.order[:3]  # round 0 is pure farthest-point (no student yet)
    assert sel.order[3] == PLANTED  # the first pick of round 1
    assert sel.round == [0, 0, 0, 1, 1, 1]
    assert fn.calls == [(sel.order[:3], 0)]  # one student, trained on round 0's frames
    assert sel.uncertainty[3] == pytest.approx(0.1)
    assert all(math.isnan(u) for u in sel.uncertainty[:3])


def test_planted_error_ignored_by_diversity_only():
    x = _sphere_with_centre()
    fn = PlantedErrors()
    sel = select_frames(x, "ds", ROUNDS, seed=3, uncertainty_weight=1000.0, error_fn=fn)
    assert PLANTED not in sel.order
    assert fn.calls == []  # ds trains no student
    # ds_us with lambda = 0 is exactly ds
    assert select_frames(x, "ds_us", ROUNDS, seed=3, uncertainty_weight=0.0, error_fn=fn).order == sel.order


def test_ds_us_trades_distance_against_error():
    """With a small lambda the distance still dominates: the planted frame is not picked first."""
    x = _sphere_with_centre()
    sel = select_frames(x, "ds_us", ROUNDS, seed=3, uncertainty_weight=1.0, error_fn=PlantedErrors())
    assert sel.order[3] != PLANTED


@pytest.mark.parametrize("method", ["ds_us", "ds", "us", "random"])
def test_every_method_deterministic_per_seed(method):
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    runs = [select_frames(x, method, [4, 9, 15], seed=s, error_fn=PlantedErrors()) for s in (7, 7, 8)]
    assert runs[0].order == runs[1].order and runs[0].round == runs[1].round
    np.testing.assert_array_equal(runs[0].distance, runs[1].distance)
    np.testing.assert_array_equal(runs[0].uncertainty, runs[1].uncertainty)
    assert len(set(runs[0].order)) == 15
    assert runs[0].order != runs[2].order  # the seed matters (the seed frame or the permutation)


def test_random_is_a_seeded_permutation():
    x = torch.zeros(N, 2, dtype=torch.float64)
    sel = select_frames(x, "random", [5, 12], seed=11)
    assert sel.order == np.random.default_rng(11).permutation(N)[:12].tolist()
    assert sel.round == [0] * 5 + [1] * 7
    assert all(math.isnan(u) for u in sel.uncertainty)


def test_select_frames_rejects_bad_input():
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="pool of 5"):
        select_frames(x, "ds", [3, 6], seed=0)
    with pytest.raises(ValueError, match="unknown selection method"):
        select_frames(x, "entropy", [3], seed=0)
    with pytest.raises(ValueError, match="error function"):
        select_frames(x, "us", [1, 2], seed=0)


def test_n_labels_larger_than_pool_is_one_line_error():
    from semdepth.selection.run import check_pool

    check_pool(4, 4, "data/prepared/manifest.parquet")
    with pytest.raises(SemdepthError) as e:
        check_pool(5, 4, "data/prepared/manifest.parquet")
    msg = str(e.value)
    assert "select.n_labels" in msg and "\n" not in msg


# ------------------------------------------------------------------ features, loss, error
def test_features_pool_and_zscore():
    f = torch.arange(2 * 3 * 8 * 16, dtype=torch.float32).view(2, 3, 8, 16)
    p = pool_features(f)
    assert p.shape == (2, 3 * 4 * 8)
    assert p[0, 0] == pytest.approx(f[0, 0, :2, :2].mean().item())
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [8.0, 5.0, 0.0]])
    z = zscore(x)
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=z.dtype), atol=1e-12)
    assert torch.allclose(z[:, [0, 2]].std(0, unbiased=False), torch.ones(2, dtype=z.dtype))
    assert torch.equal(z[:, 1], torch.zeros(3, dtype=z.dtype))  # constant dimension carries nothing


def test_normalise_disparity_per_image():
    d = torch.stack([torch.linspace(0.2, 0.4, 12).view(1, 3, 4), torch.full((1, 3, 4), 0.3)])
    n = normalise_disparity(d)
    assert n[0].min() == 0 and n[0].max() == pytest.approx(1.0)
    assert torch.equal(n[1], torch.zeros(1, 3, 4))  # a constant image stays finite


def test_berhu_hand_checked():
    target = torch.zeros(3)
    pred = torch.tensor([0.1, 0.5, 1.0], requires_grad=True)
    # c = 0.2 * 1.0 = 0.2: 0.1 (L1), (0.25 + 0.04) / 0.4 = 0.725, (1 + 0.04) / 0.4 = 2.6
    loss = berhu(pred, target)
    assert loss.item() == pytest.approx((0.1 + 0.725 + 2.6) / 3)
    loss.backward()
    # d/de: 1 on the L1 side, e / c beyond: [1, 2.5, 5] / 3 (c is a constant)
    assert pred.grad.tolist() == pytest.approx([1 / 3, 2.5 / 3, 5 / 3])
    # masked: only 0.1 and 0.5 count, c = 0.1: 0.1 and (0.25 + 0.01) / 0.2 = 1.3
    mask = torch.tensor([True, True, False])
    assert berhu(pred.detach(), target, mask).item() == pytest.approx((0.1 + 1.3) / 2)
    assert berhu(target, target).item() == 0.0
    assert berhu(pred, target, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_depth_error_masks_far_and_hood():
    h, w = 20, 32
    teacher = torch.full((1, 1, h, w), 0.5)
    teacher[..., 2, 10] = 0.01  # one far pixel
    student = teacher.clone()
    student[..., 2, 10] = 1.0  # huge error on the far pixel ...
    student[..., 3, 11] = 1.0  # ... and on its neighbour (inside the dilation)
    student[..., h - 1, :] = 1.0  # and on the hood row
    valid = valid_mask(teacher, hood_fraction=0.1, kernel=3)
    assert not valid[0, 0, 2, 10] and not valid[0, 0, 3, 11] and valid[0, 0, 4, 12]
    assert not valid[0, 0, h - 2:].any() and valid[0, 0, h - 3].all()
    assert depth_error(student, teacher, valid).item() == 0.0
    student[..., 10, 5] = 1.0  # one valid pixel off by log(2) - log(1.5)
    expected = (math.log(2.0) - math.log(1.5)) / valid.sum().item()
    assert depth_error(student, teacher, valid).item() == pytest.approx(expected)
    assert dilation_kernel(1024) == 7 and dilation_kernel(192) == 3


def test_student_training_deterministic():
    from semdepth.selection.student import StudentNet, train_student
    from semdepth.selection.uncertainty import pool_errors

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 64, 64), generator=g, dtype=torch.uint8)
    targets = normalise_disparity(torch.rand(3, 1, 64, 64, generator=g))
    kw = dict(num_layers=18, batch_size=2, lr=1e-3, seed=5, hood_fraction=0.1, device="cpu")
    a = train_student(images, targets, 3, **kw)
    b = train_student(images, targets, 3, **kw)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    e = pool_errors(a, images, targets, 0.1, 2, "cpu")
    assert e.shape == (3,) and np.isfinite(e).all() and (e > 0).all()
    assert isinstance(a, StudentNet) and not a.training
    out = a(images[:1].float() / 255)
    assert out.shape == (1, 1, 64, 64) and 0 < out.min() and out.max() < 1


def test_student_learns_the_teacher():
    """A few steps on a road-like target (disparity growing towards the bottom) lower E_j."""
    from semdepth.selection.student import StudentNet, train_student
    from semdepth.selection.uncertainty import pool_errors

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 64, 64), generator=g, dtype=torch.uint8)
    targets = torch.linspace(0.1, 1.0, 64).view(1, 1, 64, 1).expand(2, 1, 64, 64).contiguous()
    torch.manual_seed(9)
    before = pool_errors(StudentNet(18), images, targets, 0.1, 2, "cpu").mean()
    student = train_student(images, targets, 10, num_layers=18, batch_size=2, lr=1e-3, seed=9,
                            hood_fraction=0.1, device="cpu")
    after = pool_errors(student, images, targets, 0.1, 2, "cpu").mean()
    assert after < 0.6 * before


# ------------------------------------------------------------------ the stage on a hand-made pool
POOL_IDS = [f"aachen_{s:06d}_000019" for s in range(6)]


@pytest.fixture
def select_workdir(tmp_path, monkeypatch):
    """data/prepared with 6 pool frames (annotated target train) plus frames that must never be chosen
    (val, source, sequence neighbours), a random-weight stage-1 teacher, and profiles/tiny.yaml."""
    import shutil

    import cv2
    import pandas as pd

    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    shutil.copyfile(repo / "profiles" / "tiny.yaml", tmp_path / "params.yaml")
    prepared = tmp_path / "data" / "prepared"
    (prepared / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    extra = [("val", "target", True, "frankfurt_000000_000019"), ("source", "source", True, "lindau_000000_000019"),
             ("train", "target", False, "aachen_000000_000018")]
    for split, domain, annotated, fid in [("train", "target", True, i) for i in POOL_IDS] + extra:
        img = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
        lab = rng.choice(np.array([0, 2, 13, 255], dtype=np.uint8), size=(64, 128))
        assert cv2.imwrite(str(prepared / "img" / f"{fid}.png"), img)
        assert cv2.imwrite(str(prepared / "img" / f"{fid}_label.png"), lab)
        rows.append({"id": fid, "split": split, "domain": domain, "annotated": annotated,
                     "image": f"img/{fid}.png", "label": f"img/{fid}_label.png" if annotated else None})
    pd.DataFrame(rows[::-1]).to_parquet(prepared / "manifest.parquet", index=False)  # order must not matter
    _save_random_teacher(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _save_random_teacher(root) -> None:
    from semdepth.config import SdeConfig, to_dict
    from semdepth.models.sde import build_depth_net, build_pose_net, save_sde

    torch.manual_seed(0)
    cfg = SdeConfig()
    (root / "data" / "models").mkdir(parents=True, exist_ok=True)
    save_sde(root / "data" / "models" / "sde_stage1.pt", build_depth_net(cfg), build_pose_net(cfg),
             to_dict(cfg), {"stage": "test"})


def _set_select(path, **kw) -> None:
    import yaml

    raw = yaml.safe_load(path.read_text())
    raw["select"].update(kw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_stage_selects_from_the_pool_deterministically_without_labels(select_workdir):
    import json

    import cv2
    import pandas as pd

    from stages import select

    torch.set_num_threads(1)
    select.main("params.yaml")  # tiny profile: ds_us, rounds [2, 4], 2 student steps each
    table = pd.read_parquet("data/selection/selection.parquet")
    assert list(table.columns) == ["id", "rank", "round", "distance", "uncertainty"]
    assert table["rank"].tolist() == [0, 1, 2, 3] and table["round"].tolist() == [0, 0, 1, 1]
    assert set(table["id"]) <= set(POOL_IDS) and table["id"].is_unique
    assert np.isnan(table["distance"][0]) and (table["distance"][1:] > 0).all()
    assert table["uncertainty"][:2].isna().all() and (table["uncertainty"][2:] > 0).all()
    m = json.loads(open("metrics/select.json").read())
    assert m["pool_size"] == 6 and m["n_labels"] == 4 and m["chosen_nn_distance_mean"] > 0
    cov = m["class_coverage"]
    assert cov["pool"]["frames"] == 6 and cov["chosen"]["frames"] == 4
    assert set(cov["pool"]["classes_present"]) == {"road", "building", "car"}
    assert sum(cov["pool"]["pixel_share"].values()) == pytest.approx(1.0)

    # labels are only reported: changing every label leaves the choice (and the run) unchanged
    for fid in POOL_IDS:
        cv2.imwrite(f"data/prepared/img/{fid}_label.png", np.full((64, 128), 8, dtype=np.uint8))
    select.main("params.yaml")
    again = pd.read_parquet("data/selection/selection.parquet")
    pd.testing.assert_frame_equal(table, again)
    assert json.loads(open("metrics/select.json").read())["class_coverage"]["pool"]["classes_present"] == ["vegetation"]


def test_stage_n_labels_larger_than_pool_fails_cleanly(select_workdir):
    from pathlib import Path

    from stages import select

    _set_select(Path("params.yaml"), n_labels=7, rounds=[2, 7], student_steps=[2, 2])
    with pytest.raises(SemdepthError) as e:
        select.main("params.yaml")
    assert "select.n_labels: 7" in str(e.value) and "\n" not in str(e.value)
    assert not Path("data/selection").exists() and not Path("metrics/select.json").exists()


def test_stage_on_the_tiny_prepared_dataset(tiny_workdir, tmp_path, monkeypatch):
    """The stage against downsample's real manifest (tiny profile: 4 snippets, select all 4)."""
    import shutil

    import pandas as pd

    from stages import select

    shutil.copytree(tiny_workdir / "data" / "prepared", tmp_path / "data" / "prepared")
    shutil.copyfile(tiny_workdir / "params.yaml", tmp_path / "params.yaml")
    _save_random_teacher(tmp_path)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    select.main("params.yaml")
    m = pd.read_parquet("data/prepared/manifest.parquet")
    pool = m[(m["split"] == "train") & (m["domain"] == "target") & m["annotated"]]["id"]
    table = pd.read_parquet("data/selection/selection.parquet")
    assert sorted(table["id"]) == sorted(pool)  # n_labels = pool size: every pool frame, once
    cov = __import__("json").loads(open("metrics/select.json").read())["class_coverage"]
    assert cov["chosen"]["n_classes"] == cov["pool"]["n_classes"] > 3
