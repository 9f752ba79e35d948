"""Discovery per patch as upstream's automatic mask generator: grid, boxes, NMS, the filter."""
from __future__ import annotations

from typing import Iterator, List

import numpy as np
import pytest
from sam2.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score
import torch

from sap_ros.bench.probes import count_host_syncs
from sap_ros.config import DiscoveryConfig, PipelineConfig
from sap_ros.engine.discovery_filter import (
    CandidateFilter,
    box_nms,
    free_points,
    grid_points,
    masks_to_boxes,
    resolve_points_per_side,
    search_patch,
    search_points,
)
from sap_ros.engine.segmenter import Candidates
from sap_ros.errors import ConfigError, InvalidInputError

# --- grid ----------------------------------------------------------------------------------------


def test_auto_grid_has_upstreams_density_per_model_pixel():
    assert resolve_points_per_side(0, 1024) == 32  # SAM2AutomaticMaskGenerator's default
    assert resolve_points_per_side(0, 512) == 16
    assert resolve_points_per_side(0, 128) == 4
    assert resolve_points_per_side(7, 1024) == 7  # an explicit number wins
    with pytest.raises(InvalidInputError):
        resolve_points_per_side(-1, 1024)


@pytest.mark.parametrize('patch_px,n', [(1024, 32), (128, 4), (100, 7)])
def test_grid_is_upstreams_grid_scaled_to_the_patch(patch_px, n):
    ours = grid_points(patch_px, n)
    np.testing.assert_array_equal(ours, build_point_grid(n) * np.array([[patch_px, patch_px]]))


def test_free_points_skips_points_on_covered_pixels():
    points = grid_points(64, 4)  # x, y in 8, 24, 40, 56
    covered = np.zeros((16, 16), bool)
    covered[:, :8] = True  # the left half of the patch
    free = free_points(points, covered, 64)
    assert free.tolist() == [x >= 32 for x, _ in points]
    assert np.array_equal(free_points(points, torch.from_numpy(covered), 64), free)


# --- boxes and NMS -------------------------------------------------------------------------------


