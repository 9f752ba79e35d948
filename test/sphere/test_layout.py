"""PatchLayout: sphere coverage, the zigzag path, the per-layout table cache (ARCHITECTURE §4)."""
from __future__ import annotations

import threading
from typing import Dict, List

import numpy as np
import pytest

from sap_ros.config import PatchConfig, PathOrder
from sap_ros.errors import ConfigError
from sap_ros.sphere.geometry import angular_distance_deg, lonlat_to_bearing
from sap_ros.sphere.layout import PatchLayout, _repair_weak_steps, sphere_points

SIZE_PX = 32  # geometry only; the pixel size does not change any of the measurements below

DEFAULT = PatchLayout.build(size_px=SIZE_PX)
RASTER = PatchLayout.build(size_px=SIZE_PX, order='raster')

# Layouts get costly to measure (overlap matrix is N x N); build each one once per session.
_LAYOUTS: Dict[tuple, PatchLayout] = {}


def layout(fov_deg: float, overlap: float = 0.5, order: str = 'zigzag') -> PatchLayout:
    key = (fov_deg, overlap, order)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = PatchLayout.build(fov_deg, SIZE_PX, order, overlap)
    return _LAYOUTS[key]


def covered(lay: PatchLayout, bearings: np.ndarray) -> np.ndarray:
    inside = np.zeros(len(bearings), dtype=bool)
    for view in lay.views:
        inside |= view.contains(bearings)
    return inside


def closing_overlap(lay: PatchLayout) -> float:
    m = lay.overlap_matrix()
    first, last = lay.path[0], lay.path[-1]
    return float(min(m[first, last], m[last, first]))


def rows_by_pitch(lay: PatchLayout) -> Dict[float, List[int]]:
    rows: Dict[float, List[int]] = {}
    for i, view in enumerate(lay.views):
        rows.setdefault(view.pitch_deg, []).append(i)
    return rows


# ---------------------------------------------------------------------------- default layout
def test_default_layout_matches_the_config_defaults() -> None:
    cfg = PatchConfig()
    assert DEFAULT.fov_deg == cfg.fov_deg == 90.0
    assert DEFAULT.order is PathOrder.ZIGZAG
    assert DEFAULT.size_px == SIZE_PX
    assert all(view.size_px == SIZE_PX and view.fov_deg == 90.0 for view in DEFAULT.views)
    assert len(DEFAULT) == len(DEFAULT.views) == len(DEFAULT.path)
    # Both poles have a view looking straight at them.
    pitches = [view.pitch_deg for view in DEFAULT.views]
    assert pitches.count(90.0) == 1 and pitches.count(-90.0) == 1


def test_default_layout_covers_the_whole_sphere() -> None:
    assert DEFAULT.coverage() == 1.0
    points = sphere_points(200_000)
    assert covered(DEFAULT, points).all()


def test_default_layout_sees_the_poles_near_an_axis() -> None:
    # The caps are there so that pole pixels are never only seen at a patch border.
    points = sphere_points(20_000)
    polar = points[np.abs(points[:, 2]) > np.sin(np.radians(80.0))]
    assert len(polar) > 100
    angles = angular_distance_deg(polar[:, None, :], DEFAULT.axes[None, :, :])
    assert angles.min(axis=1).max() <= 45.0 + 1e-9


def test_sphere_points_are_unit_and_spread_evenly() -> None:
    points = sphere_points(10_000)
    assert points.shape == (10_000, 3)
    assert np.allclose(np.linalg.norm(points, axis=1), 1.0)
    # Uniform on the sphere: each octant holds 1/8 of the points; z is uniform in [-1, 1].
    octant = (points[:, 0] > 0) * 4 + (points[:, 1] > 0) * 2 + (points[:, 2] > 0)
    assert np.allclose(np.bincount(octant, minlength=8) / 10_000, 1 / 8, atol=0.01)
    assert abs(np.mean(points[:, 2] > 0.5) - 0.25) < 0.01


# ---------------------------------------------------------------------------- the path
@pytest.mark.parametrize('lay', [DEFAULT, RASTER], ids=['zigzag', 'raster'])
def test_path_visits_every_view_once(lay: PatchLayout) -> None:
    assert sorted(lay.path) == list(range(len(lay)))
    assert sorted(lay.frame_path(1)) == list(range(len(lay)))


def test_zigzag_consecutive_views_overlap_by_about_half() -> None:
    overlaps = DEFAULT.path_overlaps()
    assert overlaps.shape == (len(DEFAULT) - 1,)
    assert overlaps.min() >= 0.4


def test_zigzag_path_closes_the_ring() -> None:
    assert closing_overlap(DEFAULT) >= 0.4


def test_successive_frames_run_the_path_in_alternating_directions() -> None:
    path0, path1 = DEFAULT.frame_path(0), DEFAULT.frame_path(1)
    assert path0 == DEFAULT.path
    assert path1 == tuple(reversed(path0))
    for t in range(5):
        assert DEFAULT.frame_path(t + 2) == DEFAULT.frame_path(t)
        # The last patch of frame t is the first of frame t + 1: memory carries over directly.
        assert DEFAULT.frame_path(t)[-1] == DEFAULT.frame_path(t + 1)[0]


