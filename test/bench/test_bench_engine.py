"""``sap_bench engine``: the report a user reads (keys, ranges, help, errors) and its wrappers."""
from __future__ import annotations

import contextlib
import io
import json
import math
from typing import List, Tuple

import numpy as np
import pytest
import torch

from sap_ros.bench.cli import main
from sap_ros.bench.engine import STAGES, result_keys
from sap_ros.bench.nonnetwork import NONNETWORK_STAGES
from sap_ros.bench.probes import CallTimes, TimedSegmenter, cap_scene
from sap_ros.config import PipelineConfig
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.geometry import erp_pixel_solid_angle_sr
from sap_ros.sphere.layout import PatchLayout

TINY_RUN = ['--image-size', '64', '--erp-width', '256', '--frames', '1', '--repeats', '1',
            '--culling-objects', '1', '--oracle-frames', '3', '--oracle-erp-width', '256',
            '--oracle-patch-size', '64', '--rss-frames', '20', '--rss-erp-width', '256',
            '--device', 'cpu', '--nonnetwork-erp-width', '256', '--nonnetwork-image-size', '64',
            '--nonnetwork-repeats', '1', '--schedule-frames', '3', '--schedule-erp-width', '256',
            '--schedule-patch-size', '64', '--frame-path', 'torch']


def _run(argv: List[str]) -> Tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse: --help and bad options
            status = int(exit_.code or 0)
    return status, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory) -> Tuple[dict, str, str]:
    """One tiny run with random weights: (JSON report, printed table, stderr)."""
    path = tmp_path_factory.mktemp('bench_engine') / 'engine.json'
    status, table, stderr = _run(['engine', *TINY_RUN, '--quiet', '--json', str(path)])
    assert status == 0, stderr
    return json.loads(path.read_text()), table, stderr


def test_help_lists_every_json_key_and_the_acceptance_numbers():
    status, text, _ = _run(['engine', '--help'])
    assert status == 0
    for name, _ in result_keys():
        assert f'{name}:' in text, name
    for limit in ('<= 1.1', '<= 0.15', '>= 3', '<= 5', '>= 0.98', '>= 2', 'within 0.005'):
        assert limit in text
    status, overview, _ = _run(['--help'])
    assert status == 0 and 'engine' in overview and 'view culling' in overview


@pytest.mark.parametrize('option, value', [('--image-size', '100'), ('--frames', '0'),
                                           ('--culling-objects', '0'), ('--erp-width', '255'),
                                           ('--checkpoint', '/nonexistent/sam2.pt'),
                                           ('--schedule-encode-ms', '-1')])
def test_bad_options_are_rejected_with_the_value(option, value):
    status, _, stderr = _run(['engine', option, value])
    assert status == 2
    assert option in stderr and value in stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_cuda_without_cuda_fails_fast_naming_the_device():
    status, table, stderr = _run(['engine', '--device', 'cuda', '--quiet'])
    assert status == 1 and table == ''
    assert 'model.device' in stderr and 'CUDA is not available' in stderr


def test_cap_scene_has_each_cap_with_its_solid_angle():
    radius_deg = 10.0
    rgb, labels = cap_scene(12, radius_deg, 512)
    assert rgb.shape == (256, 512, 3) and rgb.dtype == np.uint8
    pixel_sr = np.repeat(erp_pixel_solid_angle_sr(512, 256), 512).reshape(labels.shape)
    cap_sr = 2.0 * math.pi * (1.0 - math.cos(math.radians(radius_deg)))
    for cap in range(1, 13):
        assert pixel_sr[labels == cap].sum() == pytest.approx(cap_sr, rel=0.05), cap
        assert len(np.unique(rgb[labels == cap].reshape(-1, 3), axis=0)) == 1
    assert (rgb[labels == 0] == 128).all()


