"""The convergence benchmark (docs/method.md §3.7) on the analytic street: SdeTrainer's `on_step` hook, the rows,
CSV, PNG, re-plotting, merging and the one-line errors."""
from __future__ import annotations

import dataclasses

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from _sde_scene import write_dataset
from conftest import REPO
from semdepth.config import SdeConfig
from semdepth.data.sequence import TripletDataset
from semdepth.models.encoder import ResnetEncoder
from semdepth.training.sde_trainer import SdeTrainer

torch.set_num_threads(1)
H, W = 64, 64


def _bench():
    spec = importlib.util.spec_from_file_location("sde_convergence", REPO / "benchmarks" / "sde_convergence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A project dir: prepared street, tiny params (no DataLoader workers), a source backbone file."""
    root = tmp_path_factory.mktemp("conv")
    write_dataset(root / "data" / "prepared", H, W, snippets=3, speed=0.6)
    raw = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    raw["compute"]["num_workers"] = 0
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "data" / "models").mkdir(parents=True)
    torch.manual_seed(1)
    torch.save({"model": "deeplabv3_resnet18", "num_classes": 19, "state_dict": {},
                "backbone": ResnetEncoder(18).backbone_state_dict(), "backbone_layers": 18},
               root / "data" / "models" / "pseudolabel.pt")
    return root


def test_on_step_hook_sees_each_step_restores_train_mode_and_can_stop(work, tmp_path):
    ds = TripletDataset(work / "data" / "prepared" / "manifest.parquet")
    tr = SdeTrainer(SdeConfig(steps=5, batch_size=2, checkpoint_every=100), ds, torch.device("cpu"), seed=0,
                    num_workers=0, resume_root=tmp_path / "resume", progress=False)
    calls = []

    def on_step(done, losses):
        calls.append((done, tr.depth_net.training, sorted(losses)))
        tr.depth_net.eval()  # as an evaluation would
        return done == 2

    res = tr.train(on_step=on_step)
    assert [c[0] for c in calls] == [1, 2]
    assert all(training for _, training, _ in calls)  # put back in train mode after the first call
    assert {"loss", "t_z"} <= set(calls[0][2])
    assert res.steps == 2 and res.steps_run == 2 and len(res.loss_log.rows) == 2


