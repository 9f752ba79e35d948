"""Semantic scores in ``sap_eval``: per clip as ``sap_replay``, aggregated over clips."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sap_ros.eval.dataset import build_parser, build_spec
from sap_ros.eval.dataset_clips import Clip, ClipKind, ClipResult, evaluate_clip
from sap_ros.eval.dataset_report import aggregate
from sap_ros.eval.replay_gt import ReplayError
from sap_ros.synth import cli as synth
from sap_ros.synth.scene import SceneSpec, SynthScene
from sap_ros.synth.semantic import SEMANTIC_CLASSES

SMALL = ['--set', 'model.device=cpu', '--set', 'model.image_size=128',
         '--set', 'patches.size_px=128', '--set', 'patches.fov_deg=120']
OBJECTS = 'box,sphere,cylinder,lamp,rug'


@pytest.fixture(scope='module')
def bag(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('ds_sem') / 'clip'
    assert synth.main([str(out), '--frames', '3', '--width', '256', '--seed', '5',
                       '--n-small', '0', '--quiet']) == 0
    return out


def spec_of(tmp_path: Path, *extra: str):
    return build_spec(build_parser().parse_args([str(tmp_path), '--out', str(tmp_path / 'o'),
                                                 *SMALL, *extra]))


def test_bad_class_maps_fail_before_any_clip(tmp_path) -> None:
    path = tmp_path / 'map.json'
    path.write_text('{"class_names": ["a"], "classes": {"1": "b"}}')
    with pytest.raises(ReplayError, match="unknown class 'b'"):
        spec_of(tmp_path, '--skip-ours', '--baseline', 'naive', '--gt-class-map', str(path))
    path.write_text('{"class_names": ["a"], "classes": {"1": "a"}}')
    with pytest.raises(ReplayError, match='unknown class'):
        spec_of(tmp_path, '--skip-ours', '--baseline', 'naive', '--gt-class-map', str(path),
                '--semantic-classes', 'door')
    plain = spec_of(tmp_path, '--skip-ours', '--baseline', 'naive')
    assert plain.gt_semantic_topic is None
    assert 'gt_semantic_topic' not in plain.to_dict()  # digests of earlier runs unchanged
    asked = spec_of(tmp_path, '--skip-ours', '--baseline', 'naive', '--gt-semantic-topic',
                    synth.SEMANTIC_TOPIC)
    assert asked.digest() != plain.digest()


def test_a_clip_with_a_semantic_topic_is_read_and_named(bag, tmp_path) -> None:
    clip = Clip(bag.name, ClipKind.BAG, bag)
    # The camera topic is found although the bag holds two more Image topics.
    plain = evaluate_clip(clip, spec_of(tmp_path, '--skip-ours', '--baseline', 'naive'))
    assert plain.semantic_source is None
    spec = spec_of(tmp_path, '--skip-ours', '--baseline', 'naive', '--gt-semantic-topic',
                   synth.SEMANTIC_TOPIC)
    result = evaluate_clip(clip, spec)
    assert synth.SEMANTIC_TOPIC in result.semantic_source
    assert result.blocks['naive']['semantic'] is None  # naive publishes no classes
    assert 'semantic_miou' not in aggregate([result], 'naive')


def block(miou, switches, ious, accuracy=None, scored=0) -> dict:
    return {'frames': 3, 'j': None, 'objects': [], 'semantic': {
        'frames': 3, 'miou': miou, 'class_iou': ious, 'class_switches': switches, 'tracks': 2,
        'class_accuracy': accuracy, 'tracks_scored': scored}}


def test_overall_semantic_figures_are_the_documented_aggregation() -> None:
    results = [ClipResult(name, 'bag', name, 3, 1.0, {'ours': b}, {'ours': [1.0]}, {}, None,
                          None) for name, b in (
        ('a', block(0.5, 1, {'box': 0.4, 'rug': 0.6}, 1.0, 1)),
        ('b', block(0.9, 2, {'box': 0.9, 'rug': None}, 0.5, 4)),
        ('c', {'frames': 3, 'j': None, 'objects': [], 'semantic': None}))]
    overall = aggregate(results, 'ours')
    assert overall['semantic_clips'] == 2
    assert overall['semantic_miou'] == pytest.approx(0.7)
    assert overall['class_switches'] == 3
    assert overall['class_accuracy'] == pytest.approx(0.6)  # 3 of 5 tracks, pooled
    assert overall['semantic_class_iou'] == {'box': pytest.approx(0.65), 'rug': 0.6}
    assert json.loads(json.dumps(overall))  # JSON-ready


def test_the_oracle_is_scored_per_clip_with_the_class_map(bag, tmp_path) -> None:
    path = tmp_path / 'classes.json'
    scene = SynthScene(SceneSpec(seed=5, n_small=0))
    path.write_text(json.dumps({'class_names': list(SEMANTIC_CLASSES),
                                'classes': {str(o.id): o.kind for o in scene.objects}}))
    spec = spec_of(tmp_path, '--skip-ours', '--baseline', 'oracle', '--gt-class-map',
                   str(path), '--semantic-classes', OBJECTS)
    result = evaluate_clip(Clip(bag.name, ClipKind.BAG, bag), spec)
    oracle = result.blocks['oracle']
    semantic = oracle['semantic']
    print(f"oracle at 128 px patches: semantic miou {semantic['miou']:.4f}, j {oracle['j']:.4f}")
    assert set(semantic['class_iou']) == set(OBJECTS.split(','))
    # 128 px patches give coarse masks (J ~0.7): right classes keep the mIoU at least that high.
    assert semantic['miou'] >= oracle['j'] - 0.02
    assert semantic['class_switches'] == 0
    assert aggregate([result], 'oracle')['semantic_miou'] == semantic['miou']
