"""Looks of the two domains: the target city (train/val) and the shifted `source` city.

The source domain stands in for "another dataset" (a segmentation network pretrained elsewhere), so
it differs in what a network picks up first: facade palettes, how green the street is, the time of
day. Geometry rules stay the same, as they would between two real cities.
"""
from __future__ import annotations

from dataclasses import dataclass

Rgb = tuple[float, float, float]


@dataclass(frozen=True)
class Style:
    facades: tuple[Rgb, ...]  # base albedos of plaster facades
    bricks: tuple[Rgb, ...]  # brick albedos
    brick_share: float
    building_height: tuple[float, float]  # metres
    setback_share: float  # lots whose facade stands back behind a yard
    park_share: float  # lots that are parks (terrain, trees, fence) instead of buildings
    tree_share: float  # chance of a tree at each kerb slot
    hedge_share: float
    sun_elevation: tuple[float, float]  # degrees
    sun_tint: Rgb
    sky_zenith: Rgb
    sky_horizon: Rgb
    exposure: tuple[float, float]
    sidewalks: tuple[Rgb, ...]
    grass: Rgb
    leaves: tuple[Rgb, ...]
    cars: tuple[Rgb, ...]


TARGET = Style(
    facades=((0.62, 0.58, 0.50), (0.55, 0.52, 0.47), (0.70, 0.64, 0.52), (0.48, 0.47, 0.46), (0.66, 0.60, 0.46),
             (0.58, 0.50, 0.42), (0.74, 0.72, 0.68), (0.45, 0.42, 0.38)),
    bricks=((0.45, 0.22, 0.15), (0.52, 0.30, 0.20), (0.38, 0.20, 0.16), (0.55, 0.42, 0.30)),
    brick_share=0.35,
    building_height=(7.0, 24.0),
    setback_share=0.35,
    park_share=0.12,
    tree_share=0.45,
    hedge_share=0.4,
    sun_elevation=(25.0, 60.0),
    sun_tint=(1.0, 0.97, 0.92),
    sky_zenith=(0.30, 0.45, 0.75),
    sky_horizon=(0.72, 0.78, 0.85),
    exposure=(0.85, 1.15),
    sidewalks=((0.50, 0.49, 0.47), (0.56, 0.53, 0.48), (0.45, 0.45, 0.46), (0.52, 0.44, 0.40)),
    grass=(0.24, 0.36, 0.12),
    leaves=((0.16, 0.30, 0.08), (0.22, 0.34, 0.10), (0.12, 0.24, 0.09)),
    cars=((0.05, 0.05, 0.06), (0.70, 0.70, 0.72), (0.45, 0.46, 0.48), (0.55, 0.08, 0.06), (0.08, 0.14, 0.40),
          (0.85, 0.85, 0.84), (0.20, 0.22, 0.25), (0.35, 0.30, 0.20)),
)

SOURCE = Style(
    facades=((0.55, 0.70, 0.80), (0.80, 0.60, 0.62), (0.60, 0.75, 0.55), (0.85, 0.82, 0.60), (0.35, 0.40, 0.50),
             (0.75, 0.75, 0.80)),
    bricks=((0.30, 0.30, 0.35), (0.60, 0.50, 0.40)),
    brick_share=0.15,
    building_height=(5.0, 16.0),
    setback_share=0.6,
    park_share=0.25,
    tree_share=0.8,
    hedge_share=0.7,
    sun_elevation=(6.0, 18.0),
    sun_tint=(1.0, 0.78, 0.55),
    sky_zenith=(0.22, 0.30, 0.60),
    sky_horizon=(0.95, 0.72, 0.50),
    exposure=(0.75, 1.05),
    sidewalks=((0.60, 0.55, 0.50), (0.40, 0.38, 0.40)),
    grass=(0.30, 0.40, 0.10),
    leaves=((0.20, 0.35, 0.06), (0.30, 0.38, 0.08), (0.10, 0.28, 0.12)),
    cars=((0.80, 0.75, 0.10), (0.10, 0.35, 0.20), (0.60, 0.60, 0.62), (0.08, 0.08, 0.10), (0.60, 0.20, 0.40)),
)


def style_for(split: str) -> Style:
    return SOURCE if split == "source" else TARGET
