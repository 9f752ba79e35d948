"""``sap_eval`` on Ray: figures as ``sap_replay``'s, retries recorded, resume, bad clips reported.

Per-clip figures equal those of ``sap_replay`` on each clip alone and the overall figures are
the documented aggregation; a killed worker's clip is retried and recorded; a rerun skips every
finished clip; malformed clips are reported while the others are evaluated.

One local Ray (2 CPUs, no dashboard) serves every test of the module; clips are tiny synthetic
bags (``sap_synth``) evaluated with the oracle and the naive bound (no SAM2).
"""
from __future__ import annotations

from dataclasses import replace
import json
import os
from pathlib import Path
import signal
from typing import Dict, List

import cv2
import numpy as np
from PIL import Image
import pytest
import ray

from sap_ros.eval import replay
from sap_ros.eval.bags import open_image_stream, open_label_stream
from sap_ros.eval.dataset import build_parser, build_spec, main
from sap_ros.eval.dataset_clips import MethodSpec
from sap_ros.eval.dataset_ray import DatasetOptions, Progress, run_dataset
from sap_ros.eval.replay_methods import MethodName
from sap_ros.synth import cli as synth

SMALL = ['--set', 'model.image_size=128', '--set', 'patches.size_px=128',
         '--set', 'patches.fov_deg=120']
METHODS = ['--skip-ours', '--baseline', 'oracle', '--baseline', 'naive']
LATENCY = ('latency_ms_mean', 'latency_ms_p95')


@pytest.fixture(scope='module', autouse=True)
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_bag(path: Path, seed: int, frames: int) -> Path:
    assert synth.main([str(path), '--frames', str(frames), '--width', '256', '--seed',
                       str(seed), '--quiet']) == 0
    return path


def bag_to_folder(bag: Path, clip: Path, palette: bool) -> None:
    """The same clip as frames/NNNNN.png + labels/NNNNN.png (16-bit, or 8-bit palette)."""
    (clip / 'frames').mkdir(parents=True)
    (clip / 'labels').mkdir()
    frames = open_image_stream(bag, synth.IMAGE_TOPIC)
    labels = open_label_stream(bag, synth.LABEL_TOPIC)
    for k, (frame, (_, gt)) in enumerate(zip(frames, labels)):
        cv2.imwrite(str(clip / 'frames' / f'{k:05d}.png'), frame.rgb[..., ::-1])
        if palette:
            assert gt.max() < 255
            image = Image.fromarray(gt.astype(np.uint8), mode='P')
            image.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
            image.save(clip / 'labels' / f'{k:05d}.png')
        else:
            cv2.imwrite(str(clip / 'labels' / f'{k:05d}.png'), gt)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory) -> Path:
    """Three bag clips, and clips a and b again as frame folders (16-bit and palette labels)."""
    root = tmp_path_factory.mktemp('dataset')
    for seed, name in ((1, 'a'), (2, 'b'), (3, 'c')):
        write_bag(root / name, seed, 3)
    bag_to_folder(root / 'a', root / 'a_frames', palette=False)
    # A label PNG without a frame (sorted first) is ignored: labels pair with frames by name.
    extra = cv2.imread(str(root / 'a_frames' / 'labels' / '00002.png'), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(root / 'a_frames' / 'labels' / '-preview.png'), extra)
    bag_to_folder(root / 'b', root / 'b_palette', palette=True)
    (root / 'notes.txt').write_text('not a clip, ignored')
    return root


def replay_blocks(bag: Path, out: Path, *extra: str) -> Dict[str, dict]:
    """``sap_replay`` alone on one clip: report block per method."""
    assert replay.main([str(bag), '--image-topic', synth.IMAGE_TOPIC, '--gt-topic',
                        synth.LABEL_TOPIC, '--out', str(out), '--quiet', *extra]) == 0
    report = json.loads((out / 'report.json').read_text())
    return report['baselines']


def without_latency(block: dict) -> dict:
    return {k: v for k, v in block.items() if k not in LATENCY}


