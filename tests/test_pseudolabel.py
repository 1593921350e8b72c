"""pseudolabel stage and its library: DeepLab building/loading, training, inference, scores.

Everything runs on a tiny synthetic prepared dataset built here (64x128 PNGs + manifest), so the
tests depend on no other stage.
"""
from __future__ import annotations

import shutil
from pathlib import Path

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
