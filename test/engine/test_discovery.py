"""Discovery: grid prompts, stability, mask IoU, NMS, candidate filter, merging on the sphere."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sap_ros.config import DiscoveryConfig
from sap_ros.engine.discovery import (
    CandidateFilter,
    filter_candidates,
    grid_points,
    mask_iou_matrix,
    merge_pairs,
    resolve_merges,
    stability_score,
    suppress_duplicates,
)
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import erp_row_weights


def _box(shape, top, left, bottom, right):
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


# --- grid points -------------------------------------------------------------------------------

def test_grid_points_one_per_cell_inside_the_patch():
    size, n = 64, 4
    points = grid_points(size, n)
    assert points.shape == (n * n, 2)
    cell = size // n
    # Each point lies in its own cell, near the cell centre, on a pixel centre (integer index).
    cells = {(int(u) // cell, int(v) // cell) for u, v in points}
    assert cells == {(i, j) for i in range(n) for j in range(n)}
    assert np.all(np.abs(points % cell - (cell - 1) / 2) <= 1)
    assert np.array_equal(points, np.round(points))
    assert np.array_equal(points, grid_points(size, n))  # deterministic


def test_grid_points_keeps_only_uncovered_pixels():
    size = 32
    uncovered = np.ones((size, size), dtype=bool)
    uncovered[:, : size // 2] = False  # the left half is covered by a tracked object
    points = grid_points(size, 8, uncovered)
    assert len(points) == 8 * 4
    assert np.all(points[:, 0] >= size // 2)
    assert len(grid_points(size, 8, np.zeros((size, size), bool))) == 0


def test_grid_points_rejects_bad_input():
    with pytest.raises(InvalidInputError):
        grid_points(0, 4)
    with pytest.raises(InvalidInputError, match='uncovered'):
        grid_points(16, 4, np.ones((8, 8), bool))


# --- stability ---------------------------------------------------------------------------------

def test_crisp_mask_is_stable_and_blurry_one_is_not():
    cols = np.arange(64, dtype=np.float64)
    crisp = np.where(cols >= 32, 10.0, -10.0)[None, None, :].repeat(8, axis=1)
    blurry = ((cols - 32.0) / 4.0)[None, None, :].repeat(8, axis=1)
    logits = np.concatenate([crisp, blurry])
    score = stability_score(logits)
    assert score[0] == 1.0
    # Hand count on the ramp: logit > 1 for columns 37..63 (27), > -1 for 29..63 (35).
    assert score[1] == pytest.approx(27 / 35)
    torch_score = stability_score(torch.from_numpy(logits).float())
    assert isinstance(torch_score, torch.Tensor)
    assert torch.allclose(torch_score, torch.from_numpy(score).float())


def test_stability_of_empty_mask_is_zero():
    assert stability_score(np.full((1, 4, 4), -5.0))[0] == 0.0


# --- mask IoU and NMS --------------------------------------------------------------------------

def test_mask_iou_matrix_matches_hand_count():
    shape = (6, 6)
    a = _box(shape, 0, 0, 2, 3)  # 6 px
    b = _box(shape, 1, 1, 3, 4)  # 6 px, overlaps a on rows 1, cols 1..2 -> 2 px
    c = _box(shape, 4, 4, 6, 6)  # 4 px, disjoint
    iou = mask_iou_matrix(np.stack([a, b, c]))
    expected = np.array([[1.0, 2 / 10, 0.0], [2 / 10, 1.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(iou, expected)
    torch_iou = mask_iou_matrix(torch.from_numpy(np.stack([a, b, c])))
    np.testing.assert_allclose(torch_iou.numpy(), expected, rtol=1e-6)


def test_nms_keeps_the_best_duplicate_and_disjoint_masks():
    shape = (16, 16)
    a = _box(shape, 0, 0, 8, 8)
    a_dup = _box(shape, 0, 0, 8, 7)  # IoU 56/64 with a
    c = _box(shape, 10, 10, 16, 16)
    masks = np.stack([a, a_dup, c])
    assert suppress_duplicates(masks, np.array([0.9, 0.8, 0.5]), 0.7).tolist() == [0, 2]
    assert suppress_duplicates(masks, np.array([0.8, 0.9, 0.5]), 0.7).tolist() == [1, 2]
    # Above the duplicates' IoU both survive.
    assert sorted(suppress_duplicates(masks, np.array([0.9, 0.8, 0.5]), 0.9).tolist()) == [0, 1, 2]


# --- candidate filter --------------------------------------------------------------------------

FILT = CandidateFilter(pred_iou_thresh=0.7, stability_thresh=0.85, min_area_fraction=0.01,
                       nms_iou=0.7, max_keep=8)


def _candidates():
    shape = (32, 32)
    masks = np.stack([
        _box(shape, 0, 0, 8, 8),      # 0 good
        _box(shape, 0, 10, 8, 18),    # 1 low predicted IoU
        _box(shape, 0, 20, 8, 28),    # 2 unstable
        _box(shape, 30, 30, 31, 31),  # 3 one pixel: below min area (0.01 * 1024 = 10 px)
        _box(shape, 20, 0, 28, 8),    # 4 inside the covered region
        _box(shape, 0, 0, 8, 7),      # 5 duplicate of 0, lower predicted IoU
        _box(shape, 20, 20, 28, 28),  # 6 good
    ])
    iou_pred = np.array([0.95, 0.5, 0.9, 0.9, 0.9, 0.9, 0.8])
    stability = np.array([0.95, 0.95, 0.5, 0.95, 0.95, 0.95, 0.95])
    covered = _box(shape, 16, 0, 32, 12)
    return masks, iou_pred, stability, covered


def test_filter_drops_each_failing_candidate():
    masks, iou_pred, stability, covered = _candidates()
    assert filter_candidates(masks, iou_pred, stability, FILT, covered).tolist() == [0, 6]
    # Without the covered map, candidate 4 is new and passes.
    assert filter_candidates(masks, iou_pred, stability, FILT).tolist() == [0, 4, 6]


def test_filter_keeps_a_partly_covered_candidate():
    masks, iou_pred, stability, _ = _candidates()
    covered = _box(masks.shape[1:], 20, 0, 28, 3)  # 3 of candidate 4's 8 columns
    assert 4 in filter_candidates(masks, iou_pred, stability, FILT, covered).tolist()


def test_filter_respects_max_keep_and_works_on_tensors():
    masks, iou_pred, stability, covered = _candidates()
    one = CandidateFilter(0.7, 0.85, 0.01, 0.7, max_keep=1)
    assert filter_candidates(masks, iou_pred, stability, one, covered).tolist() == [0]
    kept = filter_candidates(torch.from_numpy(masks), torch.from_numpy(iou_pred),
                             torch.from_numpy(stability), FILT, torch.from_numpy(covered))
    assert kept.tolist() == [0, 6]


def test_filter_from_config_uses_discovery_parameters():
    cfg = DiscoveryConfig(pred_iou_thresh=0.6, stability_thresh=0.8, min_area_fraction=0.05,
                          nms_iou=0.5, max_new_per_frame=3)
    filt = CandidateFilter.from_config(cfg)
    assert (filt.pred_iou_thresh, filt.stability_thresh, filt.min_area_fraction, filt.nms_iou,
            filt.max_keep) == (0.6, 0.8, 0.05, 0.5, 3)


# --- merging on the sphere ---------------------------------------------------------------------

H, W = 32, 64


def test_merge_pairs_finds_a_duplicate_and_not_disjoint_objects():
    weights = erp_row_weights(H)
    masks = {
        4: _box((H, W), 10, 10, 20, 30),
        9: _box((H, W), 10, 11, 20, 31),  # the same object, one column shifted
        2: _box((H, W), 10, 40, 20, 50),  # elsewhere
    }
    assert merge_pairs(masks, weights, iou_threshold=0.5) == [(4, 9)]
    assert merge_pairs({1: masks[4], 2: masks[2]}, weights, iou_threshold=0.0) == []


def test_merge_keeps_parts_but_merges_fragments():
    weights = erp_row_weights(H)
    whole = _box((H, W), 8, 8, 24, 40)
    fragment = _box((H, W), 8, 8, 24, 26)  # half of it: IoU ~0.56 < 0.6, fully contained
    part = _box((H, W), 12, 12, 14, 14)  # a small part inside (a window in a wall)
    assert merge_pairs({1: whole, 2: fragment}, weights, iou_threshold=0.6) == [(1, 2)]
    assert merge_pairs({1: whole, 2: fragment}, weights, 0.6, containment=1.1) == []
    assert merge_pairs({1: whole, 3: part}, weights, iou_threshold=0.6) == []


def test_merge_weights_pixels_by_their_area_on_the_sphere():
    # b adds a polar cap to a's equatorial band: by pixel count IoU is 1/2, on the sphere much
    # more, because polar pixels are small.
    weights = erp_row_weights(H)
    a = _box((H, W), 14, 0, 18, W)
    b = a | _box((H, W), 0, 0, 4, W)
    assert merge_pairs({1: a, 2: b}, np.ones(H), 0.6, containment=1.1) == []
    assert merge_pairs({1: a, 2: b}, weights, 0.6, containment=1.1) == [(1, 2)]


def test_resolve_merges_collapses_chains_to_the_oldest_id():
    assert resolve_merges([(1, 2), (2, 3), (7, 8)]) == {2: 1, 3: 1, 8: 7}
    assert resolve_merges([]) == {}