def test_raster_is_a_worse_path_than_zigzag() -> None:
    assert RASTER.views == DEFAULT.views
    assert RASTER.order is PathOrder.RASTER
    assert RASTER.path != DEFAULT.path
    assert RASTER.path_overlaps().min() < DEFAULT.path_overlaps().min()
    assert closing_overlap(RASTER) < closing_overlap(DEFAULT)


def test_zigzag_neighbours_are_close_on_the_sphere() -> None:
    axes = DEFAULT.axes[list(DEFAULT.path)]
    steps = angular_distance_deg(axes[:-1], axes[1:])
    # Step is fov * (1 - overlap) = 45 deg between rows and columns; a diagonal step is longer.
    assert steps.max() <= 45.0 + 1e-6


# ---------------------------------------------------------------------------- other settings
@pytest.mark.parametrize('fov_deg, overlap', [
    (60.0, 0.5), (75.0, 0.5), (120.0, 0.5), (90.0, 0.4), (90.0, 0.6), (120.0, 0.3),
    (150.0, 0.5), (90.0, 0.3),
])
def test_other_settings_cover_the_whole_sphere(fov_deg: float, overlap: float) -> None:
    lay = layout(fov_deg, overlap)
    assert lay.coverage(erp_width=256) == 1.0
    assert covered(lay, sphere_points(40_000)).all()


@pytest.mark.parametrize('fov_deg, overlap', [
    (60.0, 0.5), (75.0, 0.5), (90.0, 0.5), (120.0, 0.5), (90.0, 0.4), (60.0, 0.3),
])
def test_zigzag_path_closes_for_other_settings(fov_deg: float, overlap: float) -> None:
    lay = layout(fov_deg, overlap)
    assert closing_overlap(lay) >= 0.25


@pytest.mark.parametrize('fov_deg, overlap', [
    (60.0, 0.5), (75.0, 0.5), (90.0, 0.5), (120.0, 0.5), (60.0, 0.6), (90.0, 0.6), (60.0, 0.4),
    (100.0, 0.3),
])
def test_zigzag_consecutive_views_overlap_for_other_settings(fov_deg: float,
                                                             overlap: float) -> None:
    lay = layout(fov_deg, overlap)
    assert sorted(lay.path) == list(range(len(lay)))
    # No step skips a row: every step shares at least half the overlap asked for. (FOV 60 with
    # overlap 0.6 used to jump two rows where a sparse row had no view in a column: 0.19.)
    assert lay.path_overlaps().min() >= 0.5 * overlap


def test_weak_step_repair_moves_a_view_into_the_gap_and_keeps_good_paths() -> None:
    m = np.array([[1.0, 0.1, 0.5, 0.1], [0.1, 1.0, 0.1, 0.5],
                  [0.5, 0.1, 1.0, 0.6], [0.1, 0.5, 0.6, 1.0]])
    assert _repair_weak_steps([0, 1, 2, 3], m, floor=0.4) == [0, 2, 3, 1]
    assert _repair_weak_steps([0, 2, 3, 1], m, floor=0.4) == [0, 2, 3, 1]
    # Nothing can help: the path is returned as it was, not shuffled.
    flat = np.full((3, 3), 0.1) + 0.9 * np.eye(3)
    assert _repair_weak_steps([2, 0, 1], flat, floor=0.4) == [2, 0, 1]


def test_rows_near_the_poles_have_fewer_views() -> None:
    rows = rows_by_pitch(layout(60.0))
    ring_pitches = sorted((p for p in rows if abs(p) < 90.0), key=abs)
    counts = [len(rows[p]) for p in ring_pitches]
    assert len(ring_pitches) >= 3
    assert counts == sorted(counts, reverse=True)  # never more views towards a pole
    assert counts[-1] < counts[0]
    assert len(rows[90.0]) == len(rows[-90.0]) == 1
    # North and south mirror each other.
    for pitch in ring_pitches:
        assert len(rows[pitch]) == len(rows[-pitch])


@pytest.mark.parametrize('fov_deg', [60.0, 90.0, 120.0])
def test_row_views_are_evenly_spaced_in_yaw(fov_deg: float) -> None:
    lay = layout(fov_deg)
    for pitch, members in rows_by_pitch(lay).items():
        yaws = np.sort([lay.views[i].yaw_deg for i in members])
        assert np.all(yaws >= -180.0) and np.all(yaws < 180.0)
        if abs(pitch) < 90.0:
            gaps = np.diff(np.append(yaws, yaws[0] + 360.0))
            assert np.allclose(gaps, 360.0 / len(members))


def test_from_config_builds_the_same_layout() -> None:
    cfg = PatchConfig(fov_deg=75.0, size_px=48, order='raster', overlap=0.5)
    lay = PatchLayout.from_config(cfg)
    ref = PatchLayout.build(75.0, 48, 'raster', 0.5)
    assert lay.views == ref.views and lay.path == ref.path and lay.order is PathOrder.RASTER


