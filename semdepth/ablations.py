"""The paper's ablations as params overrides, and their expansion over seeds.

Each ablation is a set of `-S key=value` overrides of params.yaml that `dvc exp run --queue` applies
to a snapshot of the workspace; DVC then reruns only the stages whose params changed and takes the
rest from its run cache. A seeded ablation is the same overrides plus the seed keys of the stages the
ablation reruns, so that a seed changes what a rerun with another seed changes in a paper (network
initialisation, data order, augmentation, the random-selection draw) and nothing upstream:

| ablation kind | seed keys set | stages rerun |
|---|---|---|
| segmentation (init, multi-task, mixing, oracle, labels-only) | `finetune.seed` | finetune, evaluate |
| random selection | `finetune.seed`, `select.seed` | select, finetune, evaluate |
| depth guidance | `sde.seed`, `finetune.seed` | pretrain and everything after it |

Experiments are named `<ablation>-s<seed>`; `semdepth report` groups them back by ablation.
"""
from __future__ import annotations

from typing import Any, Sequence

from semdepth import SemdepthError

# Hoyer et al. ran every configuration with these seeds (their experiments.py).
PAPER_SEEDS = (42, 43, 44)

# name -> params overrides. "scratch" is Hoyer's baseline: no depth anywhere; since ImageNet weights are
# not available offline, its encoder starts from the source-domain backbone (the offline stand-in).
SEGMENTATION: dict[str, dict[str, Any]] = {
    "scratch": {"finetune.init": "source", "finetune.multitask": False, "finetune.mix": "none"},
    "transfer": {"finetune.init": "sde", "finetune.multitask": False, "finetune.mix": "none"},
    "depthmix": {"finetune.init": "sde", "finetune.multitask": False, "finetune.mix": "depthmix"},
    "classmix": {"finetune.init": "sde", "finetune.multitask": False, "finetune.mix": "classmix"},
    "multitask": {"finetune.init": "sde", "finetune.multitask": True, "finetune.mix": "none"},
    "full": {"finetune.init": "sde", "finetune.multitask": True, "finetune.mix": "depthmix",
             "select.method": "ds_us"},
    "full-random-selection": {"finetune.init": "sde", "finetune.multitask": True, "finetune.mix": "depthmix",
                              "select.method": "random"},
    # the supervised ceiling: every annotated train frame labelled, the scratch network, same steps
    "oracle": {"finetune.labels": "all", "finetune.init": "source", "finetune.multitask": False,
               "finetune.mix": "none"},
    # the floor: the selected labels only, randomly initialised, no unlabelled frames, no depth
    "labels-only": {"finetune.init": "scratch", "finetune.multitask": False, "finetune.mix": "none"},
}
# Depth guidance ablations (docs/guidance.md): rerun the whole depth half of the pipeline.
GUIDANCE: dict[str, dict[str, Any]] = {f"guidance-{g}": {"sde.guidance": g} for g in ("none", "seg_branch", "pac", "seem")}
ALL: dict[str, dict[str, Any]] = {**SEGMENTATION, **GUIDANCE}
# what `semdepth ablate` queues without names
DEFAULT = ("scratch", "transfer", "depthmix", "classmix", "multitask", "full", "full-random-selection")


def seed_keys(name: str) -> tuple[str, ...]:
    """The params a seed sets for ablation `name` (see the module docstring's table)."""
    overrides = ALL[name]
    if name in GUIDANCE:
        return ("sde.seed", "finetune.seed")
    if overrides.get("select.method") == "random":
        return ("finetune.seed", "select.seed")
    return ("finetune.seed",)


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds`: a count N (the first N of 42, 43, 44, ...) or a list "42,43,44" / "42 43 44".

    A single number is a count; to run one given seed write it as a list ("7,").
    """
    if text is None:
        return None
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise SemdepthError(f"--seeds: {text!r} is not a count or a list of integer seeds (e.g. 3 or 42,43,44)") \
            from None
    if not values:
        raise SemdepthError("--seeds: give a count (e.g. 3) or seeds (e.g. 42,43,44)")
    if len(values) == 1 and "," not in text:
        n = values[0]
        if n < 1:
            raise SemdepthError(f"--seeds: the count must be at least 1, got {n}")
        return [PAPER_SEEDS[0] + i for i in range(n)]
    if len(set(values)) != len(values):
        raise SemdepthError(f"--seeds: repeated seed in {text!r}")
    return values


def check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise SemdepthError(f"unknown ablation(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")


def experiments(names: Sequence[str], seeds: Sequence[int] | None) -> list[tuple[str, dict[str, Any]]]:
    """(experiment name, overrides) for every ablation, once per seed (unseeded: the plain names)."""
    check_names(names)
    if not seeds:
        return [(n, dict(ALL[n])) for n in names]
    return [(f"{n}-s{s}", {**ALL[n], **{k: s for k in seed_keys(n)}}) for n in names for s in seeds]


def _fmt(v: Any) -> str:
    return "true" if v is True else "false" if v is False else str(v)


def exp_run_args(name: str, overrides: dict[str, Any]) -> list[str]:
    """`dvc exp run --queue` for one experiment. No --force: for `exp run` it means "reproduce every
    stage", which would defeat the run cache."""
    args = ["dvc", "exp", "run", "--queue", "-n", name]
    for k, v in overrides.items():
        args += ["-S", f"{k}={_fmt(v)}"]
    return args
