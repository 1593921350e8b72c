"""Seeded ablation statistics (semdepth.report): hand-computed means, spreads and paired t-intervals."""
from __future__ import annotations

import math

import pytest

from semdepth.report import csv_rows, paired_interval, save_bar_chart, split_name, std, summarise, t975, to_markdown


def test_split_name_reads_the_seed_suffix():
    assert split_name("transfer-s43") == ("transfer", 43)
    assert split_name("full-random-selection-s7") == ("full-random-selection", 7)
    assert split_name("guidance-seg_branch") == ("guidance-seg_branch", None)


def test_t_quantiles_match_the_table():
    assert t975(1) == pytest.approx(12.706)
    assert t975(2) == pytest.approx(4.303)
    assert t975(40) == pytest.approx(2.021, abs=0.003)
    assert math.isnan(t975(0))


def test_paired_interval_by_hand():
    a = {42: 0.34, 43: 0.35, 44: 0.33}
    b = {42: 0.32, 43: 0.34, 44: 0.30}
    m, lo, hi, n = paired_interval(a, b)
    d = [0.02, 0.01, 0.03]
    sd = math.sqrt(sum((x - 0.02) ** 2 for x in d) / 2)  # 0.01
    assert n == 3 and m == pytest.approx(0.02)
    assert sd == pytest.approx(0.01)
    assert lo == pytest.approx(0.02 - 4.303 * 0.01 / math.sqrt(3))
    assert hi == pytest.approx(0.02 + 4.303 * 0.01 / math.sqrt(3))
    assert lo < 0 < hi  # three seeds with this spread cannot tell +0.02 from 0


def test_pairing_uses_only_common_seeds():
    m, lo, hi, n = paired_interval({1: 1.0, 2: 2.0, 3: 10.0}, {1: 0.5, 2: 1.5})
    assert n == 2 and m == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)


def test_summarise_groups_seeds_and_reports_failures_and_oracle_share():
    results = [("scratch-s42", 0.30), ("scratch-s43", 0.32), ("scratch-s44", 0.31),
               ("transfer-s42", 0.33), ("transfer-s43", None), ("transfer-s44", 0.35),
               ("oracle-s42", 0.40), ("oracle-s43", 0.40)]
    rows = summarise(results, reference="scratch")
    by = {s.variant: s for s in rows}
    assert [s.variant for s in rows] == ["scratch", "transfer", "oracle"]
    assert by["scratch"].mean == pytest.approx(0.31) and by["scratch"].std == pytest.approx(0.01)
    assert by["transfer"].n == 2 and by["transfer"].failed == [43]
    assert by["transfer"].diff_mean == pytest.approx(0.035) and by["transfer"].diff_n == 2
    assert by["transfer"].share_of_oracle == pytest.approx(0.34 / 0.40)
    md = to_markdown(rows, "mIoU", "scratch")
    assert "| scratch | 0.3100 ± 0.0100 | 3 | 42,43,44 | (reference) |" in md
    assert "| transfer | 0.3400 ± 0.0141 | 2 | 42,44 | 0.0350 (n=2) |" in md and "| 43 |" in md
    assert "85.0%" in md


def test_a_seed_that_other_variants_ran_is_reported_missing():
    rows = summarise([("a-s1", 0.3), ("a-s2", 0.32), ("b-s1", 0.35)], reference="a")
    assert rows[1].missing == [2] and rows[0].missing == []
    assert "| 2 (missing) |" in to_markdown(rows, "mIoU", "a")


def test_a_single_seed_gets_no_interval_and_says_so():
    rows = summarise([("a-s1", 0.3), ("b-s1", 0.4)], reference="a")
    assert math.isnan(rows[1].diff_lo)
    assert "n < 2: no interval" in to_markdown(rows, "mIoU", "a")
    assert math.isnan(std([0.3]))


def test_empty_report_says_how_to_get_rows():
    assert "semdepth ablate" in to_markdown([], "mIoU", None)


def test_chart_and_csv(tmp_path):
    rows = summarise([("a-s1", 0.3), ("a-s2", 0.32), ("b-s1", 0.35), ("b-s2", 0.36)], reference="a")
    save_bar_chart(tmp_path / "ablations.png", rows, "mIoU")
    assert (tmp_path / "ablations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = csv_rows(rows, "mIoU")
    assert csv[1]["variant"] == "b" and csv[1]["diff_mean"] == pytest.approx(0.045)
