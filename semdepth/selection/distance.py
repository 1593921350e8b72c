"""Euclidean distances to the selected set, kept incrementally.

Hoyer's code builds the full N x N distance matrix with `torch.cdist` and, for every pick, takes the
minimum over the rows of all selected frames: O(N²·D) work and O(N²) memory up front, plus
O(|S|·N) per pick, in every round. Farthest-point selection only ever needs, for each pool frame j,
`min_{i in S} dist(i, j)`; adding frame k changes that to
`min(old, dist(k, j))`. So each pick costs one row of distances, O(N·D), and memory stays O(N·D).

The combined Hoyer score `min_i (dist(i, j) + λ·E_j)` equals `min_i dist(i, j) + λ·E_j` because the
bias does not depend on i; the bias therefore lives outside this class (see greedy.py).
"""
from __future__ import annotations

import torch


def squared_norms(features: torch.Tensor) -> torch.Tensor:
    """||x_j||² for every row: [N] (computed once per pool)."""
    return torch.einsum("nd,nd->n", features, features)


def row_distances(features: torch.Tensor, index: int, sq: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distance from frame `index` to every frame: [N], in one matrix-vector product.

    ||x_j - x_i||² = ||x_j||² + ||x_i||² - 2·x_j·x_i reads the features once (the loop is
    memory-bound; differencing first costs an [N, D] temporary and ~2x the time). The expansion
    cancels badly when ||x||² is large next to the distance; the features are z-scored (centred, unit
    scale) and kept in float64, so the absolute error stays near sqrt(eps·||x||²) ~ 1e-6 against
    typical distances of sqrt(2D) ~ 90.
    """
    sq = squared_norms(features) if sq is None else sq
    d2 = sq + sq[index] - 2.0 * (features @ features[index])
    return d2.clamp_min_(0.0).sqrt_()


class MinDistance:
    """For every pool frame, the distance to its nearest selected frame (inf while none is selected)."""

    def __init__(self, features: torch.Tensor) -> None:
        if features.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
        self.features = features
        self.sq = squared_norms(features)
        n = features.shape[0]
        self.min_dist = torch.full((n,), float("inf"), dtype=features.dtype, device=features.device)
        self.selected = torch.zeros(n, dtype=torch.bool, device=features.device)
        self.order: list[int] = []

    def __len__(self) -> int:
        return len(self.order)

    def add(self, index: int) -> None:
        """Mark `index` selected and lower every frame's minimum distance: one O(N·D) row."""
        if self.selected[index]:
            raise ValueError(f"frame {index} is already selected")
        torch.minimum(self.min_dist, row_distances(self.features, index, self.sq), out=self.min_dist)
        self.min_dist[index] = 0.0  # exactly zero, whatever the rounding of the expansion
        self.selected[index] = True
        self.order.append(index)


def brute_force_min_distance(features: torch.Tensor, selected: list[int]) -> torch.Tensor:
    """Reference: min over `selected` of the full distance rows (O(|S|·N·D)), for tests and benchmarks."""
    if not selected:
        return torch.full((features.shape[0],), float("inf"), dtype=features.dtype)
    sel = features[torch.as_tensor(selected)]
    diff = features[None, :, :] - sel[:, None, :]  # [S, N, D]
    return torch.linalg.vector_norm(diff, dim=2).min(dim=0).values


def nearest_neighbour_distances(features: torch.Tensor) -> torch.Tensor:
    """Distance from each row to its nearest *other* row: [N] (inf for a single row).

    Used for the metrics (spread of the chosen set); one row at a time keeps memory at O(N·D).
    """
    n = features.shape[0]
    sq = squared_norms(features)
    out = torch.full((n,), float("inf"), dtype=features.dtype)
    for i in range(n):
        d = row_distances(features, i, sq)
        d[i] = float("inf")
        out[i] = d.min()
    return out


def min_distance_to_set(features: torch.Tensor, selected: list[int]) -> torch.Tensor:
    """For every row, distance to the nearest row in `selected` (k-center coverage), incrementally."""
    state = MinDistance(features)
    for i in selected:
        state.add(i)
    return state.min_dist
