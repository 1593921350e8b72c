"""pseudolabel stage and its library: DeepLab building/loading, training, inference, scores.

Everything runs on a tiny synthetic prepared dataset built here (64x128 PNGs + manifest), so the
tests depend on no other stage.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml

from semdepth import SemdepthError
from semdepth.config import PseudolabelConfig
from semdepth.data.frames import read_label_u8, read_rgb, write_png
from semdepth.data.labels import FOREGROUND_TRAIN_IDS, TRAIN_IDS
from semdepth.data.seg_augment import SegAugment
from semdepth.metrics.segmentation import ConfusionMatrix, binary_iou
from semdepth.models.deeplab import (DeepLab, backbone_state_dict, checkpoint_dict, coco_weights_file,
                                     load_checkpoint, load_coco)
from semdepth.pseudolabel.infer import trainid_to_foreground, voc_to_foreground
from semdepth.pseudolabel.train import SourceTrainSet, train_deeplab

REPO = Path(__file__).resolve().parents[1]
H, W = 64, 128
ROAD, SKY, CAR, PERSON, BUILDING = (TRAIN_IDS[n] for n in ("road", "sky", "car", "person", "building"))
COLORS = {ROAD: (128, 64, 128), SKY: (70, 130, 180), CAR: (200, 20, 20), PERSON: (230, 200, 40),
          BUILDING: (90, 90, 90)}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _scene(rng: np.random.Generator, style: float) -> tuple[np.ndarray, np.ndarray]:
    """A street-like frame: sky, buildings, road, a car and a person; `style` shifts the colours
    (source vs target domain). Bottom row ignored as a hood would be."""
    lab = np.full((H, W), BUILDING, np.uint8)
    horizon = int(rng.integers(18, 28))
    lab[:horizon // 2] = SKY
    lab[horizon + 10:] = ROAD
    x = int(rng.integers(0, W - 40))
    lab[horizon + 4:horizon + 22, x:x + 36] = CAR
    px = int(rng.integers(0, W - 8))
    lab[horizon:horizon + 20, px:px + 6] = PERSON
    img = np.zeros((H, W, 3), np.float32)
    for c, col in COLORS.items():
        img[lab == c] = np.array(col, np.float32) * style
    img += rng.normal(0, 8, img.shape)
    lab[-2:] = 255
    return np.clip(img, 0, 255).astype(np.uint8), lab


def make_prepared(root: Path, n_source: int = 6, n_train: int = 2, n_val: int = 2, seed: int = 0) -> pd.DataFrame:
    """data/prepared with source (labelled), train and val snippets (offsets -1, 0, 1; labels at 0)."""
    rng = np.random.default_rng(seed)
    prepared = root / "data" / "prepared"
    rows = []
    for split, n, domain, style in (("source", n_source, "source", 0.8), ("train", n_train, "target", 1.0),
                                    ("val", n_val, "target", 1.0)):
        city = f"{split}city"
        for seq in range(n):
            offsets = [0] if split == "source" else [-1, 0, 1]
            for off in offsets:
                fid = f"{city}_{seq:06d}_{19 + off:06d}"
                img, lab = _scene(rng, style)
                d = prepared / split / city
                d.mkdir(parents=True, exist_ok=True)
                write_png(d / f"{fid}_leftImg8bit.png", img)
                label = None
                if off == 0:
                    write_png(d / f"{fid}_gtFine_trainIds.png", lab)
                    label = f"{split}/{city}/{fid}_gtFine_trainIds.png"
                rows.append({"id": fid, "split": split, "domain": domain, "city": city, "sequence": seq,
                             "frame": 19 + off, "offset": off, "annotated": off == 0,
                             "image": f"{split}/{city}/{fid}_leftImg8bit.png", "label": label,
                             "height": H, "width": W})
    df = pd.DataFrame(rows)
    df.to_parquet(prepared / "manifest.parquet", index=False)
    return df


def _params(root: Path, **overrides) -> Path:
    raw = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    raw["tracking"]["enabled"] = False
    raw["compute"].update(device="cpu", num_workers=0, threads=1)
    raw["pseudolabel"].update(overrides)
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _cfg(**kw) -> PseudolabelConfig:
    base = dict(model="deeplabv3_mobilenet_v3_large", weights="train", steps=4, batch_size=2, lr=0.01,
                weight_decay=1e-4, scale_min=0.75, scale_max=1.5, color_jitter=0.3, infer_batch_size=4)
    base.update(kw)
    return PseudolabelConfig(**base)


# ------------------------------------------------------------------------------------------------
# segmentation metrics
# ------------------------------------------------------------------------------------------------
def test_confusion_matrix_hand_computed():
    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    # class 0: tp 1, fp 1 (gt 2 predicted 0), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    np.testing.assert_allclose(cm.iou()[:3], [1 / 3, 2 / 3, 1 / 2])
    assert np.isnan(cm.iou()[3])  # neither in GT nor predicted
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    # a class predicted but absent from GT: counts in the Cityscapes mean (IoU 0), not in over="gt"
    cm2 = ConfusionMatrix(4)
    cm2.update(torch.tensor([3, 0]), torch.tensor([0, 0]))
    assert cm2.miou() == pytest.approx(0.25) and cm2.miou("gt") == pytest.approx(0.5)
    assert binary_iou(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 1, 0])) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0]), torch.tensor([7]))


def test_miou_matches_cityscapesscripts(tmp_path):
    """Same random predictions scored by cityscapesscripts' evaluator (label-id PNGs) and by us."""
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as ev
    from cityscapesscripts.helpers.labels import trainId2label

    import copy

    rng = np.random.default_rng(3)
    args = copy.copy(ev.args)  # the module-level args object is shared; do not mutate it
    args.evalInstLevelScore, args.evalPixelAccuracy, args.quiet = False, False, True
    conf_cs = ev.generateMatrix(args)
    ours = ConfusionMatrix(19)
    to_label = np.zeros(256, np.uint8)  # 255 -> label id 0 (unlabeled, ignored in eval)
    for t in range(19):
        to_label[t] = trainId2label[t].id
    for k in range(3):
        gt = rng.integers(0, 19, (24, 40)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.15] = 255
        gt[gt == 5] = 255  # a class absent from GT ...
        pred = rng.integers(0, 19, gt.shape).astype(np.uint8)
        pred[pred == 7] = 6  # ... and one never predicted
        write_png(tmp_path / f"p{k}.png", to_label[pred])
        write_png(tmp_path / f"g{k}_gtFine_labelIds.png", to_label[gt])
        ev.evaluatePair(str(tmp_path / f"p{k}.png"), str(tmp_path / f"g{k}_gtFine_labelIds.png"), conf_cs,
                        {}, {}, args)
        ours.update(torch.from_numpy(pred), torch.from_numpy(gt))
    cs_scores = {trainId2label[t].id: ev.getIouScoreForLabel(trainId2label[t].id, conf_cs, args) for t in range(19)}
    cs_iou = np.array([cs_scores[trainId2label[t].id] for t in range(19)])
    np.testing.assert_allclose(ours.iou(), cs_iou, equal_nan=True)
    assert ours.miou() == pytest.approx(ev.getScoreAverage(cs_scores, args))