def test_per_clip_figures_equal_sap_replay_and_overall_is_the_documented_aggregation(
        dataset, tmp_path):
    out = tmp_path / 'eval'
    assert main([str(dataset), '--out', str(out), *METHODS, *SMALL, '--workers', '2',
                 '--quiet']) == 0
    report = json.loads((out / 'report.json').read_text())
    clips = {c['clip']: c for c in report['clips']}
    assert sorted(clips) == ['a', 'a_frames', 'b', 'b_palette', 'c']
    assert all(c['status'] == 'ok' for c in clips.values())
    expected: Dict[str, Dict[str, dict]] = {}
    for name in 'abc':
        expected[name] = replay_blocks(dataset / name, tmp_path / f'replay_{name}', *METHODS,
                                       *SMALL)
    expected['a_frames'], expected['b_palette'] = expected['a'], expected['b']
    for name, clip in clips.items():
        for method in ('oracle', 'naive'):
            assert without_latency(clip['methods'][method]) == without_latency(
                expected[name][method]), (name, method)
    # Overall: object-weighted J and F, summed ID switches, frame-weighted seam consistency.
    for method in ('oracle', 'naive'):
        blocks = [expected[name][method] for name in sorted(clips)]
        objects = [o for b in blocks for o in b['objects']]
        overall = report['overall'][method]
        assert overall['j'] == pytest.approx(np.mean([o['j'] for o in objects]))
        assert overall['f'] == pytest.approx(np.mean([o['f'] for o in objects]))
        assert overall['j_and_f'] == pytest.approx((overall['j'] + overall['f']) / 2)
        assert overall['gt_objects'] == len(objects) and overall['frames'] == 15
        assert overall['id_switches'] == sum(b['id_switches'] for b in blocks)
        seam = [(b['seam_consistency'], b['frames']) for b in blocks
                if b['seam_consistency'] is not None]
        assert overall['seam_consistency'] == pytest.approx(
            sum(v * n for v, n in seam) / sum(n for _, n in seam))
        assert sum(b['objects'] for b in overall['by_size'].values()) == len(objects)
    assert report['overall']['oracle']['frames_per_s'] > 0
    assert sum(w['frames'] for w in report['workers'].values()) == 15
    assert report['run'] == {**report['run'], 'evaluated': 5, 'reused': 0, 'failed': 0}
    md = (out / 'report.md').read_text()
    assert '| metric | oracle | naive |' in md and 'object-weighted' in md


def kill_first_running_clip(killed: List[tuple]):
    """on_progress hook: SIGKILL the worker of the first clip seen mid-way (>= 1 frame), once."""
    def hook(progress: Progress) -> None:
        for clip, attempts in progress.attempts.items():
            running = clip not in progress.finished and progress.frames_done.get(clip, 0) >= 1
            if not killed and running:
                killed.append((clip, attempts[-1].pid))
                os.kill(attempts[-1].pid, signal.SIGKILL)
    return hook


def test_killed_worker_clip_is_retried_and_recorded_then_a_rerun_skips_every_clip(tmp_path):
    root = tmp_path / 'dataset'
    for seed in (4, 5, 6):
        write_bag(root / f'clip{seed}', seed, 8)
    spec = build_spec(build_parser().parse_args([str(root), '--out', 'x', *METHODS, *SMALL]))
    # A variant of the oracle (other patch field of view) travels to the workers too.
    variant = MethodSpec('oracle-fov90', MethodName.ORACLE, (('patches.fov_deg', 90),))
    spec = replace(spec, methods=spec.methods + (variant,))
    out = tmp_path / 'eval'
    # No retries allowed: the killed worker's clip fails (recorded), the other two finish.
    killed: List[tuple] = []
    first = run_dataset(DatasetOptions(root, out, spec, workers=2, retries=0, quiet=True),
                        on_progress=kill_first_running_clip(killed))
    assert killed, 'no clip was seen running'
    lost = killed[0][0]
    assert first['run'] == {**first['run'], 'evaluated': 2, 'failed': 1}
    [failure] = first['failures']
    assert failure['clip'] == lost and 'died during each of its 1 attempts' in failure['error']
    assert first['retries'] == [{'clip': lost, 'attempts': [
        {**first['retries'][0]['attempts'][0], 'pid': killed[0][1], 'outcome': 'worker died'}]}]
    ok = [c['clip'] for c in first['clips'] if c['status'] == 'ok']
    assert sorted(ok + [lost]) == ['clip4', 'clip5', 'clip6']
    # The variant's figures are sap_replay's with that parameter, and differ from the base.
    methods = next(c for c in first['clips'] if c['clip'] == ok[0])['methods']
    alone = replay_blocks(root / ok[0], tmp_path / 'replay', '--skip-ours', '--baseline',
                          'oracle', *SMALL, '--set', 'patches.fov_deg=90')
    assert without_latency(methods['oracle-fov90']) == without_latency(alone['oracle'])
    assert without_latency(methods['oracle-fov90']) != without_latency(methods['oracle'])
    # Rerun with retries: the two finished clips are skipped; the lost one runs, its worker is
    # killed mid-clip again, Ray restarts it and retries the clip; the report records both.
    killed.clear()
    second = run_dataset(DatasetOptions(root, out, spec, workers=1, retries=2, quiet=True),
                         on_progress=kill_first_running_clip(killed))
    assert [k[0] for k in killed] == [lost]
    assert second['run'] == {**second['run'], 'evaluated': 1, 'reused': 2, 'failed': 0}
    assert [(c['clip'], c['status'], c['frames']) for c in second['clips']] == [
        (f'clip{s}', 'ok', 8) for s in (4, 5, 6)]
    [retry] = second['retries']
    assert retry['clip'] == lost
    died, finished = retry['attempts']  # this run's two starts (the ledger is per run)
    assert (died['pid'], died['outcome']) == (killed[0][1], 'worker died')
    assert finished['outcome'] == 'finished' and finished['pid'] != died['pid']
    assert next(c for c in second['clips'] if c['clip'] == lost)['attempt'] == 2
    assert f'`{lost}`: attempt 1' in (out / 'report.md').read_text()
    # Third run: every clip is reused, nothing starts, the files are not rewritten.
    stored = sorted((out / 'clips').glob('*.json'))
    assert len(stored) == 3
    mtimes = [p.stat().st_mtime_ns for p in stored]
    third = run_dataset(DatasetOptions(root, out, spec, workers=1, quiet=True),
                        on_progress=lambda p: pytest.fail('a clip was started'))
    assert third['run'] == {**third['run'], 'evaluated': 0, 'reused': 3, 'failed': 0}
    assert third['overall'] == second['overall']
    assert [p.stat().st_mtime_ns for p in stored] == mtimes


