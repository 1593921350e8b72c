"""SDE models, data, trainer: learning, resume, DDP, pose warm start, two phases, backbone loading."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from _sde_scene import intrinsics, render, write_dataset
from semdepth import SemdepthError
from semdepth.config import SdeConfig
from semdepth.data.sequence import TripletDataset, TripletSampler
from semdepth.models.encoder import ResnetEncoder
from semdepth.models.pose import PoseNet
from semdepth.models.sde import build_depth_net, build_pose_net, load_sde, save_sde
from semdepth.training.sde_trainer import SdeTrainer, objective_config, step_losses

torch.set_num_threads(1)
H, W = 64, 64


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("sde") / "prep", H, W, snippets=3, speed=0.6)


def _cfg(**kw) -> SdeConfig:
    base = dict(steps=4, batch_size=2, checkpoint_every=2, lr=1e-4)
    base.update(kw)
    return SdeConfig(**base)


def _trainer(manifest, tmp_path, seed=0, num_workers=0, **kw) -> SdeTrainer:
    torch.manual_seed(seed)
    pretrained = kw.pop("pretrained", None)
    ds = TripletDataset(manifest, flip_prob=0.5, jitter_prob=0.5)
    return SdeTrainer(_cfg(**kw), ds, torch.device("cpu"), seed=seed, num_workers=num_workers,
                      pretrained=pretrained, resume_root=tmp_path / "resume", progress=False)


def _batch(manifest, n=2, seed=0):
    from torch.utils.data import default_collate

    ds = TripletDataset(manifest, flip_prob=0.0, jitter_prob=0.0)
    return default_collate([ds[(i % len(ds), seed + i)] for i in range(n)])


def _backbone_file(path: Path, layers: int = 18, seed: int = 1) -> tuple[Path, dict]:
    torch.manual_seed(seed)
    sd = ResnetEncoder(layers).backbone_state_dict()
    torch.save({"model": f"deeplabv3_resnet{layers}", "num_classes": 19, "state_dict": {},
                "backbone": sd, "backbone_layers": layers}, path)
    return path, sd


# ----------------------------------------------------------------------------- models
def test_model_shapes_and_checkpoint_roundtrip(tmp_path):
    cfg = _cfg()
    depth, pose = build_depth_net(cfg), build_pose_net(cfg)
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        out = depth(x)
    assert [tuple(out["disp"][s].shape) for s in range(4)] == [(2, 1, H >> s, W >> s) for s in range(4)]
    assert tuple(out["features"][3].shape[-2:]) == (H // 8, W // 8)
    assert all(0 < float(d.min()) and float(d.max()) < 1 for d in out["disp"].values())
    save_sde(tmp_path / "m.pt", depth, pose, {"encoder_layers": 18, "guidance": "none", "pose_forward_init": 0.03},
             {"stage": "test"})
    d2, p2, c2 = load_sde(tmp_path / "m.pt")
    depth.eval()
    with torch.no_grad():
        assert torch.equal(depth(x)["disp"][0], d2(x)["disp"][0])
    assert c2["encoder_layers"] == 18
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(SemdepthError, match="bad.pt"):
        load_sde(tmp_path / "bad.pt")


def test_fresh_pose_net_predicts_forward_motion():
    """Warm start (docs/method.md §3.7): earlier -> later frame of a forward drive gives t_z < 0 (contracts)."""
    a, _ = render(H, W, 0.0)
    b, _ = render(H, W, 0.6)
    to_t = lambda im: torch.from_numpy(im).permute(2, 0, 1)[None]  # noqa: E731
    for seed in range(3):
        torch.manual_seed(seed)
        net = PoseNet(18, forward_init=0.03).eval()
        with torch.no_grad():
            _, t = net(to_t(a), to_t(b))
        assert float(t[0, 2]) < -0.01, float(t[0, 2])
        assert abs(float(t[0, 2]) + 0.03) < 0.015


# ----------------------------------------------------------------------------- data
def test_dataset_flip_and_shared_jitter(tmp_path):
    root = tmp_path / "same"
    m = write_dataset(root, H, W, snippets=1, speed=0.0, val_snippets=0)  # three identical frames
    ds = TripletDataset(m, flip_prob=1.0, jitter_prob=1.0)
    plain = TripletDataset(m, flip_prob=0.0, jitter_prob=0.0)[(0, 7)]
    item = ds[(0, 7)]
    assert torch.equal(item["color_0"], plain["color_0"].flip(-1))
    assert torch.equal(item["aug_-1"], item["aug_0"]) and torch.equal(item["aug_1"], item["aug_0"])
    assert not torch.allclose(item["aug_0"], item["color_0"], atol=1e-3)
    K = intrinsics(H, W)
    assert float(item["K"][0, 2]) == pytest.approx((W - 1) - K[0, 2])
    assert torch.allclose(item["inv_K"] @ item["K"], torch.eye(3), atol=1e-5)
    assert torch.equal(ds[(0, 7)]["aug_0"], item["aug_0"])  # a pure function of (index, seed)


def test_sampler_shards_the_global_batch_and_resumes(manifest):
    full = iter(TripletSampler(5, 4, seed=3))
    steps = [next(full) for _ in range(3)]
    for rank in range(2):
        it = iter(TripletSampler(5, 4, seed=3, rank=rank, world_size=2))
        for s in range(3):
            assert next(it) == steps[s][2 * rank:2 * rank + 2]
    assert next(iter(TripletSampler(5, 4, seed=3, start_step=2))) == steps[2]
    with pytest.raises(SemdepthError, match="divisible"):
        TripletSampler(5, 3, seed=0, world_size=2)


@pytest.fixture(scope="module")
def wide_manifest(tmp_path_factory) -> Path:
    """Two snippets prepared at data.frame_offsets [-2..2] (plus one val snippet)."""
    return write_dataset(tmp_path_factory.mktemp("wide") / "prep", H, W, snippets=2, speed=0.3,
                         offsets=(-2, -1, 0, 1, 2))


def test_source_offsets_build_the_right_tuples_from_the_manifest(wide_manifest, manifest):
    import pandas as pd

    from semdepth.data.sequence import neighbour_images, source_rows

    m = pd.read_parquet(wide_manifest)
    root = wide_manifest.parent
    # default: the triplets (offsets -1, 0, 1 of every train snippet), read from prev_image/next_image
    tri = TripletDataset(wide_manifest)
    assert tri.source_offsets == (-1, 1) and tri.offsets == (-1, 0, 1)
    assert tri.ids == sorted(f"street_{s:06d}_{f:06d}" for s in range(2) for f in (18, 19, 20))
    rows = source_rows(m)
    assert neighbour_images(m, rows, -1) == rows["prev_image"].tolist()
    assert neighbour_images(m, rows, 1) == rows["next_image"].tolist()
    # [-2, 2]: centre frames only, sources two frames away in the same snippet
    wide = TripletDataset(wide_manifest, source_offsets=[-2, 2])
    assert wide.ids == ["street_000000_000019", "street_000001_000019"] and wide.offsets == (-2, 0, 2)
    assert wide.paths[1] == [root / f"street_000001_{f:06d}.png" for f in (17, 19, 21)]
    item = wide[(1, 3)]
    assert {k for k in item if k.startswith("color_")} == {"color_-2", "color_0", "color_2"}
    # all four as extra sources
    four = TripletDataset(wide_manifest, source_offsets=(-2, -1, 1, 2))
    assert four.ids == wide.ids and four.paths[0] == [root / f"street_000000_{f:06d}.png" for f in range(17, 22)]
    # retrain's kept ids are triplets: those lacking a ±2 source are left out, non-triplets are an error
    kept = TripletDataset(wide_manifest, ["street_000000_000018", "street_000001_000019"], source_offsets=[-2, 2])
    assert kept.ids == ["street_000001_000019"]
    with pytest.raises(SemdepthError, match="not triplets"):
        TripletDataset(wide_manifest, ["street_000000_000017"], source_offsets=[-2, 2])
    # offsets the prepared data does not have: one line naming the params
    for path, offsets in ((wide_manifest, [-3, 3]), (manifest, [-2, 2]), (manifest, [-2, -1, 1, 2])):
        with pytest.raises(SemdepthError) as e:
            TripletDataset(path, source_offsets=offsets)
        msg = str(e.value)
        assert "\n" not in msg and "sde.source_offsets" in msg and "data.frame_offsets" in msg, msg
    # the trainer refuses a dataset built for other sources
    with pytest.raises(SemdepthError, match="sde.source_offsets"):
        SdeTrainer(_cfg(source_offsets=[-2, 2]), tri, torch.device("cpu"), seed=0, num_workers=0, resume_root=None)


def test_source_offsets_config_is_checked():
    from semdepth.config import ConfigError

    SdeConfig(source_offsets=[-2, -1, 1, 2]).check("sde")
    for bad in ([-1, 0, 1], [1, -1], [1, 1]):
        with pytest.raises(ConfigError, match="sde.source_offsets"):
            SdeConfig(source_offsets=bad).check("sde")


def test_pair_poses_invert_earlier_sources_and_match_the_triplet_path():
    from semdepth.geometry.camera import pose_vec_to_mat, source_poses
    from semdepth.training.sde_trainer import forward_motion, pair_poses

    torch.manual_seed(0)
    aa, t = 0.1 * torch.randn(6, 3), torch.randn(6, 3)
    assert all(torch.equal(a, b) for a, b in zip(pair_poses(aa[:4], t[:4], [-1, 1], 2), source_poses(aa[:4], t[:4], 2)))
    poses = pair_poses(aa, t, [-2, -1, 2], 2)
    assert torch.allclose(poses[0] @ pose_vec_to_mat(aa[:2], t[:2]), torch.eye(4).expand(2, 4, 4), atol=1e-5)
    assert torch.equal(poses[2], pose_vec_to_mat(aa[4:], t[4:]))
    assert torch.equal(forward_motion(t, [-2, -1, 2], 2), t[4:, 2].mean() / 2)  # the later pair, per frame


def test_a_step_with_four_sources_is_finite(wide_manifest):
    from torch.utils.data import default_collate

    offsets = [-2, -1, 1, 2]
    ds = TripletDataset(wide_manifest, flip_prob=0.5, jitter_prob=0.5, source_offsets=offsets)
    batch = default_collate([ds[(i, 11 + i)] for i in range(2)])
    cfg = _cfg(source_offsets=offsets)
    torch.manual_seed(0)
    depth, pose = build_depth_net(cfg), build_pose_net(cfg)
    seen = []
    pose.register_forward_hook(lambda mod, inputs, out: seen.append(tuple(inputs[0].shape)))
    for scale in (1.0, 0.5):
        losses = step_losses(depth, pose, batch, objective_config(cfg), source_offsets=offsets, pose_scale=scale)
        losses["loss"].backward()
        assert all(torch.isfinite(v).all() for v in losses.values()), losses
        assert 0 <= float(losses["automask"]) <= 1 and float(losses["t_z"]) < 0
    assert seen == [(8, 3, H, W), (8, 3, H // 2, W // 2)]  # 4 pairs of batch 2, full then half size
    assert all(torch.isfinite(p.grad).all() for p in depth.parameters() if p.grad is not None)


def test_sde_automask_param_reaches_the_objective(manifest):
    """sde.automask false: no pixel is left to an identity error, and the photometric term can only grow
    (the per-pixel minimum runs over fewer candidates)."""
    from torch.utils.data import default_collate

    ds = TripletDataset(manifest, flip_prob=0.0, jitter_prob=0.0)
    batch = default_collate([ds[(i, 0)] for i in range(2)])
    out = {}
    for automask in (True, False):
        cfg = _cfg(automask=automask)
        assert objective_config(cfg).automask is automask
        torch.manual_seed(0)
        depth, pose = build_depth_net(cfg), build_pose_net(cfg)
        with torch.no_grad():
            out[automask] = step_losses(depth, pose, batch, objective_config(cfg))
    assert float(out[True]["automask"]) > 0 and float(out[False]["automask"]) == 0
    assert float(out[False]["photometric"]) > float(out[True]["photometric"])


def test_trainer_with_wide_sources_trains(wide_manifest, tmp_path):
    ds = TripletDataset(wide_manifest, source_offsets=[-2, 2])
    torch.manual_seed(0)
    tr = SdeTrainer(_cfg(steps=2, source_offsets=[-2, 2], pose_scale=0.5), ds, torch.device("cpu"), seed=0,
                    num_workers=0, resume_root=None, progress=False)
    rows = tr.train().loss_log.rows
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)


def test_trainer_on_random_crops_trains(tmp_path):
    ds = TripletDataset(write_dataset(tmp_path / "wide", 64, 128, snippets=2, val_snippets=0), crop=(64, 64))
    assert ds[(0, 1)]["color_0"].shape[-2:] == (64, 64)
    torch.manual_seed(0)
    tr = SdeTrainer(_cfg(steps=2, crop_height=64, crop_width=64), ds, torch.device("cpu"), seed=0,
                    num_workers=0, resume_root=None, progress=False)
    rows = tr.train().loss_log.rows
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)


def test_fused_adam_and_channels_last_train_like_the_default(manifest):
    losses, trainers = {}, {}
    for fast in (False, True):
        torch.manual_seed(0)
        tr = SdeTrainer(_cfg(steps=3, fused_adam=fast, channels_last=fast), TripletDataset(manifest),
                        torch.device("cpu"), seed=0, num_workers=0, resume_root=None, progress=False)
        losses[fast], trainers[fast] = [r["loss"] for r in tr.train().loss_log.rows], tr
    assert trainers[True].optimizer.defaults["fused"] is True and not trainers[False].optimizer.defaults["fused"]
    conv = trainers[True].depth_net.encoder.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)  # same init, same first batch
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)  # other kernels, the same optimisation


# ----------------------------------------------------------------------------- training
def test_a_few_steps_lower_the_loss(manifest):
    torch.manual_seed(0)
    cfg = _cfg()
    depth, pose = build_depth_net(cfg), build_pose_net(cfg)
    batch = _batch(manifest, 2)
    opt = torch.optim.Adam(list(depth.parameters()) + list(pose.parameters()), lr=5e-4)
    losses = []
    for _ in range(8):
        loss = step_losses(depth, pose, batch, objective_config(cfg))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert min(losses[-3:]) < 0.9 * losses[0], losses


def test_kill_and_resume_matches_uninterrupted_run(manifest, tmp_path):
    full_tr = _trainer(manifest, tmp_path / "a")
    full = full_tr.train()
    killed = _trainer(manifest, tmp_path / "b", num_workers=1)
    with pytest.raises(KeyboardInterrupt):
        killed.train(interrupt_at=3)  # checkpoint at step 2, killed after step 3
    resumed_tr = _trainer(manifest, tmp_path / "b", seed=0, num_workers=1)
    resumed = resumed_tr.train()
    assert resumed.steps_run == 2  # steps 2 and 3 again
    for a, b in ((full_tr.depth_net, resumed_tr.depth_net), (full_tr.pose_net, resumed_tr.pose_net)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:3]
    assert [r["loss"] for r in full.loss_log.rows] == [r["loss"] for r in resumed.loss_log.rows]
    resumed_tr.finish()
    assert not any((tmp_path / "b" / "resume").iterdir())


def test_nan_guard_stops_with_clear_message(manifest, tmp_path):
    tr = _trainer(manifest, tmp_path, steps=1)
    with torch.no_grad():
        tr.depth_net.decoder.heads["0"].conv.bias.fill_(float("nan"))
    with pytest.raises(SemdepthError, match="loss became nan at step 0"):
        tr.train()


# ----------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, manifest: str, init_file: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from torch.utils.data import default_collate

    cfg = _cfg()
    torch.manual_seed(0)
    depth, pose = build_depth_net(cfg), build_pose_net(cfg)
    ds = TripletDataset(manifest, flip_prob=0.5, jitter_prob=0.5)
    keys = next(iter(TripletSampler(len(ds), 2, seed=0, rank=rank, world_size=world)))
    batch = default_collate([ds[k] for k in keys])
    ddp_depth = torch.nn.parallel.DistributedDataParallel(depth)
    ddp_pose = torch.nn.parallel.DistributedDataParallel(pose)
    step_losses(ddp_depth, ddp_pose, batch, objective_config(cfg))["loss"].backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in depth.named_parameters()}, out)
    dist.destroy_process_group()


def test_ddp_two_process_gradients_match_single_process(manifest, tmp_path):
    import torch.multiprocessing as mp
    from torch.utils.data import default_collate

    out = tmp_path / "grads.pt"
    # fork: no re-import of torch and this module in the children (spawn costs ~10 s more here)
    mp.start_processes(_ddp_worker, args=(2, str(manifest), str(tmp_path / "init"), str(out)), nprocs=2,
                       join=True, start_method="fork")
    ddp_grads = torch.load(out, weights_only=True)
    # Single process, same global batch. Without SyncBatchNorm each rank normalises its own half, so
    # the reference is the mean of the gradients of the two halves (that is what DDP all-reduces).
    cfg = _cfg()
    ds = TripletDataset(manifest, flip_prob=0.5, jitter_prob=0.5)
    keys = next(iter(TripletSampler(len(ds), 2, seed=0)))
    ref: dict[str, torch.Tensor] = {}
    for half in (keys[:1], keys[1:]):
        torch.manual_seed(0)
        depth, pose = build_depth_net(cfg), build_pose_net(cfg)
        step_losses(depth, pose, default_collate([ds[k] for k in half]), objective_config(cfg))["loss"].backward()
        for n, p in depth.named_parameters():
            ref[n] = ref.get(n, 0) + p.grad / 2
    num = sum(float((ddp_grads[n] - ref[n]).norm() ** 2) for n in ref) ** 0.5
    den = sum(float(ref[n].norm() ** 2) for n in ref) ** 0.5
    assert den > 0 and num / den < 1e-3, num / den


# ----------------------------------------------------------------------------- pretrained encoders
def test_source_backbone_transfers_every_tensor(tmp_path):
    path, sd = _backbone_file(tmp_path / "pl.pt")
    enc = ResnetEncoder(18, str(path))
    own = enc.state_dict()
    assert set(own) == set(sd)
    assert all(torch.equal(own[k], sd[k]) for k in sd)


def test_backbone_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(SemdepthError) as e:
        ResnetEncoder(18, str(tmp_path / "missing.pt"))
    assert "missing.pt" in str(e.value) and "\n" not in str(e.value)
    path, _ = _backbone_file(tmp_path / "r34.pt", layers=34)
    with pytest.raises(SemdepthError, match="ResNet-34 but the encoder is ResNet-18"):
        ResnetEncoder(18, str(path))
    _, sd = _backbone_file(tmp_path / "x.pt")
    broken = dict(sd)
    del broken["layer2.0.conv1.weight"]
    broken["layer3.0.conv1.weight"] = torch.zeros(3, 3)
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(SemdepthError) as e:
        ResnetEncoder(18).load_backbone(broken, source="x.pt")
    msg = str(e.value)
    assert "\n" not in msg and "layer2.0.conv1.weight" in msg and "layer3.0.conv1.weight" in msg and "extra.weight" in msg
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    with pytest.raises(SemdepthError, match=r"resnet18-f37072fd\.pth not found in .*torchhome"):
        ResnetEncoder(18, "imagenet")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SemdepthError, match="junk.pt: not a readable"):
        ResnetEncoder(18, str(tmp_path / "junk.pt"))


def test_phase1_freezes_encoder_and_phase2_feature_distance(manifest, tmp_path):
    path, sd = _backbone_file(tmp_path / "pl.pt")
    tr = _trainer(manifest, tmp_path, steps=2, phase1_steps=2, pretrained=str(path), checkpoint_every=100)
    dec0 = {k: v.clone() for k, v in tr.depth_net.decoder.state_dict().items()}
    tr.train()
    enc = tr.depth_net.encoder.state_dict()
    assert all(torch.equal(enc[k], sd[k]) for k in sd)  # weights and BatchNorm statistics unchanged
    dec = tr.depth_net.decoder.state_dict()
    assert any(not torch.equal(dec[k], dec0[k]) for k in dec0)
    # phase 2: feature distance exactly 0 before the first update, positive after it
    tr2 = _trainer(manifest, tmp_path / "p2", steps=3, phase1_steps=1, pretrained=str(path), checkpoint_every=100,
                   phase2_lr=1e-4)
    rows = tr2.train().loss_log.rows
    assert "feature_distance" not in rows[0]
    assert rows[1]["feature_distance"] == 0.0 and rows[2]["feature_distance"] > 0.0
    assert any(not torch.equal(tr2.depth_net.encoder.state_dict()[k], sd[k]) for k in sd)


# ----------------------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def stage1_work(tmp_path_factory) -> Path:
    """A project on the analytic street after the pretrain stage (2 steps); tests work on copies."""
    import contextlib

    import yaml

    from conftest import REPO
    from stages import pretrain

    work = tmp_path_factory.mktemp("stages") / "work"
    write_dataset(work / "data" / "prepared", H, W, snippets=3, speed=0.6)
    raw = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    raw["sde"].update(steps=2, batch_size=2, checkpoint_every=1)
    raw["compute"]["num_workers"] = 0
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    with contextlib.chdir(work):
        pretrain.main("params.yaml")
    return work


def _copy_work(stage1_work: Path, tmp_path: Path, monkeypatch) -> Path:
    import shutil

    work = tmp_path / "work"
    shutil.copytree(stage1_work, work)
    monkeypatch.chdir(work)
    return work


def _filter_frames(kept: list[bool]) -> list[str]:
    """data/filter/frames.parquet by hand: the training frames with the given verdicts."""
    import pandas as pd

    ids = sorted(pd.read_parquet("data/prepared/manifest.parquet").query("split == 'train' and offset == 0")["id"])
    Path("data/filter").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "kept": kept}).to_parquet("data/filter/frames.parquet")
    return ids


def test_pretrain_and_retrain_stages_end_to_end(stage1_work, tmp_path, monkeypatch):
    """The stage glue on the analytic street: outputs, metrics keys, stage 2 on the kept frames only."""
    import pandas as pd

    from semdepth.io import read_json
    from stages import retrain

    _copy_work(stage1_work, tmp_path, monkeypatch)
    m = read_json("metrics/pretrain.json")
    assert m["train"]["steps"] == 2 and m["train"]["frames"] == 3 and m["val"]["n_images"] == 1
    assert m["val"]["gt"] == "depth_exact" and 0 < m["abs_rel"] < 1.5
    assert {"unscaled", "median_scaled"} <= set(m["row_median_prior"])
    assert m["prior_abs_rel_unscaled"] == m["row_median_prior"]["unscaled"]["abs_rel"]
    assert len(pd.read_csv("metrics/plots/pretrain_loss.csv")) == 2
    assert not any(Path("data/.resume").iterdir())
    depth, _, cfg = load_sde("data/models/sde_stage1.pt")
    assert cfg["steps"] == 2
    _filter_frames([True, False, True])  # one frame dropped: stage 2 must be trained
    retrain.main("params.yaml")
    r = read_json("metrics/retrain.json")
    assert r["frames_kept"] == 2 and r["train"]["frames"] == 2 and r["frames_total"] == 3
    assert r["stage1_abs_rel"] == pytest.approx(m["abs_rel"])
    assert Path("data/models/sde_stage2.pt").is_file()
    assert r["shortcut"] is False and "kept 2 of the 3 training frames" in r["shortcut_reason"]
    assert torch.load("data/models/sde_stage2.pt", weights_only=True)["meta"]["frame_ids"] != \
        torch.load("data/models/sde_stage1.pt", weights_only=True)["meta"]["frame_ids"]


def test_retrain_copies_stage1_when_the_filter_keeps_every_frame(stage1_work, tmp_path, monkeypatch, caplog):
    """Every frame kept: stage 2 is stage 1 (same weights, loads like a trained stage 2), not retrained."""
    import logging

    from semdepth.io import read_json
    from semdepth.models.sde import read_sde
    from stages import retrain

    _copy_work(stage1_work, tmp_path, monkeypatch)
    _filter_frames([True, True, True])
    with caplog.at_level(logging.INFO):
        retrain.main("params.yaml")
    assert sum("copied" in rec.getMessage() and "without training" in rec.getMessage() for rec in caplog.records) == 1
    r = read_json("metrics/retrain.json")
    assert r["shortcut"] is True and "all 3 training frames" in r["shortcut_reason"]
    assert {"abs_rel", "beats_prior", "frames_kept", "frames_total", "prior_abs_rel_median_scaled",
            "prior_abs_rel_unscaled", "row_median_prior", "stage1_abs_rel", "stage1_val", "total_seconds",
            "train", "val"} <= set(r)
    assert r["frames_kept"] == r["frames_total"] == 3 and r["val"] == r["stage1_val"]
    assert r["abs_rel"] == r["stage1_abs_rel"] == read_json("metrics/pretrain.json")["abs_rel"]
    assert r["train"]["steps"] == 2 and r["train"]["frames"] == 3 and r["train"]["resumed"] is False
    assert r["train"]["loss"] == read_json("metrics/pretrain.json")["train"]["loss"]
    assert Path("metrics/plots/retrain_loss.csv").read_text() == Path("metrics/plots/pretrain_loss.csv").read_text()
    d1, p1, c1 = load_sde("data/models/sde_stage1.pt")
    d2, p2, c2 = load_sde("data/models/sde_stage2.pt")
    assert c1 == c2
    for a, b in ((d1, d2), (p1, p2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    m1, m2 = read_sde("data/models/sde_stage1.pt")["meta"], read_sde("data/models/sde_stage2.pt")["meta"]
    assert m2["stage"] == "retrain" and m2["copied_from"] == "data/models/sde_stage1.pt"
    assert set(m2) == set(m1) | {"copied_from"}
    assert {k: v for k, v in m2.items() if k not in ("stage", "copied_from")} == \
        {k: v for k, v in m1.items() if k != "stage"}


def test_stage1_reuse_needs_the_same_frames_params_seed_and_processes():
    from semdepth.config import to_dict
    from semdepth.training.sde_run import stage1_reuse

    cfg = _cfg()
    ids = ["a", "b", "c"]
    stage1 = Path("data/models/sde_stage1.pt")
    ck = {"config": to_dict(cfg), "meta": {"frame_ids": ids, "loss_rows": [], "seed": 0, "processes": 1}}
    assert stage1_reuse(ck, cfg, 0, ids, 1, stage1)[0]
    assert not stage1_reuse(ck, cfg, 0, ids[:2], 1, stage1)[0]  # one frame dropped
    assert not stage1_reuse(ck, cfg, 0, ["a", "c", "b"], 1, stage1)[0]  # another order is another run
    assert not stage1_reuse(ck, _cfg(lr=2e-4), 0, ids, 1, stage1)[0]
    assert not stage1_reuse(ck, cfg, 1, ids, 1, stage1)[0]
    assert not stage1_reuse(ck, cfg, 0, ids, 2, stage1)[0]
    old = {"config": to_dict(cfg), "meta": {"seed": 0}}  # written before checkpoints recorded their frames
    ok, reason = stage1_reuse(old, cfg, 0, ids, 1, stage1)
    assert not ok and "does not record" in reason
