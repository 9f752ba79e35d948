"""Fusion of patch masks on the sphere: least-distortion and blend modes (ARCHITECTURE §6)."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import pytest

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.fusion import (
    FusionMode,
    LabelCanvas,
    blend_weights,
    fuse_labels,
    sample_bilinear,
)
from sap_ros.sphere.geometry import (
    PatchView,
    angular_distance_deg,
    erp_bearings,
    lonlat_to_bearing,
)
from sap_ros.sphere.layout import PatchLayout

HEIGHT, WIDTH = 128, 256
LOW_PX = 32        # decoder resolution of the hand-made logits
LAYOUT = PatchLayout.build(90.0, 4 * LOW_PX)
ERP_BEARINGS = erp_bearings(WIDTH, HEIGHT)
MODES = [FusionMode.LEAST_DISTORTION, FusionMode.BLEND]


def bearing(lon_deg: float, lat_deg: float) -> np.ndarray:
    return lonlat_to_bearing(np.array(lon_deg), np.array(lat_deg))


def cap_logits(view: PatchView, centre: np.ndarray, radius_deg: float,
               low_px: int = LOW_PX) -> np.ndarray:
    """``(low, low)`` logits of a spherical cap, clipped to [-1, 1] (> 0 inside).

    The cap's radius minus the angle to its centre, in decoder pixels at the patch centre.
    """
    bearings = view.resized(low_px).pixel_grid_bearings()
    px_deg = view.fov_deg / low_px
    return np.clip((radius_deg - angular_distance_deg(bearings, centre)) / px_deg, -1.0,
                   1.0).astype(np.float32)


def cap_mask(centre: np.ndarray, radius_deg: float) -> np.ndarray:
    """The ``(H, W)`` ERP pixels inside the cap."""
    return angular_distance_deg(ERP_BEARINGS, centre) < radius_deg


def views_seeing(point: np.ndarray) -> Sequence[int]:
    return [i for i, view in enumerate(LAYOUT.views) if view.contains(point, margin_px=-4.0)]


def new_canvas(mode: FusionMode, hw: Tuple[int, int] = (HEIGHT, WIDTH)) -> LabelCanvas:
    """A canvas for the hand-made logits, which lie in [-1, 1] like the oracle's."""
    return LabelCanvas(LAYOUT, hw, mode, logit_clip=1.0)


def paint_caps(canvas: LabelCanvas, caps: Sequence[Tuple[int, np.ndarray, float]],
               views: Sequence[int]) -> None:
    """Paint each view once with the logits of the caps (id, centre, radius) it sees."""
    for i in views:
        view = LAYOUT.views[i]
        logits = [cap_logits(view, centre, radius) for _, centre, radius in caps]
        seen = [k for k, lg in enumerate(logits) if (lg > 0).any()]
        canvas.paint_logits(i, np.array([logits[k] for k in seen], np.float32).reshape(
            -1, LOW_PX, LOW_PX), np.array([caps[k][0] for k in seen], np.uint16))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# ---------------------------------------------------------------------------- both modes
@pytest.mark.parametrize('mode', MODES)
def test_two_overlapping_views_that_agree_give_one_object(mode: FusionMode) -> None:
    centre = bearing(20.0, 10.0)
    views = views_seeing(centre)[:2]
    assert len(views) == 2
    canvas = new_canvas(mode)
    paint_caps(canvas, [(5, centre, 15.0)], views)
    assert set(np.unique(canvas.labels).tolist()) == {0, 5}
    assert iou(canvas.labels == 5, cap_mask(centre, 15.0)) > 0.95


@pytest.mark.parametrize('mode', MODES)
def test_object_across_the_erp_seam_keeps_one_id_on_both_borders(mode: FusionMode) -> None:
    centre = bearing(180.0, -5.0)
    canvas = new_canvas(mode)
    paint_caps(canvas, [(3, centre, 20.0)], range(len(LAYOUT)))
    labels = canvas.labels
    assert set(np.unique(labels).tolist()) == {0, 3}
    assert (labels[:, 0] == 3).any() and (labels[:, -1] == 3).any()
    assert iou(labels == 3, cap_mask(centre, 20.0)) > 0.95


