"""Seeded ablation statistics: per-variant mean and spread, paired differences with t-intervals.

A single-seed difference between two training runs says little: at this project's scale two seeds of
the same configuration differ by about as much as the methods do. So every variant is run with the
same seeds, and a variant is compared with a reference variant *pairwise*: the difference is taken
seed by seed (same seed = same data order and initialisation wherever the variants share them),
and its mean gets a Student-t interval over the seeds. An interval that excludes 0 is a gain (or a
loss) at 95% confidence; one that includes 0 is reported as "not distinguishable".
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

# two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (beyond: 1.96 + a small term)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)

SEED_SUFFIX = re.compile(r"^(?P<variant>.+)-s(?P<seed>-?\d+)$")


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (the 95% two-sided interval)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.960 + 2.4 / df  # within 0.002 of the exact value for df > 30


def split_name(name: str) -> tuple[str, int | None]:
    """'transfer-s43' -> ('transfer', 43); a name without a seed suffix is its own variant, seed None."""
    m = SEED_SUFFIX.match(name)
    return (m["variant"], int(m["seed"])) if m else (name, None)


@dataclass
class Summary:
    """One variant over its seeds: values by seed, mean, sample std, and the paired comparison."""

    variant: str
    values: dict[int | None, float]
    failed: list[int | None] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  # seeds other variants ran but this one lacks
    diff_mean: float | None = None
    diff_lo: float | None = None
    diff_hi: float | None = None
    diff_n: int = 0
    share_of_oracle: float | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean(list(self.values.values()))

    @property
    def std(self) -> float:
        return std(list(self.values.values()))


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def std(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); nan for fewer than two values."""
    if len(xs) < 2:
        return math.nan
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def paired_interval(a: Mapping, b: Mapping) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) of a - b over the seeds both have: the 95% Student-t interval of the mean."""
    common = [s for s in a if s in b]
    d = [a[s] - b[s] for s in common]
    if not d:
        return math.nan, math.nan, math.nan, 0
    m = mean(d)
    if len(d) < 2:
        return m, math.nan, math.nan, len(d)
    half = t975(len(d) - 1) * std(d) / math.sqrt(len(d))
    return m, m - half, m + half, len(d)


def summarise(results: Iterable[tuple[str, float | None]], reference: str | None = None,
              oracle: str | None = "oracle") -> list[Summary]:
    """Group (experiment name, metric or None for a failed run) by variant and compare with `reference`.

    Variants keep the order of their first appearance. `share_of_oracle` is mean / oracle mean.
    """
    by_variant: dict[str, Summary] = {}
    for name, value in results:
        variant, seed = split_name(name)
        s = by_variant.setdefault(variant, Summary(variant, {}))
        if value is None or (isinstance(value, float) and math.isnan(value)):
            s.failed.append(seed)
        else:
            s.values[seed] = float(value)
    seeds = {k for s in by_variant.values() for k in (*s.values, *s.failed) if k is not None}
    for s in by_variant.values():
        s.missing = sorted(seeds - {k for k in (*s.values, *s.failed) if k is not None})
    ref = by_variant.get(reference) if reference else None
    orc = by_variant.get(oracle) if oracle else None
    for s in by_variant.values():
        if ref is not None and s is not ref:
            s.diff_mean, s.diff_lo, s.diff_hi, s.diff_n = paired_interval(s.values, ref.values)
        if orc is not None and orc.n and s.n:
            s.share_of_oracle = s.mean / orc.mean
    return list(by_variant.values())


def _num(v: float | None, digits: int = 4) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def verdict(s: Summary) -> str:
    """Plain words for the paired interval."""
    if s.diff_n < 2 or s.diff_lo is None or math.isnan(s.diff_lo):
        return "n < 2: no interval"
    if s.diff_lo > 0:
        return "higher (95% CI excludes 0)"
    if s.diff_hi < 0:
        return "lower (95% CI excludes 0)"
    return "not distinguishable"


def to_markdown(summaries: Sequence[Summary], metric: str, reference: str | None) -> str:
    """The paper's table: mean ± std, n, paired difference to the reference with its 95% interval."""
    if not summaries:
        return "(no experiments found: queue some with `semdepth ablate NAMES --seeds 3 --run`)\n"
    ref = reference or "–"
    head = (f"| variant | {metric} mean ± std | n | seeds | Δ vs {ref} (paired) | 95% CI | reading | "
            f"share of oracle | failed / missing seeds |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        seeds = ",".join("–" if k is None else str(k) for k in sorted(s.values, key=lambda k: (k is None, k or 0)))
        is_ref = reference is not None and s.variant == reference
        ci = "–" if is_ref else f"[{_num(s.diff_lo)}, {_num(s.diff_hi)}]"
        diff = "(reference)" if is_ref else (_num(s.diff_mean) + (f" (n={s.diff_n})" if s.diff_n else ""))
        reading = "–" if is_ref or reference is None else verdict(s)
        share = "–" if s.share_of_oracle is None else f"{100 * s.share_of_oracle:.1f}%"
        failed = ", ".join([*("?" if f is None else str(f) for f in s.failed), *(f"{m} (missing)" for m in s.missing)])
        failed = failed or "–"
        lines.append(f"| {s.variant} | {_num(s.mean)} ± {_num(s.std)} | {s.n} | {seeds or '–'} | {diff} | {ci} | "
                     f"{reading} | {share} | {failed} |")
    return "\n".join(lines) + "\n"


def csv_rows(summaries: Sequence[Summary], metric: str) -> list[dict]:
    """One row per variant, for `dvc plots` (x: variant, y: mean) and spreadsheets."""
    return [{"variant": s.variant, "metric": metric, "mean": s.mean, "std": s.std, "n": s.n,
             "diff_mean": s.diff_mean, "diff_lo": s.diff_lo, "diff_hi": s.diff_hi,
             "share_of_oracle": s.share_of_oracle} for s in summaries]


def save_bar_chart(path, summaries: Sequence[Summary], metric: str) -> None:
    """Bar chart of the variant means with ±1 std error bars and the single seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semdepth.io import atomic_file

    shown = [s for s in summaries if s.n]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(shown) + 1.5), 3.6))
    xs = range(len(shown))
    ax.bar(xs, [s.mean for s in shown], yerr=[0.0 if math.isnan(s.std) else s.std for s in shown], capsize=4,
           color="#7a9cc6", edgecolor="#2b4c7e")
    for x, s in zip(xs, shown):
        ax.plot([x] * s.n, list(s.values.values()), "k.", markersize=4)
    ax.set_xticks(list(xs), [s.variant for s in shown], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    lo = min((min(s.values.values()) for s in shown), default=0.0)
    hi = max((max(s.values.values()) for s in shown), default=1.0)
    pad = 0.15 * (hi - lo) if hi > lo else 0.05
    ax.set_ylim(max(0.0, lo - pad), hi + pad)
    ax.set_title(f"{metric}: mean ± std over seeds (dots: single seeds)", fontsize=9)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
