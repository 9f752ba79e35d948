"""Sphere geometry: ERP pixels <-> lon/lat <-> bearings <-> patch pixels (ARCHITECTURE §3)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sap_ros.errors import ErpShapeError, InvalidInputError
from sap_ros.sphere.geometry import (
    PatchView,
    angular_distance_deg,
    bearing_to_lonlat,
    erp_bearings,
    erp_lonlat_grid,
    erp_pixel_solid_angle_sr,
    erp_pixel_to_lonlat,
    erp_row_weights,
    lonlat_to_bearing,
    lonlat_to_erp_pixel,
    validate_erp_shape,
)

WIDTH, HEIGHT = 512, 256
# Round-trip errors are ~1e-12 px; this bound is far below anything a user could see.
ROUND_TRIP_TOL_PX = 1e-6


def erp_round_trip(u: np.ndarray, v: np.ndarray, width: int = WIDTH,
                   height: int = HEIGHT) -> tuple:
    """ERP pixel -> lon/lat -> bearing -> lon/lat -> ERP pixel."""
    lon, lat = erp_pixel_to_lonlat(u, v, width, height)
    bearing = lonlat_to_bearing(lon, lat)
    lon2, lat2 = bearing_to_lonlat(bearing)
    return lonlat_to_erp_pixel(lon2, lat2, width, height)


# ---------------------------------------------------------------------------- ERP round trips
def test_erp_round_trip_on_every_pixel_centre() -> None:
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    u2, v2 = erp_round_trip(u, v)
    assert np.abs(u2 - u).max() < ROUND_TRIP_TOL_PX
    assert np.abs(v2 - v).max() < ROUND_TRIP_TOL_PX


@pytest.mark.parametrize('u', [0.0, WIDTH - 1.0, -0.5, -0.4999, -0.25, -1e-6, WIDTH - 0.5001,
                               0.5 * WIDTH - 0.5])
def test_erp_round_trip_at_the_seam(u: float) -> None:
    # u in [-0.5, 0) is the left half of the first column: it must come back there, not at W-1.
    v = np.array([0.0, 0.5 * HEIGHT, HEIGHT - 1.0])
    u2, v2 = erp_round_trip(np.full(3, u), v)
    assert np.abs(u2 - u).max() < ROUND_TRIP_TOL_PX
    assert np.abs(v2 - v).max() < ROUND_TRIP_TOL_PX


def test_erp_round_trip_within_one_degree_of_both_poles() -> None:
    rows_per_deg = HEIGHT / 180.0
    v_north = np.linspace(-0.5 + 1e-6, rows_per_deg - 0.5, 7)
    v_south = HEIGHT - 1.0 - v_north + 0.0
    u = np.linspace(-0.5, WIDTH - 0.5 - 1e-6, 41)
    for v_rows in (v_north, v_south):
        vv, uu = np.meshgrid(v_rows, u, indexing='ij')
        _, lat = erp_pixel_to_lonlat(uu, vv, WIDTH, HEIGHT)
        assert np.all(np.abs(lat) >= 89.0 - 1e-9)
        u2, v2 = erp_round_trip(uu, vv)
        assert np.abs(u2 - uu).max() < ROUND_TRIP_TOL_PX
        assert np.abs(v2 - vv).max() < ROUND_TRIP_TOL_PX


def test_erp_round_trip_on_odd_width() -> None:
    height, width = 128, 257  # 2:1 within 1 px, as some encoders produce
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    u2, v2 = erp_round_trip(u, v, width, height)
    assert np.abs(u2 - u).max() < ROUND_TRIP_TOL_PX
    assert np.abs(v2 - v).max() < ROUND_TRIP_TOL_PX


def test_lonlat_to_erp_pixel_wraps_longitude_into_one_turn() -> None:
    lon = np.array([-540.0, -190.0, -180.0, -90.0, 0.0, 90.0, 179.0, 180.0, 190.0, 530.0])
    u, _ = lonlat_to_erp_pixel(lon, np.zeros_like(lon), WIDTH, HEIGHT)
    assert np.all(u >= -0.5) and np.all(u < WIDTH - 0.5)
    # 360 deg apart is the same pixel; 10 deg past 180 is 10 deg past -180.
    u_ref, _ = lonlat_to_erp_pixel(((lon + 180.0) % 360.0) - 180.0, np.zeros_like(lon), WIDTH,
                                   HEIGHT)
    assert np.allclose(u, u_ref, atol=1e-9)


def test_bearing_to_lonlat_longitude_is_half_open_at_180() -> None:
    backwards = np.array([[-1.0, 0.0, 0.0], [-1.0, -0.0, 0.0], [-1.0, 1e-300, 0.0],
                          [-1.0, -1e-300, 0.0]])
    lon, lat = bearing_to_lonlat(backwards)
    assert np.all(lon >= -180.0) and np.all(lon < 180.0)
    assert np.allclose(np.abs(lon), 180.0)
    assert np.allclose(lat, 0.0)


def test_bearing_to_lonlat_ignores_the_vector_length() -> None:
    rng = np.random.default_rng(3)
    bearings = rng.normal(size=(200, 3))
    lon, lat = bearing_to_lonlat(bearings)
    lon_s, lat_s = bearing_to_lonlat(bearings * rng.uniform(0.1, 10.0, size=(200, 1)))
    assert np.allclose(lon, lon_s) and np.allclose(lat, lat_s)
    assert np.allclose(lonlat_to_bearing(lon, lat),
                       bearings / np.linalg.norm(bearings, axis=1, keepdims=True))


# ---------------------------------------------------------------------------- REP-103 sanity
@pytest.mark.parametrize('lon, lat, expected', [
    (0.0, 0.0, (1.0, 0.0, 0.0)),     # forward = +x
    (90.0, 0.0, (0.0, -1.0, 0.0)),   # right = -y
    (-90.0, 0.0, (0.0, 1.0, 0.0)),   # left = +y
    (180.0, 0.0, (-1.0, 0.0, 0.0)),  # backwards = -x
    (0.0, 90.0, (0.0, 0.0, 1.0)),    # up = +z
    (0.0, -90.0, (0.0, 0.0, -1.0)),  # down = -z
])
def test_rep103_axes(lon: float, lat: float, expected: tuple) -> None:
    assert np.allclose(lonlat_to_bearing(np.array(lon), np.array(lat)), expected, atol=1e-12)
    lon2, lat2 = bearing_to_lonlat(np.array(expected))
    assert math.isclose(float(lat2), lat, abs_tol=1e-9)
    if abs(lat) < 90.0:
        assert math.isclose((float(lon2) - lon + 180.0) % 360.0 - 180.0, 0.0, abs_tol=1e-9)


def test_erp_image_directions_follow_rep103() -> None:
    bearings = erp_bearings(WIDTH, HEIGHT)
    centre_row = HEIGHT // 2
    # The centre of the image looks forward, three quarters across looks right, the top up.
    assert bearings[centre_row, WIDTH // 2, 0] > 0.99
    assert bearings[centre_row, 3 * WIDTH // 4, 1] < -0.99
    assert bearings[centre_row, WIDTH // 4, 1] > 0.99
    assert bearings[0, :, 2].min() > 0.99
    assert bearings[-1, :, 2].max() < -0.99
    # Moving right in the image turns right: y falls around the forward column.
    y_row = bearings[centre_row, WIDTH // 2 - 10: WIDTH // 2 + 10, 1]
    assert np.all(np.diff(y_row) < 0)
    assert np.allclose(np.linalg.norm(bearings, axis=-1), 1.0)


def test_erp_lonlat_grid_matches_pixel_formula() -> None:
    lon, lat = erp_lonlat_grid(8, 4)
    assert lon.shape == lat.shape == (4, 8)
    assert np.allclose(lon[0], (np.arange(8) + 0.5) / 8 * 360.0 - 180.0)
    assert np.allclose(lat[:, 0], 90.0 - (np.arange(4) + 0.5) / 4 * 180.0)


def test_angular_distance_across_the_seam() -> None:
    a = lonlat_to_bearing(np.array(179.0), np.array(0.0))
    b = lonlat_to_bearing(np.array(-179.0), np.array(0.0))
    assert math.isclose(float(angular_distance_deg(a, b)), 2.0, abs_tol=1e-9)
    assert math.isclose(float(angular_distance_deg(a, -a)), 180.0, abs_tol=1e-9)
    assert math.isclose(float(angular_distance_deg(a, a)), 0.0, abs_tol=1e-9)


# ---------------------------------------------------------------------------- areas
@pytest.mark.parametrize('height, width', [(4, 8), (128, 256), (128, 257), (255, 510)])
def test_erp_pixel_solid_angles_sum_to_the_sphere(height: int, width: int) -> None:
    solid = erp_pixel_solid_angle_sr(width, height)
    assert solid.shape == (height,)
    assert np.all(solid > 0.0)
    assert math.isclose(float(solid.sum()) * width, 4.0 * math.pi, rel_tol=1e-12)
    assert np.allclose(solid, solid[::-1])  # north and south mirror each other


def test_pixel_solid_angle_follows_row_weights() -> None:
    solid = erp_pixel_solid_angle_sr(2 * HEIGHT, HEIGHT)
    weights = erp_row_weights(HEIGHT)
    assert np.all(weights > 0.0)
    ratio = solid / weights
    assert np.allclose(ratio / ratio.mean(), 1.0, atol=1e-4)


# ---------------------------------------------------------------------------- shape validation
@pytest.mark.parametrize('shape', [(960, 1920, 3), (960, 1919), (960, 1921, 3), (1, 2),
                                   (1, 3, 1), (128, 256, 4)])
def test_validate_erp_shape_accepts_two_to_one_within_one_pixel(shape: tuple) -> None:
    assert validate_erp_shape(shape) == (shape[0], shape[1])


@pytest.mark.parametrize('shape', [(100, 100), (960, 1918), (960, 1922, 3), (1920, 960, 3),
                                   (0, 0), (0, 1, 3), (10, 0), (10,), ()])
def test_validate_erp_shape_rejects_with_the_shape_in_the_message(shape: tuple) -> None:
    with pytest.raises(ErpShapeError) as info:
        validate_erp_shape(shape)
    assert str(tuple(shape)) in str(info.value)
    assert isinstance(info.value, InvalidInputError) and isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------- patch views
YAWS = (-180.0, -135.0, -90.0, -30.0, 0.0, 45.0, 90.0, 170.0, 180.0)
PITCHES = (-90.0, -89.5, -60.0, -45.0, 0.0, 30.0, 60.0, 89.5, 90.0)
VIEWS = [PatchView(yaw, pitch, fov, 64)
         for yaw, pitch, fov in itertools.product(YAWS, PITCHES, (60.0, 90.0, 120.0))]


def view_id(view: PatchView) -> str:
    return f'yaw{view.yaw_deg:g}_pitch{view.pitch_deg:g}_fov{view.fov_deg:g}'


@pytest.mark.parametrize('view', VIEWS, ids=view_id)
def test_patch_pixel_bearing_round_trips(view: PatchView) -> None:
    rng = np.random.default_rng(7)
    size = view.size_px
    u = rng.uniform(-0.5, size - 0.5, 500)
    v = rng.uniform(-0.5, size - 0.5, 500)
    bearings = view.pixel_to_bearing(u, v)
    assert np.allclose(np.linalg.norm(bearings, axis=-1), 1.0)
    u2, v2, in_front = view.bearing_to_pixel(bearings)
    assert in_front.all()
    assert np.abs(u2 - u).max() < ROUND_TRIP_TOL_PX
    assert np.abs(v2 - v).max() < ROUND_TRIP_TOL_PX
    assert view.contains(bearings).all()
    # And bearing -> pixel -> bearing, through lon/lat as the sampler does it.
    lon, lat = bearing_to_lonlat(bearings)
    b2 = lonlat_to_bearing(lon, lat)
    u3, v3, _ = view.bearing_to_pixel(b2)
    assert np.allclose(view.pixel_to_bearing(u3, v3), bearings, atol=1e-9)


@pytest.mark.parametrize('view', VIEWS, ids=view_id)
def test_patch_axis_lands_on_the_image_centre(view: PatchView) -> None:
    u, v, in_front = view.bearing_to_pixel(view.axis)
    centre = (view.size_px - 1) / 2.0
    assert bool(in_front)
    assert abs(float(u) - centre) < 1e-9 and abs(float(v) - centre) < 1e-9
    lon, lat = bearing_to_lonlat(view.axis)
    assert math.isclose(float(lat), view.pitch_deg, abs_tol=1e-9)
    if abs(view.pitch_deg) < 90.0:
        assert math.isclose((float(lon) - view.yaw_deg + 180.0) % 360.0 - 180.0, 0.0,
                            abs_tol=1e-9)


@pytest.mark.parametrize('view', VIEWS, ids=view_id)
def test_patch_image_is_not_mirrored(view: PatchView) -> None:
    basis = view.basis()
    assert np.allclose(basis @ basis.T, np.eye(3), atol=1e-12)
    # (right, down, forward) is right-handed, like (x, y, z) of an image camera.
    assert math.isclose(float(np.linalg.det(basis)), 1.0, abs_tol=1e-12)


def test_patch_field_of_view_spans_the_image() -> None:
    view = PatchView(30.0, 20.0, 90.0, 64)
    left = view.pixel_to_bearing(np.array(-0.5), np.array(31.5))
    right = view.pixel_to_bearing(np.array(63.5), np.array(31.5))
    top = view.pixel_to_bearing(np.array(31.5), np.array(-0.5))
    assert math.isclose(float(angular_distance_deg(left, right)), 90.0, abs_tol=1e-9)
    assert math.isclose(float(angular_distance_deg(top, view.axis)), 45.0, abs_tol=1e-9)
    assert math.isclose(view.focal_px, 32.0, rel_tol=1e-12)


def pixel_of(view: PatchView, lon: float, lat: float) -> tuple:
    u, v, in_front = view.bearing_to_pixel(lonlat_to_bearing(np.array(lon), np.array(lat)))
    assert bool(in_front)
    return float(u), float(v)


@pytest.mark.parametrize('yaw', [-180.0, -60.0, 0.0, 90.0, 135.0])
@pytest.mark.parametrize('pitch', [-60.0, 0.0, 60.0])
def test_patch_orientation_right_is_larger_u_and_up_is_smaller_v(yaw: float,
                                                                 pitch: float) -> None:
    view = PatchView(yaw, pitch, 90.0, 64)
    centre = (view.size_px - 1) / 2.0
    u_right, v_right = pixel_of(view, yaw + 5.0, pitch)
    u_left, _ = pixel_of(view, yaw - 5.0, pitch)
    u_up, v_up = pixel_of(view, yaw, pitch + 5.0)
    u_down, v_down = pixel_of(view, yaw, pitch - 5.0)
    assert u_right > centre + 1.0 and u_left < centre - 1.0
    assert v_up < centre - 1.0 and v_down > centre + 1.0
    # The axis' meridian is the vertical centre line; the left/right pair is symmetric.
    assert abs(u_up - centre) < 1e-9 and abs(u_down - centre) < 1e-9
    assert math.isclose(u_right - centre, centre - u_left, abs_tol=1e-9)
    # A point right of the axis on the same parallel curves towards the equator in the image.
    if pitch > 0:
        assert v_right < centre
    elif pitch < 0:
        assert v_right > centre
    else:
        assert abs(v_right - centre) < 1e-9


@pytest.mark.parametrize('yaw', [-180.0, -90.0, 0.0, 45.0, 180.0])
@pytest.mark.parametrize('pole', [90.0, -90.0])
def test_pole_view_is_the_limit_of_tilting_the_camera(yaw: float, pole: float) -> None:
    view = PatchView(yaw, pole, 90.0, 64)
    almost = PatchView(yaw, pole - math.copysign(1e-6, pole), 90.0, 64)
    rng = np.random.default_rng(11)
    lon = rng.uniform(-180.0, 180.0, 300)
    lat = pole - math.copysign(1.0, pole) * rng.uniform(0.0, 40.0, 300)
    bearings = lonlat_to_bearing(lon, lat)
    u, v, _ = view.bearing_to_pixel(bearings)
    u_a, v_a, _ = almost.bearing_to_pixel(bearings)
    assert np.abs(u - u_a).max() < 1e-3 and np.abs(v - v_a).max() < 1e-3
    # Tilting up from the horizon: the horizon in front (lon = yaw) is below the centre,
    # the horizon behind above it, and lon = yaw + 90 (right) on the right. Tilting down mirrors
    # top and bottom but keeps right on the right.
    centre = (view.size_px - 1) / 2.0
    towards_equator = pole - math.copysign(20.0, pole)
    _, v_front = pixel_of(view, yaw, towards_equator)
    _, v_behind = pixel_of(view, yaw + 180.0, towards_equator)
    u_right, _ = pixel_of(view, yaw + 90.0, towards_equator)
    u_left, _ = pixel_of(view, yaw - 90.0, towards_equator)
    if pole > 0:
        assert v_front > centre + 1.0 and v_behind < centre - 1.0
    else:
        assert v_front < centre - 1.0 and v_behind > centre + 1.0
    assert u_right > centre + 1.0 and u_left < centre - 1.0


def test_points_behind_the_camera_are_flagged() -> None:
    view = PatchView(0.0, 0.0, 120.0, 64)
    bearings = lonlat_to_bearing(np.array([180.0, 100.0, -95.0, 0.0]),
                                 np.array([0.0, 0.0, 0.0, -89.0]))
    _, _, in_front = view.bearing_to_pixel(bearings)
    assert in_front.tolist() == [False, False, False, True]
    assert not view.contains(bearings[:3]).any()
    assert not view.contains(bearings[3:]).any()  # in front, but far outside the image


def test_contains_margin_widens_the_image() -> None:
    view = PatchView(0.0, 0.0, 90.0, 64)
    just_outside = view.pixel_to_bearing(np.array(64.0), np.array(31.5))
    assert not bool(view.contains(just_outside))
    assert bool(view.contains(just_outside, margin_px=1.0))


def test_pixel_grid_bearings_resample_the_same_view() -> None:
    view = PatchView(40.0, -20.0, 75.0, 64)
    grid = view.pixel_grid_bearings()
    assert grid.shape == (64, 64, 3)
    assert np.allclose(grid[10, 20], view.pixel_to_bearing(np.array(20.0), np.array(10.0)))
    small = view.pixel_grid_bearings(16)
    assert small.shape == (16, 16, 3)
    # Pixel (i, j) of the 16 px grid covers pixels 4i..4i+3 of the 64 px one: same centre ray.
    big_centre = view.pixel_to_bearing(np.array(4 * 5 + 1.5), np.array(4 * 3 + 1.5))
    assert np.allclose(small[3, 5], big_centre, atol=1e-12)
    assert view.resized(16) == PatchView(40.0, -20.0, 75.0, 16)