@pytest.mark.parametrize('mode', MODES)
def test_touching_objects_split_where_their_logits_cross(mode: FusionMode) -> None:
    """Several objects per pixel: the higher score wins, "no object" competes with both."""
    a, b = bearing(-10.0, 0.0), bearing(10.0, 0.0)
    canvas = new_canvas(mode)
    paint_caps(canvas, [(1, a, 12.0), (2, b, 12.0)], range(len(LAYOUT)))
    labels = canvas.labels
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    closer_to_a = angular_distance_deg(ERP_BEARINGS, a) < angular_distance_deg(ERP_BEARINGS, b)
    # Where both caps claim a pixel, it goes to the cap whose centre is closer.
    assert not ((labels == 1) & ~closer_to_a).any()
    assert not ((labels == 2) & closer_to_a).any()
    assert iou(labels > 0, cap_mask(a, 12.0) | cap_mask(b, 12.0)) > 0.95


@pytest.mark.parametrize('mode', MODES)
def test_fuse_labels_keeps_a_hemisphere(mode: FusionMode) -> None:
    size = LAYOUT.size_px
    labels = np.zeros((len(LAYOUT), size, size), np.uint16)
    for i, view in enumerate(LAYOUT.views):
        labels[i] = np.where(view.pixel_grid_bearings()[..., 2] > 0, 9, 0)
    fused = fuse_labels(LAYOUT, labels, (HEIGHT, WIDTH), mode)
    north = ERP_BEARINGS[..., 2] > 0
    assert np.array_equal(fused == 9, north)


@pytest.mark.parametrize('mode', MODES)
def test_labels_read_midway_show_only_what_was_painted(mode: FusionMode) -> None:
    centre_a, centre_b = bearing(0.0, 0.0), bearing(180.0, 0.0)
    canvas = new_canvas(mode)
    paint_caps(canvas, [(1, centre_a, 10.0)], views_seeing(centre_a))
    assert set(np.unique(canvas.labels).tolist()) == {0, 1}
    paint_caps(canvas, [(2, centre_b, 10.0)], views_seeing(centre_b))
    assert set(np.unique(canvas.labels).tolist()) == {0, 1, 2}
    canvas.relabel(np.array([0, 0, 2], np.uint16))  # 1 -> 0: erased
    assert set(np.unique(canvas.labels).tolist()) == {0, 2}
    canvas.relabel(np.array([0, 0, 7], np.uint16))
    assert set(np.unique(canvas.labels).tolist()) == {0, 7}
    canvas.clear()
    assert not canvas.labels.any()


@pytest.mark.parametrize('mode', MODES)
def test_relabel_merges_two_objects(mode: FusionMode) -> None:
    a, b = bearing(-10.0, 0.0), bearing(10.0, 0.0)
    canvas = new_canvas(mode)
    paint_caps(canvas, [(1, a, 12.0), (2, b, 12.0)], range(len(LAYOUT)))
    before = canvas.labels > 0
    canvas.relabel(np.array([0, 4, 4], np.uint16))
    assert set(np.unique(canvas.labels).tolist()) == {0, 4}
    assert iou(canvas.labels == 4, before) > 0.98


def test_bad_mode_and_clip_are_rejected_naming_the_value() -> None:
    with pytest.raises(InvalidInputError, match='nearest_wins'):
        LabelCanvas(LAYOUT, (HEIGHT, WIDTH), 'nearest_wins')
    with pytest.raises(InvalidInputError, match='-1'):
        LabelCanvas(LAYOUT, (HEIGHT, WIDTH), 'blend', logit_clip=-1.0)
    canvas = LabelCanvas(LAYOUT, (HEIGHT, WIDTH), 'blend')
    with pytest.raises(InvalidInputError, match=r'\(2, 8, 8\)'):
        canvas.paint_logits(0, np.zeros((2, 8, 8), np.float32), np.array([1], np.uint16))