# ------------------------------------------------------------------------------------------------
# networks and weights
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [18, 34])
def test_backbone_transfers_every_tensor(layers):
    model = DeepLab(f"deeplabv3_resnet{layers}")
    bb = backbone_state_dict(model)
    ref = getattr(torchvision.models, f"resnet{layers}")(weights=None).state_dict()
    expected = {k: v.shape for k, v in ref.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in bb.items()} == expected
    # loading into a plain torchvision ResNet transfers every tensor (only the classifier is missing)
    net = getattr(torchvision.models, f"resnet{layers}")(weights=None)
    result = net.load_state_dict(bb, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    for k, v in bb.items():
        assert torch.equal(net.state_dict()[k], v)
    assert DeepLab("deeplabv3_mobilenet_v3_large").backbone_layers is None
    assert backbone_state_dict(DeepLab("deeplabv3_mobilenet_v3_large")) is None


def test_checkpoint_backbone_loads_into_sde_encoder(tmp_path):
    """`sde.pretrained: source` path: our checkpoint file -> the SDE encoder, every tensor equal."""
    enc_mod = pytest.importorskip("semdepth.models.encoder")
    model = DeepLab("deeplabv3_resnet18")
    with torch.no_grad():  # make BatchNorm statistics non-default so that copying them is checked too
        for mod in model.net.backbone.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
    torch.save(checkpoint_dict(model), tmp_path / "pseudolabel.pt")
    enc = enc_mod.ResnetEncoder(18, pretrained=tmp_path / "pseudolabel.pt")
    bb = backbone_state_dict(model)
    assert set(bb) == set(enc.state_dict())
    for k, v in bb.items():
        assert torch.equal(enc.state_dict()[k], v), k


def test_dilated_small_resnet_output_stride():
    model = DeepLab("deeplabv3_resnet18").eval()
    with torch.no_grad():
        feats = model.net.backbone(torch.rand(1, 3, 64, 128))["out"]
        out = model(torch.rand(2, 3, 64, 128))
    assert feats.shape[-2:] == (4, 8)  # output stride 16: layer4 dilated, not strided
    assert out.shape == (2, 19, 64, 128)


def test_missing_coco_weights_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    f = coco_weights_file("deeplabv3_mobilenet_v3_large")
    assert f.parent == tmp_path / "hub" / "checkpoints" and f.name == "deeplabv3_mobilenet_v3_large-fc3c493d.pth"
    with pytest.raises(SemdepthError) as e:
        load_coco("deeplabv3_mobilenet_v3_large")
    msg = str(e.value)
    assert "\n" not in msg and f.name in msg and str(f.parent) in msg
    with pytest.raises(SemdepthError, match="no COCO weights for deeplabv3_resnet18"):
        coco_weights_file("deeplabv3_resnet18")


def test_coco_weights_from_cache_give_binary_map(tmp_path, monkeypatch):
    """A file in torchvision's COCO format (21 classes, with aux head) placed in the cache loads."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    tv = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                       num_classes=21, aux_loss=True)
    f = coco_weights_file("deeplabv3_mobilenet_v3_large")
    f.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), f)
    model = load_coco("deeplabv3_mobilenet_v3_large")
    assert model.voc and model.num_classes == 21
    assert torch.equal(model.net.classifier[4].weight, tv.classifier[4].weight)


def test_voc_and_trainid_to_binary():
    voc = torch.arange(21)
    assert voc_to_foreground(voc).tolist() == [0] + [1] * 20
    tid = torch.tensor(list(range(19)) + [255])
    fg = trainid_to_foreground(tid)
    assert fg.dtype == torch.uint8
    assert [i for i in range(19) if fg[i]] == list(FOREGROUND_TRAIN_IDS) == [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]
    assert fg[-1] == 0


def test_wrong_checkpoint_one_line_errors(tmp_path):
    m = DeepLab("deeplabv3_mobilenet_v3_large")
    good = tmp_path / "good.pt"
    torch.save(checkpoint_dict(m), good)
    loaded = load_checkpoint(good, "deeplabv3_mobilenet_v3_large")
    assert torch.equal(loaded.net.classifier[4].weight, m.net.classifier[4].weight)
    bare = tmp_path / "bare.pt"
    torch.save(m.net.state_dict(), bare)  # a bare torchvision state dict works too
    assert load_checkpoint(bare, "deeplabv3_mobilenet_v3_large").num_classes == 19
    cases = {
        "arch": (good, "deeplabv3_resnet18", "checkpoint is a deeplabv3_mobilenet_v3_large"),
        "arch_bare": (bare, "deeplabv3_resnet18", "not a deeplabv3_resnet18 state dict"),
    }
    sd = dict(m.net.state_dict())
    sd["classifier.4.weight"] = torch.zeros(7, 256, 1, 1)
    sd["classifier.4.bias"] = torch.zeros(7)
    torch.save(sd, tmp_path / "classes.pt")
    cases["classes"] = (tmp_path / "classes.pt", "deeplabv3_mobilenet_v3_large", "has 7 output classes")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    cases["junk"] = (tmp_path / "junk.pt", "deeplabv3_mobilenet_v3_large", "not a readable torch state dict")
    cases["missing"] = (tmp_path / "nope.pt", "deeplabv3_mobilenet_v3_large", "checkpoint file not found")
    for name, (path, arch, text) in cases.items():
        with pytest.raises(SemdepthError) as e:
            load_checkpoint(path, arch)
        assert text in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value), name


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def _source(root: Path):
    df = make_prepared(root, n_source=4, n_train=1, n_val=1)
    src = df[df.domain == "source"]
    prep = root / "data" / "prepared"
    return [prep / p for p in src.image], [prep / p for p in src.label]


def test_augment_deterministic_and_label_safe(tmp_path):
    imgs, labs = _source(tmp_path)
    ds = SourceTrainSet(imgs, labs, total=12, seed=5, augment=SegAugment(0.5, 1.5, 0.3), crop=(H, W))
    a, b = ds[7], SourceTrainSet(imgs, labs, 12, 5, SegAugment(0.5, 1.5, 0.3), (H, W))[7]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, H, W) and a[1].shape == (H, W)
    for x, y in (ds[i] for i in range(len(ds))):
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        vals = set(y.unique().tolist())
        assert vals <= {ROAD, SKY, CAR, PERSON, BUILDING, 255}
    # every frame is visited once per epoch
    assert sorted(ds.frame_at(i) for i in range(4)) == [0, 1, 2, 3]


def test_training_lowers_loss(tmp_path):
    imgs, labs = _source(tmp_path)
    torch.manual_seed(0)
    model = DeepLab("deeplabv3_mobilenet_v3_large")
    res = train_deeplab(model, imgs, labs, _cfg(steps=12, batch_size=4, lr=0.02), (H, W), seed=0,
                        device=torch.device("cpu"), log_every=1)
    losses = [r["loss"] for r in res.loss_log.rows]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_training_same_seed_identical(tmp_path):
    imgs, labs = _source(tmp_path)
    outs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = DeepLab("deeplabv3_mobilenet_v3_large")
        res = train_deeplab(model, imgs, labs, _cfg(steps=3), (H, W), seed=1, device=torch.device("cpu"), log_every=1)
        outs.append(([r["loss"] for r in res.loss_log.rows], model.net.classifier[4].weight.detach().clone()))
    assert outs[0][0] == outs[1][0] and torch.equal(outs[0][1], outs[1][1])


def test_training_resumes_to_identical_result(tmp_path):
    """A run killed after a checkpoint and resumed ends with the same weights and loss curve."""
    from semdepth.training.resume import Resumer

    imgs, labs = _source(tmp_path)

    class Killer:
        def log_metrics(self, metrics, step=None):
            if step == 3:
                raise KeyboardInterrupt

    def run(tracker=None, resumer=None):
        torch.manual_seed(2)
        model = DeepLab("deeplabv3_mobilenet_v3_large")
        res = train_deeplab(model, imgs, labs, _cfg(steps=5), (H, W), seed=2, device=torch.device("cpu"),
                            tracker=tracker, resumer=resumer, checkpoint_every=2, log_every=1)
        return [r["loss"] for r in res.loss_log.rows], model.net.classifier[4].weight.detach().clone(), res

    ref_losses, ref_w, _ = run()
    resumer = Resumer("pseudolabel", {"test": 1}, root=tmp_path / "resume")
    with pytest.raises(KeyboardInterrupt):
        run(Killer(), resumer)
    assert resumer.path.exists()
    losses, w, res = run(None, resumer)
    assert res.resumed_from == 2 and losses == ref_losses and torch.equal(w, ref_w)


def test_training_rejects_batch_of_one(tmp_path):
    imgs, labs = _source(tmp_path)
    with pytest.raises(SemdepthError, match="pseudolabel.batch_size"):
        train_deeplab(DeepLab("deeplabv3_mobilenet_v3_large"), imgs, labs, _cfg(batch_size=1), (H, W), seed=0,
                      device=torch.device("cpu"))


# ------------------------------------------------------------------------------------------------
# the stage end to end
# ------------------------------------------------------------------------------------------------
def _run_stage(root: Path, monkeypatch, **overrides) -> None:
    from stages import pseudolabel

    monkeypatch.chdir(root)
    pseudolabel.main(_params(root, **overrides))


def test_stage_writes_one_output_set_per_target_frame(tmp_path, monkeypatch):
    df = make_prepared(tmp_path)
    _run_stage(tmp_path, monkeypatch, model="deeplabv3_mobilenet_v3_large", steps=3)
    out = tmp_path / "data" / "pseudolabels"
    table = pd.read_parquet(out / "pseudolabels.parquet")
    target = df[df.domain == "target"]
    assert list(table.columns) == ["id", "split", "trainid", "confidence", "foreground"]
    assert sorted(table.id) == sorted(target.id) and table.id.is_unique
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == sorted(list(table.trainid) + list(table.confidence) + list(table.foreground))
    for r in table.itertuples():
        t, c, f = (read_label_u8(out / getattr(r, k)) for k in ("trainid", "confidence", "foreground"))
        assert t.shape == c.shape == f.shape == (H, W)
        assert t.max() < 19 and set(np.unique(f)) <= {0, 1}
        assert c.min() >= round(255 / 19)  # max softmax over 19 classes is at least 1/19
        np.testing.assert_array_equal(f, np.isin(t, FOREGROUND_TRAIN_IDS).astype(np.uint8))
    ckpt = torch.load(tmp_path / "data" / "models" / "pseudolabel.pt", weights_only=True)
    assert ckpt["model"] == "deeplabv3_mobilenet_v3_large" and ckpt["num_classes"] == 19
    assert ckpt["backbone"] is None and ckpt["backbone_layers"] is None
    m = yaml.safe_load((tmp_path / "metrics" / "pseudolabel.json").read_text())
    assert m["val"]["frames"] == 2 and m["train"]["frames"] == 2 and m["frames"] == len(target)
    assert 0 <= m["val"]["miou"] <= 1 and "foreground_iou" in m["val"] and "baseline" in m
    assert m["baseline"]["val"]["miou"] > 0.3  # the synthetic layout is very regular
    loss = pd.read_csv(tmp_path / "metrics" / "plots" / "pseudolabel_loss.csv")
    assert list(loss.columns) == ["step", "loss"] and len(loss) == 3
    assert not list(tmp_path.glob("data/.pseudolabels*")) and not (tmp_path / "data" / ".resume").exists()


def test_stage_same_seed_identical_outputs(tmp_path, monkeypatch):
    digests = []
    for run in range(2):
        root = tmp_path / f"r{run}"
        make_prepared(root, n_source=3, n_train=1, n_val=1)
        _run_stage(root, monkeypatch, model="deeplabv3_resnet18", steps=2)
        out = root / "data" / "pseudolabels"
        digests.append({p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")})
        ck = torch.load(root / "data" / "models" / "pseudolabel.pt", weights_only=True)
        digests[-1]["ckpt"] = ck["state_dict"]["classifier.4.weight"].numpy().tobytes()
        assert ck["backbone_layers"] == 18 and "layer4.1.conv2.weight" in ck["backbone"]
    assert digests[0] == digests[1]


def test_stage_with_checkpoint_path_and_missing_coco(tmp_path, monkeypatch):
    make_prepared(tmp_path, n_source=2, n_train=1, n_val=1)
    m = DeepLab("deeplabv3_mobilenet_v3_large")
    torch.save(m.net.state_dict(), tmp_path / "mine.pt")
    _run_stage(tmp_path, monkeypatch, model="deeplabv3_mobilenet_v3_large", weights=str(tmp_path / "mine.pt"))
    metrics = yaml.safe_load((tmp_path / "metrics" / "pseudolabel.json").read_text())
    assert "training" not in metrics and metrics["semantic_map"] is True
    assert (tmp_path / "metrics" / "plots" / "pseudolabel_loss.csv").read_text() == "step,loss\n"
    before = sorted(p.as_posix() for p in (tmp_path / "data").rglob("*"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "emptyhub"))
    with pytest.raises(SemdepthError, match="deeplabv3_mobilenet_v3_large-fc3c493d.pth"):
        _run_stage(tmp_path, monkeypatch, model="deeplabv3_mobilenet_v3_large", weights="torchvision-coco")
    assert sorted(p.as_posix() for p in (tmp_path / "data").rglob("*")) == before  # nothing half-written


def test_stage_coco_binary_only(tmp_path, monkeypatch):
    make_prepared(tmp_path, n_source=2, n_train=1, n_val=1)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    tv = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                       num_classes=21, aux_loss=True)
    f = coco_weights_file("deeplabv3_mobilenet_v3_large")
    f.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), f)
    _run_stage(tmp_path, monkeypatch, model="deeplabv3_mobilenet_v3_large", weights="torchvision-coco")
    out = tmp_path / "data" / "pseudolabels"
    table = pd.read_parquet(out / "pseudolabels.parquet")
    assert table.trainid.isna().all() and not list(out.rglob("*_trainid.png"))
    for r in table.itertuples():
        assert set(np.unique(read_label_u8(out / r.foreground))) <= {0, 1}
    metrics = yaml.safe_load((tmp_path / "metrics" / "pseudolabel.json").read_text())
    assert metrics["semantic_map"] is False and "miou" not in metrics["val"] and "foreground_iou" in metrics["val"]


def test_frames_reader_roundtrip(tmp_path):
    img = (np.arange(H * W * 3) % 256).astype(np.uint8).reshape(H, W, 3)
    write_png(tmp_path / "a.png", img)
    t = read_rgb(tmp_path / "a.png")
    assert t.shape == (3, H, W) and t.dtype == torch.float32
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy() * 255, img, atol=1e-4)
    with pytest.raises(SemdepthError, match="cannot read"):
        read_rgb(tmp_path / "missing.png")


def test_params_validation(tmp_path):
    from semdepth.config import ConfigError, load_params

    for overrides, key in (({"batch_size": 1}, "pseudolabel.batch_size"),
                           ({"scale_min": 2.0, "scale_max": 1.0}, "pseudolabel.scale_min"),
                           ({"model": "deeplabv3_resnet19"}, "pseudolabel.model")):
        with pytest.raises(ConfigError, match=key):
            load_params(_params(tmp_path, **overrides))


def test_stage_on_real_downsample_output(tiny_workdir, tmp_path, monkeypatch):
    """The tiny profile's synthesize + downsample output (the real manifest contract), copied so the
    shared session workdir is left untouched."""
    shutil.copytree(tiny_workdir / "data" / "prepared", tmp_path / "data" / "prepared")
    shutil.copyfile(tiny_workdir / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    from stages import pseudolabel

    pseudolabel.main("params.yaml")
    manifest = pd.read_parquet(tmp_path / "data" / "prepared" / "manifest.parquet")
    table = pd.read_parquet(tmp_path / "data" / "pseudolabels" / "pseudolabels.parquet")
    assert sorted(table.id) == sorted(manifest[manifest.domain == "target"].id)
    m = yaml.safe_load((tmp_path / "metrics" / "pseudolabel.json").read_text())
    assert m["val"]["frames"] == int(((manifest.split == "val") & manifest.label.notna()).sum())
    assert m["training"]["source_frames"] == int(((manifest.domain == "source") & manifest.label.notna()).sum())


# ------------------------------------------------------------------------------------------------
# pseudo-labels at another resolution than the working one, output stride, losses
# ------------------------------------------------------------------------------------------------
RAW_H, RAW_W = 256, 512
#: the known square in raw pixels (multiples of 4: exact at 128x256 and 64x128 too)
SQ_ROWS, SQ_COLS = slice(80, 160), slice(200, 328)


def make_raw(root: Path) -> Path:
    """A raw Cityscapes-layout root (256x512): every frame a grey road with a red car square at
    SQ_ROWS x SQ_COLS, labelIds to match, annotated frames only; source, train and val."""
    from semdepth.data.labels import LABEL_IDS

    raw = root / "data" / "raw" / "synthcity"
    img = np.full((RAW_H, RAW_W, 3), 128, np.uint8)
    img[SQ_ROWS, SQ_COLS] = (40, 40, 220)  # BGR: red
    ids = np.full((RAW_H, RAW_W), LABEL_IDS["road"], np.uint8)
    ids[SQ_ROWS, SQ_COLS] = LABEL_IDS["car"]
    cam = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 500.0, "fy": 500.0, "u0": 255.5, "v0": 127.5}}
    for split, city in (("source", "srccity"), ("train", "trcity"), ("val", "vacity")):
        for seq in range(2):
            fid = f"{city}_{seq:06d}_000019"
            for kind, suffix, arr in (("leftImg8bit", "_leftImg8bit.png", img),
                                      ("gtFine", "_gtFine_labelIds.png", ids)):
                d = raw / kind / split / city
                d.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(d / f"{fid}{suffix}"), arr)
            d = raw / "camera" / split / city
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{fid}_camera.json").write_text(json.dumps(cam))
    return raw


def prepare_raw(root: Path) -> Path:
    """downsample's own preparation of `make_raw` at the working 64x128; returns the manifest."""
    from semdepth.data.prepare import prepare

    raw = make_raw(root)
    prepare(raw, root / "data" / "prepared", H, W, [0], ["train", "val", "source"], workers=1)
    return root / "data" / "prepared" / "manifest.parquet"


class RedIsCar(torch.nn.Module):
    """A stand-in network: car where the pixel is red, road elsewhere; records the input size."""

    name, num_classes, voc, backbone_layers, output_stride = "stub", 19, False, None, 16

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(1, 1, 1)
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[-2:]))
        red = ((x[:, 0] > 0.6) & (x[:, 1] < 0.3)).float()
        logits = torch.zeros(x.shape[0], 19, *x.shape[-2:])
        logits[:, CAR] = 8 * red
        logits[:, ROAD] = 8 * (1 - red)
        return logits


