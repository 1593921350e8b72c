"""Procedural street of one snippet: road cross-section, lots, furniture, vehicles, people, light.

Everything is drawn from one `numpy.random.Generator` seeded by (seed, split, snippet index), so a
snippet is the same in any process and in any order of rendering.
"""
from __future__ import annotations

import math

import numpy as np

from semdepth.data.synthcity.camera import Trajectory
from semdepth.data.synthcity.objects import (add_bus, add_car, add_lamp, add_person, add_sign, add_traffic_light,
                                             add_tree, add_truck, jitter, pick)
from semdepth.data.synthcity.road import Road
from semdepth.data.synthcity.scene import (M_FACADE, M_FENCE, M_LEAVES, M_SIDEWALK, M_TERRAIN, M_WALL, Scene,
                                           SceneBuilder)
from semdepth.data.synthcity.style import Style

VIEW_AHEAD = 320.0  # metres of street generated ahead of the annotated camera position
FURNITURE_AHEAD = 190.0  # small objects only this far (they are sub-pixel beyond)
BEHIND = 40.0


def _lots(b: SceneBuilder, rng: np.random.Generator, style: Style, side: int, edge: float, kerb: float,
          s_lo: float, s_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Buildings, parks and yards beyond the sidewalk on one side; returns the ground zones."""
    bounds, mats = [s_lo - 50.0], []
    s = s_lo - 50.0 + rng.uniform(0, 10)
    while s < s_hi:
        length = rng.uniform(9.0, 26.0)
        c = s + length / 2
        kind = rng.random()
        seed = int(rng.integers(1 << 30))
        if kind < style.park_share:
            bounds.append(s + length), mats.append(M_TERRAIN)
            o = b.obj("park", c, side * (edge + 0.15))
            if rng.random() < 0.7:
                b.box(o, 0.0, 0.0, kerb - 0.1, length / 2 - 0.3, 0.025, rng.uniform(1.0, 1.8), "fence", M_FENCE,
                      jitter(rng, ((0.35, 0.38, 0.35), (0.45, 0.35, 0.25), (0.6, 0.6, 0.6))[int(rng.integers(3))]),
                      (float(rng.integers(2)), 0, 0, 0), seed)
            for _ in range(int(rng.integers(2, 6))):
                add_tree(b, rng, style, c + rng.uniform(-length / 2, length / 2), side * (edge + rng.uniform(3, 14)),
                         kerb, 1.0)
            depth = 30.0
        else:
            setback = rng.uniform(2.0, 7.0) if rng.random() < style.setback_share else rng.uniform(0.0, 0.4)
            depth = rng.uniform(10.0, 16.0)
            height = rng.uniform(*style.building_height)
            brick = rng.random() < style.brick_share
            color = jitter(rng, pick(rng, style.bricks if brick else style.facades), 0.06)
            spacing = rng.uniform(2.2, 3.4)
            floor = rng.uniform(2.9, 3.6)
            win_w = rng.uniform(0.9, min(1.7, spacing - 0.6))
            prm = (float(brick), spacing, floor, win_w)
            o = b.obj("building", c, side * (edge + setback + depth / 2))
            b.box(o, 0.0, 0.0, -0.5, length / 2, depth / 2, height + 0.5, "building", M_FACADE, color, prm, seed)
            if setback > 1.0:
                bounds.append(s + length), mats.append(M_TERRAIN if rng.random() < 0.6 else M_SIDEWALK)
                front = rng.random()
                y = b.obj("yard", c, side * (edge + 0.3))
                if front < style.hedge_share:
                    b.box(y, 0.0, 0.0, kerb - 0.1, length / 2 - 0.5, 0.3, rng.uniform(0.7, 1.5), "vegetation",
                          M_LEAVES, jitter(rng, pick(rng, style.leaves), 0.1), (1, 0, 0, 0), seed + 5)
                elif front < style.hedge_share + 0.25:
                    b.box(y, 0.0, 0.0, kerb - 0.1, length / 2 - 0.5, 0.12, rng.uniform(0.6, 1.4), "wall", M_WALL,
                          jitter(rng, (0.55, 0.53, 0.5), 0.1), (0, 0, 0, 0), seed + 5)
                elif front < style.hedge_share + 0.5:
                    b.box(y, 0.0, 0.0, kerb - 0.1, length / 2 - 0.5, 0.025, rng.uniform(1.0, 1.6), "fence", M_FENCE,
                          jitter(rng, (0.3, 0.32, 0.3), 0.2), (float(rng.integers(2)), 0, 0, 0), seed + 5)
            else:
                bounds.append(s + length), mats.append(M_SIDEWALK)
        # back row: taller blocks fill the skyline behind every lot
        o = b.obj("backdrop", c, side * (edge + depth + rng.uniform(8.0, 20.0)))
        bh = rng.uniform(style.building_height[0] + 6, style.building_height[1] + 14)
        color = jitter(rng, pick(rng, style.facades), 0.1)
        b.box(o, 0.0, 0.0, -0.5, length / 2 + 0.5, 6.0, bh, "building", M_FACADE, color,
              (0.0, rng.uniform(2.4, 3.2), rng.uniform(3.0, 3.4), 1.1), seed + 9)
        s += length + (rng.uniform(0.5, 4.0) if rng.random() < 0.3 else 0.0)
        if bounds[-1] < s:  # a gap between lots: terrain
            bounds.append(s), mats.append(M_TERRAIN)
    return np.array(bounds[1:], np.float64), np.array(mats, np.int16)


def build_scene(split: str, index: int, city: str, sequence: int, rng: np.random.Generator, style: Style,
                speed_range: tuple[float, float], lead_car_share: float, n_before: float,
                lead_rel_speed: float = 0.0, lead_cars_max: int = 1, n_after: float = 0.0) -> Scene:
    """Draw one snippet's street. `n_before`, `n_after`: seconds before and after the annotated
    frame that are rendered.

    `lead_rel_speed` (m/s) and `lead_cars_max` shape the traffic of lead-car snippets (see
    `_near_ego_traffic`); their draws come after every other one, so with the defaults (0, 1) the
    street is the one earlier versions drew.
    """
    straight = rng.random() < 0.45
    curvature = 0.0 if straight else float(rng.choice([-1, 1]) / rng.uniform(150.0, 600.0))
    road = Road(curvature)
    lane = rng.uniform(3.0, 3.6)
    parking = rng.random() < 0.75
    road_half = lane + (rng.uniform(2.0, 2.4) if parking else rng.uniform(0.3, 0.8))
    lawn = rng.uniform(1.0, 2.5) if rng.random() < 0.45 else 0.0
    sidewalk = rng.uniform(2.5, 5.5)
    kerb = rng.uniform(0.1, 0.16)
    edge = road_half + lawn + sidewalk

    speed = rng.uniform(*speed_range)
    traj = Trajectory(road=road, lateral=lane / 2 + rng.uniform(-0.3, 0.3), height=rng.uniform(1.2, 1.6),
                      speed=speed, pitch0=math.radians(rng.uniform(-0.5, 2.0)),
                      pitch_amp=math.radians(rng.uniform(0.05, 0.25)), pitch_freq=rng.uniform(0.3, 0.8),
                      pitch_phase=rng.uniform(0, 2 * math.pi), yaw_amp=math.radians(rng.uniform(0.02, 0.15)),
                      yaw_freq=rng.uniform(0.2, 0.5), yaw_phase=rng.uniform(0, 2 * math.pi),
                      bounce_amp=rng.uniform(0.0, 0.01), bounce_freq=rng.uniform(1.0, 2.0))
    s_lo, s_hi = -speed * n_before - BEHIND, VIEW_AHEAD
    s_furn = FURNITURE_AHEAD

    b = SceneBuilder()
    zones = {side: _lots(b, rng, style, side, edge, kerb, s_lo, s_hi) for side in (1, -1)}
    density = 1.0 if style.tree_share > 0.6 else 0.0

    # kerb-side furniture: trees, lamps, signs, traffic lights
    for side in (1, -1):
        tree_l = road_half + (lawn / 2 if lawn else 0.9)
        s = s_lo + rng.uniform(0, 8)
        while s < s_furn:
            if rng.random() < style.tree_share:
                add_tree(b, rng, style, s, side * tree_l, kerb, density, tree_l - lane / 2 - 0.9)
            s += rng.uniform(7.0, 13.0)
        s = s_lo + rng.uniform(0, 20)
        while s < s_furn:
            add_lamp(b, rng, s, side * (road_half + 0.4), kerb, side)
            s += rng.uniform(22.0, 35.0)
        s = s_lo + rng.uniform(0, 15)
        while s < s_furn:
            add_sign(b, rng, s, side * (road_half + 0.35 + rng.uniform(0, 0.3)), kerb)
            s += rng.uniform(20.0, 60.0)
    crosswalk = None
    if rng.random() < 0.6:  # a junction ahead: traffic lights on both sides, sometimes a crosswalk
        sj = rng.uniform(15.0, 70.0)
        for side in (1, -1):
            add_traffic_light(b, rng, sj + rng.uniform(-1, 1), side * (road_half + 0.5), kerb, side)
        if rng.random() < 0.6:
            crosswalk = sj + 1.5

    # people on the sidewalks
    walk_l = road_half + lawn
    for side in (1, -1):
        for _ in range(int(rng.integers(2, 9))):
            s = rng.uniform(5.0, 90.0)
            walking = rng.random() < 0.7
            v = rng.uniform(0.8, 1.7) * rng.choice([-1, 1]) if walking else 0.0
            add_person(b, rng, s, side * (walk_l + rng.uniform(0.5, sidewalk - 0.5)), kerb, v, walking)

    # parked vehicles
    if parking:
        park_l = lane + 1.15
        for side in (1, -1):
            s = s_lo + rng.uniform(0, 6)
            occupancy = rng.uniform(0.15, 0.65)
            while s < s_furn:
                if rng.random() < occupancy:
                    r = rng.random()
                    lat = side * (park_l + rng.uniform(-0.1, 0.1))
                    if r < 0.04:
                        add_truck(b, rng, "parked", s + 3, lat, 0.0, side < 0, False)
                        s += 5
                    else:
                        add_car(b, rng, style, "parked", s, lat, 0.0, side < 0, False)
                s += rng.uniform(5.5, 7.5)

    # traffic
    lead = rng.random() < lead_car_share
    lead_gap = rng.uniform(9.0, 20.0)
    lead_obj = -1
    if lead:
        lead_obj = add_car(b, rng, style, "lead", lead_gap, traj.lateral, speed, False, True)
    else:
        if rng.random() < 0.5:  # a car ahead in our lane at another speed
            add_car(b, rng, style, "ahead", rng.uniform(25.0, 80.0), lane / 2, speed * rng.uniform(0.4, 0.9),
                    False, True)
    s0 = rng.uniform(5.0, 40.0)
    for _ in range(int(rng.integers(1, 4))):
        s0, v = s0 + rng.uniform(15.0, 60.0), -rng.uniform(6.0, 14.0)
        r = rng.random()
        if r < 0.08:
            add_bus(b, rng, "oncoming", s0, -lane / 2, v, True, True)
        elif r < 0.14:
            add_truck(b, rng, "oncoming", s0, -lane / 2, v, True, True)
        else:
            add_car(b, rng, style, "oncoming", s0, -lane / 2, v, True, True)

    looks = _light_and_looks(rng, style)
    rel_speeds = (_near_ego_traffic(b, rng, style, lead_obj, lead_gap, lane, speed, lead_rel_speed, lead_cars_max,
                                    max(n_before, n_after)) if lead else [])
    objects, parts = b.build()
    elevation = looks.pop("sun_elevation_deg")
    scene = Scene(
        split=split, index=index, city=city, sequence=sequence, road=road, lane=lane, parking=parking,
        road_half=road_half, lawn=lawn, sidewalk=sidewalk, kerb=kerb, zones=zones, crosswalk=crosswalk, traj=traj,
        lead_car=lead, objects=objects, parts=parts, **looks,
        meta={"curvature": curvature, "camera_height": traj.height, "lead_gap": lead_gap if lead else 0.0,
              "sun_elevation_deg": elevation, "lead_rel_speeds": rel_speeds})
    return scene


def _light_and_looks(rng: np.random.Generator, style: Style) -> dict:
    """Sun, sky, ambient light, camera response and surface colours of one snippet (Scene fields).

    The draws are in the order earlier versions made them, right after the traffic: the streets of a
    given seed stay the same.
    """
    elev = math.radians(rng.uniform(*style.sun_elevation))
    azim = rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)])
    tint = np.asarray(style.sun_tint)
    overcast = rng.random() < 0.2
    out = {"sun": sun, "sun_color": tint * (0.45 if overcast else 1.0) * rng.uniform(0.9, 1.1)}
    out["sky_zenith"] = jitter(rng, style.sky_zenith, 0.1) if not overcast else np.array([0.62, 0.64, 0.68])
    out["sky_horizon"] = jitter(rng, style.sky_horizon, 0.06) if not overcast else np.array([0.78, 0.79, 0.8])
    out["ambient"] = rng.uniform(0.45, 0.6) if overcast else rng.uniform(0.3, 0.42)
    out["exposure"] = rng.uniform(*style.exposure)
    out["white_balance"] = 1.0 + rng.uniform(-0.05, 0.05, 3)
    out["fog"] = rng.uniform(250.0, 700.0)
    out["road_color"] = jitter(rng, (0.22, 0.22, 0.23), 0.15)
    out["sidewalk_color"] = jitter(rng, pick(rng, style.sidewalks), 0.05)
    out["grass_color"] = jitter(rng, style.grass, 0.1)
    out["hood_color"] = jitter(rng, (0.12, 0.12, 0.13), 0.3)
    out["tex_seed"] = int(rng.integers(1 << 30))
    out["noise_seed"] = int(rng.integers(1 << 30))
    out["sun_elevation_deg"] = math.degrees(elev)
    return out


def _near_ego_traffic(b: SceneBuilder, rng: np.random.Generator, style: Style, lead_obj: int, lead_gap: float,
                      lane: float, speed: float, rel_speed: float, cars_max: int, seconds: float) -> list[float]:
    """Give the lead car a speed near the ego speed and queue more such cars ahead of it; their
    relative speeds (m/s, nearest car first).

    Why: a car at exactly the ego speed does not move in the image, so the identity warp explains it
    as well as any depth and auto-masking removes it from the loss. Real lead cars drive at *nearly*
    the ego speed; in some of their pixels a far-depth warp beats the identity, and that is how the
    self-supervised depth learns to put them at infinity. Each car's relative speed is uniform in
    [-rel_speed, +rel_speed]. The street has one lane per direction, so the other cars queue ahead
    in the ego lane, 9-20 m apart plus room for their relative drift in the rendered frames, which
    lie at most `seconds` from the annotated one.
    Everything here is drawn after every other draw of the snippet, so rel_speed 0 and cars_max 1
    leave the street as it was.
    """
    rel = [rel_speed * rng.uniform(-1.0, 1.0) + 0.0]  # + 0.0: rel_speed 0 gives 0.0, never -0.0
    b.set_speed(lead_obj, speed + rel[0])
    n_cars = int(rng.integers(1, cars_max + 1)) if cars_max > 1 else 1
    s = lead_gap
    for _ in range(n_cars - 1):
        s += rng.uniform(9.0, 20.0) + 2.0 * rel_speed * seconds
        lateral = lane / 2 + rng.uniform(-0.25, 0.25)
        rel.append(rel_speed * rng.uniform(-1.0, 1.0) + 0.0)
        add_car(b, rng, style, "lead", s, lateral, speed + rel[-1], False, True)
    return rel
