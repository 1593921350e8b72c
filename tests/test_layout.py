"""The pipeline map (semdepth/layout.py) agrees with dvc.yaml, and the stages keep to it.

DVC cannot import Python, so dvc.yaml repeats what the map declares. If the two drift apart, DVC
either reruns a stage for a key it does not read or, worse, skips a stage whose result a changed key
would change. These tests are the check that they agree:

- every dvc.yaml stage has a StageSpec and the same `params:`;
- every file a StageSpec reads is a dvc.yaml dep of the stage, every file it writes an output;
- every stage `main()` stays a short, readable shell (at most 40 lines);
- the scoped params view a stage gets refuses undeclared keys, and the stage logs exactly the declared ones.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from semdepth import layout
from semdepth.config import ConfigError, declared_values, flatten, load_params, scoped, to_dict
from semdepth.layout import STAGES

REPO = Path(__file__).resolve().parents[1]
MAX_MAIN_LINES = 40
FINGERPRINTED = (layout.PREPARED, layout.PSEUDOLABELS_DIR)  # consumers depend on their fingerprint.json


def _dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _entries(items: list | None) -> list[str]:
    """Paths or keys of a dvc.yaml list whose items are strings or one-key mappings ({path: options})."""
    out: list[str] = []
    for item in items or []:
        out.extend([item] if isinstance(item, str) else list(item))
    return out


def _outputs(stage: dict) -> list[Path]:
    return [Path(p) for key in ("outs", "metrics", "plots") for p in _entries(stage.get(key))]


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


# ------------------------------------------------------------------------------- (a) the same stages and params
def test_every_dvc_stage_has_a_spec_and_vice_versa():
    assert set(_dvc_stages()) == set(STAGES)
    assert all(spec.name == name for name, spec in STAGES.items())


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_params_equal_the_declared_params(name):
    declared = STAGES[name].params
    listed = _entries(_dvc_stages()[name].get("params"))
    assert len(set(declared)) == len(declared), f"{name}: a key is declared twice"
    assert sorted(listed) == sorted(declared), f"{name}: dvc.yaml params differ from semdepth/layout.py"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_speed_only_keys_are_not_dependencies(name):
    spec = STAGES[name]
    assert not set(spec.speed_only) & set(spec.params)


# ------------------------------------------------------------------------------- (b) files in and out
def _dependency_of(path: Path) -> Path:
    """What a consumer of `path` lists in its deps: the producer's fingerprint for fingerprinted directories."""
    for directory in FINGERPRINTED:
        if path == directory or path.is_relative_to(directory):
            return layout.fingerprint(directory)
    return path


@pytest.mark.parametrize("name", sorted(STAGES))
def test_reads_are_dvc_deps(name):
    deps = {Path(d) for d in _entries(_dvc_stages()[name].get("deps"))}
    missing = [str(p) for p in STAGES[name].reads if _dependency_of(p) not in deps]
    assert not missing, f"{name}: reads files dvc.yaml does not list as deps: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_writes_are_dvc_outputs(name):
    outs = _outputs(_dvc_stages()[name])
    assert STAGES[name].writes, f"{name}: a stage writes something"

    def declared(path: Path) -> bool:  # the output itself, a file inside a declared directory, or a directory
        return any(path == o or path.is_relative_to(o) or o.is_relative_to(path) for o in outs)  # of outputs

    missing = [str(p) for p in STAGES[name].writes if not declared(p)]
    assert not missing, f"{name}: writes files dvc.yaml does not list as outs/metrics/plots: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_metrics_file_is_a_dvc_metric(name):
    metrics = {Path(p) for p in _entries(_dvc_stages()[name].get("metrics"))}
    assert STAGES[name].metrics in metrics


# ------------------------------------------------------------------------------- (c) thin stage shells
def _mains() -> list[Path]:
    paths = sorted((REPO / "stages").glob("*.py"))
    return [p for p in paths if any(isinstance(n, ast.FunctionDef) and n.name == "main"
                                    for n in ast.parse(p.read_text()).body)]


def test_every_pipeline_stage_has_a_main():
    assert {p.stem for p in _mains()} >= set(STAGES)


@pytest.mark.parametrize("path", _mains(), ids=lambda p: p.stem)
def test_stage_main_is_short(path):
    """A stage's main() names its steps; the work lives in semdepth/ where it can be tested."""
    main = next(n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == "main")
    lines = main.end_lineno - main.lineno + 1
    assert lines <= MAX_MAIN_LINES, f"stages/{path.name}: main() has {lines} lines (at most {MAX_MAIN_LINES})"


# ------------------------------------------------------------------------------- (d) the scoped view
def _view(params, name: str):
    spec = STAGES[name]
    return scoped(params, name, spec.params, spec.speed_only)