def _pl_paths(root: Path):
    from semdepth.pseudolabel.run import PseudolabelPaths

    return PseudolabelPaths(manifest=root / "data" / "prepared" / "manifest.parquet",
                            out_dir=root / "data" / "pseudolabels", table="pseudolabels.parquet",
                            checkpoint=root / "data" / "models" / "pseudolabel.pt",
                            loss_csv=root / "metrics" / "plots" / "pseudolabel_loss.csv", resume_root=root / "resume")


def test_network_size_maps_are_written_at_the_working_size_aligned(tmp_path, monkeypatch):
    """The network runs at 128x256 on the raw frames; the maps come back at 64x128 with the square
    exactly where the prepared label has it."""
    from semdepth.pseudolabel import run

    manifest_path = prepare_raw(tmp_path)
    stub = RedIsCar()
    monkeypatch.setattr(run, "obtain_model", lambda *a, **k: (stub, None, None))
    m = run.run_pseudolabel(_pl_paths(tmp_path), _cfg(height=128, width=256), seed=0, device=torch.device("cpu"),
                            num_workers=0, tracker=None, raw_dir=tmp_path / "data" / "raw" / "synthcity")
    assert set(stub.seen) == {(128, 256)} and m["network_size"] == [128, 256]
    manifest = pd.read_parquet(manifest_path)
    prepared, out = tmp_path / "data" / "prepared", tmp_path / "data" / "pseudolabels"
    table = pd.read_parquet(out / "pseudolabels.parquet")
    square = np.zeros((H, W), bool)
    square[SQ_ROWS.start // 4:SQ_ROWS.stop // 4, SQ_COLS.start // 4:SQ_COLS.stop // 4] = True
    for r in table.itertuples():
        t, c, f = (read_label_u8(out / getattr(r, k)) for k in ("trainid", "confidence", "foreground"))
        assert t.shape == c.shape == f.shape == (H, W)
        np.testing.assert_array_equal(t, np.where(square, CAR, ROAD))
        np.testing.assert_array_equal(f, square.astype(np.uint8))
        assert c.min() >= 250  # a confident stub: logit margin 8 over 18 others
        gt = read_label_u8(prepared / manifest.set_index("id").loc[r.id, "label"])
        np.testing.assert_array_equal(t, gt)  # aligned with the prepared frames' own label
    for sp in ("val", "train"):
        assert m[sp]["miou"] == 1.0 and m[sp]["foreground_iou"] == 1.0 and m[sp]["road_iou"] == 1.0
        base = m["baseline"][sp]
        assert base["road_iou"] == 1.0 and base["class_iou"]["car"] == 1.0  # the layout never moves
        assert m["vs_baseline"][sp] == {"miou": 0.0, "foreground_iou": 0.0, "road_iou": 0.0}


def test_working_size_reads_prepared_frames_only(tmp_path, monkeypatch):
    """0 x 0 (and the working size spelled out) never touch data.raw_dir."""
    from semdepth.pseudolabel import run

    prepare_raw(tmp_path)
    shutil.rmtree(tmp_path / "data" / "raw")
    for hw in ((0, 0), (H, W)):
        stub = RedIsCar()
        monkeypatch.setattr(run, "obtain_model", lambda *a, **k: (stub, None, None))
        m = run.run_pseudolabel(_pl_paths(tmp_path), _cfg(height=hw[0], width=hw[1]), seed=0,
                                device=torch.device("cpu"), num_workers=0, tracker=None, raw_dir="missing/raw")
        assert set(stub.seen) == {(H, W)} and m["val"]["miou"] == 1.0


def test_stage_refuses_a_network_size_the_raw_data_cannot_provide(tmp_path, monkeypatch):
    from semdepth.config import ConfigError

    prepare_raw(tmp_path)
    cases = [((512, 1024), "is larger than the raw frame"), ((32, 64), "is below the working resolution")]
    for (h, w), text in cases:
        with pytest.raises(SemdepthError) as e:
            _run_stage(tmp_path, monkeypatch, height=h, width=w)
        msg = str(e.value)
        assert "pseudolabel.height" in msg and text in msg and "\n" not in msg, msg
    shutil.rmtree(tmp_path / "data" / "raw")
    with pytest.raises(SemdepthError, match=r"pseudolabel.height/width: 128x256 reads the raw frames.*data.raw_dir"):
        _run_stage(tmp_path, monkeypatch, height=128, width=256)
    assert not (tmp_path / "data" / "pseudolabels").exists() and not (tmp_path / "data" / "models").exists()
    for overrides, text in (({"height": 100, "width": 192}, "pseudolabel.height: 100 is not a multiple of 16"),
                            ({"height": 128, "width": 0}, "pseudolabel.height: 128x0: set both"),
                            ({"output_stride": 4}, "pseudolabel.output_stride")):
        with pytest.raises(ConfigError, match=text):
            from semdepth.config import load_params
            load_params(_params(tmp_path, **overrides))


def test_stage_trains_and_infers_at_the_network_size(tmp_path, monkeypatch):
    """The real stage at 128x256 (2 steps, balanced loss): maps at the working size, declared size logged."""
    prepare_raw(tmp_path)
    _run_stage(tmp_path, monkeypatch, height=128, width=256, steps=2, loss="balanced")
    m = yaml.safe_load((tmp_path / "metrics" / "pseudolabel.json").read_text())
    assert m["network_size"] == [128, 256] and m["output_stride"] == 16 and m["training"]["steps"] == 2
    table = pd.read_parquet(tmp_path / "data" / "pseudolabels" / "pseudolabels.parquet")
    assert read_label_u8(tmp_path / "data" / "pseudolabels" / table.trainid.iloc[0]).shape == (H, W)


def test_output_stride_8_and_16():
    x = torch.rand(1, 3, H, W)
    for name, default in (("deeplabv3_resnet18", 16), ("deeplabv3_resnet50", 8)):
        sizes = {}
        for os_ in (0, 8, 16):
            torch.manual_seed(0)
            m = DeepLab(name, output_stride=os_).eval()
            with torch.no_grad():
                sizes[os_] = tuple(m.net.backbone(x)["out"].shape[-2:])
                assert m(x).shape == (1, 19, H, W)
            assert m.output_stride == (os_ or default)
        assert sizes[8] == (H // 8, W // 8) and sizes[16] == (H // 16, W // 16) and sizes[0] == sizes[default]
    torch.manual_seed(0)
    a = DeepLab("deeplabv3_resnet18", output_stride=8).net.state_dict()
    torch.manual_seed(0)
    b = DeepLab("deeplabv3_resnet18").net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # checkpoints load at either stride
    with pytest.raises(SemdepthError, match="pseudolabel.output_stride: deeplabv3_mobilenet_v3_large has output "
                                            "stride 16 only"):
        DeepLab("deeplabv3_mobilenet_v3_large", output_stride=8)


def test_balanced_and_ohem_losses_by_hand():
    from semdepth.pseudolabel.loss import enet_weights, label_histogram, make_loss, ohem_cross_entropy

    hist = label_histogram([np.array([[0, 0], [0, 1]], np.uint8), np.array([[255, 1, 40]], np.uint8)])
    assert hist.tolist() == [3, 2] + [0] * 17  # 255 and ids >= 19 are not counted
    w = enet_weights(hist)
    assert w[0].item() == pytest.approx(1 / math.log(1.02 + 0.6))
    assert w[1].item() == pytest.approx(1 / math.log(1.02 + 0.4))
    assert w[2:].abs().sum() == 0
    # four pixels, target class logit a (others 0): CE = log(18 + e^a) - a
    a = torch.tensor([2.0, 0.0, -1.0, 5.0])
    target = torch.tensor([[[0, 0, 1, 255]]])
    logits = torch.zeros(1, 19, 1, 4)
    for i, (t, v) in enumerate(zip(target.flatten().tolist(), a.tolist())):
        logits[0, t if t != 255 else 0, 0, i] = v
    ce = [math.log(18 + math.exp(v)) - v for v in a.tolist()[:3]]
    assert make_loss("ce")(logits, target).item() == pytest.approx(sum(ce) / 3, rel=1e-5)
    w0, w1 = w[0].item(), w[1].item()
    expect = (w0 * ce[0] + w0 * ce[1] + w1 * ce[2]) / (2 * w0 + w1)
    assert make_loss("balanced", weights=w)(logits, target).item() == pytest.approx(expect, rel=1e-5)
    # ohem keeps ceil(keep * 3) of the 3 labelled pixels, the hardest ones (largest CE): the ignored
    # pixel's huge logit never counts
    hardest = sorted(ce, reverse=True)
    assert ohem_cross_entropy(logits, target, 0.5).item() == pytest.approx(sum(hardest[:2]) / 2, rel=1e-5)
    assert ohem_cross_entropy(logits, target, 0.01).item() == pytest.approx(hardest[0], rel=1e-5)
    assert make_loss("ohem", ohem_keep=1.0)(logits, target).item() == pytest.approx(sum(ce) / 3, rel=1e-5)
    assert ohem_cross_entropy(logits, torch.full_like(target, 255), 0.5).item() == 0.0
