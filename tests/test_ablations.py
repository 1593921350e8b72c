"""Seeded ablations: which experiments `semdepth ablate --seeds` queues, with which overrides."""
from __future__ import annotations

import pytest

from semdepth import SemdepthError
from semdepth.ablations import ALL, exp_run_args, experiments, parse_seeds, seed_keys
from semdepth.layout import STAGES


def test_a_count_means_the_papers_seeds_and_a_list_means_those():
    assert parse_seeds("3") == [42, 43, 44]
    assert parse_seeds("42,43,44") == [42, 43, 44]
    assert parse_seeds("42 43 44") == [42, 43, 44]
    assert parse_seeds("7,") == [7]
    assert parse_seeds(None) is None


@pytest.mark.parametrize("bad", ["three", "42,x", "0", "", "4,4"])
def test_bad_seeds_are_a_one_line_error(bad):
    with pytest.raises(SemdepthError, match="--seeds") as e:
        parse_seeds(bad)
    assert "\n" not in str(e.value)


def test_seeded_experiments_set_the_seed_of_the_stages_they_rerun():
    runs = dict(experiments(["transfer", "full-random-selection", "guidance-pac"], [42, 43]))
    assert list(runs) == ["transfer-s42", "transfer-s43", "full-random-selection-s42", "full-random-selection-s43",
                          "guidance-pac-s42", "guidance-pac-s43"]
    assert runs["transfer-s43"] == {**ALL["transfer"], "finetune.seed": 43}
    assert runs["full-random-selection-s42"]["select.seed"] == 42
    assert runs["guidance-pac-s43"] == {"sde.guidance": "pac", "sde.seed": 43, "finetune.seed": 43}
    args = exp_run_args("transfer-s43", runs["transfer-s43"])
    assert args[:6] == ["dvc", "exp", "run", "--queue", "-n", "transfer-s43"]
    assert "finetune.seed=43" in args and "finetune.multitask=false" in args


def test_unseeded_experiments_keep_their_names():
    assert experiments(["oracle"], None) == [("oracle", ALL["oracle"])]


def test_unknown_names_are_refused():
    with pytest.raises(SemdepthError, match="unknown ablation"):
        experiments(["transfer", "nonsense"], [42])


@pytest.mark.parametrize("name", sorted(ALL))
def test_segmentation_seeds_leave_the_depth_stages_cached(name):
    """A seed key of a segmentation ablation is read by no stage upstream of select/finetune."""
    upstream = ("synthesize", "downsample", "pseudolabel", "pretrain", "filter", "retrain")
    if name.startswith("guidance-"):
        upstream = ("synthesize", "downsample", "pseudolabel")
    for key in seed_keys(name):
        readers = [s for s in upstream if key in STAGES[s].params or key.split(".")[0] in STAGES[s].params]
        assert not readers, (name, key, readers)
