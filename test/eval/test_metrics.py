"""360VOS-style metrics: sphere weighting, boundary tolerance, seam, matching over a clip."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from sap_ros.errors import ErpShapeError, InvalidInputError
from sap_ros.eval.metrics import ClipEvaluator, f_score, j_score

H, W = 128, 256  # tolerance 0.008 x hypot(128, 256) = 2.29 px
SHARED_DATA = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data'


def row_lat_deg(v: int, height: int = H) -> float:
    """Latitude of ERP row ``v`` (ARCHITECTURE §3), written out by hand for the expected values."""
    return 90.0 - (v + 0.5) / height * 180.0


def box(rows: slice, cols: slice, value: int = 1, base: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros((H, W), np.uint16) if base is None else base.copy()
    out[rows, cols] = value
    return out


# --- frame scores ---------------------------------------------------------------------------

def test_j_weights_pixels_by_cos_latitude():
    # 8 x 16 ERP; the GT holds 4 pixels in row 0 (lat 78.75) and 4 in row 3 (lat 11.25).
    gt = np.zeros((8, 16), bool)
    gt[0, :4] = True
    gt[3, :4] = True
    equator_only, pole_only = gt.copy(), gt.copy()
    equator_only[0] = False
    pole_only[3] = False
    w_pole, w_eq = math.cos(math.radians(78.75)), math.cos(math.radians(11.25))
    assert j_score(equator_only, gt) == pytest.approx(w_eq / (w_eq + w_pole))  # 0.834, not 0.5
    assert j_score(pole_only, gt) == pytest.approx(w_pole / (w_eq + w_pole))   # 0.166
    assert j_score(gt, gt) == 1.0
    assert j_score(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_j_ignore_pixels_do_not_count():
    gt = box(slice(40, 80), slice(100, 160)) > 0
    pred = box(slice(40, 80), slice(100, 170)) > 0  # 10 extra columns, all in the ignore area
    ignore = box(slice(40, 80), slice(160, 170)) > 0
    assert j_score(pred, gt) < 0.9
    assert j_score(pred, gt, ignore=ignore) == pytest.approx(1.0)
    assert f_score(pred, gt, ignore=ignore) < 1.0  # the right edges are 10 px apart


@pytest.mark.parametrize('shift_rows, expected', [(0, 1.0), (2, 1.0), (3, 0.0), (-3, 0.0)])
def test_f_boundary_tolerance(shift_rows, expected):
    # A band around the whole sphere: its only boundaries are its top and bottom rows, so every
    # boundary pixel is exactly |shift| px from the other mask's (tolerance 2.29 px).
    gt = box(slice(40, 80), slice(0, W)) > 0
    pred = box(slice(40 + shift_rows, 80 + shift_rows), slice(0, W)) > 0
    assert f_score(pred, gt) == pytest.approx(expected)


def test_f_boundary_matches_across_the_seam():
    # The GT ends at column W-1, the prediction at column 0: 1 px apart on the sphere.
    gt = box(slice(40, 80), slice(W - 10, W)) > 0
    pred = np.roll(gt, 1, axis=1)
    assert f_score(pred, gt) == pytest.approx(1.0)
    # Far shifts are still penalised (so the score above is not trivially 1).
    assert f_score(np.roll(gt, 6, axis=1), gt) < 0.8


def test_f_and_j_do_not_see_the_seam():
    # Rolling both masks around the sphere, across the seam, changes nothing.
    gt = box(slice(30, 70), slice(100, 140)) > 0
    pred = box(slice(33, 72), slice(103, 145)) > 0
    reference_f, reference_j = f_score(pred, gt), j_score(pred, gt)
    assert 0.0 < reference_f < 1.0
    crossing = 0
    for k in (120, 136, 150, 200):  # 120, 136, 150: the masks straddle column 0
        rolled_pred, rolled_gt = np.roll(pred, k, axis=1), np.roll(gt, k, axis=1)
        crossing += int(rolled_gt[:, 0].any() and rolled_gt[:, -1].any())
        assert f_score(rolled_pred, rolled_gt) == pytest.approx(reference_f, abs=1e-12)
        assert j_score(rolled_pred, rolled_gt) == pytest.approx(reference_j, abs=1e-12)
    assert crossing == 3


def test_f_pole_border_is_not_a_boundary():
    # Polar caps: the only boundary is the cap's lower edge; 4 px apart > tolerance.
    gt = box(slice(0, 10), slice(0, W)) > 0
    assert f_score(box(slice(0, 14), slice(0, W)) > 0, gt) == 0.0
    assert f_score(box(slice(0, 12), slice(0, W)) > 0, gt) == 1.0


def test_f_empty_masks():
    empty = np.zeros((H, W), bool)
    gt = box(slice(40, 80), slice(100, 160)) > 0
    assert f_score(empty, empty) == 1.0
    assert f_score(empty, gt) == 0.0
    assert f_score(gt, empty) == 0.0


def test_frame_scores_reject_bad_shapes():
    with pytest.raises(ErpShapeError, match='2:1'):
        j_score(np.zeros((10, 10), bool), np.zeros((10, 10), bool))
    with pytest.raises(InvalidInputError, match='same shape'):
        f_score(np.zeros((8, 16), bool), np.zeros((16, 32), bool))


# --- clips ----------------------------------------------------------------------------------

def two_objects() -> np.ndarray:
    gt = box(slice(40, 80), slice(20, 60), 1)
    return box(slice(40, 80), slice(150, 200), 2, gt)


def test_clip_identity_swap_costs_j_and_counts_switches():
    gt = two_objects()
    right = np.where(gt == 1, 10, np.where(gt == 2, 20, 0)).astype(np.uint16)
    swapped = np.where(gt == 1, 20, np.where(gt == 2, 10, 0)).astype(np.uint16)
    evaluator = ClipEvaluator()
    for t in range(10):
        evaluator.add_frame(right if t < 6 else swapped, gt)  # identities swap at frame 6
    result = evaluator.result()
    # Matched once per clip: 6 of 10 frames right for both objects.
    assert result.j == pytest.approx(0.6)
    assert result.f == pytest.approx(0.6)  # the swapped masks' boundaries are far apart
    assert result.j_and_f == pytest.approx(0.6)
    assert result.id_switches == 2
    assert {(o.gt_id, o.pred_id) for o in result.objects} == {(1, 10), (2, 20)}


def test_clip_consistent_relabelling_is_perfect():
    gt = two_objects()
    evaluator = ClipEvaluator()
    for _ in range(4):
        pred = np.where(gt == 1, 7, np.where(gt == 2, 3, 0)).astype(np.uint16)
        evaluator.add_frame(pred, gt)
    result = evaluator.result()
    assert (result.j, result.f, result.id_switches, result.fragmentation) == (1.0, 1.0, 0, 0.0)


def test_clip_fragmentation_counts_extra_ids():
    gt = two_objects()
    pred = gt.copy()
    pred[40:60, 20:60][gt[40:60, 20:60] == 1] = 5  # object 1 split in two halves (5 and 1)
    evaluator = ClipEvaluator()
    evaluator.add_frame(pred, gt)
    assert evaluator.result().fragmentation == pytest.approx(0.5)  # (1 + 0) / 2 objects


def test_clip_ignore_label_and_prediction_resizing():
    gt = box(slice(40, 80), slice(100, 160), 3)
    gt[40:80, 160:170] = 255  # ignored
    pred_full = box(slice(40, 80), slice(100, 170), 9)
    pred_half = pred_full[::2, ::2]  # 64 x 128: nearest-neighbour upsampling restores it
    evaluator = ClipEvaluator()
    evaluator.add_frame(pred_half, gt)
    assert evaluator.result().j == pytest.approx(1.0)
    strict = ClipEvaluator(gt_ignore=None)  # 255 is now an object nobody predicted
    strict.add_frame(pred_half, gt)
    assert strict.result().gt_objects == 2
    assert strict.result().j < 0.5


def test_clip_dense_ground_truth_background_none():
    gt = np.zeros((H, W), np.uint8)
    gt[:, W // 2:] = 1  # dense: segment 0 (left half) and segment 1 (right half)
    pred = np.where(gt == 0, 5, 0).astype(np.uint16)  # only segment 0 is predicted
    dense = ClipEvaluator(gt_background=None)
    dense.add_frame(pred, gt)
    assert dense.result().gt_objects == 2
    assert dense.result().j == pytest.approx(0.5)
    default = ClipEvaluator()  # 0 = background: only segment 1 counts, and it is missed
    default.add_frame(pred, gt)
    assert default.result().gt_objects == 1
    assert default.result().j == 0.0


def test_clip_absent_frames_after_first_appearance():
    gt_on = box(slice(40, 80), slice(100, 160), 4)
    gt_off = np.zeros_like(gt_on)
    lingering, dropping, late = ClipEvaluator(), ClipEvaluator(), ClipEvaluator()
    for t in range(10):
        gt = gt_on if t < 5 else gt_off
        lingering.add_frame(gt_on, gt)  # keeps predicting the object after it left
        dropping.add_frame(gt, gt)
        late.add_frame(gt_off if t < 5 else gt_on, gt_off if t < 5 else gt_on)  # appears at 5
    assert lingering.result().j == pytest.approx(0.5)
    assert dropping.result().j == pytest.approx(1.0)
    assert late.result().j == pytest.approx(1.0)
    assert late.result().objects[0].frames == 5


def test_clip_seam_consistency():
    gt = box(slice(40, 80), slice(W - 10, W), 1)
    gt[40:80, :10] = 1  # crosses the seam
    same = gt.astype(np.uint16) * 6
    split = same.copy()
    split[40:80, :10] = 7  # the right half of the object has another id
    results = []
    for pred in (same, split):
        evaluator = ClipEvaluator()
        evaluator.add_frame(pred, gt)
        results.append(evaluator.result().seam_consistency)
    assert results == [1.0, 0.0]
    nothing = ClipEvaluator()
    nothing.add_frame(two_objects(), two_objects())
    assert nothing.result().seam_consistency is None


def test_clip_pole_j():
    cap = box(slice(0, 10), slice(0, W), 1)  # north polar cap, lat > 60 everywhere
    half_cap = box(slice(0, 5), slice(0, W), 1)
    evaluator = ClipEvaluator()
    evaluator.add_frame(half_cap, cap)
    weights = [math.cos(math.radians(row_lat_deg(v))) for v in range(10)]
    assert evaluator.result().j_poles == pytest.approx(sum(weights[:5]) / sum(weights))
    equator = ClipEvaluator()
    equator.add_frame(two_objects(), two_objects())
    assert equator.result().j_poles is None


def test_clip_latency_and_dict():
    evaluator = ClipEvaluator()
    for k in range(1, 21):
        evaluator.add_frame(two_objects(), two_objects(), latency_ms=float(k))
    result = evaluator.result().to_dict()
    assert result['frames'] == 20
    assert result['latency_ms_mean'] == pytest.approx(10.5)
    assert result['latency_ms_p95'] == pytest.approx(19.05)  # 19 + 0.05 x (20 - 19)
    for key in ('j', 'f', 'j_and_f', 'j_poles', 'id_switches', 'fragmentation',
                'seam_consistency', 'objects'):
        assert key in result


def test_clip_rejects_bad_input():
    evaluator = ClipEvaluator()
    with pytest.raises(InvalidInputError, match='non-negative'):
        evaluator.add_frame(-np.ones((H, W), np.int32), two_objects())
    with pytest.raises(ErpShapeError):
        evaluator.add_frame(np.zeros((10, 10), np.uint16), np.zeros((10, 10), np.uint16))
    assert ClipEvaluator().result().j is None  # an empty clip has no score, not a crash


def test_real_mask_across_the_seam():
    path = SHARED_DATA / '360vot' / '0117_000211_0.png'
    if not path.is_file():
        pytest.skip(f'real 360VOT mask not available at {path}')
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # {0, 255}: 255 is the object here
    gt = cv2.resize(mask, (960, 480), interpolation=cv2.INTER_NEAREST)
    assert gt[:, 0].any() and gt[:, -1].any()  # the flyer wraps across the seam
    whole = (gt > 0).astype(np.uint16) * 3
    split = whole.copy()
    split[:, :480][split[:, :480] > 0] = 4  # another id on the right of the seam
    scores = []
    for pred in (whole, split):
        evaluator = ClipEvaluator(gt_ignore=None)
        evaluator.add_frame(pred, gt)
        scores.append(evaluator.result())
    assert (scores[0].j, scores[0].f, scores[0].seam_consistency) == (1.0, 1.0, 1.0)
    assert scores[1].seam_consistency == 0.0
    assert scores[1].fragmentation == 1.0
    assert scores[1].j < 1.0
