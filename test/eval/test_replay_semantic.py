"""Semantic ground truth in ``sap_replay``: sources, scores beside J&F, clear errors.

The oracle's end-to-end runs need issue 21's classifier seam
(``SapPipeline(config, segmenter=..., classifier=...)``): they are skipped until it exists.
"""
from __future__ import annotations

import json
from pathlib import Path
import re

import numpy as np
import pytest

from sap_ros.engine.types import ObjectRecord
from sap_ros.eval.bags import ImageFrame
from sap_ros.eval.replay import main
from sap_ros.eval.replay_gt import GtFrame, ReplayError
from sap_ros.eval.replay_methods import (
    MethodName,
    MethodOutput,
    step_methods,
)
from sap_ros.eval.replay_timeline import MethodScores
from sap_ros.eval.report import MethodRun, ReplayInfo, markdown, report_dict
from sap_ros.eval.semantic_gt import MAPPED_IGNORE, ClassMap, SemanticTruth, scored_classes
from sap_ros.synth import cli as synth
from sap_ros.synth.scene import SceneSpec, SynthScene
from sap_ros.synth.semantic import KIND_CLASS, SEMANTIC_CLASSES

SMALL = ['--set', 'model.device=cpu', '--set', 'model.image_size=128',
         '--set', 'patches.size_px=128', '--set', 'patches.fov_deg=120', '--quiet']
OBJECTS = 'box,sphere,cylinder,lamp,rug'


