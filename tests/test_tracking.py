"""MLflow tracking: a real stage's run is findable with its params, metrics and tags; a dead server
does not break the stage; the default store survives DVC's temporary experiment copies."""
from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Tree
from semdepth.tracking import default_tracking_uri, main_repo_root

pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*")  # sqlalchemy deprecation inside mlflow


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_stage_run_is_tracked(stage_dir: Path, cityscapes_tree: Tree, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("SEMDEPTH_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-tracking-test")
    monkeypatch.setenv("SEMDEPTH_PIPELINE_ID", "repro-42")
    monkeypatch.delenv("DVC_STAGE", raising=False)
    _git(stage_dir, "init", "-q")
    _git(stage_dir, "add", "params.yaml")
    _git(stage_dir, "commit", "-q", "-m", "params")
    commit = _git(stage_dir, "rev-parse", "HEAD")

    from stages import downsample

    downsample.main("params.yaml")
    metrics = json.loads((stage_dir / "metrics" / "downsample.json").read_text())

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("semdepth")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`semdepth.stage` = 'downsample'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "downsample"
    tags = run.data.tags
    assert tags["DVC_STAGE"] == "downsample" and tags["git_commit"] == commit
    assert tags["DVC_EXP_NAME"] == "exp-tracking-test" and tags["semdepth.pipeline_id"] == "repro-42"
    params = run.data.params
    assert params["data.height"] == "64" and params["data.width"] == "128" and params.get("seed", "0") == "0"
    assert params["data.raw_dir"] == str(cityscapes_tree.root)
    assert params["data.frame_offsets"] == "[-2, -1, 0, 1, 2]"
    assert not any(k.startswith(("sde.", "finetune.")) for k in params)  # only the groups the stage reads
    m = run.data.metrics
    assert m["frames_total"] == metrics["frames_total"] == 21
    assert m["frames.train"] == 15 and m["snippets_skipped"] == 2
    assert m["frames_per_s"] == pytest.approx(metrics["frames_per_s"])
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["downsample.json"]


def test_unreachable_server_warns_and_completes(stage_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SEMDEPTH_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: connection refused
    from stages import downsample

    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="semdepth.tracking"):
        downsample.main("params.yaml")
    assert time.perf_counter() - t0 < 60  # no minutes of HTTP retries
    warnings = [r.getMessage() for r in caplog.records if r.name == "semdepth.tracking"]
    assert len(warnings) == 1 and "127.0.0.1:9" in warnings[0] and "continuing without it" in warnings[0]
    assert (stage_dir / "data" / "prepared" / "manifest.parquet").is_file()
    assert json.loads((stage_dir / "metrics" / "downsample.json").read_text())["frames_total"] == 21


def test_main_repo_root(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".dvc" / "tmp" / "exps" / "x" / "sub").mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / "stages").mkdir()
    assert main_repo_root(repo / ".dvc" / "tmp" / "exps" / "x") == repo.resolve()
    assert main_repo_root(repo / ".dvc" / "tmp" / "exps" / "x" / "sub") == repo.resolve()
    assert main_repo_root(repo / "stages") == repo.resolve()
    assert default_tracking_uri(repo / ".dvc" / "tmp" / "exps" / "x") == f"sqlite:///{repo.resolve() / 'mlflow.db'}"
