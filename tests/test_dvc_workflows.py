"""The DVC/MLflow workflows users rely on, driven through the real `dvc` and `mlflow` commands.

Everything runs in a temporary git repository holding a copy of this working tree with
profiles/tiny.yaml as params.yaml. Tests in this module build on each other (pytest runs them in
file order): the first reproduces the whole pipeline, later ones change params, push and pull.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["synthesize", "downsample", "pseudolabel", "pretrain", "select", "filter", "retrain", "finetune",
          "evaluate"]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def sh(cmd: list[str] | str, cwd: Path, env: dict | None = None, check: bool = True, timeout: int = 900) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("SEMDEPTH_TRACKING", "MLFLOW_TRACKING_URI")}
    full_env = {**base, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          shell=isinstance(cmd, str))
    out = proc.stdout + proc.stderr
    if check and proc.returncode:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{out[-6000:]}")
    return out


def ran(output: str) -> set[str]:
    """Stages that actually executed in a `dvc repro` log."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_param(repo: Path, dotted: str, value) -> None:
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def get_param(repo: Path, dotted: str):
    node = yaml.safe_load((repo / "params.yaml").read_text())
    for p in dotted.split("."):
        node = node[p]
    return node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not come up within {timeout}s")


def declared_outputs(repo: Path) -> list[Path]:
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    paths = []
    for st in spec["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for o in st.get(kind, []):
                paths.append(repo / (next(iter(o)) if isinstance(o, dict) else o))
    return paths


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git + DVC repo with the current working tree and the tiny profile, fully reproduced."""
    repo = tmp_path_factory.mktemp("proj")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = REPO / f
        if src.is_file() and not f.startswith(("metrics/", "dvc.lock")):
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / f)
    shutil.copy(REPO / "profiles" / "tiny.yaml", repo / "params.yaml")
    sh("git init -q -b main && git config user.email t@t && git config user.name t && "
       "git add -A && git commit -qm init", repo)
    out = sh(["dvc", "repro"], repo)
    assert ran(out) == set(STAGES), out[-3000:]
    sh("git add -A && git commit -qm repro", repo)
    return repo


def test_repro_writes_everything_and_second_repro_is_noop(project: Path) -> None:
    missing = [str(p) for p in declared_outputs(project) if not p.exists()]
    assert not missing, f"declared outputs not written: {missing}"
    for st in STAGES:
        assert (project / "metrics" / f"{'eval' if st == 'evaluate' else st}.json").exists(), st
    t0 = time.time()
    out = sh(["dvc", "repro"], project)
    assert ran(out) == set(), out
    assert "up to date" in out.lower() or "didn't change" in out
    assert time.time() - t0 < 30


@pytest.mark.parametrize("key,new,expected_first", [
    ("finetune.lr_decoder", 0.02, "finetune"),
    ("filter.margin", 0.45, "filter"),
])
def test_param_change_reruns_only_downstream(project: Path, key: str, new, expected_first: str) -> None:
    downstream = {"finetune": {"finetune", "evaluate"},
                  "filter": {"filter", "retrain", "finetune", "evaluate"}}[expected_first]
    old = get_param(project, key)
    set_param(project, key, new)
    status = sh(["dvc", "status"], project)
    assert f"{expected_first}:" in status and "params.yaml" in status
    changed = set(re.findall(r"^(\w+):", status, flags=re.M))
    assert changed == {expected_first}, status  # only the stage that reads the key is directly changed
    out = sh(["dvc", "repro"], project)
    assert expected_first in ran(out) and ran(out) <= downstream, out[-3000:]
    # restoring the old value is a run-cache hit: nothing executes, outputs are checked out
    set_param(project, key, old)
    out = sh(["dvc", "repro"], project)
    assert ran(out) == set(), out[-3000:]
    assert sh(["git", "status", "--porcelain", "dvc.lock"], project).strip() == ""


def test_data_param_reruns_from_downsample(project: Path) -> None:
    old = get_param(project, "data.hood_fraction")
    set_param(project, "data.hood_fraction", 0.15)
    status = sh(["dvc", "status"], project)
    changed = set(re.findall(r"^(\w+):", status, flags=re.M))
    assert "downsample" not in changed and "synthesize" not in changed
    assert changed and changed <= {"pretrain", "select", "filter", "retrain", "evaluate"}, status
    set_param(project, "data.hood_fraction", old)


def test_metrics_and_params_diff_across_commits(project: Path) -> None:
    set_param(project, "finetune.lr_decoder", 0.005)
    sh(["dvc", "repro"], project)
    sh("git add -A && git commit -qm 'lower decoder lr'", project)
    params_diff = sh(["dvc", "params", "diff", "HEAD~1", "--json"], project)
    assert "finetune.lr_decoder" in params_diff
    metrics_diff = json.loads(sh(["dvc", "metrics", "diff", "HEAD~1", "--json"], project) or "{}")
    assert "metrics/finetune.json" in metrics_diff or "metrics/eval.json" in metrics_diff, metrics_diff


def test_local_remote_push_pull_and_repro_pull(project: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    sh(["dvc", "remote", "add", "-f", "-d", "local", str(remote)], project)
    sh("git add -A && git commit -qm remote", project)
    sh(["dvc", "push"], project)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    sh(["dvc", "pull"], clone)
    missing = [str(p) for p in declared_outputs(clone) if not p.exists()]
    assert not missing, missing
    assert ran(sh(["dvc", "repro"], clone)) == set()
    clone2 = tmp_path / "clone2"
    sh(["git", "clone", "-q", str(project), str(clone2)], tmp_path)
    out = sh(["dvc", "repro", "--pull"], clone2)
    assert ran(out) == set(), out[-3000:]


def test_s3_remote_via_moto(project: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/")
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **{
            "aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1",
        }).create_bucket(Bucket="semdepth")
        sh(["dvc", "remote", "add", "-f", "s3", "s3://semdepth/cache"], project)
        sh(["dvc", "remote", "modify", "s3", "endpointurl", f"http://127.0.0.1:{port}"], project)
        sh("git add -A && git commit -qm s3", project)
        sh(["dvc", "push", "-r", "s3"], project, env=env)
        clone = tmp_path / "s3clone"
        sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
        # credentials belong in the git-ignored .dvc/config.local, as the README documents
        sh(["dvc", "remote", "modify", "--local", "s3", "access_key_id", "testing"], clone)
        sh(["dvc", "remote", "modify", "--local", "s3", "secret_access_key", "testing"], clone)
        sh(["dvc", "pull", "-r", "s3"], clone)
        missing = [str(p) for p in declared_outputs(clone) if not p.exists()]
        assert not missing, missing
        assert ran(sh(["dvc", "repro"], clone)) == set()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)


def _runs(db: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("semdepth")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def test_exp_run_temp_and_queue_log_to_main_repo_store(project: Path) -> None:
    before = len(_runs(project / "mlflow.db"))
    sh(["dvc", "exp", "run", "--temp", "-n", "tmp-lr", "-S", "finetune.lr_decoder=0.03"], project)
    runs = _runs(project / "mlflow.db")
    tagged = [r for r in runs if r.data.tags.get("DVC_EXP_NAME") == "tmp-lr"]
    assert len(runs) > before and {r.data.tags["semdepth.stage"] for r in tagged} >= {"finetune", "evaluate"}
    # the README's command: `semdepth ablate NAME --seeds N --run` queues the ablation once per seed and
    # starts a worker; one seed here (42: finetune.seed=42, so only finetune and evaluate may rerun)
    sh([sys.executable, "cli.py", "ablate", "scratch", "--seeds", "1", "--run", "-j", "1"], project)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = sh(["dvc", "queue", "status"], project)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    sh(["dvc", "queue", "stop"], project, check=False)
    assert "Success" in status, status
    runs = _runs(project / "mlflow.db")
    queued = [r for r in runs if r.data.tags.get("DVC_EXP_NAME") == "scratch-s42"]
    # only the stages whose params the ablation changes ran (finetune.* -> finetune, evaluate)
    assert {r.data.tags["semdepth.stage"] for r in queued} == {"finetune", "evaluate"}, queued
    # `semdepth report` turns `dvc exp show --json` into one markdown row per experiment
    report = sh([sys.executable, "cli.py", "report"], project)
    row = next(line for line in report.splitlines() if line.startswith("| scratch-s42 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] != "–" and "source" in cells, report  # its mIoU, and init=source
    # ... and the seeded summary groups it back under its ablation: one seed, no interval yet
    summary = next(line for line in report.splitlines() if line.startswith("| scratch |"))
    assert "| 1 | 42 |" in summary, report


def test_stage_logs_to_real_mlflow_server(project: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", timeout=120)
        sh([sys.executable, "cli.py", "select"], project, env={"MLFLOW_TRACKING_URI": uri})
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("semdepth")
        runs = client.search_runs([exp.experiment_id])
        run = next(r for r in runs if r.data.tags.get("semdepth.stage") == "select")
        assert run.data.params["select.method"] == get_param(project, "select.method")
        assert run.data.metrics and run.data.tags.get("git_commit")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_training_stage_under_torchrun_two_processes(project: Path) -> None:
    set_param(project, "compute.nproc", 2)
    try:
        out = sh([sys.executable, "cli.py", "pretrain"], project, env={"SEMDEPTH_TRACKING": "0"})
        assert (project / "data" / "models" / "sde_stage1.pt").exists(), out[-3000:]
    finally:
        set_param(project, "compute.nproc", 1)


def _wait_queue(repo: Path, timeout: float = 1200) -> str:
    """`dvc queue status` once nothing is queued or running; the workers are stopped then.

    With several workers, DVC's queue sometimes lets them all exit while a task is still queued; one
    is restarted then, so the test measures tracking rather than that.
    """
    deadline = time.time() + timeout
    status, stalled = "", 0
    while time.time() < deadline:
        status = sh(["dvc", "queue", "status"], repo)
        if "Queued" not in status and "Running" not in status:
            break
        stalled = stalled + 1 if "Running" not in status and "0 active, 0 idle" in status else 0
        if stalled >= 10:
            sh(["dvc", "queue", "start", "-j", "1"], repo)
            stalled = 0
        time.sleep(3)
    sh(["dvc", "queue", "stop"], repo, check=False)
    return status


def run_counts(uri: str) -> dict[tuple[str, str], int]:
    """Runs per (DVC_EXP_NAME, DVC_STAGE) in the `semdepth` experiment, read in a fresh process: this
    one may still hold pooled connections to a database file a test has since replaced."""
    script = ("import json, sys, mlflow\n"
              "df = mlflow.search_runs(experiment_names=['semdepth'], max_results=50000)\n"
              "cols = ['tags.DVC_EXP_NAME', 'tags.DVC_STAGE']\n"
              "rows = [] if df.empty or cols[0] not in df else df[cols].fillna('').values.tolist()\n"
              "print(json.dumps(rows))\n")
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                         capture_output=True, text=True, check=True).stdout
    counts: dict[tuple[str, str], int] = {}
    for exp, st in json.loads(out.strip().splitlines()[-1]):
        counts[(exp, st)] = counts.get((exp, st), 0) + 1
    return counts


def test_parallel_queue_on_fresh_store_loses_no_run(project: Path) -> None:
    """Three ablations on two queue workers, starting without mlflow.db (as in a fresh clone): every
    stage that ran in each experiment has exactly one MLflow run, and none waits in the spool."""
    for f in project.glob("mlflow.db*"):
        f.unlink()
    names = ["transfer", "depthmix", "classmix"]
    sh([sys.executable, "cli.py", "ablate", *names, "--run", "-j", "2"], project)
    status = _wait_queue(project)
    for name in names:
        assert re.search(rf"\b{name}\b.*Success", status), status
    expected = {(name, st): 1 for name in names for st in ran(sh(["dvc", "queue", "logs", name], project))}
    assert expected, "no stage ran in the queued experiments"
    found = run_counts(f"sqlite:///{project / 'mlflow.db'}")
    assert {k: v for k, v in found.items() if k[0] in names} == expected
    assert not list((project / ".mlflow-spool").glob("*.json"))
