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


def _seeded(name: str, miou: float | None) -> dict:
    rec = _record("f" * 7 + name, name, miou if miou is not None else 0.0, "none")
    if miou is None:  # a failed experiment: dvc lists it with an error and no metrics
        rec["data"]["metrics"] = {}
        rec["error"] = {"type": "ReproductionError", "msg": "failed"}
    return rec


def test_report_summarises_seeds_pairs_them_and_lists_failures(tmp_path) -> None:
    from stages.ablate import summary_markdown

    exps = [_seeded("scratch-s42", 0.30), _seeded("scratch-s43", 0.32), _seeded("scratch-s44", 0.31),
            _seeded("transfer-s42", 0.33), _seeded("transfer-s43", None), _seeded("transfer-s44", 0.35),
            _seeded("oracle-s42", 0.40), _seeded("oracle-s43", 0.40), _seeded("oracle-s44", 0.40)]
    records = [{**_record("abc1234def", "main", 0.2, "depthmix"), "experiments": [{"revs": exps}]},
               # the same name queued from an older commit (`report -n 2`): the newest run counts
               {**_record("0001234def", "old", 0.2, "depthmix"), "experiments": [{"revs": [_seeded("scratch-s42", 0.9)]}]}]
    rows = table_from_exp_show(records)
    md = summary_markdown(rows, "mIoU", None, tmp_path / "ablations.png", tmp_path / "ablations.csv")
    assert "| scratch | 0.3100 ± 0.0100 | 3 | 42,43,44 | (reference) |" in md
    assert "| transfer | 0.3400 ± 0.0141 | 2 | 42,44 | 0.0350 (n=2) |" in md  # paired on seeds 42 and 44
    assert md.rstrip().splitlines()[3].endswith("| 43 |")  # the failed seed is named, not dropped
    assert "| oracle | 0.4000 ± 0.0000 | 3 |" in md and "100.0%" in md and "77.5%" in md
    assert (tmp_path / "ablations.png").exists() and "transfer" in (tmp_path / "ablations.csv").read_text()


def test_report_refuses_an_unknown_reference() -> None:
    from stages.ablate import summary_markdown

    rows = table_from_exp_show([{**_record("abc1234def", "main", 0.2, "none"),
                                 "experiments": [{"revs": [_seeded("transfer-s42", 0.3)]}]}])
    with pytest.raises(SemdepthError, match="--reference"):
        summary_markdown(rows, "mIoU", "scratch")


def test_ablate_seeds_queues_one_experiment_per_seed(monkeypatch) -> None:
    import subprocess

    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    queue_ablations(["transfer", "guidance-pac"], run=False, jobs=1, seeds="42,43")
    queued = [c for c in calls if c[:4] == ["dvc", "exp", "run", "--queue"]]
    assert [c[5] for c in queued] == ["transfer-s42", "transfer-s43", "guidance-pac-s42", "guidance-pac-s43"]
    assert "finetune.seed=43" in queued[1] and "sde.seed=42" in queued[2] and "finetune.seed=42" in queued[2]
    with pytest.raises(SemdepthError, match="--seeds"):
        queue_ablations(["transfer"], run=False, jobs=1, seeds="x")


def test_report_ignores_queued_and_running_experiments_metrics(tmp_path) -> None:
    """dvc exp show lists an unfinished experiment with the workspace's metrics: they must not count."""
    from stages.ablate import summary_markdown

    def node(name: str, miou: float, state: str) -> dict:
        return {"name": name, "executor": {"state": state}, "revs": [_seeded(name, miou)]}

    exps = [node("scratch-s42", 0.30, "success"), node("scratch-s43", 0.32, "success"),
            node("scratch-s44", 0.99, "running"), node("transfer-s42", 0.33, "success"),
            node("transfer-s43", 0.99, "queued"), node("transfer-s44", 0.35, "success")]
    rows = table_from_exp_show([{**_record("abc1234def", "main", 0.2, "depthmix"), "experiments": exps}])
    by_name = {r["experiment"]: r for r in rows}
    assert by_name["scratch-s44"]["mIoU"] is None and by_name["scratch-s44"]["state"] == "running"
    assert by_name["scratch-s42"]["mIoU"] == 0.30 and by_name["scratch-s42"]["state"] == "success"
    md = summary_markdown(rows, "mIoU", "scratch", None, None)
    assert "| scratch | 0.3100 ± 0.0141 | 2 | 42,43 | (reference) |" in md
    assert "| transfer | 0.3400 ± 0.0141 | 2 | 42,44 |" in md and "0.0300 (n=1)" in md
    assert "44 (missing)" in md and "43 (missing)" in md


def test_report_gives_a_share_of_the_oracle_for_segmentation_metrics_only() -> None:
    from stages.ablate import summary_markdown

    exps = [_seeded("scratch-s42", 0.30), _seeded("scratch-s43", 0.32), _seeded("oracle-s42", 0.40),
            _seeded("oracle-s43", 0.40)]
    rows = table_from_exp_show([{**_record("abc1234def", "main", 0.2, "none"), "experiments": [{"revs": exps}]}])
    assert "77.5%" in summary_markdown(rows, "mIoU", None)
    depth = summary_markdown(rows, "AbsRel s1", None)
    oracle_row = next(line for line in depth.splitlines() if line.startswith("| oracle |"))
    assert "100.0%" not in depth and oracle_row.endswith("| – | – |")  # no share column value
