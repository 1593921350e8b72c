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
    """Warm start (issue 11): earlier -> later frame of a forward drive gives t_z < 0 (contracts)."""
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
    full = _trainer(manifest, tmp_path / "a").train()
    killed = _trainer(manifest, tmp_path / "b", num_workers=1)
    with pytest.raises(KeyboardInterrupt):
        killed.train(interrupt_at=3)  # checkpoint at step 2, killed after step 3
    resumed_tr = _trainer(manifest, tmp_path / "b", seed=0, num_workers=1)
    resumed = resumed_tr.train()
    assert resumed.steps_run == 2  # steps 2 and 3 again
    for a, b in ((full.depth_net, resumed.depth_net), (full.pose_net, resumed.pose_net)):
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
    res = tr.train()
    enc = res.depth_net.encoder.state_dict()
    assert all(torch.equal(enc[k], sd[k]) for k in sd)  # weights and BatchNorm statistics unchanged
    dec = res.depth_net.decoder.state_dict()
    assert any(not torch.equal(dec[k], dec0[k]) for k in dec0)
    # phase 2: feature distance exactly 0 before the first update, positive after it
    tr2 = _trainer(manifest, tmp_path / "p2", steps=3, phase1_steps=1, pretrained=str(path), checkpoint_every=100,
                   phase2_lr=1e-4)
    rows = tr2.train().loss_log.rows
    assert "feature_distance" not in rows[0]
    assert rows[1]["feature_distance"] == 0.0 and rows[2]["feature_distance"] > 0.0
    assert any(not torch.equal(tr2.depth_net.encoder.state_dict()[k], sd[k]) for k in sd)


# ----------------------------------------------------------------------------- stages
def test_pretrain_and_retrain_stages_end_to_end(tmp_path, monkeypatch):
    """The stage glue on the analytic street: outputs, metrics keys, stage 2 on the kept frames only."""
    import pandas as pd
    import yaml

    from conftest import REPO
    from semdepth.io import read_json
    from stages import pretrain, retrain

    work = tmp_path / "work"
    write_dataset(work / "data" / "prepared", H, W, snippets=3, speed=0.6)
    raw = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    raw["sde"].update(steps=2, batch_size=2, checkpoint_every=1)
    raw["compute"]["num_workers"] = 0
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(work)
    pretrain.main("params.yaml")
    m = read_json("metrics/pretrain.json")
    assert m["train"]["steps"] == 2 and m["train"]["frames"] == 3 and m["val"]["n_images"] == 1
    assert m["val"]["gt"] == "depth_exact" and 0 < m["abs_rel"] < 1.5
    assert {"unscaled", "median_scaled"} <= set(m["row_median_prior"])
    assert m["prior_abs_rel_unscaled"] == m["row_median_prior"]["unscaled"]["abs_rel"]
    assert len(pd.read_csv("metrics/plots/pretrain_loss.csv")) == 2
    assert not any(Path("data/.resume").iterdir())
    depth, _, cfg = load_sde("data/models/sde_stage1.pt")
    assert cfg["steps"] == 2
    ids = sorted(pd.read_parquet("data/prepared/manifest.parquet").query("split == 'train' and offset == 0")["id"])
    Path("data/filter").mkdir(parents=True)
    pd.DataFrame({"id": ids, "kept": [True, False, True]}).to_parquet("data/filter/frames.parquet")
    retrain.main("params.yaml")
    r = read_json("metrics/retrain.json")
    assert r["frames_kept"] == 2 and r["train"]["frames"] == 2 and r["frames_total"] == 3
    assert r["stage1_abs_rel"] == pytest.approx(m["abs_rel"])
    assert Path("data/models/sde_stage2.pt").is_file()
