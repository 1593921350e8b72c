"""evaluate and predict: segmentation scores agree with cityscapesscripts, every declared output is
written, predict handles files, folders and unreadable images (docs/method.md §8)."""
from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import seg_workdir
from semdepth import SemdepthError
from semdepth.data.labels import LABEL_TO_TRAIN, NUM_CLASSES, TRAIN_NAMES
from semdepth.metrics.segmentation import ConfusionMatrix

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Agreement with the official evaluator
# ---------------------------------------------------------------------------------------------
def test_miou_equals_cityscapesscripts_on_random_predictions(tmp_path):
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs
    from cityscapesscripts.helpers.labels import labels as cs_labels, trainId2label

    rng = np.random.default_rng(0)
    label_ids = np.array([lab.id for lab in cs_labels if lab.id >= 0], dtype=np.uint8)
    args = copy.copy(cs.args)
    args.evalInstLevelScore, args.evalPixelAccuracy, args.quiet, args.JSONOutput = False, False, True, False
    conf = cs.generateMatrix(args)
    ours = ConfusionMatrix(NUM_CLASSES)
    present_classes = rng.choice(NUM_CLASSES, size=12, replace=False)  # some classes absent from GT
    for k in range(3):
        gt_train = rng.choice(present_classes, size=(24, 40))
        gt = np.array([trainId2label[t].id for t in range(NUM_CLASSES)], np.uint8)[gt_train]
        void = rng.random(gt.shape) < 0.15  # void label ids: ignored by both
        gt[void] = rng.choice(label_ids[LABEL_TO_TRAIN[label_ids] == 255], size=int(void.sum()))
        pred_train = np.where(rng.random(gt.shape) < 0.5, gt_train, rng.integers(0, NUM_CLASSES, gt.shape))
        pred = np.array([trainId2label[t].id for t in range(NUM_CLASSES)], np.uint8)[pred_train]
        cv2.imwrite(str(tmp_path / f"gt{k}_gtFine_labelIds.png"), gt)
        cv2.imwrite(str(tmp_path / f"pred{k}.png"), pred)
        cs.evaluatePair(str(tmp_path / f"pred{k}.png"), str(tmp_path / f"gt{k}_gtFine_labelIds.png"), conf, {}, {},
                        args)
        ours.update(torch.from_numpy(pred_train), torch.from_numpy(LABEL_TO_TRAIN[gt]))
    cs_iou = {trainId2label[t].name: cs.getIouScoreForLabel(trainId2label[t].id, conf, args) for t in range(NUM_CLASSES)}
    cs_miou = cs.getScoreAverage({n: cs.getIouScoreForLabel(i, conf, args) for i in args.evalLabels
                                  for n in [cs.id2label[i].name]}, args)
    assert ours.miou("union") == pytest.approx(cs_miou, abs=1e-12)
    ious = ours.iou()
    for t, name in enumerate(TRAIN_NAMES):
        if np.isnan(cs_iou[name]):
            assert np.isnan(ious[t])
        else:
            assert ious[t] == pytest.approx(cs_iou[name], abs=1e-12)
    # "over classes present in the GT": the official per-class IoUs averaged over GT classes only
    in_gt = [TRAIN_NAMES[c] for c in sorted(present_classes)]
    assert ours.miou("gt") == pytest.approx(np.mean([cs_iou[n] for n in in_gt]), abs=1e-12)
    assert ours.miou("gt") != pytest.approx(ours.miou("union"))  # random predictions hit absent classes


def test_confusion_sample_keeps_proportions_and_bound():
    from semdepth.evaluation import confusion_sample_rows

    names = ["a", "b", "c"]
    m = np.array([[50_000, 10_000, 0], [1_993, 30_000, 7], [0, 0, 8_000]])  # 100k pixels
    rows = confusion_sample_rows(m, names, max_rows=20_000)
    assert len(rows) == 20_000 and rows == confusion_sample_rows(m, names, max_rows=20_000)
    df = pd.DataFrame(rows)
    counts = df.groupby(["actual", "predicted"]).size()
    assert counts[("a", "a")] == 10_000 and counts[("b", "b")] == 6_000 and counts[("c", "c")] == 1_600
    assert counts[("b", "a")] == 399 and counts[("b", "c")] == 1  # 398.6 and 1.4: largest remainder
    assert ("a", "c") not in counts.index
    small = np.array([[3, 1], [0, 2]])
    assert len(confusion_sample_rows(small, ["x", "y"])) == 6


