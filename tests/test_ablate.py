"""The ablation queue commands and the `dvc exp show --json` -> markdown report (pure parts)."""
from __future__ import annotations

import pytest

from semdepth import SemdepthError
from stages.ablate import ABLATIONS, exp_run_args, queue_ablations, table_from_exp_show, to_markdown


def _record(rev: str, name: str | None, miou: float, mix: str) -> dict:
    return {"rev": rev, "name": name, "data": {
        "rev": rev, "name": name,
        "params": {"params.yaml": {"data": {"finetune": {"init": "sde", "multitask": True, "mix": mix},
                                            "select": {"method": "ds_us"}, "sde": {"guidance": "none"}}}},
        "metrics": {"metrics/eval.json": {"data": {
            "miou": miou, "segmentation": {"pixel_accuracy": 0.8},
            "depth": {"stage1": {"abs_rel": 0.2, "edge_abs_rel": 0.3},
                      "stage2": {"abs_rel": 0.19, "moving_abs_rel": 0.4, "class_abs_rel": {"car": 0.25}}}}}}}}


def test_exp_run_args_format_overrides() -> None:
    args = exp_run_args("scratch", ABLATIONS["scratch"])
    assert args[:6] == ["dvc", "exp", "run", "--queue", "-n", "scratch"] and "--force" not in args
    assert "finetune.multitask=false" in args and "finetune.init=source" in args and "finetune.mix=none" in args


def test_report_rows_from_dvc3_exp_show_layout() -> None:
    records = [{**_record("workspace", None, 0.31, "depthmix"), "experiments": None},
               {**_record("abc1234def", "main", 0.30, "depthmix"),
                "experiments": [{"revs": [_record("fff0001", "classmix", 0.27, "classmix")]}]}]
    rows = table_from_exp_show(records)
    assert [r["experiment"] for r in rows] == ["workspace", "main", "classmix"]
    assert rows[2]["mIoU"] == 0.27 and rows[2]["mix"] == "classmix" and rows[2]["AbsRel car s2"] == 0.25
    md = to_markdown(rows)
    assert md.splitlines()[0].startswith("| experiment | mIoU |") and "| classmix | 0.2700 |" in md


def test_unknown_ablation_is_rejected() -> None:
    with pytest.raises(SemdepthError, match="unknown ablation"):
        queue_ablations(["nonsense"], run=False, jobs=1)
