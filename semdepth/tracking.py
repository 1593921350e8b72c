"""MLflow tracking that never breaks a stage.

Why the default store is resolved by hand: MLflow's default `sqlite:///<cwd>/mlflow.db` lives in the
working directory, and `dvc exp run --temp` / queued experiments run in a temporary copy under
`<repo>/.dvc/tmp/exps/` that is deleted afterwards, taking their runs with it. We therefore point at
`<main repo>/mlflow.db` (and `<main repo>/mlruns` for artifacts) unless MLFLOW_TRACKING_URI is set.

Runs are tagged with the git commit, DVC_STAGE and DVC_EXP_NAME, and with a pipeline id shared by
all stages of one `dvc repro` (SEMDEPTH_PIPELINE_ID if set, else the pid of the `dvc` process that
launched the stage), so the stages of one reproduction can be found together.
"""
from __future__ import annotations

import os
import subprocess
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from semdepth.runtime import get_logger

log = get_logger("semdepth.tracking")


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


class Tracker:
    """Thin wrapper over an active MLflow run; every call swallows tracking errors (warns once)."""

    def __init__(self, mlflow_mod: Any | None) -> None:
        self._mlflow = mlflow_mod
        self._warned = False
        self.run_id: str | None = None

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def _call(self, fn: str, *args: Any, **kwargs: Any) -> None:
        if self._mlflow is None:
            return
        try:
            getattr(self._mlflow, fn)(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must never break a stage
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        if not self._warned:
            log.warning("MLflow tracking failed, continuing without it: %s", str(e).splitlines()[0][:200])
            self._warned = True
        self._mlflow = None

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k: (str(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()}
        items = list(flat.items())
        for i in range(0, len(items), 90):  # MLflow caps params per batch
            self._call("log_params", dict(items[i:i + 90]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if clean:
            self._call("log_metrics", clean, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._call("log_artifact", str(path), artifact_path=artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("set_tags", tags)


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


@contextmanager
def stage_run(stage: str, params: dict[str, Any], enabled: bool = True, experiment: str = "semdepth") -> Iterator[Tracker]:
    """An MLflow run for one stage execution; yields a Tracker (inactive if tracking is off or broken)."""
    if not enabled or os.environ.get("SEMDEPTH_TRACKING", "1") == "0":
        yield Tracker(None)
        return
    tracker = Tracker(None)
    try:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        # A server that dies mid-stage must not stall it for minutes of retries either.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        why = _unreachable(uri)
        if why:
            raise ConnectionError(why)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mlflow
        root = main_repo_root()
        mlflow.set_tracking_uri(uri)
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            art = None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "mlruns").as_uri()
            exp_id = mlflow.create_experiment(experiment, artifact_location=art)
        else:
            exp_id = exp.experiment_id
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
        run = mlflow.start_run(experiment_id=exp_id, run_name=stage, tags=tags,
                               parent_run_id=parent, nested=bool(parent))
        tracker = Tracker(mlflow)
        tracker.run_id = run.info.run_id
        tracker.log_params(params)
    except Exception as e:  # noqa: BLE001
        tracker._fail(e)
    status = "FINISHED"
    try:
        yield tracker
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if tracker.active:
            try:
                tracker._mlflow.end_run(status=status)
            except Exception as e:  # noqa: BLE001
                tracker._fail(e)