def test_benchmark_rows_csv_png_replot_and_merge(work, tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "out"
    args = ["--workdir", str(work), "--minutes", "0.01", "--eval-every-s", "0.2", "--phase1-steps", "1",
            "--threads", "1", "--out", str(out)]
    assert bench.main(args + ["--variants", "a", "c"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    df = pd.read_csv(out / "sde_convergence.csv")
    assert len(printed) == len(df) and (out / "sde_convergence.png").stat().st_size > 1000
    priors = df[df["variant"].str.startswith("prior_")].set_index("variant")["abs_rel"]
    assert set(priors.index) == {"prior_unscaled", "prior_median_scaled"} and (priors > 0).all()
    for v in ("a", "c"):
        g = df[df["variant"] == v]
        assert g["step"].iloc[0] == 0 and g["minutes"].iloc[0] == 0
        assert g["step"].is_monotonic_increasing and g["step"].iloc[-1] >= 1
        assert g["minutes"].iloc[-1] >= 0.01 and (g["abs_rel"] > 0).all()
    c = df[df["variant"] == "c"]
    assert c["phase"].iloc[0] == 1 and (c[c["step"] >= 2]["phase"] == 2).all()
    # only re-plot
    (out / "sde_convergence.png").unlink()
    assert bench.main(["--workdir", str(work), "--out", str(out), "--plot-only"]) == 0
    assert (out / "sde_convergence.png").is_file()
    # re-run one variant, keeping the others' rows
    capsys.readouterr()
    assert bench.main(args + ["--variants", "b", "--merge"]) == 0
    merged = pd.read_csv(out / "sde_convergence.csv")
    assert set(merged["variant"]) == {"a", "b", "c", "prior_unscaled", "prior_median_scaled"}
    assert len(merged[merged["variant"] == "a"]) == len(df[df["variant"] == "a"])


def test_benchmark_errors_are_one_line(work, tmp_path, capsys):
    bench = _bench()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "params.yaml").write_text((work / "params.yaml").read_text())
    assert bench.main(["--workdir", str(empty), "--variants", "b", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.parquet: not found" in err[0]
    (empty / "data" / "prepared").mkdir(parents=True)
    (empty / "data" / "prepared" / "manifest.parquet").symlink_to(work / "data" / "prepared" / "manifest.parquet")
    assert bench.main(["--workdir", str(empty), "--variants", "c", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pseudolabel.pt: not found" in err[0]
    assert bench.main(["--workdir", str(empty), "--plot-only", "--out", str(tmp_path / "none")]) == 2
    assert "no benchmark CSV" in capsys.readouterr().err
    assert not (tmp_path / "sde_convergence.csv").exists()


@pytest.fixture(scope="module")
def wide_work(tmp_path_factory) -> Path:
    """As `work`, prepared at frame offsets -2..2 (the ±2 source variants need them)."""
    root = tmp_path_factory.mktemp("conv_wide")
    write_dataset(root / "data" / "prepared", H, W, snippets=2, speed=0.3, offsets=(-2, -1, 0, 1, 2))
    raw = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    raw["compute"]["num_workers"] = 0
    raw["sde"]["batch_size"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root


def test_supervised_ceiling_source_offset_and_pose_scale_variants_and_marks(wide_work, tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "out"
    args = ["--workdir", str(wide_work), "--minutes", "0.01", "--eval-every-s", "100", "--marks", "0.004",
            "--threads", "1", "--out", str(out), "--variants", "sup", "s4lr3", "ph"]
    assert bench.main(args) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    df = pd.read_csv(out / "sde_convergence.csv")
    assert len(printed) == len(df)
    for v in ("sup", "s4lr3", "ph"):
        g = df[df["variant"] == v]
        # before the first step, at the mark (unless one step outlasts the budget), at the end of the budget
        assert len(g) in (2, 3) and g["step"].iloc[0] == 0 and g["step"].iloc[-1] >= 1, g
        assert g["minutes"].iloc[-1] >= 0.01 and (len(g) == 2 or 0.004 <= g["minutes"].iloc[1] < 0.01)
        assert (g["abs_rel"] > 0).all() and np.isfinite(g["loss"].iloc[1:]).all()
    assert df[df["variant"] == "sup"]["t_z"].isna().all() and df[df["variant"] == "s4lr3"]["t_z"].notna().iloc[1:].all()
    marks = pd.read_csv(out / "sde_convergence_marks.csv").set_index("variant")
    assert set(marks.index) == {"sup", "s4lr3", "ph"} and (marks["abs_rel_0.004min"] > 0).all()
    assert (marks["step_0.004min"] >= 1).all()


def test_variant_configs_and_the_supervised_loss():
    from semdepth.losses.silog import scale_invariant_log_loss

    bench = _bench()
    base = SdeConfig()
    s4 = bench.variant_config(base, "s4lr3", 0.03, 100, 0)
    assert s4.source_offsets == [-2, -1, 1, 2] and s4.lr == 3e-4 and s4.pose_forward_init == 0.03
    assert bench.variant_config(base, "a", 0.03, 100, 0).pose_forward_init == 0.0
    c = bench.variant_config(base, "c", 0.03, 7, 0)
    assert c.pretrained == "source" and c.phase1_steps == 7 and c.source_offsets == [-1, 1]
    assert bench.variant_config(base, "ph", 0.03, 100, 0).pose_scale == 0.5
    # lr, sources and batch are the variant's, not the params file's
    other = dataclasses.replace(base, lr=5e-3, source_offsets=[-2, 2], batch_size=6)
    assert bench.variant_config(other, "b", 0.03, 100, 0).lr == 1e-4
    assert bench.variant_config(other, "b", 0.03, 100, 0).source_offsets == [-1, 1]
    b4 = bench.variant_config(other, "s2b4", 0.03, 100, 0)
    assert (b4.batch_size, b4.lr, b4.source_offsets) == (4, 3e-4, [-2, 2])
    assert bench.variant_config(other, "s2lr3", 0.03, 100, 0).batch_size == 6
    assert bench.variant_config(other, "sup", 0.03, 100, 0).lr == 3e-4
    fast = bench.variant_config(other, "s2fast", 0.03, 100, 0)
    assert fast.fused_adam and fast.channels_last and fast.pose_scale == 0.5
    assert not bench.variant_config(dataclasses.replace(other, fused_adam=True), "s2lr3", 0.03, 100, 0).fused_adam
    torch.manual_seed(0)
    gt = 1 + 10 * torch.rand(2, 1, 8, 8)
    valid = torch.rand(2, 1, 8, 8) > 0.3
    assert float(scale_invariant_log_loss(gt, gt, valid)) == pytest.approx(0, abs=1e-7)
    assert float(scale_invariant_log_loss(3 * gt, gt, valid, lam=1.0)) == pytest.approx(0, abs=1e-6)
    assert float(scale_invariant_log_loss(3 * gt, gt, valid)) > 0
    noisy = gt * torch.exp(0.1 * torch.randn_like(gt))
    garbage = torch.where(valid, noisy, torch.full_like(gt, 1e6))  # invalid pixels do not count
    assert float(scale_invariant_log_loss(garbage, gt, valid)) == pytest.approx(
        float(scale_invariant_log_loss(noisy, gt, valid)), rel=1e-5)


def test_source_offsets_the_data_lacks_are_a_one_line_error(work, tmp_path, capsys):
    bench = _bench()
    assert bench.main(["--workdir", str(work), "--variants", "s2", "--minutes", "0.01", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sde.source_offsets" in err[0] and "data.frame_offsets" in err[0]