def test_invalid_order_is_a_config_error_naming_the_parameter() -> None:
    with pytest.raises(ConfigError) as info:
        PatchLayout.build(order='spiral')
    assert info.value.parameter == 'patches.order'
    assert 'patches.order' in str(info.value) and 'spiral' in str(info.value)


def test_constructor_rejects_a_path_that_is_not_a_permutation() -> None:
    views = DEFAULT.views[:3]
    with pytest.raises(ValueError):
        PatchLayout(views, [0, 1, 1], PathOrder.ZIGZAG)
    with pytest.raises(ValueError):
        PatchLayout(views, [0, 1], PathOrder.ZIGZAG)


# ---------------------------------------------------------------------------- measurements
def test_overlap_matrix_is_the_shared_solid_angle() -> None:
    m = DEFAULT.overlap_matrix()
    n = len(DEFAULT)
    assert m.shape == (n, n)
    assert np.allclose(np.diag(m), 1.0)
    assert m.min() >= 0.0 and m.max() <= 1.0
    # Reference: fraction of view a's solid angle also inside view b, by uniform points.
    points = sphere_points(50_000)
    inside = np.stack([view.contains(points) for view in DEFAULT.views])
    rng = np.random.default_rng(5)
    for a, b in rng.integers(0, n, size=(40, 2)):
        ref = (inside[a] & inside[b]).sum() / inside[a].sum()
        assert abs(m[a, b] - ref) < 0.03, (a, b)
    # Opposite views share nothing.
    front = int(np.argmax(DEFAULT.axes @ np.array([1.0, 0.0, 0.0])))
    back = int(np.argmax(DEFAULT.axes @ np.array([-1.0, 0.0, 0.0])))
    assert m[front, back] == 0.0


def test_views_containing_lists_the_nearest_axis_first() -> None:
    points = sphere_points(120)
    for bearing in points:
        found = DEFAULT.views_containing(bearing)
        assert len(found) >= 1
        inside = [i for i, view in enumerate(DEFAULT.views) if view.contains(bearing[None])[0]]
        assert sorted(found.tolist()) == inside
        angles = angular_distance_deg(DEFAULT.axes[found], bearing)
        assert np.all(np.diff(angles) >= -1e-9)
    # On a view's own axis, that view comes first.
    for k, axis in enumerate(DEFAULT.axes):
        assert DEFAULT.views_containing(axis)[0] == k


def test_views_containing_works_across_the_seam() -> None:
    # Just left and just right of lon 180: the backward view first, then its neighbour on the
    # same side of the seam.
    for lon, neighbour_yaw in ((179.0, 135.0), (-179.0, -135.0)):
        found = DEFAULT.views_containing(lonlat_to_bearing(np.array(lon), np.array(0.0)))
        first = DEFAULT.views[found[0]]
        assert abs(first.yaw_deg) == 180.0 and first.pitch_deg == 0.0
        assert (neighbour_yaw, 0.0) in {(DEFAULT.views[i].yaw_deg, DEFAULT.views[i].pitch_deg)
                                        for i in found}


# ---------------------------------------------------------------------------- table cache
def test_cached_builds_each_key_once_and_clear_cache_drops_it() -> None:
    lay = PatchLayout.build(size_px=SIZE_PX)
    calls: List[str] = []

    def build() -> object:
        calls.append('x')
        return object()

    first = lay.cached(('table', 1), build)
    assert lay.cached(('table', 1), build) is first
    assert len(calls) == 1
    assert lay.cached(('table', 2), build) is not first
    assert len(calls) == 2
    lay.clear_cache()
    assert lay.cached(('table', 1), build) is not first
    assert len(calls) == 3


def test_cached_is_per_layout() -> None:
    a = PatchLayout.build(size_px=SIZE_PX)
    b = PatchLayout.build(size_px=SIZE_PX)
    table = a.cached('k', lambda: [1])
    assert b.cached('k', lambda: [2]) == [2]
    assert a.cached('k', lambda: [3]) is table


def test_cached_builds_once_under_concurrent_callers() -> None:
    lay = PatchLayout.build(size_px=SIZE_PX)
    started = threading.Event()
    release = threading.Event()
    calls: List[int] = []
    results: List[object] = []

    def slow_build() -> object:
        calls.append(1)
        started.set()
        release.wait(timeout=5.0)
        return object()

    def worker() -> None:
        results.append(lay.cached('slow', slow_build))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    threads[0].start()
    assert started.wait(timeout=5.0)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(timeout=5.0)
    assert len(calls) == 1
    assert len(results) == 4 and all(r is results[0] for r in results)


def test_cached_builder_may_use_another_cached_table() -> None:
    lay = PatchLayout.build(size_px=SIZE_PX)
    result: List[object] = []

    def outer() -> object:
        return ('outer', lay.cached('inner', lambda: 'inner'))

    thread = threading.Thread(target=lambda: result.append(lay.cached('outer', outer)),
                              daemon=True)
    thread.start()
    thread.join(timeout=5.0)
    assert result == [('outer', 'inner')], 'nested cached() deadlocked'
