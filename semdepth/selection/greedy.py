"""Greedy frame selection (Hoyer et al. 2021, Algorithm 1) and its ablation variants.

Rounds grow the selected set to `rounds[0] < rounds[1] < ...`. Round 0 is pure farthest-point
sampling from one random seed frame for every greedy method (there is no student yet). In each later
round r, `error_fn(selected_so_far, r - 1)` retrains the student from scratch on the frames chosen so
far and returns every pool frame's depth error E_j; then:

- `ds_us`: add the j maximising min_{i in S} (dist(i, j) + λ·E_j) = min-distance_j + λ·E_j, one at
  a time, updating the min-distances after each pick (so diversity is re-evaluated within a round);
- `ds`: the same with λ = 0 (diversity only; no student is trained);
- `us`: the frames with the largest E_j (uncertainty only);
- `random`: the first n frames of a permutation seeded by `seed` (no features needed beyond the
  reported distances).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from semdepth.selection.distance import MinDistance

METHODS = ("ds_us", "ds", "us", "random")

#: (frames selected so far, index of the round that just ended) -> E_j for every pool frame, [N].
ErrorFn = Callable[[list[int], int], "np.ndarray | torch.Tensor"]


@dataclass
class Selection:
    """Pool indices in pick order, with the round, the diversity distance (distance to the nearest
    previously selected frame at pick time; NaN for the seed frame) and the uncertainty E_j that was
    used (NaN where no student existed)."""

    order: list[int] = field(default_factory=list)
    round: list[int] = field(default_factory=list)
    distance: list[float] = field(default_factory=list)
    uncertainty: list[float] = field(default_factory=list)

    def add(self, index: int, round_: int, distance: float, uncertainty: float = math.nan) -> None:
        self.order.append(index)
        self.round.append(round_)
        self.distance.append(distance)
        self.uncertainty.append(uncertainty)


def _pick_distance(state: MinDistance, j: int) -> float:
    d = float(state.min_dist[j])
    return d if math.isfinite(d) else math.nan


def farthest_point(state: MinDistance, n_new: int, bias: torch.Tensor | None = None) -> list[tuple[int, float]]:
    """Add `n_new` frames to `state`, each maximising min-distance (+ bias); returns (index, distance).

    Ties go to the lowest index (torch.argmax returns the first maximum), so the result is
    deterministic. `state` must already hold at least one frame (else every distance is inf).
    """
    if len(state) == 0:
        raise ValueError("farthest_point needs a non-empty selected set (add a seed frame first)")
    picks: list[tuple[int, float]] = []
    for _ in range(n_new):
        score = state.min_dist + bias if bias is not None else state.min_dist.clone()
        score[state.selected] = -math.inf
        j = int(torch.argmax(score))
        picks.append((j, _pick_distance(state, j)))
        state.add(j)
    return picks


def _errors(error_fn: ErrorFn | None, selected: list[int], round_done: int, n: int) -> torch.Tensor:
    if error_fn is None:
        raise ValueError("this method needs a student error function (error_fn)")
    e = torch.as_tensor(np.asarray(error_fn(list(selected), round_done), dtype=np.float64))
    if e.shape != (n,):
        raise ValueError(f"error_fn returned shape {tuple(e.shape)}, expected ({n},)")
    if not torch.isfinite(e).all():
        raise ValueError("error_fn returned non-finite errors")
    return e


def select_frames(features: torch.Tensor, method: str, rounds: Sequence[int], seed: int,
                  uncertainty_weight: float = 1000.0, error_fn: ErrorFn | None = None,
                  on_round: Callable[[int, Selection], None] | None = None) -> Selection:
    """Run the selection; `features` [N, D] (already z-scored) define the diversity distances.

    Distances are computed in float64: features are small ([N, 32·C]) and the picks must not depend
    on float32 summation order.
    """
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r} (choose {', '.join(METHODS)})")
    rounds = list(rounds)
    n = features.shape[0]
    if not rounds or any(b <= a for a, b in zip(rounds, rounds[1:])) or rounds[0] < 1:
        raise ValueError(f"rounds must be positive and strictly increasing, got {rounds}")
    if rounds[-1] > n:
        raise ValueError(f"cannot select {rounds[-1]} frames from a pool of {n}")
    rng = np.random.default_rng(seed)
    state = MinDistance(features.to(torch.float64))
    sel = Selection()

    def take(j: int, round_: int, uncertainty: float = math.nan) -> None:
        sel.add(j, round_, _pick_distance(state, j), uncertainty)
        state.add(j)

    if method == "random":
        perm = rng.permutation(n)[: rounds[-1]]
        for rank, j in enumerate(perm.tolist()):
            take(j, int(np.searchsorted(rounds, rank, side="right")))
        if on_round is not None:
            for r in range(len(rounds)):
                on_round(r, sel)
        return sel

    take(int(rng.integers(n)), 0)
    for j, d in farthest_point(state, rounds[0] - 1):
        sel.add(j, 0, d)
    if on_round is not None:
        on_round(0, sel)
    for r in range(1, len(rounds)):
        need = rounds[r] - len(state)
        if method == "ds":
            for j, d in farthest_point(state, need):
                sel.add(j, r, d)
        else:
            e = _errors(error_fn, state.order, r - 1, n)
            if method == "us":
                masked = e.clone()
                masked[state.selected] = -math.inf
                # stable sort: equal errors keep pool order, so ties are deterministic
                for j in torch.sort(masked, descending=True, stable=True).indices[:need].tolist():
                    take(j, r, float(e[j]))
            else:  # ds_us
                for j, d in farthest_point(state, need, uncertainty_weight * e):
                    sel.add(j, r, d, float(e[j]))
        if on_round is not None:
            on_round(r, sel)
    return sel