def test_scoped_view_refuses_an_undeclared_group(params):
    with pytest.raises(ConfigError, match=r"stage filter: reads sde\.min_depth\b"):
        _view(params, "filter").sde.min_depth  # noqa: B018
    with pytest.raises(ConfigError, match=r"stage synthesize: reads seed\b"):
        _view(params, "synthesize").seed  # noqa: B018


def test_scoped_view_refuses_an_undeclared_key_of_a_declared_group(params):
    view = _view(params, "evaluate")  # declares sde.min_depth and sde.max_depth only
    assert view.sde.min_depth == params.sde.min_depth and view.sde.max_depth == params.sde.max_depth
    with pytest.raises(ConfigError, match=r"stage evaluate: reads sde\.encoder_layers\b"):
        view.sde.encoder_layers  # noqa: B018
    view = _view(params, "pretrain")  # eval.min_depth, eval.max_depth, eval.edge_band; eval.batch_size speed only
    with pytest.raises(ConfigError, match=r"stage pretrain: reads eval\.figures\b"):
        view.eval.figures  # noqa: B018


def test_scoped_view_returns_the_typed_group_when_fully_declared(params):
    assert _view(params, "filter").filter is params.filter
    assert _view(params, "pretrain").sde is params.sde
    data_fields = tuple(f"data.{f.name}" for f in dataclasses.fields(params.data))
    assert scoped(params, "probe", data_fields).data is params.data  # every field named one by one
    assert _view(params, "filter").seed == params.seed


def test_scoped_view_allows_compute_tracking_and_speed_only_keys(params):
    for name in STAGES:
        view = _view(params, name)
        assert view.compute is params.compute and view.tracking is params.tracking
    assert _view(params, "pretrain").eval.batch_size == params.eval.batch_size
    assert _view(params, "synthesize").synth.workers == params.synth.workers
    assert _view(params, "downsample").data.workers == params.data.workers


def test_scoped_view_is_read_only(params):
    view = _view(params, "evaluate")
    with pytest.raises(AttributeError):
        view.seed = 1
    with pytest.raises(AttributeError):
        view.sde.min_depth = 1.0


# ------------------------------------------------------------------------------- (e) what stage() logs
def _expected_log(params, keys: tuple[str, ...]) -> dict[str, Any]:
    """The flat params that fall under the declared keys, computed without declared_values."""
    flat = flatten(to_dict(params))
    return {k: v for k, v in flat.items() if any(k == d or k.startswith(d + ".") for d in keys)}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_declared_values_are_the_declared_keys(params, name):
    assert declared_values(params, STAGES[name].params) == _expected_log(params, STAGES[name].params)


@pytest.mark.parametrize("name", ["filter", "evaluate", "synthesize"])
def test_stage_logs_exactly_the_declared_params(params, name, monkeypatch):
    import stages._common as common

    logged: dict[str, Any] = {}

    @contextlib.contextmanager
    def fake_run(stage: str, values: dict, enabled: bool = True, experiment: str = "semdepth") -> Iterator[Any]:
        logged.update(stage=stage, values=dict(values))
        yield common.Tracker(None)

    monkeypatch.setattr(common, "stage_run", fake_run)
    monkeypatch.setattr(common, "setup", lambda seed, compute: "cpu")  # no global seeding or thread changes
    with common.stage(name, REPO / "params.yaml") as ctx:
        assert ctx.name == name
    assert logged["stage"] == name
    assert logged["values"] == _expected_log(params, STAGES[name].params)
    assert not {k for k in logged["values"] if k.split(".")[0] in ("compute", "tracking")}


# ------------------------------------------------------------------------------- the CLI reads the map
def test_cli_stage_help_comes_from_the_map():
    import typer.main

    import cli

    commands = typer.main.get_command(cli.app).commands
    for name, spec in STAGES.items():
        assert commands[name].help == spec.help()
        assert all(key in spec.help() for key in spec.params)
    assert {"predict", "ablate", "report"} <= set(commands)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_seed_of_a_stage_is_one_of_its_params(name):
    """A stage's RNG seed is a DVC dependency of that stage, or the stage is seeded with a constant."""
    key = STAGES[name].seed_key
    if key is None:
        return
    assert key in STAGES[name].params or key.split(".")[0] in STAGES[name].params, (name, key)


def test_ablation_seeds_do_not_touch_upstream_stages():
    """Seeded segmentation ablations rerun finetune (and evaluate), depth ablations from pretrain on."""
    def reads(stage: str, key: str) -> bool:
        return key in STAGES[stage].params or key.split(".")[0] in STAGES[stage].params

    assert [s for s in STAGES if reads(s, "finetune.seed")] == ["finetune"]
    assert [s for s in STAGES if reads(s, "sde.seed")] == ["pretrain", "retrain"]
