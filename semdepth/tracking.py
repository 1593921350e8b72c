"""MLflow tracking that never breaks a stage, and never loses a run.

Why the default store is resolved by hand: MLflow's default `sqlite:///<cwd>/mlflow.db` lives in the
working directory, and `dvc exp run --temp` / queued experiments run in a temporary copy under
`<repo>/.dvc/tmp/exps/` that is deleted afterwards, taking their runs with it. We therefore point at
`<main repo>/mlflow.db` (and `<main repo>/mlruns` for artifacts) unless MLFLOW_TRACKING_URI is set.

Runs are tagged with the git commit, DVC_STAGE and DVC_EXP_NAME, and with a pipeline id shared by
all stages of one `dvc repro` (SEMDEPTH_PIPELINE_ID if set, else the pid of the `dvc` process that
launched the stage), so the stages of one reproduction can be found together.

Why the SQLite store is handled with care: queue workers (`dvc queue start -j N`) are separate
processes writing one `mlflow.db`. MLflow creates and migrates a fresh SQLite store without any lock,
so two workers starting on a fresh store break each other's migration. Every process therefore opens
the store under an exclusive file lock next to the database (`<db>.lock`), switches it to WAL (readers
no longer block the writer), connects with a busy timeout, and retries calls that still meet a locked
database with exponential backoff. A run the store refuses even then is kept in
`<main repo>/.mlflow-spool/` (params, metrics with steps, tags, copies of the artifacts) and replayed
into the store by the next tracked stage, so a run is never lost silently.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from semdepth.runtime import get_logger

log = get_logger("semdepth.tracking")

T = TypeVar("T")

SPOOL_DIR = ".mlflow-spool"
RETRY_ATTEMPTS = 6  # 5 backoff sleeps: ~0.25 + 0.5 + 1 + 2 + 4 s, on top of the busy timeout per try
RETRY_BASE_S = 0.25
SQLITE_TIMEOUT_S = 30  # how long one SQLite statement waits for another writer's lock
LOCK_TIMEOUT_S = 300.0  # creating or migrating a store takes seconds; this only catches a hung holder
RECORD_TAG = "semdepth.record_id"  # one id per stage execution, shared by its spooled copy
_TRANSIENT_MARKERS = ("database is locked", "database table is locked", "database schema has changed",
                      "online migration expected", "out-of-date database schema",
                      "unique constraint failed: experiments.name")


def main_repo_root(start: str | Path | None = None) -> Path:
    """The user's main repository, even from inside a DVC temporary experiment copy."""
    p = Path(start or os.getcwd()).resolve()
    parts = p.parts
    if ".dvc" in parts:  # <repo>/.dvc/tmp/exps/<tmpdir>/...
        return Path(*parts[: parts.index(".dvc")])
    for cand in (p, *p.parents):
        if (cand / ".dvc").is_dir() or (cand / ".git").exists():
            return cand
    return p


def default_tracking_uri(start: str | Path | None = None) -> str:
    return f"sqlite:///{main_repo_root(start) / 'mlflow.db'}"


