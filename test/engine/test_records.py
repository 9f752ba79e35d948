"""Object pointers from ERP label maps: centroid bearing, wrap-aware extent, solid angle, maps."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sap_ros.engine.records import object_records, wrap_aware_lon_extent
from sap_ros.errors import ErpShapeError, InvalidInputError

H, W = 64, 128


def _labels():
    return np.zeros((H, W), dtype=np.uint16)


def test_single_pixel_points_at_its_centre_rep103():
    # 3 x 6 ERP: column 4 of row 1 is centred on lon 90 deg (right), lat 0 -> REP-103 -y.
    labels = np.zeros((3, 6), np.uint16)
    labels[1, 4] = 5
    (p,) = object_records(labels)
    np.testing.assert_allclose(p.bearing, [0.0, -1.0, 0.0], atol=1e-12)
    assert p.lon_deg == pytest.approx(90.0)
    assert p.lat_deg == pytest.approx(0.0, abs=1e-12)
    assert (p.width_deg, p.height_deg, p.area_px) == (60.0, 60.0, 1)


def test_single_pixel_anywhere_matches_the_design_formulas():
    u, v = 37, 11
    labels = _labels()
    labels[v, u] = 1
    (p,) = object_records(labels)
    lon = math.radians((u + 0.5) / W * 360.0 - 180.0)
    lat = math.radians(90.0 - (v + 0.5) / H * 180.0)
    expected = [math.cos(lat) * math.cos(lon), -math.cos(lat) * math.sin(lon), math.sin(lat)]
    np.testing.assert_allclose(p.bearing, expected, atol=1e-12)
    assert p.width_deg == pytest.approx(360.0 / W)
    assert p.height_deg == pytest.approx(180.0 / H)


def test_object_across_the_seam_is_narrow_and_faces_backwards():
    labels = _labels()
    labels[30:34, W - 3:] = 2
    labels[30:34, :3] = 2
    (p,) = object_records(labels)
    assert abs(p.lon_deg) == pytest.approx(180.0, abs=1e-9)
    assert p.width_deg == pytest.approx(6 * 360.0 / W)
    assert p.lat_deg == pytest.approx(0.0, abs=1e-9)
    assert p.bearing[0] == pytest.approx(-1.0)


def test_polar_cap_is_360_wide_and_points_up():
    labels = _labels()
    labels[:3] = 7
    (p,) = object_records(labels)
    assert p.width_deg == 360.0
    assert p.height_deg == pytest.approx(3 * 180.0 / H)
    assert p.lat_deg == pytest.approx(90.0)


def test_centroid_is_weighted_by_area_on_the_sphere():
    # An octant (lon 0..90, lat 0..90): integrating the bearing over it gives the direction
    # (pi/4, -pi/4, pi/4), i.e. lon 45, lat atan(1/sqrt 2) = 35.26 deg; an unweighted mean of
    # pixel latitudes would say 45.
    labels = _labels()
    labels[:H // 2, W // 2:3 * W // 4] = 1
    (p,) = object_records(labels)
    assert p.lon_deg == pytest.approx(45.0, abs=1e-9)
    assert p.lat_deg == pytest.approx(math.degrees(math.atan(1 / math.sqrt(2))), abs=0.05)
    assert p.solid_angle_sr == pytest.approx(4.0 * math.pi / 8, rel=1e-9)


def test_whole_sphere_has_4pi_and_a_defined_bearing():
    labels = np.ones((H, W), np.uint16)
    (p,) = object_records(labels)
    assert p.solid_angle_sr == pytest.approx(4.0 * math.pi, rel=1e-6)
    assert (p.width_deg, p.height_deg, p.area_px) == (360.0, 180.0, H * W)
    assert np.linalg.norm(p.bearing) == pytest.approx(1.0)


def test_equator_ring_has_a_finite_bearing_on_the_equator():
    labels = _labels()
    labels[H // 2 - 1:H // 2 + 1] = 3
    (p,) = object_records(labels)
    assert np.all(np.isfinite(p.bearing)) and np.linalg.norm(p.bearing) == pytest.approx(1.0)
    assert p.lat_deg == pytest.approx(0.0, abs=1e-9)
    assert p.width_deg == 360.0


def test_polar_pixels_are_smaller_than_equatorial_ones():
    labels = _labels()
    labels[H // 2, :32] = 1  # 32 px on the equator
    labels[1, :32] = 2  # 32 px next to the north pole
    equator, polar = object_records(labels)
    assert equator.area_px == polar.area_px == 32
    assert polar.solid_angle_sr < 0.1 * equator.solid_angle_sr
    # A quarter of a ring: 90 deg of longitude at both latitudes.
    assert equator.width_deg == polar.width_deg == pytest.approx(90.0)


def test_ids_sorted_with_pixel_counts_and_maps():
    labels = _labels()
    labels[10, 10:15] = 300
    labels[20, 20:22] = 7
    labels[40, 0] = 2
    pointers = object_records(labels, scores={7: 0.5, 300: 1.7}, ages={2: 4},
                               frames_since_seen={300: 2})
    assert [p.id for p in pointers] == [2, 7, 300]
    assert [p.area_px for p in pointers] == [1, 2, 5]
    assert [p.score for p in pointers] == [1.0, 0.5, 1.0]  # default 1, clipped to [0, 1]
    assert [p.age_frames for p in pointers] == [4, 0, 0]
    assert [p.frames_since_seen for p in pointers] == [0, 0, 2]


def test_embeddings_are_unit_float32_or_zero():
    labels = _labels()
    labels[5, 5] = 1
    labels[6, 6] = 2
    labels[7, 7] = 3
    raw = np.arange(256, dtype=np.float64) - 100.0
    one, two, three = object_records(labels, embeddings={1: raw, 2: np.zeros(256)})
    assert one.embedding.dtype == np.float32 and one.embedding.shape == (256,)
    assert np.linalg.norm(one.embedding) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(one.embedding, raw / np.linalg.norm(raw), rtol=1e-6)
    assert not np.any(two.embedding) and not np.any(three.embedding)
    with pytest.raises(InvalidInputError, match='embedding of object 1'):
        object_records(labels, embeddings={1: np.ones(300)})
    # A narrower pointer (the nano model's 64 values) fills the first values, the rest are 0.
    (narrow, *_) = object_records(labels, embeddings={1: np.ones(64)})
    np.testing.assert_allclose(narrow.embedding[:64], 1 / 8.0, rtol=1e-6)
    assert not np.any(narrow.embedding[64:])


def test_empty_and_invalid_label_maps():
    assert object_records(_labels()) == []
    with pytest.raises(ErpShapeError):
        object_records(np.zeros((64, 64), np.uint16))
    with pytest.raises(InvalidInputError, match='integer'):
        object_records(np.zeros((H, W), np.float32))


def test_wrap_aware_lon_extent():
    cols = np.zeros(8, bool)
    cols[2:4] = True  # lon -90..0
    assert wrap_aware_lon_extent(cols, 8) == (90.0, -45.0)
    cols[:] = False
    cols[[1, 6]] = True  # two columns 5 apart: the short way round crosses the seam
    width, centre = wrap_aware_lon_extent(cols, 8)
    assert width == 180.0 and abs(centre) == 180.0
    assert wrap_aware_lon_extent(np.ones(8, bool), 8) == (360.0, 0.0)
    with pytest.raises(InvalidInputError):
        wrap_aware_lon_extent(np.zeros(8, bool), 8)
