"""Road-aligned coordinates of a straight or circular street.

World frame: X, Y horizontal, Z up, ground at Z = 0; the road starts at the origin heading +Y, and
+X is on its right. A point is addressed by (s, l): arc length along the centre line and signed
lateral offset (positive = right). A constant curvature keeps both directions exact and cheap:
the centre line is a circle of signed radius R = 1/kappa around (R, 0), so objects placed at fixed
(s, l) and moving along s at one speed move rigidly together (a same-speed lead car keeps its
pose relative to the camera even on a curve).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Road:
    curvature: float  # 1/m, > 0 bends right, 0 = straight

    @property
    def radius(self) -> float:
        return 1.0 / self.curvature

    def angle(self, s: np.ndarray | float) -> np.ndarray | float:
        """Heading change (radians, clockwise positive) after arc length s."""
        return s * self.curvature

    def to_world(self, s: np.ndarray | float, l: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(s, l) -> (X, Y)."""
        if self.curvature == 0.0:
            return np.asarray(l, np.float64), np.asarray(s, np.float64)
        r = self.radius
        a = np.asarray(s, np.float64) * self.curvature
        rho = r - np.asarray(l, np.float64)
        return r - rho * np.cos(a), rho * np.sin(a)

    def to_local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) -> (s, l); the inverse of `to_world` within |l| < |R|."""
        if self.curvature == 0.0:
            return y, x
        r = self.radius
        sg = np.sign(r)
        dx, dy = r - x, y
        rho = sg * np.sqrt(dx * dx + dy * dy)
        a = np.arctan2(sg * dy, sg * dx)
        return r * a, r - rho

    def lateral(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """l only (cheaper than `to_local`)."""
        if self.curvature == 0.0:
            return x
        r = self.radius
        dx, dy = r - x, y
        return r - np.sign(r) * np.sqrt(dx * dx + dy * dy)

    def heading(self, s: np.ndarray | float) -> np.ndarray:
        """Unit tangent (X, Y) at arc length s, shape [..., 2]."""
        a = np.asarray(s, np.float64) * self.curvature
        return np.stack([np.sin(a), np.cos(a)], axis=-1)

    def frame(self, s: float) -> np.ndarray:
        """3x3 rotation whose columns are the local axes (tangent, right normal, up) in world."""
        a = float(s) * self.curvature
        t = np.array([np.sin(a), np.cos(a), 0.0])
        n = np.array([np.cos(a), -np.sin(a), 0.0])
        return np.stack([t, n, np.array([0.0, 0.0, 1.0])], axis=1)
