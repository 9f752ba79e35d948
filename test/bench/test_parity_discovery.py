"""Discovery's per-patch candidates equal upstream's SAM2AutomaticMaskGenerator (sap_bench parity).

Both runs (every mask through, upstream's thresholds on a sharpened decoder) match exactly, and the
two mutations (top-1 multimask only, decisions on the 1/4-resolution logits) fail. Keeping only the
best multimask output, or deciding at the decoder's resolution, in the engine fails these tests.
"""
from __future__ import annotations

import sys
from typing import List

import numpy as np
import pytest
import torch

from sap_ros.bench.parity_discovery import (
    DISCOVERY_MUTATIONS,
    DISCOVERY_THRESHOLDS,
    DiscoveryParityResult,
    discovery_passed,
    measure_discovery,
)
from sap_ros.bench.torchvision_standin import batched_nms, box_area, install
from sap_ros.engine.discovery_boxes import box_nms


@pytest.fixture(scope='module')
def results() -> List[DiscoveryParityResult]:
    torch.set_num_threads(1)
    return measure_discovery()


def test_our_candidates_are_upstreams(results: List[DiscoveryParityResult]) -> None:
    plain = [r for r in results if r.mutation == 'none']
    assert [r.name for r in plain] == ['discovery/all_pass', 'discovery/defaults']
    for r in plain:
        assert r.upstream == r.ours > DISCOVERY_THRESHOLDS['min_candidates'], r
        assert r.min_iou >= DISCOVERY_THRESHOLDS['min_iou'], r
        assert r.max_iou_pred_diff <= DISCOVERY_THRESHOLDS['max_iou_pred_diff'], r
        assert r.passed
    # Every point gave all three masks to the NMS: more candidates than points survive.
    assert plain[0].upstream > plain[0].points


def test_mutations_fail(results: List[DiscoveryParityResult]) -> None:
    mutated = [r for r in results if r.mutation != 'none']
    assert {(r.name, r.mutation) for r in mutated} == {
        (name, m) for name in ('discovery/all_pass', 'discovery/defaults')
        for m in DISCOVERY_MUTATIONS}
    for r in mutated:
        assert not r.passed, r
    assert discovery_passed(results)


def test_torchvision_standin_is_installed_only_without_torchvision() -> None:
    install()
    module = sys.modules['torchvision']
    standin = 'stand-in' in (module.__doc__ or '')
    try:
        import torchvision.ops.boxes as real_or_standin
    except ImportError:  # pragma: no cover - install() always leaves one importable
        pytest.fail('torchvision is neither installed nor stood in for')
    assert (real_or_standin.batched_nms is batched_nms) == standin
    assert install() is False  # importable now: nothing is replaced


def test_standin_nms_agrees_with_the_engines_independent_one() -> None:
    rng = np.random.default_rng(5)
    xy = rng.integers(0, 60, size=(200, 2))
    boxes = np.concatenate([xy, xy + rng.integers(0, 30, size=(200, 2))], 1).astype(np.float32)
    scores = (rng.integers(0, 6, size=200) / 6).astype(np.float32)  # with ties
    b, s = torch.from_numpy(boxes), torch.from_numpy(scores)
    for thresh in (0.3, 0.5, 0.7):
        theirs = batched_nms(b, s, torch.zeros(200, dtype=torch.long), thresh)
        assert theirs.tolist() == box_nms(boxes, scores, thresh).tolist()
    assert torch.equal(box_area(b), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))


def test_one_read_per_patch_keeps_the_per_batch_searchs_masks_on_sam2() -> None:
    """The deferred search (kept points decoded again) gives the per-batch search's candidates.

    SAM2 with random weights, localised and sharpened as the parity runs, float32 on the CPU:
    bit for bit, whatever the batch size.
    """
    import copy

    from sap_ros.bench import parity_discovery as pd
    from sap_ros.config import ModelConfig
    from sap_ros.engine.discovery_filter import (
        CandidateFilter,
        grid_points,
        search_patch,
        search_points,
    )
    from sap_ros.engine.segmenter import Sam2Segmenter

    torch.set_num_threads(1)
    frames, _ = pd.video_frames(1, 128, pd.DATA_DIR)
    patch = np.ascontiguousarray(frames[0])
    segmenter = Sam2Segmenter(ModelConfig(allow_random_weights=True, image_size=128, seed=0,
                                          device='cpu', dtype='float32'))
    segmenter.adapter._model = pd._sharpen(copy.deepcopy(segmenter.adapter.model))
    segmenter.begin_frame(patch[None], patch)
    points = grid_points(128, 8)
    for batch, max_keep in ((7, 0), (24, 8)):
        filt = CandidateFilter(max_keep=max_keep)
        with torch.no_grad():
            each = search_patch(segmenter.discover(0, points, batch), 128, filt)
            once = search_points(segmenter, 0, points, 128, filt, batch)
        assert len(each.iou) > 4
        assert torch.equal(once.masks, each.masks)
        np.testing.assert_array_equal(once.iou, each.iou)
        np.testing.assert_array_equal(once.boxes, each.boxes)
