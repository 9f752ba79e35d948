"""views_touching: view culling by an object's cap on the sphere, exact for the view's square."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.culling import (
    circumscribed_half_angle_deg,
    distance_to_square_deg,
    views_touching,
)
from sap_ros.sphere.geometry import PatchView, angular_distance_deg, lonlat_to_bearing

FOV_DEG = 90.0


def sphere_views() -> List[PatchView]:
    """Rows at pitch -45, 0, +45 (8 yaws each) and the two caps: 26 views of 90 degrees."""
    views = [PatchView(90.0, 90.0, FOV_DEG, 64)]
    for pitch in (45.0, 0.0, -45.0):
        views += [PatchView(yaw, pitch, FOV_DEG, 64) for yaw in np.arange(-180.0, 180.0, 45.0)]
    views.append(PatchView(0.0, -90.0, FOV_DEG, 64))
    return views


VIEWS = sphere_views()
AXES = np.stack([v.axis for v in VIEWS])
BASES = np.stack([v.basis() for v in VIEWS])
PITCHES = np.array([v.pitch_deg for v in VIEWS])


def touching(centroid: np.ndarray, radius_deg: float, margin_deg: float = 0.0) -> np.ndarray:
    return views_touching(BASES, FOV_DEG / 2.0, centroid, radius_deg, margin_deg)


def random_cap_points(rng: np.random.Generator, centroid: np.ndarray, radius_deg: float,
                      n: int) -> np.ndarray:
    """Points spread over the cap of ``radius_deg`` around ``centroid`` (rim included)."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(centroid[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(centroid, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(centroid, e1)
    angle = np.radians(radius_deg) * np.sqrt(rng.random(n))
    angle[: n // 4] = np.radians(radius_deg)  # the rim is where misses would happen
    phi = rng.random(n) * 2.0 * np.pi
    return (np.cos(angle)[:, None] * centroid
            + np.sin(angle)[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2))


def test_north_pole_object_touches_cap_and_top_row_only() -> None:
    hit = touching(np.array([0.0, 0.0, 1.0]), radius_deg=10.0)
    assert hit[PITCHES == 90.0].all()
    assert hit[PITCHES == 45.0].all()
    assert not hit[PITCHES == -45.0].any()
    assert not hit[PITCHES == -90.0].any()


def test_tiny_object_on_an_axis_and_margin_reaches_neighbours() -> None:
    index = next(i for i, v in enumerate(VIEWS) if v.yaw_deg == 0.0 and v.pitch_deg == 0.0)
    axis = VIEWS[index].axis
    hit = touching(axis, radius_deg=0.0)
    assert hit[index]
    far = angular_distance_deg(AXES, axis)
    side = np.flatnonzero(np.isclose(far, 90.0) & (PITCHES == 0.0))
    assert side.size == 2 and not hit[side].any()
    # The side views' edges are 45 degrees from the axis: a reach of 45 touches them, 44 not.
    assert touching(axis, radius_deg=0.0, margin_deg=45.5)[side].all()
    assert touching(axis, radius_deg=35.0, margin_deg=10.5)[side].all()
    assert not touching(axis, radius_deg=34.0, margin_deg=10.0)[side].any()


def test_never_misses_a_view_that_sees_the_object() -> None:
    rng = np.random.default_rng(3)
    kept = 0
    for _ in range(150):
        lon, lat = rng.uniform(-180.0, 180.0), np.degrees(np.arcsin(rng.uniform(-1.0, 1.0)))
        centroid = lonlat_to_bearing(np.array(lon), np.array(lat))
        radius = float(rng.choice([0.0, rng.uniform(0.0, 5.0), rng.uniform(5.0, 40.0)]))
        points = random_cap_points(rng, centroid, radius, 200)
        sees = np.array([view.contains(points).any() for view in VIEWS])
        hit = touching(centroid, radius)
        assert not (sees & ~hit).any(), f'missed a view for lon={lon}, lat={lat}, r={radius}'
        kept += int(hit.sum())
    assert kept < 150 * len(VIEWS) * 0.4  # culling actually drops views


def test_distance_to_square_matches_a_dense_sampling_of_the_view() -> None:
    """The exact distance is the nearest of many points covering the view (to their spacing)."""
    view = PatchView(0.0, 0.0, 70.0, 161)
    grid = view.pixel_grid_bearings().reshape(-1, 3)  # world frame; the view looks along +x
    spacing_deg = 70.0 / 161
    rng = np.random.default_rng(5)
    points = rng.normal(size=(300, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    exact = distance_to_square_deg(points @ view.basis().T, 35.0)
    brute = np.degrees(np.arccos(np.clip(points @ grid.T, -1.0, 1.0))).min(axis=1)
    brute = np.where(view.contains(points), 0.0, brute)
    assert np.abs(exact - brute).max() <= spacing_deg
    assert (exact > 0).any() and (exact > 90).any()


def test_keeps_fewer_views_than_the_cone_around_the_axis() -> None:
    """A corner only passing near the cap no longer keeps a view (the old, looser test did)."""
    rng = np.random.default_rng(9)
    cone = circumscribed_half_angle_deg(FOV_DEG / 2.0)
    exact_kept = cone_kept = 0
    for _ in range(100):
        centroid = rng.normal(size=3)
        centroid /= np.linalg.norm(centroid)
        exact = touching(centroid, 10.0, 5.0)
        by_cone = angular_distance_deg(AXES, centroid) <= cone + 15.0
        assert not (exact & ~by_cone).any()
        exact_kept += int(exact.sum())
        cone_kept += int(by_cone.sum())
    assert exact_kept < 0.9 * cone_kept


def test_corner_point_is_kept() -> None:
    view = PatchView(20.0, 10.0, FOV_DEG, 64)
    corner = view.pixel_to_bearing(np.array(-0.5), np.array(-0.5))
    assert view.contains(corner)
    assert views_touching(view.basis()[None], FOV_DEG / 2.0, corner, 0.0, 0.0)[0]
    assert circumscribed_half_angle_deg(FOV_DEG / 2.0) == pytest.approx(
        float(angular_distance_deg(view.axis, corner)))


def test_huge_object_touches_every_view() -> None:
    assert touching(np.array([1.0, 0.0, 0.0]), radius_deg=130.0).all()


def test_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match='centroid'):
        touching(np.zeros(3), 5.0)
    with pytest.raises(InvalidInputError, match='radius_deg'):
        touching(np.array([1.0, 0.0, 0.0]), float('nan'))
    with pytest.raises(InvalidInputError, match='bases'):
        views_touching(np.ones((4, 3)), 45.0, np.array([1.0, 0.0, 0.0]), 1.0, 0.0)
    with pytest.raises(InvalidInputError, match='half_fov_deg'):
        views_touching(BASES, 90.0, np.array([1.0, 0.0, 0.0]), 1.0, 0.0)