def test_sample_bilinear_interpolates_between_pixel_centres() -> None:
    maps = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
    coords = np.array([[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [1.0, 1.0]], np.float32)
    assert np.allclose(sample_bilinear(maps, coords)[0], [0.0, 0.5, 1.5, 3.0])


# ---------------------------------------------------------------------------- least distortion
def test_least_distortion_takes_the_view_nearest_its_axis_and_falls_back() -> None:
    point = bearing(22.5, 20.0)
    views = views_seeing(point)
    angles = [float(angular_distance_deg(LAYOUT.views[i].axis, point)) for i in views]
    nearest, other = views[int(np.argmin(angles))], views[int(np.argmax(angles))]
    full = np.ones((1, LOW_PX, LOW_PX), np.float32)
    pixel = np.unravel_index(np.argmin(angular_distance_deg(ERP_BEARINGS, point)), (HEIGHT, WIDTH))
    canvas = LabelCanvas(LAYOUT, (HEIGHT, WIDTH))
    canvas.paint_logits(other, full, np.array([2], np.uint16))
    canvas.paint_logits(nearest, full, np.array([1], np.uint16))
    assert canvas.labels[pixel] == 1
    canvas.clear()
    canvas.paint_logits(nearest, -full, np.array([1], np.uint16))  # "no object" here ...
    canvas.paint_logits(other, full, np.array([2], np.uint16))  # ... so the next view decides
    assert canvas.labels[pixel] == 2


# ---------------------------------------------------------------------------- blend
def test_blend_weights_favour_sharp_pixels_and_vanish_at_the_border() -> None:
    tables = LabelCanvas(LAYOUT, (HEIGHT, WIDTH), 'blend').tables
    weights = blend_weights(tables, 0)
    uv = tables.patch_uv[0]
    edge = np.minimum(np.minimum(uv[:, 0], 1 - uv[:, 0]), np.minimum(uv[:, 1], 1 - uv[:, 1]))
    assert weights.min() > 0.0
    assert weights[edge < 0.005].max() < 0.05 * weights.max()
    inner = edge > 0.1
    # Away from the border, a pixel far from the axis (more decoder pixels per steradian)
    # weighs more than one near it.
    angle = tables.angle_deg[0][inner]
    assert weights[inner][np.argmax(angle)] > 2.0 * weights[inner][np.argmin(angle)]


def test_blend_has_no_step_where_a_disagreeing_view_begins() -> None:
    """Two views place an edge 8 deg apart: the blend moves it, least distortion jumps.

    Least distortion (a union: a view's "no object" defers to the next) jumps to the second
    view's edge where its coverage begins; the blend moves the edge there over a few columns
    (its window rises from 0 at the patch border).
    """
    left = next(i for i, v in enumerate(LAYOUT.views) if v.pitch_deg == 0 and v.yaw_deg == 0)
    right = next(i for i, v in enumerate(LAYOUT.views) if v.pitch_deg == 0 and v.yaw_deg == 45)

    def edge_logits(i: int, lat_deg: float) -> np.ndarray:
        """An object below ``lat_deg``; logits ramp over +-8 deg around the edge."""
        bearings = LAYOUT.views[i].resized(LOW_PX).pixel_grid_bearings()
        lat = np.degrees(np.arcsin(bearings[..., 2]))
        return np.clip((lat_deg - lat) / 8.0, -1.0, 1.0).astype(np.float32)[None]

    lon = np.linspace(-180.0, 180.0, WIDTH, endpoint=False) + 180.0 / WIDTH
    cols = np.nonzero(np.abs(lon) < 20.0)[0]  # "right" sees lon > 0 (its border is at lon 0)
    tops = {}
    for mode in MODES:
        canvas = new_canvas(mode)
        canvas.paint_logits(left, edge_logits(left, -4.0), np.array([1], np.uint16))
        canvas.paint_logits(right, edge_logits(right, 4.0), np.array([1], np.uint16))
        tops[mode] = np.argmax(canvas.labels[:, cols] == 1, axis=0)  # first object row
    ld_steps = np.abs(np.diff(tops[FusionMode.LEAST_DISTORTION]))
    blend_steps = np.abs(np.diff(tops[FusionMode.BLEND]))
    assert ld_steps.max() >= 5      # 8 deg = 5.7 rows at once
    assert blend_steps.max() <= 2
    assert np.ptp(tops[FusionMode.BLEND]) >= 3  # ... and yet it does move to the other edge


@pytest.mark.parametrize('lon_deg, lat_deg', [(0.0, 0.0), (37.0, 23.0), (100.0, -50.0),
                                              (-170.0, 80.0)])
def test_blend_keeps_a_tiny_object_at_its_size(lon_deg: float, lat_deg: float) -> None:
    """A cap 1.5 decoder pixels in radius, seen by every view that covers it."""
    centre = bearing(lon_deg, lat_deg)
    radius = 1.5 * LAYOUT.fov_deg / LOW_PX
    truth = cap_mask(centre, radius)
    canvas = new_canvas(FusionMode.BLEND)
    paint_caps(canvas, [(8, centre, radius)], range(len(LAYOUT)))
    found = canvas.labels == 8
    assert iou(found, truth) > 0.9
    assert 0.9 < found.sum() / truth.sum() < 1.1


def test_a_view_that_sees_no_object_votes_against_it() -> None:
    """Blend: an empty view outvotes a lighter one; least distortion ignores "no object"."""
    centre = bearing(10.0, 30.0)
    views = sorted(views_seeing(centre),
                   key=lambda i: float(angular_distance_deg(LAYOUT.views[i].axis, centre)))
    reporter, silent = views[0], views[-1]
    full = np.ones((1, LOW_PX, LOW_PX), np.float32)
    none = np.zeros((0, LOW_PX, LOW_PX), np.float32)
    for mode in MODES:
        canvas = new_canvas(mode)
        canvas.paint_logits(reporter, full, np.array([6], np.uint16))
        before = canvas.labels == 6
        canvas.paint_logits(silent, none, np.zeros(0, np.uint16))
        after = canvas.labels == 6
        if mode is FusionMode.LEAST_DISTORTION:
            assert np.array_equal(before, after)
            continue
        tables = canvas.tables
        w_rep = np.zeros(HEIGHT * WIDTH, np.float32)
        w_sil = np.zeros(HEIGHT * WIDTH, np.float32)
        w_rep[tables.erp_index[reporter]] = blend_weights(tables, reporter)
        w_sil[tables.erp_index[silent]] = blend_weights(tables, silent)
        expected = (w_rep > w_sil).reshape(HEIGHT, WIDTH) & before
        assert np.array_equal(after, expected)
        assert before.sum() > after.sum() > 0


def test_blend_memory_grows_with_object_area_not_objects_times_canvas() -> None:
    """Evidence is kept only near each object: 40 small objects cost less than 2 dense maps."""
    height, width = 256, 512
    canvas = new_canvas(FusionMode.BLEND, (height, width))
    rng = np.random.default_rng(0)
    caps = [(k + 1, bearing(rng.uniform(-180, 180), rng.uniform(-60, 60)), 3.0)
            for k in range(40)]
    paint_caps(canvas, caps, range(len(LAYOUT)))
    assert len(np.unique(canvas.labels)) > 30
    # Dense state: labels (2 B), summed weights and a scratch row (4 B each) per pixel; 40
    # dense per-object accumulators would add 40 x 4 B per pixel.
    assert canvas.nbytes < (10 + 2 * 4) * height * width