@pytest.fixture(scope='module')
def synth_bag(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('synth_sem') / 'bag'
    assert synth.main([str(out), '--frames', '3', '--width', '256', '--seed', '7',
                       '--quiet']) == 0
    return out


def replay(capsys, bag: Path, out: Path, *extra: str):
    code = main([str(bag), '--image-topic', synth.IMAGE_TOPIC, '--out', str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def synth_class_map(tmp_path: Path, seed: int) -> Path:
    scene = SynthScene(SceneSpec(seed=seed))
    path = tmp_path / 'classes.json'
    path.write_text(json.dumps({'class_names': list(SEMANTIC_CLASSES),
                                'classes': {str(o.id): o.kind for o in scene.objects}}))
    return path


def test_class_map_turns_instances_into_classes_and_refuses_bad_files(tmp_path) -> None:
    path = tmp_path / 'map.json'
    path.write_text(json.dumps({'class_names': ['person', 'door'],
                                'classes': {'3': 'door', '5': 1}}))
    mapping = ClassMap.load(path)
    labels = np.array([[0, 3, 5, 9, 255, 3]], np.uint16)
    assert mapping.apply(labels).tolist() == [[0, 2, 1, 0, 0, 2]]
    assert mapping.apply(labels, ignore=255).tolist() == [[0, 2, 1, 0, MAPPED_IGNORE, 2]]
    for bad, message in (({'class_names': ['a'], 'classes': {'1': 'b'}}, "unknown class 'b'"),
                         ({'class_names': ['a'], 'classes': {'1': 2}}, 'class ids are 1..1'),
                         ({'class_names': ['a'], 'classes': {'x': 1}}, 'not an instance id'),
                         ({'class_names': ['a', 'a'], 'classes': {}}, 'unique'),
                         (['a'], 'expected {"class_names"')):
        path.write_text(json.dumps(bad))
        with pytest.raises(ReplayError, match=message):
            ClassMap.load(path)
    assert scored_classes('rug,box', SEMANTIC_CLASSES) == (1, 5)
    with pytest.raises(ReplayError, match='unknown class'):
        scored_classes('box,person', SEMANTIC_CLASSES)


class _ClassPainter:
    """A method that publishes the ground truth's instances and classes (a perfect classifier)."""

    name = MethodName.OURS
    description = 'test double'

    def __init__(self, flip_at: int = -1, class_names=None) -> None:
        self.frame, self.flip_at = 0, flip_at
        if class_names is not None:  # publish ids into this list (a head's own class order)
            self.class_names = tuple(class_names)

    def step(self, rgb, gt, semantic_gt=None) -> MethodOutput:
        records = []
        semantic = np.zeros(gt.shape, np.uint16)
        for object_id in np.unique(gt[gt > 0]).tolist():
            cls = int(np.bincount(semantic_gt[gt == object_id]).argmax())
            if self.frame == self.flip_at and object_id == 1:
                cls = cls % len(SEMANTIC_CLASSES) + 1  # one track flips its class once
            if hasattr(self, 'class_names'):
                cls = self.class_names.index(SEMANTIC_CLASSES[cls - 1]) + 1
            records.append(ObjectRecord(object_id, np.array([1.0, 0, 0]), 0, 0, 1, 1, 0.1, 1,
                                        1.0, 0, 0, class_id=cls))
            semantic[gt == object_id] = cls
        self.frame += 1
        return MethodOutput(gt, records, 1.0, semantic)

    def close(self) -> None:
        pass


def scene_clip(n_frames: int):
    """Frames, instance ground truth and semantic truth of a rendered synthetic scene."""
    scene = SynthScene(SceneSpec(seed=1))
    poses = scene.trajectory(n_frames)
    rendered = [scene.render(p, 128) for p in poses]
    frames = [ImageFrame(k, k, 'camera', rgb) for k, (rgb, _) in enumerate(rendered)]
    gts = [GtFrame(k, lab) for k, (_, lab) in enumerate(rendered)]
    semantic_maps = {id(lab): scene.semantic(p, lab) for p, (_, lab) in zip(poses, rendered)}

    class Truth(SemanticTruth):
        def next_map(self, instances):
            return semantic_maps[id(instances)]

    return frames, gts, Truth(SEMANTIC_CLASSES, 'the scene',
                              class_map=ClassMap(SEMANTIC_CLASSES, {}))


def test_scores_and_report_of_a_method_that_publishes_classes() -> None:
    frames, gts, truth = scene_clip(3)
    runs = []
    for flip, scored in ((-1, None), (1, scored_classes(OBJECTS, SEMANTIC_CLASSES))):
        scores = MethodScores(class_names=SEMANTIC_CLASSES, scored_classes=scored)
        list(step_methods(frames, gts, [_ClassPainter(flip)], [scores], 3, truth))
        runs.append(scores.block())
    everything, objects = runs
    # Scored on every class, the floor, walls and ceiling (never published) score 0 ...
    assert everything['semantic']['class_iou']['floor'] == 0.0
    assert everything['semantic_miou'] < 0.8 and everything['class_switches'] == 0
    # ... scored on the object classes, it is perfect but for the flipped frame's object.
    assert set(objects['semantic']['class_iou']) == set(OBJECTS.split(','))
    assert 0.9 < objects['semantic_miou'] < 1.0
    assert objects['class_switches'] == 2  # flipped away and back
    # every track ends on its true class (the flip was undone), each object counted once
    assert objects['class_accuracy'] == 1.0
    assert objects['semantic']['tracks_scored'] == objects['semantic']['tracks']
    info = ReplayInfo('bag', '/camera/image', 'Image', 3, 3, 'gt', 0, None, 0, {}, 'none',
                      False, None, None, 1.0, semantic_source='the scene',
                      class_names=SEMANTIC_CLASSES)
    scores = MethodScores(class_names=SEMANTIC_CLASSES)
    list(step_methods(frames, gts, [_ClassPainter()], [scores], 3, truth))
    report = report_dict(info, [MethodRun(MethodName.OURS, 'double', scores)])
    assert report['ground_truth']['semantic']['class_names'] == list(SEMANTIC_CLASSES)
    text = markdown(report)
    assert '| semantic_miou |' in text and '| class_switches | 0 |' in text
    assert '| rug |' in text


def test_a_head_with_its_own_class_order_is_scored_by_class_name() -> None:
    # A head trained on another list (objects only, its own order, a class the ground truth
    # lacks) publishes ids into that list; they are renumbered by name before scoring.
    frames, gts, truth = scene_clip(2)
    head_names = ['person'] + OBJECTS.split(',')[::-1]
    scores = MethodScores(class_names=SEMANTIC_CLASSES,
                          scored_classes=scored_classes(OBJECTS, SEMANTIC_CLASSES))
    with pytest.warns(UserWarning, match='person'):
        list(step_methods(frames, gts, [_ClassPainter(class_names=head_names)], [scores], 2,
                          truth))
    block = scores.block()
    assert block['semantic_miou'] == pytest.approx(1.0)
    assert block['class_switches'] == 0


def test_replay_reads_the_semantic_topic_and_names_bad_options(synth_bag, tmp_path,
                                                               capsys) -> None:
    out = tmp_path / 'naive'
    code, _, err = replay(capsys, synth_bag, out, '--gt-topic', synth.LABEL_TOPIC,
                          '--gt-semantic-topic', synth.SEMANTIC_TOPIC, '--skip-ours',
                          '--baseline', 'naive', *SMALL)
    assert code == 0, err
    report = json.loads((out / 'report.json').read_text())
    semantic = report['ground_truth']['semantic']
    assert semantic['class_names'] == list(SEMANTIC_CLASSES)
    assert synth.CLASS_NAMES_TOPIC in semantic['source']
    assert report['baselines']['naive']['semantic'] is None  # naive publishes no classes
    assert any('no method published class maps' in n for n in report['notes'])
    bad = tmp_path / 'bad'
    names = tmp_path / 'names.json'
    names.write_text('{"class_names": []}')
    for extra, message in (
            (['--gt-semantic-topic', '/nope'], "topic '/nope' not in rosbag"),
            (['--gt-semantic-topic', synth.SEMANTIC_TOPIC, '--class-names', str(names)],
             'non-empty JSON list of class names'),
            (['--gt-semantic-topic', synth.SEMANTIC_TOPIC, '--class-names', '/gt/labels'],
             'expected std_msgs/msg/String'),
            (['--gt-semantic-topic', synth.SEMANTIC_TOPIC, '--gt-class-map', str(names)],
             'give one semantic ground truth'),
            (['--gt-semantic-topic', synth.SEMANTIC_TOPIC, '--semantic-classes', 'person'],
             "unknown class \\['person'\\]"),
            (['--semantic-classes', 'box'], '--semantic-classes needs semantic ground truth'),
            (['--gt-semantic-dir', str(tmp_path / 'none')], 'is not a directory')):
        code, _, err = replay(capsys, synth_bag, bad, '--gt-topic', synth.LABEL_TOPIC,
                              '--skip-ours', '--baseline', 'naive', *extra, *SMALL)
        assert code == 2, extra
        assert 'sap_replay: error:' in err
        assert re.search(message, err), err
    code, _, err = replay(capsys, synth_bag, bad, '--gt-class-map',
                          str(synth_class_map(tmp_path, 7)), '--skip-ours', '--baseline',
                          'naive', *SMALL)
    assert code == 2 and 'add --gt-topic or --gt-dir' in err


@pytest.mark.parametrize('source', ['topic', 'class_map'])
def test_oracle_with_the_oracle_classifier_on_a_held_out_seed(tmp_path, capsys, source) -> None:
    """Issue 21's acceptance: oracle segmenter + oracle classifier, mIoU >= 0.98, no switch."""
    bag = tmp_path / 'bag'
    assert synth.main([str(bag), '--frames', '6', '--width', '512', '--seed', '11',
                       '--n-small', '0', '--quiet']) == 0
    semantic = (['--gt-semantic-topic', synth.SEMANTIC_TOPIC] if source == 'topic'
                else ['--gt-class-map', str(synth_class_map(tmp_path, 11))])
    out = tmp_path / 'oracle'
    code, stdout, err = replay(
        capsys, bag, out, '--gt-topic', synth.LABEL_TOPIC, *semantic, '--semantic-classes',
        OBJECTS, '--skip-ours', '--baseline', 'oracle', '--set', 'model.device=cpu',
        '--set', 'model.image_size=512', '--set', 'patches.size_px=512',
        '--set', 'output.scale=1.0', '--set', 'discovery.every_n_frames=1',
        '--set', 'discovery.max_new_per_frame=64', '--quiet')  # all 9 objects on frame 0
    assert code == 0, err
    oracle = json.loads((out / 'report.json').read_text())['baselines']['oracle']
    print(f"synth seed 11 ({source}): oracle semantic_miou {oracle['semantic_miou']:.4f} "
          f"class_switches {oracle['class_switches']} j_and_f {oracle['j_and_f']:.4f} "
          f"class_iou {oracle['semantic']['class_iou']}")
    assert oracle['semantic_miou'] >= 0.98
    assert oracle['class_switches'] == 0
    assert oracle['semantic']['tracks'] == 9  # lamp, rug, seam, large and 5 plain objects
    assert 'semantic_miou' in stdout
    assert KIND_CLASS['lamp'] and oracle['semantic']['class_iou']['lamp'] >= 0.98
