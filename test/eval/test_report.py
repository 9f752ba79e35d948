"""Replay report files: JSON blocks, the Markdown table, overlays, contact sheet and plots."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sap_ros.eval.replay_methods import MethodName
from sap_ros.eval.replay_timeline import METRIC_KEYS, MethodScores
from sap_ros.eval.report import (
    MAX_OVERLAYS,
    MethodRun,
    OverlaySample,
    ReplayInfo,
    gt_as_objects,
    sample_every,
    write_report,
)

H, W = 32, 64


def gt_frame(k: int) -> np.ndarray:
    """Two objects on background 0; the second one moves right by 2 px per frame."""
    gt = np.zeros((H, W), np.uint16)
    gt[8:20, 4:20] = 1
    gt[10:18, 30 + 2 * k:40 + 2 * k] = 2
    return gt


def info(random_weights: bool = False, gt: bool = True) -> ReplayInfo:
    return ReplayInfo(
        bag='/bags/clip', image_topic='/camera/image', image_type='sensor_msgs/msg/Image',
        bag_frames=4, frames=4, gt_source='topic /gt/labels' if gt else None, gt_background=0,
        gt_ignore=None, gt_stamp_mismatches=0, config={'model.image_size': 128},
        model='sam2.1_hiera_t on cpu: RANDOM WEIGHTS' if random_weights else 'oracle only',
        random_weights=random_weights, output_bag='/out/sap.mcap', output_method='ours',
        elapsed_s=1.5, stamps_ns=tuple(range(4)))


def runs_and_samples(with_gt: bool = True):
    """``ours`` predicts the ground truth with other ids; ``naive`` misses the second object."""
    ours, naive = MethodScores(0, None), MethodScores(0, None)
    samples = []
    rgb = np.full((H, W, 3), 90, np.uint8)
    for k in range(4):
        gt = gt_frame(k)
        pred = np.where(gt > 0, gt + 10, 0).astype(np.uint16)
        miss = np.where(gt == 1, 1, 0).astype(np.uint16)
        ours.add(pred, 100.0 + k, gt if with_gt else None)
        naive.add(miss, None, gt if with_gt else None)
        samples.append(OverlaySample(k, k, rgb, {'ours': pred, 'naive': miss},
                                     gt if with_gt else None))
    runs = [MethodRun(MethodName.OURS, 'SAM2', ours),
            MethodRun(MethodName.NAIVE, 'upper bound', naive)]
    return runs, samples


def test_json_has_our_block_on_top_and_baselines_with_the_same_keys(tmp_path):
    runs, samples = runs_and_samples()
    files = write_report(tmp_path, info(), runs, samples)
    report = json.loads(files.json.read_text())
    assert set(METRIC_KEYS) <= set(report)
    assert set(METRIC_KEYS) <= set(report['baselines']['naive'])
    assert report['frames'] == 4 and report['j'] == pytest.approx(1.0)
    assert report['id_switches'] == 0
    assert report['latency_ms_mean'] == pytest.approx(101.5)
    naive = report['baselines']['naive']
    assert naive['j'] == pytest.approx(0.5) and naive['latency_ms_mean'] is None
    assert report['timeline']['j']['ours'] == pytest.approx([1.0] * 4)
    assert report['timeline']['j']['naive'] == pytest.approx([0.5] * 4)
    assert report['bag']['frames_replayed'] == 4 and report['ours_skipped'] is False
    assert report['objects_per_frame_mean'] == 2.0
    assert report['baselines']['naive']['objects_per_frame_mean'] == 1.0
    assert any('UPPER BOUND' in note for note in report['notes'])


def test_markdown_table_puts_methods_side_by_side_and_warns_about_random_weights(tmp_path):
    runs, samples = runs_and_samples()
    text = write_report(tmp_path / 'a', info(random_weights=True), runs, samples).markdown
    md = text.read_text()
    assert '| metric | ours | naive (upper bound) |' in md
    assert '| j | 1.000 | 0.500 |' in md
    assert '| latency_ms_mean | 101.5 | n/a |' in md
    assert 'RANDOM WEIGHTS' in md and 'UPPER BOUND' in md
    plain = write_report(tmp_path / 'b', info(), runs, samples).markdown.read_text()
    assert 'RANDOM WEIGHTS' not in plain


def test_images_decode_one_overlay_row_per_method_plus_ground_truth(tmp_path):
    runs, samples = runs_and_samples()
    files = write_report(tmp_path, info(), runs, samples)
    assert [p.name for p in files.overlays] == [f'frame_{k:05d}.png' for k in range(4)]
    panel = cv2.imread(str(files.overlays[0]))
    assert panel is not None and panel.shape[1] == W
    assert panel.shape[0] > 3 * H  # ours, naive and ground truth stacked
    sheet = cv2.imread(str(files.contact_sheet))
    assert sheet is not None and sheet.shape[0] > 4 * H and sheet.shape[1] >= 3 * W
    for plot in (files.j_plot, files.latency_plot):
        image = cv2.imread(str(plot))
        assert image is not None and image.shape[0] > 100


def test_without_ground_truth_scores_are_null_but_latency_is_reported(tmp_path):
    runs, samples = runs_and_samples(with_gt=False)
    files = write_report(tmp_path, info(gt=False), runs[:1], samples)
    report = json.loads(files.json.read_text())
    assert report['j'] is None and report['j_and_f'] is None and report['frames'] == 4
    assert report['latency_ms_p95'] == pytest.approx(np.percentile([100, 101, 102, 103], 95))
    assert report['ground_truth'] is None
    assert cv2.imread(str(files.j_plot)) is not None


def test_overlays_are_capped():
    assert sample_every(100) * (MAX_OVERLAYS - 1) < 100
    assert len(range(0, 100, sample_every(100))) <= MAX_OVERLAYS
    assert len(range(0, 7, sample_every(7))) == 7


def test_dense_ground_truth_keeps_segment_zero_and_drops_ignore():
    gt = np.array([[0, 1], [255, 3]], np.uint8)
    assert gt_as_objects(gt, None, 255).tolist() == [[1, 2], [0, 4]]
    assert gt_as_objects(gt, 0, 255).tolist() == [[0, 1], [0, 3]]


def _lat_weight(v: int) -> float:
    return float(np.cos(np.radians(90.0 - (v + 0.5) * 180.0 / H)))


def test_fragmentation_seam_and_pole_figures_carry_their_values(tmp_path):
    """One object across the 0/360 seam, one cap over the north pole (|lat| > 60 on rows 0-3).

    ``ours`` predicts both exactly; ``raster`` gives the seam object a second id on the other
    side of the seam and only the upper half of the cap.
    """
    gt = np.zeros((H, W), np.uint16)
    gt[12:20, W - 8:] = 1
    gt[12:20, :8] = 1
    gt[:4] = 2
    exact = np.where(gt > 0, gt + 10, 0).astype(np.uint16)
    split = exact.copy()
    split[12:20, :8] = 21  # the seam object gets another id left of the seam
    split[2:4] = 0  # half of the polar cap (rows 0-1 of 0-3)
    ours, raster = MethodScores(0, None), MethodScores(0, None)
    for _ in range(2):
        ours.add(exact, 10.0, gt)
        raster.add(split, 10.0, gt)
    runs = [MethodRun(MethodName.OURS, 'SAM2', ours), MethodRun(MethodName.RASTER, 'rows', raster)]
    files = write_report(tmp_path, info(), runs, [])
    report = json.loads(files.json.read_text())
    block = report['baselines']['raster']
    assert (report['fragmentation'], report['seam_consistency'], report['j_poles']) == (
        0.0, 1.0, pytest.approx(1.0))
    # Two ids cover the seam object on every frame, the cap none: (1 + 0) / 2.
    assert block['fragmentation'] == pytest.approx(0.5)
    assert block['seam_consistency'] == 0.0
    half_cap = sum(_lat_weight(v) for v in range(2)) / sum(_lat_weight(v) for v in range(4))
    assert block['j_poles'] == pytest.approx(half_cap)
    md = files.markdown.read_text()
    assert f'| j_poles | 1.000 | {half_cap:.3f} |' in md
    assert '| fragmentation | 0.000 | 0.500 |' in md
    assert '| seam_consistency | 1.000 | 0.000 |' in md
