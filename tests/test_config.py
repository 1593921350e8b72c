"""Params validation (semdepth.config) and the CLI's behaviour on bad params."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from semdepth.config import ConfigError, Params, load_params, parse_params

BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def check(raw: dict, source: str = "params.yaml") -> str:
    with pytest.raises(ConfigError) as e:
        parse_params(raw, source)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def edited(path: str, value=None, delete: bool = False, rename: str | None = None) -> dict:
    raw = copy.deepcopy(BASE)
    *parents, key = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    if rename:
        node[rename] = node.pop(key)
    elif delete:
        del node[key]
    else:
        node[key] = value
    return raw


@pytest.mark.parametrize("path", [REPO / "params.yaml", *sorted((REPO / "profiles").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_shipped_params_load(path: Path) -> None:
    params = load_params(path)
    assert isinstance(params, Params) and params.data.height % 32 == 0


def test_profiles_have_the_same_keys() -> None:
    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    base = keys(BASE)
    for prof in (REPO / "profiles").glob("*.yaml"):
        assert keys(yaml.safe_load(prof.read_text())) == base, prof.name


def test_unknown_key_did_you_mean() -> None:
    assert check(edited("data.height", rename="heigth")) == \
        "params.yaml: data.heigth: unknown key (did you mean data.height?)"
    assert check(edited("seed", rename="sead")) == "params.yaml: sead: unknown key (did you mean seed?)"
    msg = check(edited("data.zzzzzz", 1), "profiles/tiny.yaml")
    assert msg == "profiles/tiny.yaml: data.zzzzzz: unknown key"


@pytest.mark.parametrize("path,value,expected", [
    ("data.height", "96", "params.yaml: data.height: expected an integer, got str '96'"),
    ("data.height", 96.0, "params.yaml: data.height: expected an integer, got float 96.0"),
    ("data.workers", True, "params.yaml: data.workers: expected an integer, got bool True"),
    ("sde.lr", "fast", "params.yaml: sde.lr: expected a number, got str 'fast'"),
    ("tracking.enabled", "yes", "params.yaml: tracking.enabled: expected true or false, got 'yes'"),
    ("data.frame_offsets", 1, "params.yaml: data.frame_offsets: expected a list of int, got int 1"),
    ("data.frame_offsets", [0, "1"], "params.yaml: data.frame_offsets[1]: expected an integer, got str '1'"),
    ("data.raw_dir", 3, "params.yaml: data.raw_dir: expected a string, got int 3"),
    ("compute.device", "cdua", "params.yaml: compute.device: 'cdua' is not one of auto, cpu, cuda (did you mean cuda?)"),
    ("compute.device", "metal", "params.yaml: compute.device: 'metal' is not one of auto, cpu, cuda"),
    ("data", [1], "params.yaml: data: expected a mapping of keys, got list"),
])
def test_wrong_types(path: str, value, expected: str) -> None:
    assert check(edited(path, value)) == expected


@pytest.mark.parametrize("path,value,expected", [
    ("data.height", 16, "data.height: 16 is out of range (must be >= 32)"),
    ("sde.lr", 0.0, "sde.lr: 0.0 is out of range (must be > 0.0)"),
    ("synth.lead_car_share", 1.5, "synth.lead_car_share: 1.5 is out of range (must be <= 1.0)"),
    ("data.height", 100, "data.height: 100 is not a multiple of 32"),
    ("data.frame_offsets", [-1, 1], "data.frame_offsets: must contain 0"),
    ("data.splits", [], "data.splits: must not be empty"),
    ("sde.encoder_layers", 20, "sde.encoder_layers: 20 is not one of 18, 34, 50, 101"),
])
def test_out_of_range(path: str, value, expected: str) -> None:
    assert check(edited(path, value)).startswith("params.yaml: " + expected)


def test_missing_key() -> None:
    assert check(edited("data.workers", delete=True)) == "params.yaml: data.workers: missing key"
    assert check(edited("eval", delete=True)) == "params.yaml: eval: missing key"


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_params(bad)


# ---------------------------------------------------------------------------------------------
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, SEMDEPTH_TRACKING="0"))


def test_cli_bad_params_one_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited("data.height", rename="heigth")))
    proc = _cli("downsample", "--params", "params.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: params.yaml: data.heigth: unknown key (did you mean data.height?)"
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_cli_help(tmp_path: Path) -> None:
    proc = _cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for name in ("synthesize", "downsample", "pseudolabel", "pretrain", "select", "filter", "retrain",
                 "finetune", "evaluate"):
        assert name in proc.stdout
    proc = _cli("downsample", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "Reads:" in proc.stdout and "Writes:" in proc.stdout
    exe = shutil.which("semdepth") or (str(Path(sys.executable).parent / "semdepth"))
    if Path(exe).exists():  # the console script of `pip install -e .`
        proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "downsample" in proc.stdout


def test_cli_import_is_light() -> None:
    """`--help` stays instant because heavy libraries are imported inside the commands only."""
    code = ("import sys; sys.argv = ['cli', '--help']; import cli; "
            "print(','.join(m for m in ('torch', 'mlflow', 'dvc', 'cv2', 'pandas', 'torchvision') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
