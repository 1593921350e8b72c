"""Depth metrics against hand-computed values on small arrays."""
from __future__ import annotations

import numpy as np
import pytest

from semdepth.metrics.depth import (DepthEvaluator, RowMedianPrior, compute_depth_metrics, edge_band,
                                    valid_mask)


def test_metrics_match_hand_computation_without_scaling():
    gt = np.array([[2.0, 4.0], [8.0, 10.0]])
    pred = np.array([[1.0, 4.0], [10.0, 10.0]])
    m = compute_depth_metrics(pred, gt, np.ones_like(gt, bool), median_scaling=False)
    # |d-d*|/d* = 0.5, 0, 0.25, 0 ; (d-d*)^2/d* = 0.5, 0, 0.5, 0 ; (d-d*)^2 = 1, 0, 4, 0
    assert m["abs_rel"] == pytest.approx(0.75 / 4)
    assert m["sq_rel"] == pytest.approx(1.0 / 4)
    assert m["rmse"] == pytest.approx(np.sqrt(5 / 4))
    assert m["rmse_log"] == pytest.approx(np.sqrt((np.log(2) ** 2 + np.log(1.25) ** 2) / 4))
    # ratios max(d/d*, d*/d) = 2, 1, 1.25, 1 -> δ<1.25: 2 of 4; δ<1.5625: 3; δ<1.953: 3
    assert (m["a1"], m["a2"], m["a3"]) == (0.5, 0.75, 0.75)
    assert m["scale"] == 1.0


def test_median_scaling_and_clamp():
    gt = np.array([[2.0, 4.0, 6.0]])
    m = compute_depth_metrics(gt / 10, gt, np.ones_like(gt, bool))  # right up to scale
    assert m["scale"] == pytest.approx(10.0) and m["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    # after scaling by 1 the prediction 200 is clamped to max 80: |80-60|/60
    m = compute_depth_metrics(np.array([[1.0, 200.0, 3.0]]), np.array([[1.0, 60.0, 3.0]]), np.ones((1, 3), bool),
                              max_depth=80.0)
    assert m["scale"] == pytest.approx(1.0) and m["abs_rel"] == pytest.approx((20 / 60) / 3)


def test_valid_mask_range_and_hood():
    gt = np.array([[0.0, 1e-3, 5.0, 80.0, 81.0]] * 10)
    mask = valid_mask(gt, 1e-3, 80.0, hood_fraction=0.2)
    assert mask[:8].tolist() == [[False, False, True, True, False]] * 8  # (min, max]
    assert not mask[8:].any()  # two hood rows


def test_evaluator_averages_images_and_pools_regions():
    ev = DepthEvaluator(1e-3, 80.0, 0.0, edge_band_px=0, class_names=["a", "b"])
    gt1, gt2 = np.full((2, 2), 10.0), np.full((2, 2), 10.0)
    p1 = np.array([[10.0, 10.0], [10.0, 20.0]])  # median 10 -> scale 1, errors 0,0,0,1
    p2 = np.full((2, 2), 5.0)  # scale 2 -> exact
    labels = np.array([[0, 0], [1, 1]], np.uint8)
    moving = np.array([[0, 0], [0, 255]], np.uint8)
    ev.add(p1, gt1, labels=labels, moving=moving)
    ev.add(p2, gt2, pseudo_labels=np.array([[1, 1], [1, 255]], np.uint8))
    r = ev.result()
    assert r["abs_rel"] == pytest.approx((0.25 + 0.0) / 2)
    assert r["class_abs_rel"] == {"a": 0.0, "b": pytest.approx(1.0 / 5)}  # pooled: 1 error over 5 pixels
    assert r["moving_abs_rel"] == pytest.approx(1.0) and r["static_abs_rel"] == 0.0
    assert r["class_labels"] == "gt+pseudo" and r["n_images"] == 2
    assert ev.add(p1, np.zeros((2, 2))) is None and ev.skipped == 1


def test_edge_band():
    fg = np.zeros((5, 8), bool)
    fg[:, 4:] = True
    assert edge_band(fg, 0)[0].tolist() == [False, False, False, True, True, False, False, False]
    assert edge_band(fg, 1)[0].tolist() == [False, False, True, True, True, True, False, False]
    assert not edge_band(np.zeros((4, 4), bool), 2).any()


def test_edge_band_metric_uses_foreground():
    ev = DepthEvaluator(1e-3, 80.0, 0.0, edge_band_px=0, class_names=["a"])
    fg = np.zeros((1, 4), np.uint8)
    fg[0, 2:] = 1
    gt = np.full((1, 4), 10.0)
    pred = np.array([[10.0, 20.0, 10.0, 10.0]])  # error at column 1 (on the edge)
    ev.add(pred, gt, foreground=fg)
    r = ev.result()
    assert r["edge_abs_rel"] == pytest.approx(0.5) and r["interior_abs_rel"] == 0.0


def test_row_median_prior():
    prior = RowMedianPrior(1e-3, 80.0)
    prior.add(np.array([[50.0, 0.0, 70.0], [0.0, 0.0, 0.0], [5.0, 6.0, 7.0]]))
    prior.add(np.array([[60.0, 60.0, 60.0], [0.0, 0.0, 0.0], [4.0, 4.0, 4.0]]))
    pred = prior.fit().predict()
    assert pred[0].tolist() == [60.0] * 3  # median of 50, 70, 60, 60, 60
    assert pred[2].tolist() == [4.5] * 3  # median of 5,6,7,4,4,4
    assert pred[1].tolist() in ([60.0] * 3, [4.5] * 3)  # empty row: a neighbour's value
