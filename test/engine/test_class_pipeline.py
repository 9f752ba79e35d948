"""Classes through ``SapPipeline`` (issue 21): what a planner reads in the records and the map.

``classifier.kind: none`` changes nothing; a classifier's classes are fused over every sighting
(views and frames) without flicker; the semantic map carries each object's class; SAM2's own
features reach the classifier; the device frame path reads nothing more per sighting.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
from random_sam2 import RANDOM_SAM2_FLAT, synth_frames
from test_pipeline_frame_path import FLAT, TensorOracle
import torch

from sap_ros.bench.probes import cap_scene, count_host_syncs
from sap_ros.config import PipelineConfig
from sap_ros.engine.class_head import Sam2Head, save_head
from sap_ros.engine.classify import Sightings
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.types import FrameResult, ObjectRecord
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.layout import PatchLayout
from sap_ros.synth.scene import SceneSpec, SynthScene

NAMES = ('floor', 'box', 'lamp')
CLASS_FIELDS = ('class_id', 'class_name', 'class_score')


class Scripted:
    """A test double: ``answer(view, object_id)`` is the class index each sighting gets."""

    class_names = NAMES

    def __init__(self, answer: Callable[[int, int], int]) -> None:
        self.answer = answer
        self.seen: List[Sightings] = []

    def classify(self, sightings: Sightings) -> torch.Tensor:
        self.seen.append(sightings)
        index = [self.answer(sightings.view_index, i) for i in sightings.object_ids]
        device = sightings.mask_logits.device
        return torch.eye(len(NAMES), device=device)[torch.tensor(index, device=device)]


@pytest.fixture(scope='module')
def clip() -> List[Tuple[np.ndarray, np.ndarray]]:
    scene = SynthScene(SceneSpec(seed=3))
    return [scene.render(pose, 512) for pose in scene.trajectory(7, turn_deg_per_frame=6.0)]


def _oracle_classes(frames: Sequence[Tuple[np.ndarray, np.ndarray]], path: str,
                    classifier: Any) -> List[FrameResult]:
    config = PipelineConfig.from_flat({**FLAT, 'engine.frame_path': path})
    oracle = OracleSegmenter(PatchLayout.from_config(config.patches))
    pipeline = SapPipeline(config, segmenter=oracle, classifier=classifier)
    results = []
    for rgb, gt in frames:
        oracle.set_ground_truth(gt)
        results.append(pipeline.step(rgb))
    return results


def _assert_semantic_is_each_objects_class(result: FrameResult) -> None:
    assert result.semantic is not None and result.semantic.dtype == np.uint16
    assert result.semantic.shape == result.labels.shape
    expected = np.zeros(65536, np.uint16)
    for record in result.objects:
        expected[record.id] = record.class_id
        assert record.class_name == (NAMES[record.class_id - 1] if record.class_id else '')
    assert np.array_equal(result.semantic, expected[result.labels])


def _class_switches(results: Sequence[FrameResult]) -> Dict[int, int]:
    last: Dict[int, int] = {}
    switches: Dict[int, int] = {}
    for result in results:
        for record in result.objects:
            if record.class_id and last.get(record.id, record.class_id) != record.class_id:
                switches[record.id] = switches.get(record.id, 0) + 1
            if record.class_id:
                last[record.id] = record.class_id
    return switches


@pytest.mark.parametrize('path', ['numpy', 'torch'])
def test_a_dissenting_view_never_flips_a_class_and_the_map_carries_it(clip, path):
    """Every 4th sighting of an object says another class: 0 switches, the majority class."""
    count: Dict[int, int] = {}

    def answer(view: int, object_id: int) -> int:
        count[object_id] = count.get(object_id, 0) + 1
        return (object_id + 1) % 3 if count[object_id] % 4 == 0 else object_id % 3

    results = _oracle_classes(clip[:4], path, Scripted(answer))
    assert results[-1].objects and max(count.values()) >= 8  # the dissent was heard
    assert _class_switches(results) == {}
    for result in results:
        _assert_semantic_is_each_objects_class(result)
        for record in result.objects:
            assert record.class_id == record.id % 3 + 1, record
            assert 0.5 < record.class_score <= 1.0
    assert results[-1].semantic.any()


def test_a_sustained_majority_switches_the_class_after_the_margin(clip):
    """From frame 2 every view says another class: objects seen before switch, later, once."""
    state = {'frame': 0}
    classifier = Scripted(lambda view, i: i % 3 if state['frame'] < 2 else (i + 1) % 3)
    config = PipelineConfig.from_flat({**FLAT, 'engine.frame_path': 'torch'})
    oracle = OracleSegmenter(PatchLayout.from_config(config.patches))
    pipeline = SapPipeline(config, segmenter=oracle, classifier=classifier)
    results = []
    for frame, (rgb, gt) in enumerate(clip):
        state['frame'] = frame
        oracle.set_ground_truth(gt)
        results.append(pipeline.step(rgb))
        _assert_semantic_is_each_objects_class(results[-1])
    old = {r.id for r in results[1].objects}
    assert old
    at_change = {r.id: r.class_id for r in results[2].objects if r.id in old}
    assert at_change and all(c == i % 3 + 1 for i, c in at_change.items())  # not yet
    final = {r.id: r.class_id for r in results[-1].objects if r.id in old}
    assert final and all(c == (i + 1) % 3 + 1 for i, c in final.items()), final
    assert set(_class_switches(results).values()) == {1}


def _random_head_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_head(tmp_path / 'head.pt', Sam2Head(256, 256, len(NAMES), hidden_dim=16), NAMES)


def _without_classes(record: ObjectRecord) -> Dict[str, Any]:
    fields = dataclasses.asdict(record)
    return {k: v for k, v in fields.items() if k not in CLASS_FIELDS}


def _assert_same_records(a: Sequence[ObjectRecord], b: Sequence[ObjectRecord]) -> None:
    assert [r.id for r in a] == [r.id for r in b]
    for x, y in zip(a, b):
        fx, fy = _without_classes(x), _without_classes(y)
        for key, value in fx.items():
            if isinstance(value, np.ndarray):
                assert value.tobytes() == fy[key].tobytes(), key
            else:
                assert value == fy[key], key


@pytest.mark.parametrize('path', ['numpy', 'torch'])
def test_classifier_none_leaves_labels_and_records_as_they_were(tmp_path, path):
    """Random-weight SAM2: the same labels and records with and without the class stage."""
    flat = {**RANDOM_SAM2_FLAT, 'engine.frame_path': path}
    plain = SapPipeline(PipelineConfig.from_flat(flat))
    assert plain.classes is None
    head = _random_head_file(tmp_path)
    classed = SapPipeline(PipelineConfig.from_flat(
        {**flat, 'classifier.kind': 'sam2_head', 'classifier.head': str(head)}))
    # What the node publishes on class_names before any object is classified.
    assert plain.class_names == () and classed.class_names == tuple(NAMES)
    found = 0
    for rgb in synth_frames(2, width=256):
        a, b = plain.step(rgb), classed.step(rgb)
        assert a.semantic is None and 'classify' not in a.timings_ms
        assert a.labels.tobytes() == b.labels.tobytes()
        _assert_same_records(a.objects, b.objects)
        for record in a.objects:
            assert (record.class_id, record.class_name, record.class_score) == (0, '', 0.0)
        _assert_semantic_is_each_objects_class(b)
        assert all(1 <= r.class_id <= len(NAMES) for r in b.objects)
        found += len(b.objects)
    assert found  # random weights still give objects to compare


def test_sam2_sightings_pool_the_encoded_patch_embedding_under_each_mask():
    """No second encoder pass: the features are the frame's own embedding, mask-pooled."""
    classifier = Scripted(lambda view, i: 0)
    pipeline = SapPipeline(PipelineConfig.from_flat(RANDOM_SAM2_FLAT), classifier=classifier)
    encodes: List[int] = []
    encode = pipeline.segmenter.adapter.encode

    def counted(patches: Any) -> Any:
        encodes.append(len(patches))
        return encode(patches)

    pipeline.segmenter.adapter.encode = counted  # type: ignore[method-assign]
    frames = synth_frames(2, width=256)
    pipeline.step(frames[0])
    classifier.seen.clear()
    result = pipeline.step(frames[1])
    assert len(encodes) == 2 and classifier.seen and result.objects
    for sightings in classifier.seen:
        n = len(sightings.object_ids)
        embedding = pipeline.segmenter.patch_features(sightings.view_index).float()  # (C, 8, 8)
        c, hf, wf = embedding.shape
        assert sightings.features.shape == (n, c) and sightings.pointers.shape == (n, 256)
        mask = (sightings.mask_logits > 0).float()
        h, w = mask.shape[1:]
        cover = mask.reshape(n, hf, h // hf, wf, w // wf).mean(dim=(2, 4))
        expected = (cover[:, None] * embedding[None]).sum(dim=(2, 3)) / cover.sum(dim=(1, 2))[
            :, None]
        torch.testing.assert_close(sightings.features, expected, atol=1e-4, rtol=1e-4)
        assert bool(((sightings.weights > 0) & (sightings.weights <= 1)).all())
    pointers = torch.nn.functional.normalize(
        torch.cat([sightings.pointers for sightings in classifier.seen]), dim=1)
    for record in result.objects:  # SAM2's pointers: a record publishes its best sighting's
        # (or that of an object merged into it)
        assert float((pointers @ torch.from_numpy(record.embedding)).max()) > 0.9999


def _syncs(n_objects: int, classifier: Optional[Scripted]) -> Tuple[int, int, int]:
    """Host reads of one torch-path frame of the engine (the oracle's own reads not counted)."""
    rgb, gt = cap_scene(n_objects, 10.0, 512)
    config = PipelineConfig.from_flat({**FLAT, 'engine.frame_path': 'torch'})
    oracle = TensorOracle(PatchLayout.from_config(config.patches))
    pipeline = SapPipeline(config, segmenter=oracle, classifier=classifier)
    for _ in range(2):
        oracle.set_ground_truth(gt)
        pipeline.step(rgb)
    oracle.set_ground_truth(gt)
    if classifier is not None:
        classifier.seen.clear()
    with count_host_syncs() as syncs:
        result = pipeline.step(rgb)
    if classifier is not None:
        _assert_semantic_is_each_objects_class(result)
    seen = sum(len(s.object_ids) for s in classifier.seen) if classifier else 0
    return syncs.count, len(result.objects), seen


def test_device_path_reads_nothing_more_with_a_classifier():
    """The classes ride in the frame's one download: no host read per sighting, or per frame."""
    for n_objects in (1, 20):
        plain, found, _ = _syncs(n_objects, None)
        classed, found_too, sightings = _syncs(n_objects, Scripted(lambda view, i: i % 3))
        assert found == found_too == n_objects
        assert sightings > n_objects  # objects are seen in several views
        assert classed == plain, (n_objects, classed, plain)