# ---------------------------------------------------------------------------------------------
# Stage outputs
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Tiny project with a 2-step multi-task segmenter."""
    from stages import finetune

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    work = seg_workdir.build(tmp_path_factory.mktemp("evalwork"))
    seg_workdir.write_params(work, steps=2)
    with contextlib.chdir(work):
        finetune.main("params.yaml")
    torch.set_num_threads(n)
    return work


def _declared_outputs(stage_name: str) -> list[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage_name]
    out = []
    for kind in ("outs", "metrics", "plots"):
        for item in spec.get(kind, []):
            out.append(next(iter(item)) if isinstance(item, dict) else item)
    return out


def test_evaluate_writes_every_declared_output(trained):
    from stages import evaluate

    with contextlib.chdir(trained):
        evaluate.main("params.yaml")
    declared = _declared_outputs("evaluate")
    assert declared, "dvc.yaml has no outputs for evaluate"
    for rel in declared:
        assert (trained / rel).exists(), rel
    figs = {p.name for p in (trained / "metrics/figures/eval").glob("*.png")}
    assert {"samples.png", "class_iou.png", "confusion.png"} <= figs
    m = json.loads((trained / "metrics/eval.json").read_text())
    seg = m["segmentation"]
    assert 0 <= seg["miou"] <= 1 and seg["n_images"] == 2 and set(seg["classes_in_gt"]) == {"road", "building",
                                                                                           "sky", "car"}
    assert set(m["depth"]) == {"stage1", "stage2", "segmenter"}
    for d in m["depth"].values():
        assert {"abs_rel", "class_abs_rel", "moving_abs_rel", "edge_abs_rel"} <= set(d)
    iou = pd.read_csv(trained / "metrics/plots/eval_class_iou.csv")
    assert list(iou.columns) == ["class", "iou"] and set(iou["class"]) == set(seg["classes_in_gt"])
    conf = pd.read_csv(trained / "metrics/plots/eval_confusion.csv")
    assert list(conf.columns) == ["actual", "predicted"] and len(conf) == seg["pixels"]  # 2 tiny frames < 20k
    depth = pd.read_csv(trained / "metrics/plots/eval_class_depth.csv")
    assert list(depth.columns) == ["class", "abs_rel", "stage"] and set(depth["stage"]) == {"stage1", "stage2"}
    # the matrix behind the CSV is the one behind the mIoU
    cm = pd.crosstab(conf["actual"], conf["predicted"])
    diag = sum(cm.at[c, c] for c in cm.index if c in cm.columns)
    assert diag / len(conf) == pytest.approx(seg["pixel_accuracy"])


def test_evaluate_without_segmenter_is_a_one_line_error(trained, tmp_path):
    import shutil

    from stages import evaluate

    work = tmp_path / "w"
    shutil.copytree(trained, work, ignore=shutil.ignore_patterns("segmenter.pt", "eval.json"))
    with contextlib.chdir(work), pytest.raises(SemdepthError, match="segmenter.pt"):
        evaluate.main("params.yaml")
    assert not (work / "metrics/eval.json").exists()


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------
def test_predict_files_folders_and_raw(trained, tmp_path):
    from stages import predict

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 255, (50, 90, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "b.jpg"), rng.integers(0, 255, (120, 200, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image, skipped in folders")
    out = tmp_path / "out"
    with contextlib.chdir(trained):
        predict.main([folder], out, raw=True, params_path="params.yaml")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_depth.npy", "a_depth.png", "a_seg.npy", "a_seg.png",
                     "b_depth.npy", "b_depth.png", "b_seg.npy", "b_seg.png"]
    seg = np.load(out / "b_seg.npy")
    depth = np.load(out / "b_depth.npy")
    assert seg.shape == (120, 200) and seg.dtype == np.uint8 and seg.max() < NUM_CLASSES
    assert depth.shape == (120, 200) and depth.dtype == np.float32 and (depth > 0).all()
    assert cv2.imread(str(out / "a_seg.png")).shape == (50, 90, 3)


def test_predict_unreadable_image_names_it_and_writes_nothing(trained, tmp_path):
    from stages import predict

    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((40, 40, 3), np.uint8))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    out = tmp_path / "out"
    with contextlib.chdir(trained):
        with pytest.raises(SemdepthError, match="broken.jpg") as e:
            predict.main([good, bad], out, raw=False, params_path="params.yaml")
        assert "\n" not in str(e.value)
        with pytest.raises(SemdepthError, match="missing.png"):
            predict.main([tmp_path / "missing.png"], out, raw=False, params_path="params.yaml")
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------------------------
# Guided depth networks downstream
# ---------------------------------------------------------------------------------------------
def test_seem_guided_sde_runs_through_evaluate_and_predict(trained, tmp_path):
    """SEEM reads pseudo-labels only while training (`.needs`); downstream stages must accept it."""
    import shutil

    from semdepth.models.sde import build_depth_net, build_pose_net, load_sde, save_sde
    from stages import evaluate, predict

    work = tmp_path / "w"
    shutil.copytree(trained, work, ignore=shutil.ignore_patterns("eval.json"))
    sde_cfg = dict(load_sde(work / "data/models/sde_stage1.pt")[2], guidance="seem", seem_points=50)
    for name in ("sde_stage1.pt", "sde_stage2.pt"):
        net = build_depth_net(sde_cfg)
        assert net.needs  # the premise: it reads foreground while training
        save_sde(work / "data/models" / name, net, build_pose_net(sde_cfg), sde_cfg, {})
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((40, 60, 3), np.uint8))
    with contextlib.chdir(work):
        evaluate.main("params.yaml")
        predict.main([img], tmp_path / "out", raw=True, params_path="params.yaml")
    m = json.loads((work / "metrics/eval.json").read_text())
    assert m["depth"]["stage2"]["abs_rel"] > 0
    assert np.load(tmp_path / "out" / "x_depth.npy").shape == (40, 60)
