"""Semantic scores on hand-made class maps: sphere weighting, per-class IoU, class switches."""
from __future__ import annotations

import numpy as np
import pytest

from sap_ros.engine.types import ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.eval.semantic_metrics import SemanticEvaluator, semantic_scores
from sap_ros.sphere.geometry import erp_row_weights

NAMES = ('box', 'floor', 'sky')


def record(object_id: int, class_id: int) -> ObjectRecord:
    return ObjectRecord(object_id, np.array([1.0, 0.0, 0.0]), 0.0, 0.0, 1.0, 1.0, 0.01, 1, 1.0,
                        0, 0, class_id=class_id, class_name='', class_score=1.0)


def test_iou_weighs_each_pixel_by_its_area_on_the_sphere() -> None:
    # 4 x 8 ERP: row 0 near the pole (small weight), row 1 near the equator (large weight).
    w = erp_row_weights(4)
    assert w[0] < 0.5 * w[1]
    gt = np.zeros((4, 8), np.uint16)
    gt[0, :] = 1           # a box over the whole polar row
    gt[1, :] = 1           # ... and the row below it
    gt[2:, :] = 2          # floor
    pred = gt.copy()
    pred[0, :] = 2         # the polar row is called floor
    scores = semantic_scores(pred, gt, NAMES)
    box = w[1] / (w[0] + w[1])                     # 8 equatorial px of 8 + 8 (weighted)
    floor = (w[2] + w[3]) / (w[0] + w[2] + w[3])
    assert scores.class_iou['box'] == pytest.approx(box)
    assert scores.class_iou['floor'] == pytest.approx(floor)
    assert scores.class_iou['sky'] is None          # nowhere: no IoU, not in the mean
    assert scores.miou == pytest.approx((box + floor) / 2)
    # The same error on an equatorial row costs more than on the polar one.
    pred_eq = gt.copy()
    pred_eq[1, :] = 2
    assert semantic_scores(pred_eq, gt, NAMES).class_iou['box'] < box


def test_clip_iou_accumulates_areas_and_a_predicted_only_class_scores_zero() -> None:
    gt = np.zeros((4, 8), np.uint16)
    gt[:, :4] = 1
    evaluator = SemanticEvaluator(NAMES)
    evaluator.add_frame(gt, gt)                       # perfect
    wrong = gt.copy()
    wrong[:, 4:] = 3                                  # sky where there is none
    evaluator.add_frame(wrong, gt)
    result = evaluator.result()
    assert result.frames == 2
    assert result.class_iou == {'box': 1.0, 'floor': None, 'sky': 0.0}
    assert result.miou == pytest.approx(0.5)


def test_unscored_classes_count_as_none_and_ignored_pixels_as_nothing() -> None:
    gt = np.zeros((4, 8), np.uint16)
    gt[:2, :] = 3         # sky (not scored)
    gt[2:, :4] = 1        # box
    gt[2:, 4:] = 2        # floor (not scored)
    pred = np.zeros_like(gt)
    pred[2:, :4] = 1      # only the box is predicted
    assert semantic_scores(pred, gt, NAMES).miou == pytest.approx(1 / 3)
    scored = semantic_scores(pred, gt, NAMES, scored=[1])
    assert scored.miou == 1.0 and list(scored.class_iou) == ['box']
    pred_fp = pred.copy()
    pred_fp[0, :] = 1     # a box on the (unscored) sky is a false positive of box
    assert semantic_scores(pred_fp, gt, NAMES, scored=[1]).miou < 1.0
    ignore = np.zeros(gt.shape, bool)
    ignore[0, :] = True   # ... unless those pixels are ignored
    assert semantic_scores(pred_fp, gt, NAMES, scored=[1], ignore=ignore).miou == 1.0


def test_prediction_is_resized_to_the_ground_truth() -> None:
    gt = np.zeros((8, 16), np.uint16)
    gt[:, 8:] = 2
    small = np.zeros((4, 8), np.uint16)
    small[:, 4:] = 2
    assert semantic_scores(small, gt, NAMES).class_iou['floor'] == 1.0


def test_class_switches_count_changes_of_a_tracks_published_class() -> None:
    evaluator = SemanticEvaluator(NAMES)
    gt = np.zeros((4, 8), np.uint16)
    sequence = [[record(1, 0), record(2, 2)],   # 1 has no class yet
                [record(1, 1), record(2, 2)],
                [record(1, 0), record(2, 3)],   # 0 is skipped; 2 switches 2 -> 3
                [record(1, 2)],                 # 1 switches 1 -> 2 (across the 0)
                [record(1, 2), record(3, 1)]]
    for objects in sequence:
        evaluator.add_frame(gt, gt, objects)
    result = evaluator.result()
    assert result.class_switches == 2
    assert result.tracks == 3


def test_class_accuracy_scores_each_track_against_the_class_under_most_of_it() -> None:
    evaluator = SemanticEvaluator(NAMES, scored=[1, 2])
    gt = np.zeros((4, 8), np.uint16)
    gt[:, 0:4] = 1
    gt[:, 4:6] = 2
    gt[:, 6:8] = 3                       # unscored: counts as no class
    labels = np.zeros((4, 8), np.uint16)
    labels[:, 0:3] = 7                   # on class 1
    labels[:, 3:6] = 8                   # 1 column of class 1, 2 of class 2: true class 2
    labels[:, 6:8] = 9                   # on the unscored class: off class
    first = [record(7, 2), record(8, 2), record(9, 1)]
    last = [record(7, 1), record(8, 1), record(9, 1)]  # 7 corrects itself, 8 goes wrong
    evaluator.add_frame(gt, gt, first, labels=labels)
    evaluator.add_frame(gt, gt, last, labels=labels)
    result = evaluator.result()
    assert (result.tracks_scored, result.tracks_off_class) == (2, 1)
    assert result.class_accuracy == 0.5  # 7 right (its last class), 8 wrong
    assert SemanticEvaluator(NAMES).result().class_accuracy is None


def test_bad_maps_are_refused_with_the_reason() -> None:
    gt = np.zeros((4, 8), np.uint16)
    with pytest.raises(InvalidInputError, match='class id 4, outside 0..3'):
        semantic_scores(np.full_like(gt, 4), gt, NAMES)
    with pytest.raises(InvalidInputError, match='integer class map'):
        semantic_scores(gt.astype(np.float32), gt, NAMES)
    with pytest.raises(InvalidInputError, match='subset of 1..3'):
        SemanticEvaluator(NAMES, scored=[0, 1])
    with pytest.raises(InvalidInputError, match='at least one class'):
        SemanticEvaluator(())