def test_timed_segmenter_counts_calls_and_time_without_changing_the_output():
    config = PipelineConfig.from_flat({'model.device': 'cpu', 'patches.size_px': 64,
                                       'model.image_size': 64,
                                       'discovery.every_n_frames': 1,
                                       'discovery.points_per_side': 16,
                                       'discovery.min_area_fraction': 0.0})
    rgb, gt = cap_scene(6, 15.0, 256)
    outputs = []
    for wrap in (False, True):
        oracle = OracleSegmenter(PatchLayout.from_config(config.patches))
        segmenter = TimedSegmenter(oracle) if wrap else oracle
        pipeline = SapPipeline(config, segmenter=segmenter)
        oracle.set_ground_truth(gt)
        outputs.append([pipeline.step(rgb).labels for _ in range(2)])
    for plain, timed in zip(*outputs):
        np.testing.assert_array_equal(plain, timed)
    assert len(np.unique(outputs[1][-1])) == 7  # the six caps and the background
    assert segmenter.encoding.calls == 2  # one begin_frame per frame
    assert segmenter.tracking.calls > 0 and segmenter.discovery.calls > 0
    assert segmenter.wall_s > 0.0 and segmenter.tracking.cpu_s >= 0.0
    segmenter.reset_counters()
    assert segmenter.wall_s == 0.0 and segmenter.tracking == CallTimes()


@pytest.mark.slow
def test_json_has_every_documented_key_with_sane_values(tiny_run):
    report, _, _ = tiny_run
    assert list(report) == [name for name, _ in result_keys()]
    assert report['device'] == 'cpu' and report['image_size'] == 64
    assert report['frames'] == 1 and report['patches'] > 0 and report['fps'] > 0.0
    stage = report['stage_ms']
    assert list(stage) == list(STAGES) and all(v >= 0.0 for v in stage.values())
    assert stage['total'] >= stage['encode'] + stage['decode'] + stage['discover']
    assert 0.0 < report['segmenter_ms'] <= stage['total']
    assert 0.0 <= report['overhead_fraction'] < 1.0
    assert report['encode_batched_ms'] > 0.0 and report['encode_sequential_ms'] > 0.0
    assert report['bank_entries_limit'] > 0
    assert 0 < report['bank_entries_max'] <= report['bank_entries_limit']
    assert report['rss_early_frame'] == 3
    assert report['rss_early_mib'] > 0.0 and report['rss_late_mib'] > 0.0
    assert math.isfinite(report['rss_growth_pct'])
    assert report['rss_ids_issued'] > 0
    assert 0.0 <= report['oracle_j'] <= 1.0 and report['oracle_id_switches'] >= 0
    assert 0.0 <= report['oracle_worst_j'] <= report['oracle_j']
    assert set(report['acceptance'].values()) <= {True, False}
    assert len(report['acceptance']) == 10


def test_speed_part_runs_the_device_frame_path_and_counts_its_host_reads(tiny_run):
    report, table, _ = tiny_run
    assert report['frame_path'] == 'torch'  # --frame-path torch, here on the CPU
    calls, reads = report['engine_sam2_calls_per_frame'], report['engine_host_reads_per_frame']
    assert calls > 0 and reads > 0
    # One per SAM2 call; per patch: caps, discovery's grid flags, its candidates' scores and
    # overlaps; one download.
    assert reads <= calls + 4 * report['patches'] + 1
    assert f'frame path   torch: {reads} host reads in one frame of {calls} SAM2 calls' in table
    assert report['engine_cuda_syncs_per_frame'] is None  # counted by torch on CUDA only
    # Random weights: every SAM2 call is a discovery call; each patch searched costs its reads.
    searched = report['engine_searched_patches_per_frame']
    assert 0 < searched <= report['patches']
    assert 0.0 < report['engine_host_reads_per_searched_patch'] * searched <= reads
    assert report['engine_host_reads_per_sam2_call'] is not None
    assert report['bench_syncs_per_frame'] == 0.0  # no synchronize off CUDA
    # Culled and batched with SAM2's outputs on the device: at most one read per patch for all
    # its SAM2 calls, one per patch with sightings and the download, whatever the objects.
    assert 0 < report['culling_host_reads_per_frame'] <= 2 * report['patches'] + 1
    assert report['cuda_peak_early_mib'] is None and report['cuda_peak_late_mib'] is None


def test_casts_part_counts_one_call_three_ways(tiny_run):
    report, table, _ = tiny_run
    session = report['weight_casts_per_sam2_call']
    outer = report['weight_casts_per_sam2_call_outer']
    assert 0 < session <= 1.1 * outer
    assert report['weight_casts_per_sam2_call_own_context'] > session
    assert f'{session} weight casts (aten::_to_copy) per SAM2 call' in table


