"""Discovery measures: stability, mask IoU, mask NMS, merging on the sphere."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sap_ros.engine.discovery import (
    mask_iou_matrix,
    merge_pairs,
    resolve_merges,
    stability_score,
    suppress_duplicates,
)
from sap_ros.sphere.geometry import erp_row_weights


def _box(shape, top, left, bottom, right):
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


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
