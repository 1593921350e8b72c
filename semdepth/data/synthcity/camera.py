"""Pinhole camera, its trajectory along the road, and the rays of every pixel.

Intrinsics follow Cityscapes' (2048x1024: fx 2262.52, fy 2265.30, u0 1096.98, v0 513.137, stereo
baseline 0.209313 m) scaled to the raw resolution with pixel centres at integer coordinates, so a
network sees the same field of view and principal-point offset as on the real data.

Camera axes are OpenCV's (x right, y down, z forward). Ray directions are normalised to z = 1 in the
camera, which makes the ray parameter t of a hit equal to its z-depth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from semdepth.data.synthcity.road import Road

CITYSCAPES_SIZE = (1024, 2048)  # H, W
CITYSCAPES_K = (2262.52, 2265.3017905988554, 1096.98, 513.137)  # fx, fy, u0, v0
BASELINE = 0.209313  # metres


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    height: int
    width: int

    @classmethod
    def cityscapes(cls, height: int, width: int) -> "Intrinsics":
        fx, fy, u0, v0 = CITYSCAPES_K
        sx, sy = width / CITYSCAPES_SIZE[1], height / CITYSCAPES_SIZE[0]
        return cls(fx * sx, fy * sy, (u0 + 0.5) * sx - 0.5, (v0 + 0.5) * sy - 0.5, height, width)

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def camera_rays(self) -> np.ndarray:
        """[3, H, W] float32 ray directions in the camera frame (planar x, y, z), z = 1."""
        u = (np.arange(self.width, dtype=np.float64) - self.cx) / self.fx
        v = (np.arange(self.height, dtype=np.float64) - self.cy) / self.fy
        d = np.ones((3, self.height, self.width), np.float32)
        d[0] = u[None, :]
        d[1] = v[:, None]
        return d


@dataclass(frozen=True)
class Trajectory:
    """Ego motion: constant speed in a lane, smooth small pitch/yaw/height oscillations (body motion).

    Jitter is smooth rather than white so that consecutive frames differ by a fraction of a pixel
    of rotation, as a real car body does at 17 Hz.
    """

    road: Road
    lateral: float  # lane position l (m)
    height: float  # camera height (m)
    speed: float  # m/s
    pitch0: float  # radians, positive looks down
    pitch_amp: float
    pitch_freq: float
    pitch_phase: float
    yaw_amp: float
    yaw_freq: float
    yaw_phase: float
    bounce_amp: float  # metres
    bounce_freq: float

    def s_at(self, t: float) -> float:
        return self.speed * t

    def pose(self, t: float) -> np.ndarray:
        """T_world_cam (4x4, float64) at time t (seconds from the annotated frame)."""
        s = self.s_at(t)
        x, y = self.road.to_world(s, self.lateral)
        z = self.height + self.bounce_amp * math.sin(2 * math.pi * self.bounce_freq * t)
        frame = self.road.frame(s)
        tangent, normal, up = frame[:, 0], frame[:, 1], frame[:, 2]
        yaw = self.yaw_amp * math.sin(2 * math.pi * self.yaw_freq * t + self.yaw_phase)
        pitch = self.pitch0 + self.pitch_amp * math.sin(2 * math.pi * self.pitch_freq * t + self.pitch_phase)
        horiz = math.cos(yaw) * tangent + math.sin(yaw) * normal
        right = -math.sin(yaw) * tangent + math.cos(yaw) * normal
        forward = math.cos(pitch) * horiz - math.sin(pitch) * up
        down = np.cross(forward, right)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([right, down, forward], axis=1)
        pose[:3, 3] = (float(x), float(y), z)
        return pose