@pytest.mark.slow
def test_culling_decodes_each_object_only_near_it(tiny_run):
    """Objects come from the ground truth (random SAM2 finds none); culling skips views."""
    report, _, _ = tiny_run
    assert report['culling_objects'] >= 1
    # Without culling every object is decoded in every patch; with it, in fewer.
    assert report['no_culling_track_calls'] == report['culling_objects'] * report['patches']
    assert 0 < report['culling_track_calls'] < report['no_culling_track_calls']
    # The speedup is the ratio of the two decode times measured side by side in this run.
    assert report['culling_decode_ms'] > 0.0 and report['no_culling_decode_ms'] > 0.0
    assert report['culling_speedup'] == pytest.approx(
        report['no_culling_decode_ms'] / report['culling_decode_ms'])


@pytest.mark.slow
def test_table_shows_the_numbers_and_random_weights_are_said_loudly(tiny_run):
    report, table, stderr = tiny_run
    assert 'RANDOM WEIGHTS' in report['weights'] and 'RANDOM WEIGHTS' in table
    assert 'RANDOM WEIGHTS' in stderr  # even with --quiet
    assert f"{report['fps']:.3f} fps" in table
    assert f"{report['overhead_fraction']:.3f}" in table
    assert f"x{report['culling_speedup']:.2f}" in table
    assert f"J {report['oracle_j']:.4f}" in table
    assert table.count('PASS') + table.count('FAIL') == 10


# ---------------------------------------------------------------------------- encoder schedule
@pytest.mark.slow
def test_schedule_part_encodes_fewer_patches_and_loses_no_object(tiny_run):
    """Scheduled vs every view on the same frames: fewer patches, same objects, same ids."""
    report, table, _ = tiny_run
    assert report['schedule_frames'] == 3 and report['schedule_patch_size'] == 64
    assert report['all_views_encoded_per_frame'] == report['patches']
    assert 0 < report['encoded_views_per_frame'] < report['all_views_encoded_per_frame']
    assert 0.0 < report['schedule_object_views_fraction'] < 0.5
    assert report['schedule_encode_ms_per_view'] == pytest.approx(
        report['encode_batched_ms'] / report['patches'])
    assert report['encoder_schedule_speedup'] == pytest.approx(
        report['all_views_frame_ms'] / report['schedule_frame_ms'])
    assert report['all_views_oracle_j'] > 0.5
    assert abs(report['schedule_oracle_j'] - report['all_views_oracle_j']) <= 0.005
    assert report['schedule_id_switches'] == 0
    assert f"x{report['encoder_schedule_speedup']:.2f}" in table
    assert f"{report['encoded_views_per_frame']:.1f} of {report['patches']} patches" in table


# ---------------------------------------------------------------------------- non-network part
@pytest.mark.slow
def test_nonnetwork_part_times_both_paths_on_one_frame(tiny_run):
    """Both paths measured on the same frame: stages, ratio, equal maps, one sync per frame."""
    report, table, _ = tiny_run
    assert report['nonnetwork_device'] == 'cpu'
    assert report['nonnetwork_erp_width'] == 256 and report['nonnetwork_image_size'] == 64
    assert report['nonnetwork_objects'] == 20
    ms = report['nonnetwork_ms']
    assert sorted(ms) == ['numpy', 'torch']
    for path in ms.values():
        assert list(path) == list(NONNETWORK_STAGES)
        assert all(v > 0.0 for v in path.values())
        assert path['total'] >= max(path['sample'], path['fuse'], path['pointers'])
    assert report['nonnetwork_speedup'] == pytest.approx(
        ms['numpy']['total'] / ms['torch']['total'])
    assert report['nonnetwork_labels_equal'] >= 0.999
    assert report['host_syncs_per_frame'] == 1
    assert f"x{report['nonnetwork_speedup']:.2f}" in table
    assert f"numpy (ms)  sample {ms['numpy']['sample']:.1f}" in table
    assert f"host syncs per torch frame {report['host_syncs_per_frame']}" in table


@pytest.mark.parametrize('option, value', [('--nonnetwork-image-size', '10'),
                                           ('--nonnetwork-objects', '0'),
                                           ('--fusion', 'median')])
def test_bad_nonnetwork_options_are_rejected_with_the_value(option, value):
    status, _, stderr = _run(['engine', option, value])
    assert status == 2
    assert option in stderr and value in stderr
