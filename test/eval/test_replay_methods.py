"""Replay methods: the naive upper bound's conventions and the oracle's patch resolution."""
from __future__ import annotations

import numpy as np
import pytest

from sap_ros.config import PipelineConfig
from sap_ros.errors import InvalidInputError
from sap_ros.eval.metrics import ClipEvaluator
from sap_ros.eval.replay_methods import MethodName, NaiveUpperBound, build_method

SMALL = {'model.device': 'cpu',
         'model.image_size': 128, 'patches.size_px': 256, 'patches.fov_deg': 120.0}


def dense_gt() -> np.ndarray:
    """Sky (0) over ground (1), a block (2), an ignored patch (255): dense, 8-bit."""
    gt = np.zeros((128, 256), np.uint8)
    gt[64:] = 1
    gt[70:100, 40:120] = 2
    gt[10:30, 10:50] = 255
    return gt


def test_naive_bound_keeps_dense_segment_zero_as_an_object():
    gt = dense_gt()
    naive = NaiveUpperBound(PipelineConfig.from_flat(SMALL), gt_background=None, gt_ignore=255)
    out = naive.step(np.zeros((128, 256, 3), np.uint8), gt)
    assert out.latency_ms is None and out.objects == []
    assert out.labels.dtype == np.uint16 and out.labels.shape == gt.shape
    assert (out.labels[15:25, 20:40] == 0).all()  # inside the ignored patch: nothing
    assert set(np.unique(out.labels).tolist()) <= {0, 1, 2, 3}
    evaluator = ClipEvaluator(gt_background=None, gt_ignore=255)
    evaluator.add_frame(out.labels, gt)
    metrics = evaluator.result()
    assert [o.gt_id for o in metrics.objects] == [0, 1, 2]
    assert min(o.j for o in metrics.objects) > 0.9  # segment 0 (sky) is found too


def test_naive_bound_drops_the_background_and_loses_detail_at_small_sizes():
    gt = np.zeros((256, 512), np.uint16)
    gt[20:120, 20:220] = 3
    gt[180:192, 300:312] = 7  # 12 px: below the decoder resolution of a 64 px square
    coarse = NaiveUpperBound(PipelineConfig.from_flat({'model.device': 'cpu',
                                                        'model.image_size': 64})).step(None, gt)
    fine = NaiveUpperBound(PipelineConfig.from_flat({'model.device': 'cpu',
                                                      'model.image_size': 512})).step(None, gt)
    assert 7 not in coarse.labels and 7 in fine.labels
    assert set(np.unique(fine.labels).tolist()) == {0, 3, 7}
    with pytest.raises(InvalidInputError, match='ground truth'):
        NaiveUpperBound(PipelineConfig()).step(None, None)


def test_oracle_cuts_patches_at_what_sam2_sees():
    config = PipelineConfig.from_flat(SMALL)
    oracle = build_method(MethodName.ORACLE, config, gt_background=None)
    assert oracle.pipeline.segmenter.low_res_px == 128 // 4  # min(size_px, image_size) / 4
    with pytest.raises(InvalidInputError, match='ground truth'):
        oracle.step(np.zeros((128, 256, 3), np.uint8), None)
    out = oracle.step(np.zeros((128, 256, 3), np.uint8), dense_gt())
    assert out.labels.shape == (64, 128) and out.latency_ms > 0
    assert len(out.objects) == len(np.unique(out.labels[out.labels > 0]))