def test_boxes_follow_upstreams_inclusive_convention():
    masks = torch.zeros(4, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True       # rows 2..4, columns 3..8
    masks[1, 7, 11] = True          # one pixel: a zero-area box
    masks[3, [0, 9], [0, 11]] = True  # two corners
    boxes = masks_to_boxes(masks)
    assert boxes.tolist() == [[3, 2, 8, 4], [11, 7, 11, 7], [0, 0, 0, 0], [0, 0, 11, 9]]
    assert torch.equal(boxes, batched_mask_to_box(masks).float())


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> List[int]:
    """A plain double loop over pairs: torchvision's CPU kernel (float32 IoU, double threshold)."""
    order = torch.sort(torch.as_tensor(scores, dtype=torch.float32), descending=True).indices
    kept: List[int] = []
    f32 = np.float32
    for i in order.tolist():
        ok = True
        for j in kept:
            ax0, ay0, ax1, ay1 = (f32(v) for v in boxes[i])
            bx0, by0, bx1, by1 = (f32(v) for v in boxes[j])
            inter = max(f32(0), min(ax1, bx1) - max(ax0, bx0)) * max(f32(0), min(ay1, by1)
                                                                    - max(ay0, by0))
            union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
            if union > 0 and float(f32(inter / union)) > thresh:
                ok = False
        if ok:
            kept.append(i)
    return kept


def test_box_nms_matches_a_reference_on_hand_made_boxes():
    boxes = np.array([[0, 0, 10, 10],     # 0
                      [1, 0, 11, 10],     # 1: IoU 9/11 with 0
                      [0, 0, 10, 10],     # 2: same box as 0, same score (a tie)
                      [20, 20, 30, 30],   # 3: elsewhere
                      [20, 20, 25, 30],   # 4: IoU exactly 0.5 with 3
                      [5, 5, 5, 5],       # 5: zero area (a one-pixel mask)
                      [5, 5, 5, 5]], np.float32)  # 6: zero area twice: IoU NaN, both kept
    scores = np.array([0.9, 0.95, 0.9, 0.5, 0.4, 0.3, 0.3], np.float32)
    for thresh in (0.4, 0.5, 0.6, 0.7, 0.85, 0.95):
        assert box_nms(boxes, scores, thresh).tolist() == _reference_nms(boxes, scores, thresh)
    assert box_nms(boxes, scores, 0.7).tolist() == [1, 3, 4, 5, 6]
    # IoU exactly at the threshold is not suppressed (strictly greater, as torchvision).
    assert 4 in box_nms(boxes, scores, 0.5).tolist()
    assert 4 not in box_nms(boxes, scores, 0.49).tolist()


def test_box_nms_ties_resolve_as_torch_sort_on_many_boxes():
    rng = np.random.default_rng(3)
    xy = rng.integers(0, 40, size=(300, 2))
    wh = rng.integers(0, 20, size=(300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.integers(0, 4, size=300).astype(np.float32) / 4  # many ties
    assert box_nms(boxes, scores, 0.5).tolist() == _reference_nms(boxes, scores, 0.5)


# --- the filter ----------------------------------------------------------------------------------

LOW, PATCH = 16, 64


def _block(top: int, left: int, size: int, inside: float = 8.0) -> np.ndarray:
    logits = np.full((LOW, LOW), -8.0, np.float32)
    logits[top:top + size, left:left + size] = inside
    return logits


def _soft(top: int, left: int, size: int) -> np.ndarray:
    """A mask whose logits ramp slowly: unstable at any resolution."""
    logits = np.full((LOW, LOW), -0.5, np.float32)
    logits[top:top + size, left:left + size] = 0.5
    return logits


def _search(logits: np.ndarray, iou: np.ndarray, **options) -> List[int]:
    """Candidates kept, as ``point * 3 + mask`` indices, by matching masks back."""
    filt = CandidateFilter(**{'pred_iou_thresh': 0.8, 'stability_thresh': 0.95, **options})
    found = search_patch([Candidates(logits, iou)], PATCH, filt)
    side = PATCH if filt.decide_at == 'patch' else LOW
    flat = torch.from_numpy(logits.reshape(-1, LOW, LOW))
    up = torch.nn.functional.interpolate(flat[:, None], size=(side, side), mode='bilinear',
                                         align_corners=False)[:, 0] > 0
    return [int(next(k for k in range(len(up)) if torch.equal(up[k], torch.as_tensor(m))))
            for m in found.masks]


def _two_points():
    # Point 0: its best-scored mask is blurry; its second mask is crisp; its third scores 0.8.
    # Point 1: one crisp mask elsewhere.
    logits = np.stack([
        np.stack([_soft(2, 2, 6), _block(2, 2, 4), _block(9, 2, 4)]),
        np.stack([_block(9, 9, 5), _soft(0, 9, 3), _block(0, 12, 2, -8.0)]),
    ])
    iou = np.array([[0.99, 0.9, 0.8], [0.95, 0.3, 0.9]], np.float32)
    return logits, iou


def test_every_multimask_output_is_filtered_on_its_own():
    logits, iou = _two_points()
    # Kept: point 0's crisp second mask (its best one is unstable), point 1's first; point 0's
    # third has predicted IoU 0.8, not above 0.8; point 1's third is empty (stability 0).
    assert sorted(_search(logits, iou)) == [1, 3]
    # Upstream's top-1 departure loses point 0 entirely.
    assert _search(logits, iou, multimask='best') == [3]


def test_thresholds_are_strict_for_iou_and_inclusive_for_stability_and_off_at_zero():
    logits, iou = _two_points()
    assert 2 in _search(logits, iou, pred_iou_thresh=0.79)
    # Stability of the soft mask is exactly 0 (no logit above +1): kept only with the filter off.
    assert 0 not in _search(logits, iou, stability_thresh=1e-6)
    everything = _search(logits, iou, pred_iou_thresh=0.0, stability_thresh=0.0, nms_iou=1.0)
    assert sorted(everything) == list(range(6))  # the empty mask too, as upstream
    half = _block(2, 2, 2, 2.0)
    half[4, 2:6] = 0.5  # stability 4 / 8 = 0.5 at the decoder's resolution
    one = np.stack([half, half, half])[None]
    scores = np.array([[0.9, 0.1, 0.1]], np.float32)
    assert _search(one, scores, stability_thresh=0.5, decide_at='decoder') == [0]
    assert _search(one, scores, stability_thresh=0.51, decide_at='decoder') == []
    negative = iou.copy()
    negative[1, 0] = -0.2
    assert 3 in _search(logits, negative, pred_iou_thresh=0.0, stability_thresh=0.0)


def test_decisions_on_upsampled_logits_differ_from_decoder_resolution():
    # A 2x2 block at +-2: at the decoder's resolution the cut-offs +-1 give the same 4 pixels
    # (stability 1); upsampled, the ramp between them makes it unstable.
    logits = np.stack([_block(4, 4, 2, 2.0)])[None].repeat(3, axis=1)
    logits[0, :, :, :] = np.where(logits[0] > 0, 2.0, -2.0)
    iou = np.array([[0.9, 0.1, 0.1]], np.float32)
    assert _search(logits, iou, decide_at='decoder') == [0]
    assert _search(logits, iou) == []


def test_box_nms_within_the_patch_keeps_the_better_duplicate():
    logits = np.stack([np.stack([_block(2, 2, 7), _block(2, 2, 6), _block(10, 10, 4)])])
    iou = np.array([[0.85, 0.95, 0.9]], np.float32)
    assert _search(logits, iou) == [1, 2]  # best predicted IoU first
    assert sorted(_search(logits, iou, nms_iou=0.99)) == [0, 1, 2]
    assert _search(logits, iou, max_keep=1) == [1]
    assert _search(logits, iou, nms='mask') == [1, 2]


def test_min_area_and_covered_options_are_off_by_default():
    logits = np.stack([np.stack([_block(2, 2, 6), _block(12, 12, 1), _block(9, 2, 4)])])
    iou = np.full((1, 3), 0.9, np.float32)
    filt = CandidateFilter(stability_thresh=0.0)
    covered = np.zeros((LOW, LOW), bool)
    covered[8:, :8] = True  # all of mask 2
    found = search_patch([Candidates(logits, iou)], PATCH, filt, covered)
    assert len(found.iou) == 3
    small = CandidateFilter(stability_thresh=0.0, min_area_fraction=0.01)  # >= 41 px of 4096
    assert len(search_patch([Candidates(logits, iou)], PATCH, small).iou) == 2
    half = CandidateFilter(stability_thresh=0.0, max_covered_fraction=0.5)
    assert len(search_patch([Candidates(logits, iou)], PATCH, half, covered).iou) == 2


def test_batches_and_kinds_give_the_same_candidates():
    logits, iou = _two_points()
    filt = CandidateFilter(pred_iou_thresh=0.0, stability_thresh=0.0)
    whole = search_patch([Candidates(logits, iou)], PATCH, filt)
    split = search_patch([Candidates(logits[:1], iou[:1]), Candidates(logits[1:], iou[1:])],
                         PATCH, filt)
    tensors = search_patch([Candidates(torch.from_numpy(logits), torch.from_numpy(iou))],
                           PATCH, filt)
    assert (whole.decoded, whole.batches, split.batches) == (6, 1, 2)
    assert isinstance(whole.masks, np.ndarray) and isinstance(tensors.masks, torch.Tensor)
    np.testing.assert_array_equal(split.masks, whole.masks)
    np.testing.assert_array_equal(tensors.masks.numpy(), whole.masks)
    np.testing.assert_array_equal(whole.iou, split.iou)


def test_stability_matches_upstream_on_upsampled_logits():
    logits, iou = _two_points()
    filt = CandidateFilter(pred_iou_thresh=0.0, stability_thresh=0.0, nms_iou=1.0)
    found = search_patch([Candidates(logits, iou)], PATCH, filt)
    up = torch.nn.functional.interpolate(torch.from_numpy(logits), size=(PATCH, PATCH),
                                         mode='bilinear', align_corners=False)
    theirs = np.nan_to_num(calculate_stability_score(up, 0.0, 1.0).flatten().numpy())
    assert sorted(found.stability.tolist()) == pytest.approx(sorted(theirs.tolist()))


def test_bad_candidates_are_rejected():
    with pytest.raises(InvalidInputError, match='B, M, h, w'):
        search_patch([Candidates(np.zeros((2, 16, 16)), np.zeros(2))], PATCH, CandidateFilter())
    with pytest.raises(InvalidInputError, match='multimask'):
        CandidateFilter(multimask='top')


# --- configuration -------------------------------------------------------------------------------


def test_defaults_are_upstreams_generator_and_options_reach_the_filter():
    cfg = DiscoveryConfig()
    assert (cfg.points_per_side, cfg.points_per_batch, cfg.pred_iou_thresh, cfg.stability_thresh,
            cfg.nms_iou, cfg.multimask, cfg.decide_at, cfg.nms, cfg.min_area_fraction,
            cfg.max_covered_fraction) == (0, 64, 0.8, 0.95, 0.7, 'all', 'patch', 'box', 0.0, 1.0)
    flat = PipelineConfig.from_flat({'discovery.multimask': 'best', 'discovery.decide_at':
                                     'decoder', 'discovery.nms': 'mask',
                                     'discovery.max_covered_fraction': 0.5,
                                     'discovery.max_new_per_frame': 3})
    filt = CandidateFilter.from_config(flat.discovery)
    assert (filt.multimask, filt.decide_at, filt.nms, filt.max_covered_fraction,
            filt.max_keep) == ('best', 'decoder', 'mask', 0.5, 3)
    with pytest.raises(ConfigError, match='discovery.nms'):
        PipelineConfig.from_flat({'discovery.nms': 'soft'})


# --- one read per patch: the deferred search -----------------------------------------------------


def _discs(points: np.ndarray) -> Candidates:
    """Per point three discs around it (radii 2, 4, 7 decoder px) and a predicted IoU each.

    Each point's answer depends on that point alone, as SAM2's does: deterministic NumPy.
    """
    ys, xs = np.mgrid[0:LOW, 0:LOW] + 0.5
    logits, iou = [], []
    for x, y in np.asarray(points) * LOW / PATCH:
        dist = np.hypot(xs - x - 0.5 * LOW / PATCH, ys - y - 0.5 * LOW / PATCH)
        logits.append([40.0 * (r - dist) for r in (2.0, 4.0, 7.0)])
        wobble = (np.sin(12.9898 * x + 78.233 * y) * 43758.5453) % 1.0
        iou.append([0.7 + 0.25 * wobble, 0.95 - 0.2 * wobble, 0.85])
    return Candidates(np.asarray(logits, np.float32).reshape(-1, 3, LOW, LOW),
                      np.asarray(iou, np.float32).reshape(-1, 3))


class DiscSegmenter:
    """Tensor candidates (one row per point, as SAM2 on the device), counting its calls."""

    def __init__(self) -> None:
        self.calls: List[int] = []

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> Iterator[Candidates]:
        points = np.asarray(points_px)
        self.calls.append(len(points))
        for start in range(0, len(points), points_per_batch):
            c = _discs(points[start:start + points_per_batch])
            yield Candidates(torch.from_numpy(c.logits), torch.from_numpy(c.iou))


@pytest.mark.parametrize('options', [
    {}, {'multimask': 'best'}, {'max_keep': 3}, {'decide_at': 'decoder'},
    {'pred_iou_thresh': 0.0, 'stability_thresh': 0.0, 'max_covered_fraction': 0.3}])
def test_device_candidates_are_read_once_per_patch_and_kept_as_on_the_host(options):
    """All batches' numbers in one read, the kept points decoded again: the host's result."""
    points = grid_points(PATCH, 6)  # 36 points, 5 batches of 8
    covered = np.zeros((LOW, LOW), bool)
    covered[:, :5] = True
    filt = CandidateFilter(**options)
    host = search_patch([_discs(points[k:k + 8]) for k in range(0, len(points), 8)], PATCH, filt,
                        covered)
    segmenter = DiscSegmenter()
    with count_host_syncs() as syncs:
        device = search_points(segmenter, 0, points, PATCH, filt, 8, torch.from_numpy(covered))
    assert syncs.calls == ['Tensor.numpy']  # one read for the 5 mask-decoder calls
    assert 0 < len(host.iou) < host.decoded  # the filter and NMS both decided something
    assert segmenter.calls[0] == 36 and 1 <= segmenter.calls[1] <= len(host.iou)
    assert len(segmenter.calls) == 2  # the kept points, decoded again in one call
    assert isinstance(device.masks, torch.Tensor)
    np.testing.assert_array_equal(device.masks.numpy(), host.masks)
    for name in ('iou', 'stability', 'boxes', 'area'):
        np.testing.assert_array_equal(getattr(device, name), getattr(host, name), err_msg=name)
    assert (device.decoded, device.passed, device.batches) == \
        (host.decoded, host.passed, host.batches)


def test_nothing_kept_needs_no_second_decoding():
    segmenter = DiscSegmenter()
    found = search_points(segmenter, 0, grid_points(PATCH, 3), PATCH,
                          CandidateFilter(pred_iou_thresh=0.99))
    assert len(found.iou) == 0 and found.masks.shape == (0, PATCH, PATCH)
    assert segmenter.calls == [9]


def test_tensor_candidates_must_answer_one_row_per_point():
    class PerSegment(DiscSegmenter):
        def discover(self, view_index, points_px, points_per_batch=64):
            for c in super().discover(view_index, points_px, points_per_batch):
                yield Candidates(c.logits[:1], c.iou[:1])  # one segment for many points

    with pytest.raises(InvalidInputError, match='one point each'):
        search_points(PerSegment(), 0, grid_points(PATCH, 3), PATCH, CandidateFilter())