def tracking_uri() -> str:
    """The store a stage started here logs to: MLFLOW_TRACKING_URI, else the main repo's mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file behind a `sqlite:///` URI; None for servers, file stores and in-memory SQLite."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()


def _connect_uri(uri: str) -> str:
    """`uri` with a SQLite busy timeout, which SQLAlchemy passes to sqlite3.connect.

    MLflow sets `PRAGMA busy_timeout` only inside its sessions; store creation, schema checks and
    migrations use plain engine connections, which would otherwise give up after sqlite3's 5 s.
    """
    if sqlite_path(uri) is None or "timeout=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}timeout={SQLITE_TIMEOUT_S}"


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _dvc_ancestor_pid() -> str | None:
    """Pid of the nearest ancestor process running dvc (Linux /proc), shared by one repro."""
    pid = os.getppid()
    for _ in range(8):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        if any(Path(a).name == "dvc" for a in argv[:3]):
            return str(pid)
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            return None
    return None


def _unreachable(uri: str, timeout: float = 3.0) -> str | None:
    """Why an http(s) tracking server cannot be reached (None if it can, or the URI is not http).

    MLflow's client retries a dead server with exponential backoff for minutes (measured: 4 min for
    one stage on http://127.0.0.1:9); a short TCP probe lets the stage warn and go on at once.
    """
    import socket
    from urllib.parse import urlparse

    u = urlparse(uri)
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname, port), timeout=timeout):
            return None
    except OSError as e:
        return f"tracking server {u.hostname}:{port} is unreachable ({e.strerror or e})"


def pipeline_id() -> str | None:
    return os.environ.get("SEMDEPTH_PIPELINE_ID") or _dvc_ancestor_pid()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


# ---------------------------------------------------------------- concurrency: lock, WAL, retries


@contextmanager
def store_lock(uri: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive inter-process lock on `<db>.lock` for a SQLite store (a no-op for other stores).

    Held while a process opens the store (which creates and migrates a fresh database) and creates an
    experiment, the two steps that break when two workers do them at the same moment.
    """
    db = sqlite_path(uri)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, the retries still apply
        db = None
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{db}.lock was held for over {timeout:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _use_wal(db: Path) -> None:
    """Put the database in WAL mode (persistent), so readers and the one writer do not block each other.

    Best effort: switching needs a moment without other connections, and SEMDEPTH_SQLITE_WAL=0 keeps
    the rollback journal for stores on network filesystems, where WAL's shared memory does not work.
    """
    import sqlite3

    if os.environ.get("SEMDEPTH_SQLITE_WAL", "1") == "0":
        return
    try:
        con = sqlite3.connect(db, timeout=SQLITE_TIMEOUT_S)
        try:
            if str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
    except sqlite3.Error as e:
        log.debug("could not switch %s to WAL: %s", db, e)


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def is_transient(e: BaseException) -> bool:
    """Whether retrying may help: a locked database, a store another process is migrating, a lost race
    to create the experiment (sqlalchemy/sqlite OperationalError, or MLflow's wrapper of it)."""
    for cur in _chain(e):
        if type(cur).__name__ == "OperationalError":
            return True
        if getattr(cur, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True
        if any(m in str(cur).lower() for m in _TRANSIENT_MARKERS):
            return True
    return False


def with_retry(fn: Callable[[], T], what: str = "MLflow call") -> T:
    """`fn()`, retried with jittered exponential backoff while it fails transiently."""
    attempts = max(1, RETRY_ATTEMPTS)
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if i == attempts - 1 or not is_transient(e):
                raise
            delay = RETRY_BASE_S * 2 ** i * (1 + random.random() / 2)
            log.debug("%s failed transiently (%s), retry %d/%d in %.2f s", what, _first_line(e), i + 1,
                      attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class _DropDbErrorTracebacks(logging.Filter):
    """MLflow logs a full traceback for every OperationalError before raising it; we retry those and
    report a final failure in one line, so the tracebacks would only bury the stage's own log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SQLAlchemy database error")


def _mlflow_env_defaults() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # A server that dies mid-stage must not stall it for minutes of retries either.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    db_log = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropDbErrorTracebacks) for f in db_log.filters):
        db_log.addFilter(_DropDbErrorTracebacks())


def prepare_store(uri: str | None = None) -> Any:
    """An MlflowClient on `uri` (default: `tracking_uri()`) whose store exists and is migrated.

    For SQLite the store is opened under `store_lock`, so whichever process comes first creates and
    migrates the database while the others wait and then find it ready; calling it before starting
    parallel workers (`semdepth ablate --run`) takes that step off their clock altogether.
    """
    uri = uri or tracking_uri()
    _mlflow_env_defaults()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.tracking import MlflowClient

    def once() -> Any:
        with store_lock(uri):
            client = MlflowClient(tracking_uri=_connect_uri(uri))
            client.search_experiments(max_results=1)  # builds the store: creates/migrates a fresh db
            db = sqlite_path(uri)
            if db is not None:
                _use_wal(db)
            return client

    return with_retry(once, f"opening the MLflow store {uri}")


def _experiment_id(client: Any, uri: str, name: str, artifact_location: str | None) -> str:
    """Id of experiment `name`, created if missing (under the store lock: workers race to create it)."""
    def once() -> str:
        with store_lock(uri):
            exp = client.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            return client.create_experiment(name, artifact_location=artifact_location)

    return with_retry(once, f"creating experiment {name}")


# ---------------------------------------------------------------- the run record and the tracker


@dataclass
class RunRecord:
    """Everything one stage execution logged: enough to recreate the run if the store refused it."""

    uri: str
    experiment: str
    artifact_location: str | None
    run_name: str
    tags: dict[str, str]
    start_time: int
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[list] = field(default_factory=list)  # [key, value, timestamp ms, step]
    artifacts: list[list] = field(default_factory=list)  # [path, artifact_path]
    status: str = "RUNNING"
    end_time: int | None = None
    partial_run_id: str | None = None  # what the store got before it failed, replaced on replay


class Tracker:
    """One stage's MLflow run. Every call is recorded and sent to the store with retries; none raises.

    Once the store has refused a call for good the tracker goes offline: later calls only extend the
    record, and at the end the whole run is spooled for the next tracked stage to replay.
    """

    def __init__(self, client: Any | None = None, record: RunRecord | None = None,
                 spool_dir: Path | None = None) -> None:
        self._client = client
        self.record = record
        self.spool_dir = spool_dir
        self.run_id: str | None = None
        self.spool_path: Path | None = None  # set once the run goes to the spool instead of the store

    @property
    def active(self) -> bool:
        """Tracking is on for this stage (logged to the store, or to the spool)."""
        return self.record is not None

    @property
    def online(self) -> bool:
        return self._client is not None and self.run_id is not None

    def attach(self, client: Any, run_id: str) -> None:
        self._client, self.run_id = client, run_id

    def _send(self, fn: str, *args: Any, **kwargs: Any) -> None:
        if not self.online:
            return
        try:
            with_retry(lambda: getattr(self._client, fn)(self.run_id, *args, **kwargs), f"MLflow {fn}")
        except Exception as e:  # noqa: BLE001 - tracking must never break a stage
            self._fail(e)

    def _fail(self, e: BaseException) -> None:
        """Go offline and say so once, naming the spool file the run will be written to."""
        if self.spool_path is not None or self.record is None:
            return
        self.record.partial_run_id = self.run_id
        self.spool_path = (self.spool_dir or main_repo_root() / SPOOL_DIR) / f"{self.record.record_id}.json"
        self._client = None
        log.warning("MLflow tracking failed, continuing without it: %s (the run is kept in %s and replayed "
                    "into the store by the next tracked stage)", _first_line(e), self.spool_path)

    def _batch(self, **kwargs: Any) -> None:
        self._send("log_batch", **kwargs)

    def log_params(self, params: dict[str, Any]) -> None:
        if self.record is None:
            return
        flat = {k: str(v) for k, v in params.items()}
        self.record.params.update(flat)
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flat.items()] if self.online else []
        for i in range(0, len(items), 90):  # MLflow caps params per batch
            self._batch(params=items[i:i + 90])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.record is None:
            return
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        ts, st = _now_ms(), step or 0
        self.record.metrics.extend([k, v, ts, st] for k, v in clean.items())
        if clean and self.online:
            from mlflow.entities import Metric

            items = [Metric(k, v, ts, st) for k, v in clean.items()]
            for i in range(0, len(items), 1000):  # MLflow caps metrics per batch
                self._batch(metrics=items[i:i + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.record is None or not Path(path).exists():
            return
        self.record.artifacts.append([str(Path(path).resolve()), artifact_path])
        self._send("log_artifact", str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.record is None:
            return
        self.record.tags.update({k: str(v) for k, v in tags.items()})
        if self.online:
            from mlflow.entities import RunTag

            self._batch(tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str) -> None:
        """End the run in the store, or write it to the spool if the store refused any part of it."""
        if self.record is None:
            return
        self.record.status, self.record.end_time = status, _now_ms()
        self._send("set_terminated", status, self.record.end_time)
        if self.spool_path is None:
            return
        try:
            spool_run(self.record, self.spool_path.parent)
        except Exception as e:  # noqa: BLE001
            log.error("MLflow run of stage %s could not be spooled either, it is lost: %s", self.record.run_name,
                      _first_line(e))


# ---------------------------------------------------------------- spool and replay


def spool_run(record: RunRecord, spool_dir: Path) -> Path:
    """Write `record` to `<spool_dir>/<record_id>.json` with copies of its artifacts.

    Artifacts are copied now because a queued experiment's working copy is deleted when it ends. The
    json is renamed into place last, so a replaying process never sees a run without its files.
    """
    art_dir = spool_dir / record.record_id
    latest = {(src, ap): None for src, ap in record.artifacts}  # a file logged twice is one artifact
    arts = []
    for i, (src, ap) in enumerate(latest):
        s = Path(src)
        if not s.exists():
            continue
        rel = Path(str(i)) / s.name  # MLflow names an artifact after the file: keep the name
        dest = art_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, dest)
        else:
            shutil.copy2(s, dest)
        arts.append([str(rel), ap])
    spool_dir.mkdir(parents=True, exist_ok=True)
    final = spool_dir / f"{record.record_id}.json"
    tmp = spool_dir / f".{record.record_id}.json.tmp"
    tmp.write_text(json.dumps({**asdict(record), "artifacts": arts}))
    os.replace(tmp, final)
    return final


def _claim(path: Path) -> tuple[Any, dict] | None:
    """Open and exclusively lock one spool file; None if another process holds it or already replayed it."""
    import fcntl

    try:
        fh = open(path)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fh.fileno()).st_nlink == 0:  # replayed and deleted while we waited
            fh.close()
            return None
        return fh, json.load(fh)
    except BlockingIOError:
        fh.close()
        return None
    except Exception:
        fh.close()
        raise


def _replay_one(data: dict, art_dir: Path, client: Any) -> str:
    """Recreate one spooled run in the store; returns its new run id.

    Earlier attempts at the same stage execution (the partial run the failing stage left, or a replay
    that died half-way) are deleted first, so the store ends up with exactly one run for it.
    """
    from mlflow.entities import Metric, Param, RunTag

    exp_id = _experiment_id(client, data["uri"], data["experiment"], data["artifact_location"])
    rid = data["record_id"]
    stale = with_retry(lambda: client.search_runs([exp_id], f"tags.`{RECORD_TAG}` = '{rid}'"), "search_runs")
    for run_id in {data.get("partial_run_id"), *(r.info.run_id for r in stale)} - {None}:
        try:
            with_retry(lambda: client.delete_run(run_id), "delete_run")
        except Exception as e:  # noqa: BLE001 - already gone
            log.debug("could not delete partial run %s: %s", run_id, _first_line(e))
    tags = {**data["tags"], RECORD_TAG: rid, "semdepth.replayed": "true"}
    run_id = with_retry(lambda: client.create_run(exp_id, start_time=data["start_time"], tags=tags,
                                                  run_name=data["run_name"]).info.run_id, "create_run")
    params = [Param(k, v) for k, v in data["params"].items()]
    metrics = [Metric(k, v, ts, st) for k, v, ts, st in data["metrics"]]
    for i in range(0, len(params), 90):
        with_retry(lambda: client.log_batch(run_id, params=params[i:i + 90]), "log_batch")
    for i in range(0, len(metrics), 1000):
        with_retry(lambda: client.log_batch(run_id, metrics=metrics[i:i + 1000]), "log_batch")
    for rel, ap in data["artifacts"]:
        src = art_dir / rel
        if src.is_dir():
            sub = f"{ap}/{src.name}" if ap else src.name
            with_retry(lambda: client.log_artifacts(run_id, str(src), sub), "log_artifacts")
        else:
            with_retry(lambda: client.log_artifact(run_id, str(src), ap), "log_artifact")
    status = data["status"] if data["status"] != "RUNNING" else "FAILED"
    with_retry(lambda: client.set_terminated(run_id, status, data["end_time"]), "set_terminated")
    return run_id


def replay_spool(spool_dir: Path, client: Any, uri: str) -> int:
    """Replay every spooled run that belongs to store `uri`; returns how many went in.

    A replayed run's files are deleted; one that fails stays for the next tracked stage. A transient
    failure ends this pass (the store is not taking writes now); any other skips just that run.
    """
    if not spool_dir.is_dir():
        return 0
    done = 0
    for path in sorted(spool_dir.glob("*.json")):
        claimed = _claim(path)
        if claimed is None:
            continue
        fh, data = claimed
        try:
            if data.get("uri") != uri:
                continue
            run_id = _replay_one(data, spool_dir / data["record_id"], client)
            path.unlink()
            shutil.rmtree(spool_dir / data["record_id"], ignore_errors=True)
            done += 1
            log.info("replayed spooled MLflow run of stage %s (%s) as %s", data["run_name"],
                     data["tags"].get("DVC_EXP_NAME", "workspace"), run_id)
        except Exception as e:  # noqa: BLE001 - tracking must never break a stage
            log.warning("could not replay spooled MLflow run %s yet, kept for the next tracked stage: %s",
                        path.name, _first_line(e))
            if is_transient(e):
                break
        finally:
            fh.close()
    return done


# ---------------------------------------------------------------- stages


def _flat_numeric(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_numeric(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def flat_metrics(d: dict) -> dict[str, float]:
    """Nested metrics JSON -> flat numeric dict suitable for MLflow (names with / or . kept)."""
    return _flat_numeric(d)


def _run_tags(stage: str) -> dict[str, str]:
    """Our tags plus MLflow's context tags (user, source, git), resolved once so a replay keeps them."""
    tags = {"semdepth.stage": stage, "DVC_STAGE": os.environ.get("DVC_STAGE", stage)}
    for env in ("DVC_EXP_NAME", "DVC_ROOT"):
        if os.environ.get(env):
            tags[env] = os.environ[env]
    commit = _git_commit(Path.cwd())
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    pid = pipeline_id()
    if pid:
        tags["semdepth.pipeline_id"] = pid
    parent = os.environ.get("SEMDEPTH_PARENT_RUN_ID")
    if parent:
        tags["mlflow.parentRunId"] = parent
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mlflow.tracking.context import registry as context_registry

            tags = {k: str(v) for k, v in context_registry.resolve_tags(tags).items()}
    except Exception as e:  # noqa: BLE001 - context tags are a nicety
        log.debug("MLflow context tags unavailable: %s", _first_line(e))
    return tags


def _open_run(stage: str, params: dict[str, Any], experiment: str) -> Tracker:
    """Replay any spooled runs, then start this stage's run; on failure the tracker records offline."""
    root = main_repo_root()
    uri = tracking_uri()
    art = None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "mlruns").as_uri()
    tracker = Tracker(None, None, root / SPOOL_DIR)
    try:
        _mlflow_env_defaults()
        tracker.record = RunRecord(uri=uri, experiment=experiment, artifact_location=art, run_name=stage,
                                   tags=_run_tags(stage), start_time=_now_ms())
        why = _unreachable(uri)
        if why:
            raise ConnectionError(why)
        client = prepare_store(uri)
        replay_spool(root / SPOOL_DIR, client, uri)
        exp_id = _experiment_id(client, uri, experiment, art)
        tags = {**tracker.record.tags, RECORD_TAG: tracker.record.record_id}
        run = with_retry(lambda: client.create_run(exp_id, start_time=tracker.record.start_time, tags=tags,
                                                   run_name=stage), "create_run")
        tracker.attach(client, run.info.run_id)
    except Exception as e:  # noqa: BLE001 - tracking must never break a stage
        if tracker.record is None:
            tracker.record = RunRecord(uri=uri, experiment=experiment, artifact_location=art, run_name=stage,
                                       tags={"semdepth.stage": stage}, start_time=_now_ms())
        tracker._fail(e)
    tracker.log_params(params)
    return tracker


@contextmanager
def stage_run(stage: str, params: dict[str, Any], enabled: bool = True, experiment: str = "semdepth") -> Iterator[Tracker]:
    """An MLflow run for one stage execution; yields a Tracker (inactive if tracking is off).

    The tracker never raises: if the store is unreachable or keeps refusing writes, the stage goes on
    and its run is spooled (see the module docstring).
    """
    if not enabled or os.environ.get("SEMDEPTH_TRACKING", "1") == "0":
        yield Tracker(None)
        return
    tracker = _open_run(stage, params, experiment)
    status = "FINISHED"
    try:
        yield tracker
    except BaseException:
        status = "FAILED"
        raise
    finally:
        tracker.finish(status)
