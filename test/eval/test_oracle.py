"""The geometric oracle: ground truth through patches, random local ids and decoder resolution."""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import cv2
import numpy as np
import pytest

from sap_ros.eval.metrics import ClipEvaluator
from sap_ros.eval.oracle import (
    GeometricOracle,
    naive_upper_bound,
    oracle_round_trip,
    through_decoder_resolution,
)
from sap_ros.sphere.fusion import FusionMode
from sap_ros.sphere.geometry import angular_distance_deg, erp_bearings, lonlat_to_bearing
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches
from sap_ros.synth.scene import SceneSpec, SynthScene

LAYOUT = PatchLayout.build(90.0, 256)


def cap_labels(width: int, caps: Sequence[Tuple[int, float, float, float]]) -> np.ndarray:
    """``(W/2, W)`` uint16 labels of spherical caps ``(id, lon_deg, lat_deg, radius_deg)``."""
    bearings = erp_bearings(width, width // 2)
    labels = np.zeros((width // 2, width), np.uint16)
    for cap_id, lon, lat, radius in caps:
        centre = lonlat_to_bearing(np.array(lon), np.array(lat))
        labels[angular_distance_deg(bearings, centre) < radius] = cap_id
    return labels


def per_object_j(pred: np.ndarray, gt: np.ndarray) -> Dict[int, float]:
    """J of each ground-truth object (Hungarian-matched ids, area on the sphere)."""
    evaluator = ClipEvaluator(gt_background=0, gt_ignore=None)
    evaluator.add_frame(pred, gt)
    return {o.gt_id: o.j for o in evaluator.result().objects}


@pytest.fixture(scope='module')
def scene_frame() -> np.ndarray:
    """A 512 x 256 synthetic frame without sub-decoder-pixel objects (labels only)."""
    scene = SynthScene(SceneSpec(seed=1, n_small=0))
    return scene.render(scene.trajectory(1)[0], 512)[1]


def test_patches_name_segments_with_random_local_ids(scene_frame: np.ndarray) -> None:
    outputs = GeometricOracle(LAYOUT, background=0, seed=3).patch_outputs(scene_frame)
    gt_patches = extract_patches(LAYOUT, scene_frame.astype(np.int32),
                                 interpolation=cv2.INTER_NEAREST)
    local_of_gt: Dict[int, set] = {}
    for out, gt_patch in zip(outputs, gt_patches):
        assert out.logits.shape == (len(out.local_ids), 64, 64)  # a quarter of 256 px
        assert sorted(out.local_ids.tolist()) == list(range(1, len(out.local_ids) + 1))
        low_gt = cv2.resize(gt_patch.astype(np.float32), (64, 64),
                            interpolation=cv2.INTER_NEAREST).astype(np.int64)
        for local in out.local_ids:
            under = low_gt[out.labels == local]
            if len(under):
                gt_id = int(np.bincount(under).argmax())
                local_of_gt.setdefault(gt_id, set()).add(int(local))
    # The same object is named differently from patch to patch.
    assert sum(len(names) > 1 for names in local_of_gt.values()) >= 3


@pytest.mark.parametrize('mode', list(FusionMode))
def test_round_trip_rebuilds_one_id_per_object(scene_frame: np.ndarray,
                                               mode: FusionMode) -> None:
    gt = scene_frame
    pred = oracle_round_trip(LAYOUT, gt, gt.shape, background=0, seed=5, mode=mode)
    assert pred.shape == gt.shape and pred.dtype == np.uint16
    n_gt = len(np.unique(gt)) - 1
    assert len(np.unique(pred)) - 1 == n_gt  # no object split in two, none lost
    scores = per_object_j(pred, gt)
    assert len(scores) == n_gt
    assert min(scores.values()) > 0.9
    assert np.mean(list(scores.values())) > 0.95


def test_round_trip_keeps_one_id_across_the_seam_and_at_the_poles() -> None:
    gt = cap_labels(512, [(1, 180.0, 0.0, 25.0), (2, 0.0, 90.0, 20.0), (3, 30.0, -90.0, 15.0)])
    for mode in FusionMode:
        pred = oracle_round_trip(LAYOUT, gt, gt.shape, background=0, seed=1, mode=mode)
        for gt_id in (1, 2, 3):
            assert len(np.unique(pred[gt == gt_id])) == 1, (mode, gt_id)
        assert min(per_object_j(pred, gt).values()) > 0.95, mode


def test_through_decoder_resolution_keeps_blobs_and_loses_hairlines() -> None:
    labels = np.zeros((64, 64), np.uint16)
    labels[8:40, 8:40] = 4
    labels[50, :] = 9  # one pixel thick: a quarter of a decoder pixel
    for interpolation in (cv2.INTER_LINEAR, cv2.INTER_CUBIC):
        out = through_decoder_resolution(labels, interpolation=interpolation)
        assert out.shape == labels.shape
        assert not (out == 9).any()
        square = out == 4
        assert (square & (labels == 4)).sum() / (square | (labels == 4)).sum() > 0.95
    assert through_decoder_resolution(labels, out_hw=(16, 32)).shape == (16, 32)
    assert np.array_equal(through_decoder_resolution(np.full((8, 8), 3, np.uint16)),
                          np.full((8, 8), 3, np.uint16))


def test_naive_upper_bound_loses_small_objects_the_patches_keep() -> None:
    """A 5 deg object: lost by the whole ERP at 128^2, kept by 256 px patches.

    The ERP squeezed to 128^2 decodes at 32^2 (11 deg per pixel across); 90 deg patches of
    256 px decode at 1.4 deg per pixel.
    """
    gt = cap_labels(1024, [(1, -40.0, 10.0, 30.0), (2, 60.0, -5.0, 2.5)])
    naive = per_object_j(naive_upper_bound(gt, square_px=128, background=0), gt)
    assert naive[1] > 0.9
    assert naive.get(2, 0.0) < 0.1
    for mode in FusionMode:
        ours = per_object_j(oracle_round_trip(LAYOUT, gt, gt.shape, background=0, seed=2,
                                              mode=mode), gt)
        assert ours[1] > 0.95, mode
        assert ours[2] > 0.8, mode
