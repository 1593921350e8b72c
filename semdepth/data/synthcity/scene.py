"""The data of one snippet's world: objects made of parts, and everything needed to light them.

Objects are rigid groups of parts (boxes or ellipsoids) in an object frame: a = along the road,
b = to its right, z = up. An object has a road position (s, l) and a speed along s; parts are
placed in the world per frame from it (`Scene.parts_at`). Static structure is the same mechanism
with speed 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from cityscapesscripts.helpers.labels import name2label

from semdepth.data.synthcity.camera import Trajectory
from semdepth.data.synthcity.road import Road

L = {name: name2label[name].id for name in (
    "unlabeled", "ego vehicle", "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "car", "truck", "bus")}

BOX, ELLIPSOID = 0, 1

# Materials (shading.py implements each). Ground materials are < 10.
M_ROAD, M_SIDEWALK, M_KERB, M_TERRAIN = 0, 1, 2, 3
(M_FACADE, M_FENCE, M_WALL, M_POLE, M_TLIGHT, M_SIGN, M_TRUNK, M_LEAVES, M_CAR, M_CABIN, M_WHEEL, M_CARGO,
 M_BUS, M_CLOTH, M_SKIN) = range(10, 25)



@dataclass
class Parts:
    """Structure of arrays, one row per part (filled through `SceneBuilder`)."""

    obj: np.ndarray  # int32 object index
    kind: np.ndarray  # BOX / ELLIPSOID
    off: np.ndarray  # [N,3] centre in the object frame (a, b, z)
    half: np.ndarray  # [N,3] half extents / radii along (a, b, z)
    label: np.ndarray  # uint8 Cityscapes label id
    mat: np.ndarray  # int16 material
    color: np.ndarray  # [N,3] float32 base albedo
    prm: np.ndarray  # [N,4] float32 material parameters
    seed: np.ndarray  # int64 texture seed


@dataclass
class Objects:
    s: np.ndarray  # float64 road position at t = 0
    l: np.ndarray
    v: np.ndarray  # speed along +s (negative: driving towards -s)
    rev: np.ndarray  # bool: object frame turned by 180 degrees (faces -s)
    moving: np.ndarray  # bool: independently moving (goes into the moving mask)
    role: list[str]


@dataclass
class Scene:
    split: str
    index: int
    city: str
    sequence: int
    road: Road
    lane: float  # lane width
    parking: bool
    road_half: float  # kerb at |l| = road_half
    lawn: float  # terrain strip width between kerb and sidewalk (0 = none)
    sidewalk: float  # sidewalk width (after the lawn)
    kerb: float  # kerb height
    # side (+1/-1) -> (ends of the s intervals, ground material of each) beyond the sidewalk
    zones: dict[int, tuple[np.ndarray, np.ndarray]]
    crosswalk: float | None
    traj: Trajectory
    lead_car: bool
    sun: np.ndarray  # unit vector towards the sun (world)
    sun_color: np.ndarray
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    ambient: float
    exposure: float
    white_balance: np.ndarray
    fog: float  # metres (extinction distance)
    road_color: np.ndarray
    sidewalk_color: np.ndarray
    grass_color: np.ndarray
    hood_color: np.ndarray
    tex_seed: int
    noise_seed: int
    objects: Objects
    parts: Parts
    meta: dict = field(default_factory=dict)

    def parts_at(self, t: float) -> dict[str, np.ndarray]:
        """World placement of every part at time t: centre [N,3], frame angle phi [N] (a-axis =
        (sin phi, cos phi)), plus the object's road position s (for culling)."""
        o, p = self.objects, self.parts
        s_obj = o.s + o.v * t
        x, y = self.road.to_world(s_obj, o.l)
        phi_obj = s_obj * self.road.curvature + np.where(o.rev, math.pi, 0.0)
        phi = phi_obj[p.obj]
        sa, ca = np.sin(phi), np.cos(phi)
        a, b, z = p.off[:, 0], p.off[:, 1], p.off[:, 2]
        cx = x[p.obj] + a * sa + b * ca
        cy = y[p.obj] + a * ca - b * sa
        return {"center": np.stack([cx, cy, z], axis=1), "phi": phi, "s": s_obj[p.obj]}


class SceneBuilder:
    def __init__(self) -> None:
        self.objs: dict[str, list] = {k: [] for k in ("s", "l", "v", "rev", "moving", "role")}
        self.parts: dict[str, list] = {k: [] for k in ("obj", "kind", "off", "half", "label", "mat", "color",
                                                       "prm", "seed")}

    def obj(self, role: str, s: float, l: float, v: float = 0.0, rev: bool = False, moving: bool = False) -> int:
        for k, val in zip(("s", "l", "v", "rev", "moving", "role"), (s, l, v, rev, moving, role)):
            self.objs[k].append(val)
        return len(self.objs["s"]) - 1

    def set_speed(self, obj: int, v: float) -> None:
        """Change an object's speed after its parts were drawn (a draw that must come last in the stream)."""
        self.objs["v"][obj] = v

    def part(self, obj: int, kind: int, off, half, label: str, mat: int, color, prm=(0, 0, 0, 0),
             seed: int = 0) -> None:
        for k, val in zip(self.parts, (obj, kind, off, half, L[label], mat, color, prm, seed)):
            self.parts[k].append(val)

    def box(self, obj: int, a: float, b: float, z0: float, ha: float, hb: float, height: float, label: str,
            mat: int, color, prm=(0, 0, 0, 0), seed: int = 0) -> None:
        """Box with centre (a, b) in the object frame standing on z0."""
        self.part(obj, BOX, (a, b, z0 + height / 2), (ha, hb, height / 2), label, mat, color, prm, seed)

    def build(self) -> tuple[Objects, Parts]:
        o, p = self.objs, self.parts
        objects = Objects(np.array(o["s"], np.float64), np.array(o["l"], np.float64), np.array(o["v"], np.float64),
                          np.array(o["rev"], bool), np.array(o["moving"], bool), list(o["role"]))
        parts = Parts(np.array(p["obj"], np.int32), np.array(p["kind"], np.int8),
                      np.array(p["off"], np.float64).reshape(-1, 3), np.array(p["half"], np.float64).reshape(-1, 3),
                      np.array(p["label"], np.uint8), np.array(p["mat"], np.int16),
                      np.array(p["color"], np.float32).reshape(-1, 3), np.array(p["prm"], np.float32).reshape(-1, 4),
                      np.array(p["seed"], np.int64))
        return objects, parts