def test_malformed_clips_are_reported_and_the_others_evaluated(dataset, tmp_path, capsys):
    root = tmp_path / 'dataset'
    root.mkdir()
    (root / 'good').symlink_to(dataset / 'c', target_is_directory=True)
    (root / 'broken_bag').mkdir()
    (root / 'broken_bag' / 'metadata.yaml').write_text('rosbag2_bagfile_information: [oops\n')
    bag_to_folder(dataset / 'a', root / 'missing_label', palette=False)
    (root / 'missing_label' / 'labels' / '00001.png').unlink()
    bag_to_folder(dataset / 'a', root / 'no_labels', palette=False)
    for path in (root / 'no_labels' / 'labels').iterdir():
        path.unlink()
    (root / 'no_labels' / 'labels').rmdir()
    (root / 'holiday_photos').mkdir()
    out = tmp_path / 'eval'
    code = main([str(root), '--out', str(out), *METHODS, *SMALL, '--workers', '2', '--quiet'])
    assert code == 1  # some clips failed; the report is still written
    report = json.loads((out / 'report.json').read_text())
    status = {c['clip']: c['status'] for c in report['clips']}
    assert status == {'good': 'ok', 'broken_bag': 'failed', 'missing_label': 'failed',
                      'no_labels': 'failed', 'holiday_photos': 'failed'}
    errors = {f['clip']: f['error'] for f in report['failures']}
    assert 'cannot open rosbag' in errors['broken_bag']
    assert 'missing labels' in errors['missing_label'] and '00001' in errors['missing_label']
    assert 'missing labels' in errors['no_labels']
    assert 'not a clip' in errors['holiday_photos']
    assert report['overall']['oracle']['clips'] == 1
    assert report['overall']['oracle']['frames'] == 3
    md = (out / 'report.md').read_text()
    assert '## Failed clips' in md and 'broken_bag' in md
    assert 'clips: 1 evaluated, 0 reused, 4 failed' in capsys.readouterr().out


def test_help_documents_the_layouts_and_bad_options_exit_2(tmp_path, capsys):
    text = build_parser().format_help()
    for needle in ('metadata.yaml', 'frames/', 'labels/<same stem>.png', 'JPEGImages',
                   'palette', '--gt-background', '--address', 'ray start --head', '--workers',
                   '--variant', '--retries', '--force'):
        assert needle in text, needle
    assert main([str(tmp_path), '--out', str(tmp_path / 'o'), '--skip-ours']) == 2
    assert 'nothing to run' in capsys.readouterr().err
    assert main([str(tmp_path), '--out', str(tmp_path / 'o'), '--variant', 'novalue']) == 2
    assert '--variant NAME:key=value' in capsys.readouterr().err
    assert main([str(tmp_path), '--out', str(tmp_path / 'o'), '--variant',
                 'x:no.such_param=1']) == 2
    assert 'no.such_param' in capsys.readouterr().err
    assert main([str(tmp_path / 'absent'), '--out', str(tmp_path / 'o'), *METHODS]) == 2
    assert 'is not a directory' in capsys.readouterr().err


@pytest.mark.slow
def test_a_worker_lends_one_loaded_sam2_to_every_method_and_clip(dataset):
    """What a worker does: one SAM2 per model configuration, kept open across clips.

    The figures equal those of methods that load their own model (random weights, same seed).
    """
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))
    from random_sam2 import RANDOM_SAM2_FLAT

    from sap_ros.config import PipelineConfig
    from sap_ros.engine.segmenter import Sam2Segmenter
    from sap_ros.eval.dataset_clips import EvalSpec, evaluate_clip, find_clips

    spec = EvalSpec(PipelineConfig.from_flat(RANDOM_SAM2_FLAT), (
        MethodSpec('sam2-erp', MethodName.SAM2_ERP),
        MethodSpec('short1', MethodName.SAM2_ERP, (('memory.short_term', 1),))), max_frames=1)
    built: List[Sam2Segmenter] = []

    def lend(config: PipelineConfig) -> Sam2Segmenter:
        if not built:
            built.append(Sam2Segmenter(config.model))
        return built[0]

    clips = {c.name: c for c in find_clips(dataset)}
    evaluate_clip(clips['a'], spec, lend)
    lent = evaluate_clip(clips['b'], spec, lend)  # the model survived the first clip
    own = evaluate_clip(clips['b'], spec)
    assert len(built) == 1
    for label in ('sam2-erp', 'short1'):
        assert without_latency(lent.blocks[label]) == without_latency(own.blocks[label])
        assert lent.latencies_ms[label] and lent.blocks[label]['frames'] == 1
