"""The paper-scale path (Hoyer et al. on Cityscapes) on CPU at small inputs: the ASPP architecture,
its transfer into the segmenter, batch-1 training, activation checkpointing, the Cityscapes profile,
the ManyDepth depth crop and the CPU mode of benchmarks/paper_scale.py."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from semdepth.config import ConfigError, load_params, parse_params
from semdepth.metrics.cityscapes_depth import (cityscapes_eval_mask, crop_bounds, protocol_split,
                                               restrict_to_protocol)
from semdepth.models.architecture import ASPP_DECODER_CHANNELS, build_encoder
from semdepth.models.aspp import Aspp
from semdepth.models.checkpointing import set_checkpointing
from semdepth.models.sde import build_depth_net, build_pose_net, load_sde, read_sde, save_sde
from semdepth.models.segmenter import Segmenter, build_segmenter, load_segmenter, save_segmenter

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "cityscapes.yaml"
H, W = 64, 128


def _sde_cfg(layers: int = 18, **kw) -> dict:
    cfg = load_params(REPO / "params.yaml").sde
    from semdepth.config import to_dict

    return {**to_dict(cfg), "encoder_layers": layers, "architecture": "aspp", **kw}


# ------------------------------------------------------------------------------------ networks
@pytest.mark.parametrize("layers", [18, 101])
def test_aspp_networks_build_and_give_four_disparity_scales(layers):
    """Dilated layer4 (1/16 like layer3), ASPP at the deepest level, widths 64..256, disparity at 4
    scales; the multi-task segmenter in train mode at batch 1 (the image-pooling branch)."""
    torch.manual_seed(0)
    model = Segmenter(layers, multitask=True, architecture="aspp").train()
    assert isinstance(model.seg_decoder.convs["upconv_4_0"], Aspp)
    assert model.seg_decoder.num_ch_dec == list(ASPP_DECODER_CHANNELS)
    with torch.no_grad():
        out = model(torch.rand(1, 3, H, W))
    strides = [H // f.shape[-2] for f in out["encoder"]]
    assert strides == [2, 4, 8, 16, 16]
    assert {s: tuple(d.shape) for s, d in out["disp"].items()} == {
        s: (1, 1, H >> s, W >> s) for s in (0, 1, 2, 3)}
    assert all(bool(((d > 0) & (d < 1)).all()) for d in out["disp"].values())
    assert tuple(out["logits"].shape) == (1, 19, H, W)
    assert tuple(out["side_logits"].shape) == (1, 19, H // 4, W // 4)
    assert out["features"][3].shape[1] == 256  # select's diversity features: 256 channels at 1/8


def test_dilated_basic_and_bottleneck_encoders_follow_torchvision():
    """Bottleneck ResNets use torchvision's replace_stride_with_dilation; the same key names (so
    ImageNet files load) and no stride left in layer4 for the BasicBlock ResNets too."""
    enc = build_encoder("aspp", 50)
    ref = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
    ours = {n: (m.stride, m.dilation, m.padding) for n, m in enc.named_modules() if isinstance(m, torch.nn.Conv2d)}
    theirs = {n: (m.stride, m.dilation, m.padding) for n, m in ref.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert ours == theirs
    enc18 = build_encoder("aspp", 18)
    assert set(enc18.state_dict()) == set(build_encoder("unet", 18).state_dict())
    assert all(m.stride == (1, 1) for m in enc18.layer4.modules() if isinstance(m, torch.nn.Conv2d))


def test_image_pooling_works_at_batch_one_and_does_not_depend_on_the_batch():
    aspp = Aspp(32, 32, pooling_groups=16).train()
    pooling = aspp.convs[-1]
    x = torch.rand(2, 32, 4, 8)
    alone = pooling(x[:1])
    together = pooling(x)
    assert torch.allclose(alone, together[:1], atol=1e-6)
    assert aspp(x[:1]).shape == (1, 32, 4, 8)


def test_seem_is_refused_with_aspp():
    raw = load_params(REPO / "params.yaml")
    from semdepth.config import to_dict

    d = to_dict(raw)
    d["sde"].update(architecture="aspp", guidance="seem")
    with pytest.raises(ConfigError, match="sde.guidance: seem is implemented for architecture unet only"):
        parse_params(d)


# ------------------------------------------------------------------------------------ transfer and checkpoints
def test_sde_decoder_copies_one_to_one_and_checkpoints_rebuild_the_architecture(tmp_path):
    torch.manual_seed(0)
    cfg = _sde_cfg()
    depth, pose = build_depth_net(cfg), build_pose_net(cfg)
    path = tmp_path / "sde.pt"
    save_sde(path, depth, pose, cfg, {})
    loaded, _, stored = load_sde(path)
    assert stored["architecture"] == "aspp" and isinstance(loaded.decoder.convs["upconv_4_0"], Aspp)

    ck = read_sde(path)
    scratch, _ = build_segmenter("scratch", 18, multitask=False, sde_ckpt=ck)
    assert scratch.architecture == "aspp"  # the segmenter follows the checkpoint for every init
    model, report = build_segmenter("sde", 18, multitask=True, sde_ckpt=ck)
    n, m = len(model.seg_decoder.state_dict()), len(model.depth_decoder.state_dict())
    assert report["seg_decoder"] == f"{n}/{n}" and report["depth_decoder"] == f"{m}/{m}"
    for k, v in model.seg_decoder.state_dict().items():
        assert torch.equal(v, ck["depth"]["decoder." + k]), k

    seg_path = tmp_path / "seg.pt"
    save_segmenter(seg_path, model, {}, ck["config"])
    again, _ = load_segmenter(seg_path)
    assert again.architecture == "aspp"
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        assert torch.equal(again(x)["logits"], model.eval()(x)["logits"])


def test_old_checkpoint_configs_without_the_key_are_unet():
    from semdepth.models.architecture import architecture_of

    assert architecture_of({"encoder_layers": 18}) == "unet"
    assert load_params(REPO / "params.yaml").sde.architecture == "unet"
    assert load_params(REPO / "profiles" / "tiny.yaml").sde.architecture == "unet"


def test_checkpointing_gives_the_same_gradients_and_batchnorm_statistics():
    torch.manual_seed(0)
    a = build_depth_net(_sde_cfg()).train()
    b = build_depth_net(_sde_cfg()).train()
    b.load_state_dict(a.state_dict())
    assert set_checkpointing(b, True) == 2
    x = torch.rand(2, 3, 32, 32)
    for net in (a, b):
        torch.manual_seed(1)  # the ASPP dropout draws the same mask
        sum(d.mean() for d in net(x)["disp"].values()).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-5, atol=1e-7), name
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
        assert torch.equal(ba, bb), name  # recomputation did not update BatchNorm statistics twice


# ------------------------------------------------------------------------------------ profile and protocol
def test_cityscapes_profile_parses_with_the_paper_settings():
    p = load_params(PROFILE)
    assert (p.data.height, p.data.width, p.data.raw_dir) == (512, 1024, "/datasets/cityscapes")
    assert (p.sde.encoder_layers, p.sde.architecture, p.sde.pretrained) == (101, "aspp", "imagenet")
    assert (p.sde.steps, p.sde.phase1_steps, p.sde.batch_size) == (350_000, 300_000, 4)
    assert (p.sde.phase2_lr, p.sde.feature_distance) == (1e-5, 1e-2)
    assert (p.finetune.steps, p.finetune.batch_labeled, p.finetune.batch_unlabeled) == (40_000, 2, 2)
    assert (p.finetune.lr_encoder, p.finetune.lr_decoder, p.finetune.lr_decay_at) == (1e-3, 1e-2, 0.75)
    assert p.select.n_labels == 372 and p.select.rounds[-1] == 372
    assert (p.pseudolabel.weights, p.compute.device, p.eval.protocol) == ("torchvision-coco", "cuda", "cityscapes")
    assert {"train", "val", "test"} <= set(p.data.splits)


def test_cityscapes_crop_selects_manydepths_pixels():
    """At 1024x2048: the bottom 25% cut, then [256:, 192:1856] of the remaining 768 rows."""
    mask = cityscapes_eval_mask(1024, 2048)
    assert mask.sum() == 512 * 1664
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (256, 767, 192, 1855)
    kept = np.zeros((1024, 2048), bool)
    kept[:768][256:, 192:1856] = True  # ManyDepth's two steps, literally
    assert np.array_equal(mask, kept)
    assert crop_bounds(512, 1024) == (128, 384, 96, 928)
    assert np.array_equal(cityscapes_eval_mask(512, 1024), kept[::2, ::2])

    gt = np.full((512, 1024), 10.0, np.float32)
    restricted = restrict_to_protocol(gt, "cityscapes")
    assert restricted.dtype == np.float32 and (restricted > 0).sum() == 256 * 832
    assert restrict_to_protocol(gt, "project") is gt
    assert protocol_split("cityscapes", "val") == "test" and protocol_split("project", "val") == "val"


class _ConstantDisparity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict:
        return {"disp": {0: torch.full((x.shape[0], 1, *x.shape[-2:]), 0.5)}}


def test_cityscapes_protocol_scores_the_test_split_inside_the_crop(tmp_path):
    """evaluate_depth_net with eval.protocol cityscapes: test frames only, pixels outside the crop
    ignored. GT is 10 m inside the crop and 2 m outside, the prediction constant: inside the crop
    median scaling makes it exact, the project protocol (val) sees both depths."""
    import cv2
    import pandas as pd

    from semdepth.config import EvalConfig
    from semdepth.io import write_table
    from semdepth.metrics.depth_eval import evaluate_depth_net

    h, w = 64, 128
    gt = np.where(cityscapes_eval_mask(h, w), 10.0, 2.0).astype(np.float32)
    rows = []
    for split in ("val", "test"):
        cv2.imwrite(str(tmp_path / f"{split}.png"), np.zeros((h, w, 3), np.uint8))
        np.save(tmp_path / f"{split}.npy", gt)
        rows.append({"id": f"c_000000_{len(rows):06d}", "split": split, "domain": "target", "annotated": True,
                     "image": f"{split}.png", "depth": f"{split}.npy", "label": None, "moving": None})
    manifest = tmp_path / "manifest.parquet"
    write_table(pd.DataFrame(rows), manifest)

    def run(protocol: str) -> dict:
        return evaluate_depth_net(_ConstantDisparity(), manifest, device=torch.device("cpu"), net_min_depth=0.1,
                                  net_max_depth=100.0, eval_cfg=EvalConfig(protocol=protocol), hood_fraction=0.0)

    cityscapes, project = run("cityscapes"), run("project")
    assert cityscapes["n_images"] == 1 and cityscapes["abs_rel"] < 1e-6
    assert project["n_images"] == 1 and project["abs_rel"] > 0.1


# ------------------------------------------------------------------------------------ benchmark
def _load_benchmark(script: str):
    """benchmarks/<script>.py as a module (registered: its dataclasses look their module up)."""
    name = f"_{script}_benchmark"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _benchmark():
    return _load_benchmark("paper_scale")


def test_benchmark_cpu_mode_runs_one_step_of_each_kind(capsys):
    rows = _benchmark().main(["--cpu-smoke", "--sizes", "64x32", "--checkpointing", "off"])
    steps = [r["step"] for r in rows]
    assert steps == ["sde_phase1", "sde_phase2", "finetune", "estimate"]
    assert all(r["architecture"] == "aspp" and r["device"] == "cpu" for r in rows)
    assert all(r["s_per_step_median"] > 0 for r in rows[:3])
    assert rows[-1]["sde_steps"] == "300000+50000" and rows[-1]["finetune_steps"] == 40000
    assert len(capsys.readouterr().out.strip().splitlines()) == 4


def _memory_benchmark():
    return _load_benchmark("paper_memory")


def test_memory_estimate_extrapolates_the_sde_batch_and_flags_11gib():
    rows = [{"kind": "sde_phase2", "batch": "1", "checkpointing": False, "alloc_gib": 4.0},
            {"kind": "sde_phase2", "batch": "2", "checkpointing": False, "alloc_gib": 6.5},
            {"kind": "finetune", "batch": "2+2", "checkpointing": True, "alloc_gib": 12.0}]
    est = {(r["kind"], r["checkpointing"]): r for r in _memory_benchmark().estimates(rows, sde_batch=4)}
    sde = est[("sde_phase2", False)]
    assert sde["alloc_gib_est"] == pytest.approx(4.0 + 3 * 2.5) and sde["per_image_gib"] == pytest.approx(2.5)
    assert sde["batch"] == "4" and sde["fits_11gib_est"] is False
    ft = est[("finetune", True)]
    assert ft["alloc_gib_est"] == 12.0 and ft["fits_11gib_est"] is False
    assert set(est) == {("sde_phase2", False), ("finetune", True)}  # no row for settings not measured


def test_memory_benchmark_measures_one_step_in_a_fresh_process():
    import argparse

    args = argparse.Namespace(size="64x64", params=PROFILE, threads=1)
    row = _memory_benchmark().spawn("sde_phase2", 1, True, args)
    assert row["encoder"] == "resnet101" and row["checkpointing"] is True and row["batch"] == "1"
    # a fresh process: building ResNet-101 + the pose net shows up in its RSS, and the step on top of it
    assert row["weights_gib"] > 0.1 and row["peak_gib"] > row["base_gib"] + row["weights_gib"]
