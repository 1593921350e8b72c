"""MLflow tracking under parallel writers: processes racing on a fresh SQLite store all get their run
in, and a run the store keeps refusing is spooled and replayed by the next tracked stage."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import pytest

from semdepth import tracking
from semdepth.tracking import SPOOL_DIR, default_tracking_uri, sqlite_path, stage_run

pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*")  # sqlalchemy deprecation inside mlflow


def _repo(tmp_path: Path) -> Path:
    """A directory main_repo_root() stops at, so the default store and the spool land in it."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    return root


def _runs(root: Path, stage: str | None = None) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=default_tracking_uri(root))
    exp = client.get_experiment_by_name("semdepth")
    filt = f"tags.`semdepth.stage` = '{stage}'" if stage else ""
    return client.search_runs([exp.experiment_id], filt, max_results=1000) if exp else []


def _log_one_run(root: str, i: int, barrier) -> None:
    """A worker process: imports first (slow), then all open the fresh store at the same moment."""
    os.chdir(root)
    os.environ.update(SEMDEPTH_TRACKING="1", DVC_EXP_NAME=f"exp{i}", MLFLOW_DISABLE_TELEMETRY="true")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import mlflow  # noqa: F401

    from semdepth.tracking import stage_run as run

    barrier.wait(timeout=120)
    with run("racer", {"worker": i}) as t:
        t.log_metrics({"m": float(i)}, step=1)


def test_processes_racing_on_a_fresh_store_all_log(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    n = 2
    ctx = mp.get_context("spawn")  # fresh interpreters, like queue workers
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_log_one_run, args=(str(root), i, barrier)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * n
    runs = _runs(root, "racer")
    assert sorted(r.data.tags["DVC_EXP_NAME"] for r in runs) == [f"exp{i}" for i in range(n)]
    assert all(r.info.status == "FINISHED" and r.data.metrics["m"] == float(r.data.params["worker"])
               for r in runs)
    assert not (root / SPOOL_DIR).exists()  # every run went straight in, none via the spool
    with sqlite3.connect(root / "mlflow.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_refused_run_is_spooled_then_replayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    import sqlalchemy.exc
    from mlflow.tracking import MlflowClient

    root = _repo(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setenv("SEMDEPTH_TRACKING", "1")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-spool")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "RETRY_BASE_S", 0.001)
    tries = []

    def locked(self, *args, **kwargs):
        tries.append(1)
        raise sqlalchemy.exc.OperationalError("INSERT INTO params", {}, sqlite3.OperationalError("database is locked"))

    real_log_batch = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", locked)
    art = root / "metrics" / "spooled.json"
    art.parent.mkdir()
    art.write_text('{"loss": 0.25}')
    with caplog.at_level(logging.INFO, logger="semdepth.tracking"):
        with stage_run("spooled", {"a": 1, "b": [1, 2]}) as t:
            t.log_metrics({"loss": 0.5}, step=1)
            t.log_metrics({"loss": 0.25}, step=2)
            t.log_artifact(art)
    assert len(tries) == tracking.RETRY_ATTEMPTS  # the params batch was retried, then the run went offline
    warned = [r.getMessage() for r in caplog.records if r.name == "semdepth.tracking" and r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "database is locked" in warned[0] and SPOOL_DIR in warned[0], warned
    spooled = list((root / SPOOL_DIR).glob("*.json"))
    assert len(spooled) == 1
    data = json.loads(spooled[0].read_text())
    assert data["params"] == {"a": "1", "b": "[1, 2]"} and [m[3] for m in data["metrics"]] == [1, 2]
    assert data["tags"]["DVC_EXP_NAME"] == "exp-spool" and data["status"] == "FINISHED"

    monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)
    art.unlink()  # the replay must use the spool's copy: a queued experiment's files are gone by then
    with stage_run("next", {"c": 3}):
        pass
    assert not any((root / SPOOL_DIR).iterdir())
    runs = _runs(root, "spooled")
    assert len(runs) == 1  # the partial run the refused stage left behind was replaced
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1", "b": "[1, 2]"}
    assert run.data.tags["DVC_EXP_NAME"] == "exp-spool" and run.data.tags["DVC_STAGE"] == "spooled"
    client = MlflowClient(tracking_uri=default_tracking_uri(root))
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(1, 0.5), (2, 0.25)]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["spooled.json"]
    assert len(_runs(root, "next")) == 1


def test_sqlite_path_and_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    assert sqlite_path(f"sqlite:///{db}") == db and sqlite_path(f"sqlite:///{db}?timeout=5") == db
    assert sqlite_path("http://host:5000") is None and sqlite_path("sqlite://") is None
    assert tracking._connect_uri(f"sqlite:///{db}") == f"sqlite:///{db}?timeout={tracking.SQLITE_TIMEOUT_S}"
    assert tracking._connect_uri(f"sqlite:///{db}?timeout=5") == f"sqlite:///{db}?timeout=5"
    assert tracking._connect_uri("http://host:5000") == "http://host:5000"
