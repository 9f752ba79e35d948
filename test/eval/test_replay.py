"""``sap_replay`` end to end: output bag, report, baselines, acceptance numbers, clear errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from sap_ros.config import PipelineConfig
from sap_ros.errors import ConfigError
from sap_ros.eval.bags import (
    IMAGE,
    BagWriter,
    bag_topics,
    iter_messages,
    open_image_stream,
    open_label_stream,
)
from sap_ros.eval.replay import MASKS_TOPIC, OBJECTS_TOPIC, build_config, main
from sap_ros.synth import cli as synth

REPO = Path(__file__).resolve().parents[2]
LEADER = REPO / '..' / 'shared' / 'data' / 'leader360v_beach'
# Oracle and naive at small sizes: no SAM2, a second or two per frame on 256 x 128 frames.
SMALL = ['--set', 'model.device=cpu',
         '--set', 'model.image_size=128', '--set', 'patches.size_px=128',
         '--set', 'patches.fov_deg=120', '--quiet']
# SAM2 with random weights at the smallest useful settings (still seconds per frame on CPU).
TINY_SAM2 = SMALL + ['--random-weights', '--set', 'discovery.points_per_side=4',
                     '--set', 'discovery.max_new_per_frame=2', '--set', 'memory.short_term=2',
                     '--set', 'memory.long_term=1']


@pytest.fixture(scope='module')
def synth_bag(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('synth') / 'bag'
    assert synth.main([str(out), '--frames', '3', '--width', '256', '--quiet']) == 0
    return out


def replay(capsys, bag: Path, out: Path, *extra: str, topic: str = synth.IMAGE_TOPIC):
    code = main([str(bag), '--image-topic', topic, '--out', str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def scores(out: Path) -> dict:
    return json.loads((out / 'report.json').read_text())


def test_oracle_and_naive_write_the_output_bag_and_a_readable_report(synth_bag, tmp_path, capsys):
    out = tmp_path / 'run'
    code, stdout, err = replay(capsys, synth_bag, out, '--gt-topic', synth.LABEL_TOPIC,
                               '--skip-ours', '--baseline', 'oracle', '--baseline', 'naive',
                               *SMALL)
    assert code == 0, err
    assert 'oracle' in stdout and 'naive' in stdout
    # The output bag: masks and objects of the first method, stamped like the input frames.
    assert bag_topics(out / 'sap.mcap') == {MASKS_TOPIC: ('sensor_msgs/msg/Image', 3),
                                            OBJECTS_TOPIC: ('sensor_msgs/msg/PointCloud2', 3)}
    stamps = [f.header_stamp_ns for f in open_image_stream(synth_bag, synth.IMAGE_TOPIC)]
    masks = list(open_label_stream(out / 'sap.mcap', MASKS_TOPIC, use_header_stamp=True))
    assert [m.timestamp_ns for m in masks] == stamps
    assert masks[0].labels.shape == (64, 128)  # output.scale 0.5 of 256 x 128
    clouds = [msg for _, msg in iter_messages(out / 'sap.mcap', OBJECTS_TOPIC)]
    for mask, cloud in zip(masks, clouds):
        assert cloud.width == len(np.unique(mask.labels[mask.labels > 0]))
        assert cloud.header.frame_id == 'camera'
    # The report: JSON blocks, the Markdown table, decodable images.
    report = scores(out)
    assert report['ours_skipped'] is True and report['j'] is None
    for name in ('oracle', 'naive'):
        block = report['baselines'][name]
        assert block['frames'] == 3 and 0.0 <= block['j'] <= 1.0
        assert block['j_and_f'] == pytest.approx((block['j'] + block['f']) / 2)
    assert report['baselines']['oracle']['latency_ms_mean'] > 0
    assert report['config']['patches.size_px'] == 128
    md = (out / 'report.md').read_text()
    assert '| metric | oracle | naive (upper bound) |' in md and 'UPPER BOUND' in md
    for png in ['j_over_time.png', 'latency_hist.png', 'overlays/contact_sheet.png',
                'overlays/frame_00000.png', 'overlays/frame_00002.png']:
        assert cv2.imread(str(out / png)) is not None, png
    # A second run into the same folder needs --force.
    code, _, err = replay(capsys, synth_bag, out, '--gt-topic', synth.LABEL_TOPIC,
                          '--skip-ours', '--baseline', 'naive', *SMALL)
    assert code == 2 and '--force' in err
    code, _, err = replay(capsys, synth_bag, out, '--gt-topic', synth.LABEL_TOPIC,
                          '--skip-ours', '--baseline', 'naive', '--max-frames', '1', '--force',
                          *SMALL)
    assert code == 0, err
    assert scores(out)['baselines']['naive']['frames'] == 1 and 'oracle' not in scores(out)[
        'baselines']


def test_label_pngs_score_like_the_label_topic(synth_bag, tmp_path, capsys):
    gt_dir = tmp_path / 'labels'
    gt_dir.mkdir()
    for k, frame in enumerate(open_label_stream(synth_bag, synth.LABEL_TOPIC)):
        cv2.imwrite(str(gt_dir / f'{k:04d}.png'), frame.labels)  # 16-bit PNG
    args = ['--skip-ours', '--baseline', 'naive', '--max-frames', '2', *SMALL]
    code_a = replay(capsys, synth_bag, tmp_path / 'a', '--gt-topic', synth.LABEL_TOPIC, *args)[0]
    code_b = replay(capsys, synth_bag, tmp_path / 'b', '--gt-dir', str(gt_dir), *args)[0]
    assert code_a == code_b == 0
    a, b = scores(tmp_path / 'a')['baselines'], scores(tmp_path / 'b')['baselines']
    assert a['naive']['j'] == b['naive']['j'] and a['naive']['f'] == b['naive']['f']
    assert scores(tmp_path / 'b')['ground_truth']['ignore'] is None  # 16-bit: no ignore value
    (gt_dir / '0002.png').unlink()
    code, _, err = replay(capsys, synth_bag, tmp_path / 'c', '--gt-dir', str(gt_dir), *args)
    assert code == 2 and 'count mismatch' in err and '2 label maps' in err and '3 frames' in err


def test_wrong_topic_lists_the_topics_and_types(synth_bag, tmp_path, capsys):
    code, _, err = replay(capsys, synth_bag, tmp_path / 'out', *SMALL, topic='/camera/imag')
    assert code == 2
    assert "'/camera/imag' not in rosbag" in err
    assert '/camera/image (sensor_msgs/msg/Image, 3 msgs)' in err
    assert '/gt/labels (sensor_msgs/msg/Image, 3 msgs)' in err
    assert 'Traceback' not in err
    assert not (tmp_path / 'out').exists()  # nothing written


def test_unsupported_type_and_empty_topic_are_clear_errors(tmp_path, capsys):
    bag = tmp_path / 'odd'
    with BagWriter(bag) as writer:
        writer.write_objects('/cloud', [], 1_000_000_000)
        writer.add_topic('/camera/empty', IMAGE)
    code, _, err = replay(capsys, bag, tmp_path / 'a', *SMALL, topic='/cloud')
    assert code == 2
    assert 'has type sensor_msgs/msg/PointCloud2' in err and 'CompressedImage' in err
    assert '/camera/empty (sensor_msgs/msg/Image, 0 msgs)' in err
    code, _, err = replay(capsys, bag, tmp_path / 'b', *SMALL, topic='/camera/empty')
    assert code == 2 and "'/camera/empty'" in err and 'has no messages' in err
    assert '/cloud (sensor_msgs/msg/PointCloud2, 1 msgs)' in err


def test_missing_checkpoint_and_baselines_without_ground_truth(synth_bag, tmp_path, capsys):
    code, _, err = replay(capsys, synth_bag, tmp_path / 'a', *SMALL)
    # model.checkpoint: auto, and test/conftest.py leaves no way to download: the documented error
    assert code == 2 and 'model.checkpoint=auto' in err and 'download' in err
    assert 'sap_weights verify' in err and os.environ['SAP_ROS_CACHE'] in err
    code, _, err = replay(capsys, synth_bag, tmp_path / 'b', '--checkpoint',
                          str(tmp_path / 'nowhere.pt'), *SMALL)
    assert code == 2 and 'nowhere.pt' in err
    code, _, err = replay(capsys, synth_bag, tmp_path / 'c', '--skip-ours', '--baseline',
                          'oracle', *SMALL)
    assert code == 2 and '--gt-topic or --gt-dir' in err
    code, _, err = replay(capsys, synth_bag, tmp_path / 'd', '--skip-ours', *SMALL)
    assert code == 2 and 'nothing to run' in err
    code, _, err = replay(capsys, synth_bag, tmp_path / 'e', *SMALL, '--set',
                          'patches.fov_deg=500')
    assert code == 2 and 'patches.fov_deg' in err and 'Traceback' not in err


def test_params_file_then_overrides(tmp_path):
    config = build_config(REPO / 'config' / 'sap.yaml', ['model.image_size=256',
                                                          'patches.order=raster'],
                          checkpoint='/models/x.pt')
    assert config.model.image_size == 256 and config.patches.order == 'raster'
    assert config.model.checkpoint == '/models/x.pt'
    assert config.patches.fov_deg == PipelineConfig().patches.fov_deg  # from the YAML file
    params = tmp_path / 'p.yaml'
    params.write_text('/**/sap_node:\n  ros__parameters:\n    autostart: false\n'
                      '    input: {compressed: true}\n    patches: {fov_deg: 75}\n')
    assert build_config(params).patches.fov_deg == 75.0
    with pytest.raises(ConfigError, match='no_such.param'):
        build_config(None, ['no_such.param=1'])
    with pytest.raises(ConfigError, match='patches.fov_deg'):
        build_config(params, ['patches.fov_deg=500'])


@pytest.mark.slow
def test_ours_with_random_weights_runs_beside_raster(synth_bag, tmp_path, capsys):
    out = tmp_path / 'ours'
    code, stdout, err = replay(capsys, synth_bag, out, '--gt-topic', synth.LABEL_TOPIC,
                               '--baseline', 'raster', '--baseline', 'sam2-erp',
                               '--max-frames', '2', *TINY_SAM2)
    assert code == 0, err
    assert 'RANDOM WEIGHTS' in err
    report = scores(out)
    assert report['frames'] == 2 and report['latency_ms_mean'] > 0
    assert report['model']['random_weights'] is True
    assert 'RANDOM WEIGHTS' in report['model']['description']
    assert set(report['baselines']) == {'raster', 'sam2-erp'}
    assert report['config']['patches.order'] == 'zigzag'
    assert report['baselines']['sam2-erp']['latency_ms_mean'] > 0
    assert 'squeezed to' in report['methods']['sam2-erp']['ran']
    assert '| metric | ours | raster | sam2-erp |' in (out / 'report.md').read_text()
    assert bag_topics(out / 'sap.mcap')[MASKS_TOPIC][1] == 2


def test_a_variant_is_our_pipeline_with_its_overrides(synth_bag, tmp_path, capsys):
    """A variant runs with its parameters: without discovery it finds nothing where ours does.

    Discovery thresholds are relaxed so that random weights create objects.
    """
    out = tmp_path / 'variants'
    code, stdout, err = replay(capsys, synth_bag, out, '--gt-topic', synth.LABEL_TOPIC,
                               '--variant', 'blind:discovery.enabled=false',
                               '--set', 'discovery.pred_iou_thresh=0',
                               '--set', 'discovery.stability_thresh=0',
                               '--max-frames', '1', *TINY_SAM2)
    assert code == 0, err
    report = scores(out)
    assert list(report['variants']) == ['blind']
    variant = report['variants']['blind']
    assert variant['overrides'] == {'discovery.enabled': False}
    assert report['config']['discovery.enabled'] is True  # the run's own config is unchanged
    assert report['objects_per_frame_mean'] > 0
    assert variant['objects_per_frame_mean'] == 0
    assert report['timeline']['objects']['blind'] == [0]
    assert 'variant blind' in report['methods']['blind']['what']
    assert '| metric | ours | blind |' in (out / 'report.md').read_text()
    assert 'blind' in stdout


@pytest.mark.parametrize('bad, message', [
    ('noname', 'expected --variant NAME:key=value'),
    ('x y:memory.long_term=2', 'expected --variant NAME:key=value'),
    ('raster:memory.long_term=2', 'taken by a method'),
    ('v:memory.no_such_key=2', 'unknown parameter'),
    ('v:memory.long_term=-3', 'memory.long_term'),
])
def test_bad_variants_are_clear_errors(synth_bag, tmp_path, capsys, bad, message):
    code, _, err = replay(capsys, synth_bag, tmp_path / 'bad', '--gt-topic', synth.LABEL_TOPIC,
                          '--skip-ours', '--baseline', 'oracle', '--variant', bad, *SMALL)
    assert code == 2 and message in err, err
    assert not (tmp_path / 'bad' / 'report.json').exists()


@pytest.mark.slow
def test_acceptance_oracle_on_a_synthetic_bag(tmp_path, capsys):
    """Oracle J&F >= 0.98 with no ID switch, at sizes where the small objects are resolvable.

    The small far objects are < 3 deg across: at 1024 x 512 that is ~20 ERP pixels; patches of
    768 px (90 deg) show them at ~25 px, ~6 px at decoder resolution.
    """
    bag = tmp_path / 'bag'
    assert synth.main([str(bag), '--frames', '6', '--width', '1024', '--quiet']) == 0
    out = tmp_path / 'oracle'
    code, stdout, err = replay(
        capsys, bag, out, '--gt-topic', synth.LABEL_TOPIC, '--skip-ours', '--baseline',
        'oracle', '--baseline', 'naive', '--set', 'model.image_size=768',
        '--set', 'patches.size_px=768', '--set', 'output.scale=1.0',
        '--set', 'discovery.every_n_frames=1', '--set', 'discovery.points_per_side=32',
        '--set', 'discovery.max_new_per_frame=64', '--set', 'discovery.min_area_fraction=0.00005',
        '--quiet')
    assert code == 0, err
    oracle, naive = scores(out)['baselines']['oracle'], scores(out)['baselines']['naive']
    print(f"synth 1024x512, 6 frames: oracle j_and_f {oracle['j_and_f']:.4f} j {oracle['j']:.4f} "
          f"id_switches {oracle['id_switches']}; naive upper bound (768^2) j_and_f "
          f"{naive['j_and_f']:.4f}")
    assert oracle['j_and_f'] >= 0.98
    assert oracle['id_switches'] == 0
    assert oracle['frames'] == 6 and oracle['gt_objects'] == oracle['pred_objects']


def leader_bag_or_skip(tmp_path) -> Path:
    if not (LEADER / 'frames').is_dir():
        pytest.skip(f'real 360 data not available: {LEADER} is absent (shared data folder)')
    from leader_bag import write_leader_bag
    bag = tmp_path / 'beach'
    write_leader_bag(bag, LEADER)
    return bag


@pytest.mark.slow
def test_acceptance_oracle_on_leader360v_at_the_shipped_defaults(tmp_path, capsys):
    """Issue 18: whole beach clip, shipped defaults: oracle J >= 0.98, 0 id switches, J&F >= naive.

    A segment that appears after the first frame is found by the rotating discovery share within
    ``discovery.every_n_frames`` frames; at 5 the clip's turtle-side segment was found one frame
    too late (1 id switch, J&F below the naive bound), at 4 it is not.
    """
    bag = leader_bag_or_skip(tmp_path)
    out = tmp_path / 'oracle'
    code, stdout, err = replay(
        capsys, bag, out, '--gt-dir', str(LEADER / 'labels'), '--gt-background', 'none',
        '--skip-ours', '--baseline', 'oracle', '--baseline', 'naive', '--quiet',
        topic='/camera/image/compressed')
    assert code == 0, err
    report = scores(out)
    oracle, naive = report['baselines']['oracle'], report['baselines']['naive']
    print(f"leader360v beach, shipped defaults: oracle j {oracle['j']:.4f} j_and_f "
          f"{oracle['j_and_f']:.4f} id_switches {oracle['id_switches']}; naive j_and_f "
          f"{naive['j_and_f']:.4f}")
    assert report['ground_truth']['background'] is None
    assert report['ground_truth']['ignore'] == 255  # 8-bit PNGs
    assert oracle['frames'] == 32 and oracle['j'] >= 0.98
    assert oracle['id_switches'] == 0
    assert oracle['j_and_f'] >= naive['j_and_f']


@pytest.mark.slow
def test_leader360v_ours_beside_the_naive_bound(tmp_path, capsys):
    bag = leader_bag_or_skip(tmp_path)
    out = tmp_path / 'ours'
    code, stdout, err = replay(
        capsys, bag, out, '--gt-dir', str(LEADER / 'labels'), '--gt-background', 'none',
        '--baseline', 'naive', '--max-frames', '2', *TINY_SAM2, topic='/camera/image/compressed')
    assert code == 0, err
    md = (out / 'report.md').read_text()
    assert '| metric | ours | naive (upper bound) |' in md
    assert 'RANDOM WEIGHTS' in md and 'UPPER BOUND' in md
    naive = scores(out)['baselines']['naive']
    assert naive['frames'] == 2 and naive['j'] is not None
