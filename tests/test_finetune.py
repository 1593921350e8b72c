"""finetune: joint network, mean teacher, the training step and the stage (docs/method.md §7)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import seg_workdir
from semdepth import SemdepthError
from semdepth.models.segmenter import (GatedExchange, Segmenter, build_segmenter, load_segmenter,
                                       save_segmenter)
from semdepth.training.mean_teacher import confidence_weight, ema_alpha, ema_update, make_teacher


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------------------------------------
# Mean teacher
# ---------------------------------------------------------------------------------------------
def test_ema_alpha_schedule():
    assert ema_alpha(0, 0.99) == 0.0
    assert ema_alpha(1, 0.99) == pytest.approx(0.5)
    assert ema_alpha(9, 0.99) == pytest.approx(0.9)
    assert ema_alpha(10_000, 0.99) == 0.99


def test_ema_update_equals_formula_for_parameters_and_buffers():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    teacher = make_teacher(student)
    with torch.no_grad():
        for q in student.parameters():
            q.add_(torch.randn_like(q))
        student[1].running_mean.add_(1.0)
        student[1].num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    alpha = 0.7
    ema_update(teacher, student, alpha)
    s = student.state_dict()
    for k, v in teacher.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, alpha * before[k] + (1 - alpha) * s[k], atol=1e-6), k
        else:
            assert torch.equal(v, s[k])
    assert not any(q.requires_grad for q in teacher.parameters()) and not teacher.training


def test_ema_update_skips_entries_the_teacher_lacks():
    student = Segmenter(18, multitask=True)
    teacher = make_teacher(student)
    teacher.pose = None
    ema_update(teacher, student, 0.5)  # must not fail on the student's pose net


def test_confidence_weight_is_fraction_of_confident_pixels():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(2, 5, 8, 8, generator=g), 1)
    thr = 0.6
    expect = (probs.max(1).values >= thr).float().mean()
    assert torch.isclose(confidence_weight(probs, thr), expect)
    valid = torch.rand(2, 8, 8, generator=g) > 0.3
    conf = probs.max(1).values >= thr
    expect_valid = (conf & valid).sum() / valid.sum()
    assert torch.isclose(confidence_weight(probs, thr, valid), expect_valid.float())
    assert float(confidence_weight(probs, 1.01)) == 0.0
    assert float(confidence_weight(probs, 0.0)) == 1.0


# ---------------------------------------------------------------------------------------------
# Joint network
# ---------------------------------------------------------------------------------------------
def test_gated_exchange_gate_starts_at_zero():
    ex = GatedExchange(8)
    assert torch.count_nonzero(ex.gate.weight) == 0 and torch.count_nonzero(ex.gate.bias) == 0
    x = torch.randn(1, 8, 4, 4)
    assert torch.allclose(ex(x), 0.5 * ex.value(x))


@pytest.mark.parametrize("multitask", [False, True])
def test_segmenter_outputs(multitask):
    m = Segmenter(18, multitask=multitask).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = m(x)
    assert out["logits"].shape == (2, 19, 64, 64)
    assert ("disp" in out) == multitask
    if multitask:
        assert out["side_logits"].shape == (2, 19, 16, 16)
        assert set(out["disp"]) == {0, 1, 2, 3} and out["disp"][0].shape == (2, 1, 64, 64)
        with torch.no_grad():
            seg_only = m(x, with_depth=False)
        assert torch.allclose(seg_only["logits"], out["logits"], atol=1e-5) and "disp" not in seg_only


def test_init_from_sde_copies_encoder_and_decoders(tmp_path):
    from semdepth.models.sde import build_depth_net, build_pose_net, read_sde, save_sde

    cfg = {"encoder_layers": 18, "guidance": "none", "pose_forward_init": 0.03, "min_depth": 0.1, "max_depth": 100.0}
    torch.manual_seed(3)
    depth, pose = build_depth_net(cfg), build_pose_net(cfg)
    save_sde(tmp_path / "sde.pt", depth, pose, cfg, {})
    ck = read_sde(tmp_path / "sde.pt")
    model, report = build_segmenter("sde", 18, True, sde_ckpt=ck)
    assert report["seg_decoder"].split("/")[0] == report["seg_decoder"].split("/")[1]
    assert torch.equal(model.encoder.layer3[0].conv1.weight, depth.encoder.layer3[0].conv1.weight)
    for k, v in depth.decoder.convs.state_dict().items():
        assert torch.equal(model.seg_decoder.convs.state_dict()[k], v)
        assert torch.equal(model.depth_decoder.convs.state_dict()[k], v)
    assert torch.equal(model.depth_decoder.heads["0"].conv.weight, depth.decoder.heads["0"].conv.weight)
    assert torch.equal(model.pose.decoder.out.bias, pose.decoder.out.bias)
    scratch, report = build_segmenter("scratch", 18, True, sde_ckpt=ck)
    assert not torch.equal(scratch.encoder.conv1.weight, depth.encoder.conv1.weight)
    assert torch.equal(scratch.pose.decoder.out.bias, pose.decoder.out.bias) and report["pose"] == "sde (frozen)"
    with pytest.raises(SemdepthError, match="pose net"):
        build_segmenter("scratch", 18, True)


def test_init_source_loads_pseudolabel_backbone(tmp_path):
    from semdepth.models.encoder import ResnetEncoder

    torch.manual_seed(5)
    enc = ResnetEncoder(18)
    torch.save({"model": "deeplabv3_resnet18", "backbone": enc.backbone_state_dict(), "backbone_layers": 18},
               tmp_path / "pl.pt")
    model, _ = build_segmenter("source", 18, False, source_path=tmp_path / "pl.pt")
    assert torch.equal(model.encoder.layer4[1].conv2.weight, enc.layer4[1].conv2.weight)


def test_imagenet_init_without_the_file_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(SemdepthError) as e:
        build_segmenter("imagenet", 18, False)
    msg = str(e.value)
    assert "resnet18-" in msg and "\n" not in msg


def test_checkpoint_round_trip(tmp_path):
    m = Segmenter(18, multitask=True).eval()
    save_segmenter(tmp_path / "seg.pt", m, {"init": "scratch"}, {"encoder_layers": 18, "pose_forward_init": 0.03})
    loaded, info = load_segmenter(tmp_path / "seg.pt")
    assert info["format"] == "semdepth-seg-1" and info["multitask"] is True
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x)["logits"], loaded(x)["logits"])
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(SemdepthError, match="bad.pt"):
        load_segmenter(tmp_path / "bad.pt")


# ---------------------------------------------------------------------------------------------
# Training step
# ---------------------------------------------------------------------------------------------
def _step_batch(b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    import numpy as np

    rng = np.random.default_rng(seed)
    imgs, labs = [], []
    for k in range(2 * b):
        rgb, lab, _, _ = seg_workdir.scene(rng, shift=k)
        imgs.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
        labs.append(torch.from_numpy(lab.astype("int64")))
    imgs, labs = torch.stack(imgs), torch.stack(labs)
    K = torch.tensor([[40.0, 0, 31.5], [0, 70.0, 31.5], [0, 0, 1]]).expand(b, 3, 3).clone()
    batch = {"l_image": imgs[:b], "l_label": labs[:b], "m_image": imgs[b:], "m_label": labs[b:].clone(),
             "m_labelled": torch.tensor([True] + [False] * (b - 1)), "mix_seed": torch.tensor(3)}
    batch["m_label"][1:] = 255
    for pre in ("l_", "m_"):
        batch[pre + "K"] = K
        batch[pre + "has_nb"] = torch.ones(b, dtype=torch.bool)
        batch[pre + "prev"] = batch[pre + "image"].roll(1, -1)
        batch[pre + "next"] = batch[pre + "image"].roll(-1, -1)
    return batch


def _cfg(**kw):
    from semdepth.config import FinetuneConfig

    return FinetuneConfig(**kw)


def test_a_few_steps_lower_the_supervised_loss():
    from semdepth.losses.reprojection import ObjectiveConfig
    from semdepth.training.finetune import FinetuneStep, build_optimizer

    torch.manual_seed(0)
    cfg = _cfg(mix="none", multitask=False, lr_encoder=0.01, lr_decoder=0.05)
    model = Segmenter(18, multitask=False).train()
    opt = build_optimizer(model, cfg)
    step = FinetuneStep(cfg, ObjectiveConfig())
    batch = _step_batch()
    losses = []
    for _ in range(6):
        loss, parts = step(model, None, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["sup"])
    assert losses[-1] < 0.85 * losses[0] and all(b < a for a, b in zip(losses, losses[1:])), losses


@pytest.mark.parametrize("mix,multitask", [("depthmix", True), ("classmix", False), ("depthmix", False)])
def test_full_step_has_every_term_and_gradients(mix, multitask):
    from semdepth.losses.reprojection import ObjectiveConfig
    from semdepth.models.depth_decoder import DepthDecoder
    from semdepth.models.depth_net import DepthNet
    from semdepth.models.encoder import ResnetEncoder
    from semdepth.training.finetune import FinetuneStep

    torch.manual_seed(1)
    cfg = _cfg(mix=mix, multitask=multitask, conf_threshold=0.0)
    model = Segmenter(18, multitask=multitask).train()
    teacher = make_teacher(model)
    teacher.pose = None
    enc = ResnetEncoder(18)
    sde = DepthNet(enc, DepthDecoder(enc.num_ch_enc)).eval() if not multitask else None
    loss, parts = FinetuneStep(cfg, ObjectiveConfig(), sde)(model, teacher, _step_batch(3))
    loss.backward()
    assert torch.isfinite(loss)
    assert parts["conf_weight"] == 1.0 and parts["unsup"] > 0 and 0 < parts["mix_share"] < 1
    assert ("depth" in parts) == multitask
    assert model.seg_head.conv.weight.grad is not None
    if multitask:
        assert model.depth_to_seg.value.weight.grad is not None
        assert model.depth_decoder.heads["0"].conv.weight.grad is not None
        assert all(q.grad is None for q in model.pose.parameters())  # the SDE's pose net stays frozen
        assert not model.pose.training


def test_lr_schedule_and_groups():
    from semdepth.training.finetune import build_optimizer, lr_factor, set_lr

    cfg = _cfg(lr_encoder=0.001, lr_decoder=0.01)
    model = Segmenter(18, multitask=True)
    opt = build_optimizer(model, cfg)
    names = {g["name"]: g for g in opt.param_groups}
    assert names["encoder"]["lr"] == 0.001 and names["decoder"]["lr"] == 0.01 and set(names) == {"encoder", "decoder"}
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters())) - len(list(model.pose.parameters()))
    assert lr_factor(74, 100, 0.75) == 1.0 and lr_factor(75, 100, 0.75) == 0.1
    set_lr(opt, 0.1)
    assert names["decoder"]["lr"] == pytest.approx(0.001)


# ---------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return seg_workdir.build(tmp_path_factory.mktemp("segwork"))


def _run(work: Path, **overrides) -> dict:
    from stages import finetune

    seg_workdir.write_params(work, **overrides)
    with contextlib.chdir(work):
        finetune.main("params.yaml")
    return json.loads((work / "metrics" / "finetune.json").read_text())


def _weights(work: Path) -> dict[str, torch.Tensor]:
    return torch.load(work / "data/models/segmenter.pt", weights_only=True)["state_dict"]


def test_stage_writes_outputs_and_resumes_identically(workdir, monkeypatch):
    metrics = _run(workdir)
    assert metrics["frames"] == {"labelled": 3, "unlabelled": 9, "val": 2}
    assert 0 <= metrics["val_miou"] <= 1 and metrics["train"]["loss"]["steps_logged"] == 3
    csv = pd.read_csv(workdir / "metrics/plots/finetune_loss.csv")
    assert list(csv["step"]) == [0, 1, 2] and {"loss", "sup", "unsup", "depth"} <= set(csv.columns)
    ck = torch.load(workdir / "data/models/segmenter.pt", weights_only=True)
    assert ck["format"] == "semdepth-seg-1" and ck["multitask"] is True
    assert ck["meta"]["labelled_ids"] == sorted(ck["meta"]["labelled_ids"])[:3]
    full = _weights(workdir)

    # Interrupt at step 2 (after the checkpoint written at step 2), then resume.
    from semdepth.training import finetune as ft

    original = ft.FinetuneStep.__call__

    def crash(self, student, teacher, b):
        if int(b["step"]) == 2:
            raise KeyboardInterrupt
        return original(self, student, teacher, b)

    monkeypatch.setattr(ft.FinetuneStep, "__call__", crash)
    (workdir / "data/models/segmenter.pt").unlink()
    with pytest.raises(KeyboardInterrupt):
        _run(workdir)
    assert not (workdir / "data/models/segmenter.pt").exists()
    assert list((workdir / "data/.resume").glob("finetune-*/last.pt"))
    monkeypatch.setattr(ft.FinetuneStep, "__call__", original)
    _run(workdir)
    resumed = _weights(workdir)
    assert all(torch.allclose(full[k].float(), resumed[k].float(), atol=1e-6) for k in full)
    assert not list((workdir / "data/.resume").glob("finetune-*"))


def test_train_segmenter_resumes_to_identical_weights(workdir, tmp_path):
    """The library call itself: 4 steps uninterrupted == killed after step 3 (checkpoint at 2) + resumed."""
    from semdepth.config import load_params
    from semdepth.runtime import seed_everything
    from semdepth.training.segmenter_run import train_segmenter
    from stages.finetune import PATHS

    seg_workdir.write_params(workdir, steps=4, checkpoint_every=2)
    p = load_params(workdir / "params.yaml")

    def run(root: Path, interrupt_at: int | None = None):
        seed_everything(p.finetune.seed)  # what the stage's setup does: the same initial weights
        return train_segmenter(p, dataclasses.replace(PATHS, resume_root=root), torch.device("cpu"),
                               interrupt_at=interrupt_at)

    with contextlib.chdir(workdir):
        full = run(tmp_path / "a")
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "b", interrupt_at=3)
        assert list((tmp_path / "b").glob("finetune-*/last.pt"))
        resumed = run(tmp_path / "b")
    assert full.result.steps == resumed.result.steps == 4
    assert full.result.resumed_from == 0 and resumed.result.resumed_from == 2
    for a, b in ((full.model, resumed.model), (full.teacher, resumed.teacher)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), \
            [k for k in sa if not torch.equal(sa[k], sb[k])][:3]
    assert full.result.loss_log.rows == resumed.result.loss_log.rows


@pytest.mark.parametrize("overrides", [dict(init="scratch", multitask=False, mix="classmix"),
                                       dict(init="sde", multitask=False, mix="depthmix"),
                                       dict(init="sde", multitask=True, mix="none"),
                                       dict(init="sde", multitask=True, mix="depthmix", crop_height=64, crop_width=64)])
def test_stage_variants(workdir, overrides):
    metrics = _run(workdir, steps=2, **overrides)
    assert metrics["init"] == overrides["init"] and metrics["mix"] == overrides["mix"]
    assert ("unsup" in metrics["train"]) == (overrides["mix"] != "none")
    assert ("depth" in metrics["train"]) == overrides["multitask"]


def test_oracle_labels_every_annotated_train_frame(workdir):
    """finetune.labels all (the supervised ceiling) ignores the selection and labels every annotated frame."""
    from semdepth.io import read_table

    metrics = _run(workdir, steps=1, labels="all")
    manifest = read_table(workdir / "data/prepared/manifest.parquet")
    train = manifest[(manifest["split"] == "train") & (manifest["domain"] == "target")]
    assert metrics["frames"]["labelled"] == int(train["label"].notna().sum()) > 3
    assert metrics["frames"]["labelled"] + metrics["frames"]["unlabelled"] == len(train)
    ck = torch.load(workdir / "data/models/segmenter.pt", weights_only=True)
    assert ck["meta"]["labelled_ids"] == sorted(train.loc[train["label"].notna(), "id"])


def test_finetune_seed_changes_the_weights(workdir):
    """finetune.seed is the segmentation ablations' seed: another seed, another initialisation and order."""
    _run(workdir, steps=1, seed=0)
    a = _weights(workdir)
    _run(workdir, steps=1, seed=1)
    b = _weights(workdir)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_stage_rejects_too_few_selected_frames(workdir):
    seg_workdir.write_params(workdir)
    raw = (workdir / "params.yaml").read_text().replace("n_labels: 3", "n_labels: 7").replace("rounds:\n  - 3",
                                                                                                "rounds:\n  - 7")
    (workdir / "params.yaml").write_text(raw)
    from stages import finetune

    with contextlib.chdir(workdir), pytest.raises(SemdepthError, match="selection.parquet"):
        finetune.main("params.yaml")
