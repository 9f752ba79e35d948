"""``sap_train classify`` and the export's classes: what the runtime's class head is trained on."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from sap_ros.config import PipelineConfig
from sap_ros.engine.class_head import load_head
from sap_ros.engine.class_stage import ClassStage
from sap_ros.engine.classify import Sightings
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.segmenter import Sam2Segmenter
from sap_ros.errors import SapError
from sap_ros.eval.replay_gt import GtTopic
from sap_ros.synth.semantic import SEMANTIC_CLASSES
from sap_ros.train import NANO_CONFIG, class_eval, class_features, classify
from sap_ros.train.classes import load_classes
from sap_ros.train.cli import main
from sap_ros.train.data import load_meta, read_masks
from sap_ros.train.videos import _read_rgb

SIZE = 64


@pytest.fixture(scope='module')
def bag_export(tmp_path_factory) -> Path:
    """A 2-frame sap_synth bag (semantic ground truth) exported as one 2-frame video."""
    from sap_ros.synth.cli import main as synth
    root = tmp_path_factory.mktemp('classify')
    assert synth([str(root / 'bag'), '--frames', '2', '--width', '256', '--seed', '4',
                  '--quiet']) == 0
    assert main(['data', str(root / 'bag'), '--out', str(root / 'export'), '--size', str(SIZE),
                 '--frames-per-video', '2', '--min-area-px', '8']) == 0
    return root


def test_the_export_names_each_objects_majority_semantic_class(bag_export):
    names, videos = load_classes(bag_export / 'export')
    assert names == SEMANTIC_CLASSES
    _, records = load_meta(bag_export / 'export')
    labels = [f.labels for f in GtTopic(bag_export / 'bag', '/gt/labels')]
    semantic = [f.labels for f in GtTopic(bag_export / 'bag', '/gt/semantic')]
    (record,) = records
    assert set(videos[record.name]) == set(record.object_ids)  # every object has a class
    kinds = set()
    for index, source_id in record.object_ids.items():
        under = np.concatenate([s[lab == source_id] for lab, s in zip(labels, semantic)])
        expected = int(np.bincount(under).argmax())
        assert videos[record.name][index] == expected, (index, source_id)
        kinds.add(expected)
    assert len(kinds) >= 3  # boxes, spheres, cylinders (and the lamp, the rug) all appear


def test_classify_trains_a_head_the_runtime_loads(bag_export, capsys):
    out = bag_export / 'run'
    args = ['classify', '--data', str(bag_export / 'export'), '--val', str(bag_export / 'export'),
            '--out', str(out), '--epochs', '30', '--hidden', '16', '--balanced']
    assert main(args) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    losses = metrics['losses']
    assert len(losses) == 30 and losses[-1] < 0.7 * losses[0]
    head = load_head(out / 'head.pt', dims=(64, 64))  # the nano model's widths
    assert head.class_names == SEMANTIC_CLASSES and head.head.hidden_dim == 16
    baseline = load_head(out / 'baseline_head.pt', dims=(64, 64))
    inputs = torch.randn(5, 128)
    answers = baseline.head(inputs).argmax(dim=1)
    assert SEMANTIC_CLASSES[int(answers[0])] == metrics['majority_class']
    assert bool((answers == answers[0]).all())
    matrix = np.loadtxt(out / 'confusion.csv', delimiter=',', skiprows=1,
                        usecols=range(1, 11))
    assert matrix.shape == (10, 10) and matrix.sum() == metrics['val']['sightings']
    assert (out / 'confusion.png').stat().st_size > 0
    scores = metrics['val']
    assert 0.0 <= scores['majority'] <= 1.0 and scores['objects'] > 0
    assert 'fused along track' in capsys.readouterr().out
    assert main(args) == 0  # the features are cached
    assert 'features: reusing' in capsys.readouterr().err


def test_features_are_the_runtime_class_stages_for_the_same_patch_and_mask(bag_export):
    root = bag_export / 'export'
    config = class_features.model_config(str(NANO_CONFIG), None, SIZE, 0, 'cpu')
    sightings = class_features.extract(root, config)
    spec, (record,) = load_meta(root)
    layout = spec.layout()
    patch = int(sightings.patch[0])
    image = _read_rgb(sorted((root / 'JPEGImages' / record.name).glob('*.jpg'))[patch])
    mask = read_masks(root, record.name)[patch]
    segmenter = Sam2Segmenter(config)
    segmenter.begin_frame(np.ascontiguousarray(image[None]), np.zeros((1, 2, 3), np.uint8))
    seen: List[Sightings] = []

    class Capture:
        class_names = ('a', 'b')

        def classify(self, s: Sightings) -> torch.Tensor:
            seen.append(s)
            return torch.full((len(s.object_ids), 2), 0.5)

    stage = ClassStage(Capture(), PipelineConfig().classifier.switch_margin, layout, 'cpu')
    here = torch.nonzero(sightings.patch == patch)[:, 0]
    objects = [int(o) for o in sightings.obj[here]]
    outs = [segmenter.track(0, MemoryContext(), mask_prompt=(mask == o).astype(np.uint8),
                            as_conditioning=True) for o in objects]
    stage.observe(0, segmenter, list(zip(objects, outs)),
                  np.stack([np.asarray(out.logits) for out in outs]))
    (runtime,) = seen
    torch.testing.assert_close(sightings.features[here], runtime.features)
    torch.testing.assert_close(sightings.pointers[here], runtime.pointers)
    torch.testing.assert_close(sightings.weights[here], runtime.weights)


def test_fusion_weighs_sightings_as_the_runtime_does():
    """One object, three views: the confident central view outweighs two weak corner ones."""
    probabilities = torch.tensor([[0.6, 0.4], [0.1, 0.9], [0.1, 0.9], [0.9, 0.1]])
    sightings = class_features.SightingSet(
        torch.zeros(4, 1), torch.zeros(4, 1), torch.tensor([1.0, 0.1, 0.1, 1.0]),
        torch.tensor([0, 0, 0, 0]), torch.tensor([1, 1, 1, 2]), torch.tensor([0, 1, 2, 3]),
        ['v'], 26)
    targets = torch.tensor([0, 0, 0, 1])
    scores = class_eval.object_accuracies(sightings, targets, probabilities, majority=0,
                                          switch_margin=0.1)
    assert scores['objects'] == 2
    assert scores['sighting_argmax'] == pytest.approx((1 / 3 + 0) / 2)
    assert scores['fused'] == 0.5  # object 1 right after fusion, object 2 wrong
    assert scores['majority'] == 0.5


def test_classify_without_classes_or_with_an_unknown_class_says_so(bag_export, tmp_path,
                                                                   capsys):
    from test_train_data import write_clip
    write_clip(tmp_path / 'clip', seed=1, n_frames=1, width=256)
    assert main(['data', str(tmp_path / 'clip'), '--out', str(tmp_path / 'plain'),
                 '--size', str(SIZE)]) == 0
    assert not (tmp_path / 'plain' / 'classes.json').exists()  # no class info: as before
    assert main(['classify', '--data', str(tmp_path / 'plain'), '--out',
                 str(tmp_path / 'r1')]) == 1
    assert 'no class information' in capsys.readouterr().err
    assert main(['classify', '--data', str(bag_export / 'export'), '--out', str(tmp_path / 'r2'),
                 '--classes', 'box,unicorn']) == 1
    assert "unknown class 'unicorn'" in capsys.readouterr().err
    class_map = tmp_path / 'map.json'
    class_map.write_text(json.dumps({'class_names': ['thing'], 'classes': {'1': 'thing'}}))
    assert main(['classify', '--data', str(tmp_path / 'plain'), '--out', str(tmp_path / 'r3'),
                 '--class-map', str(class_map), '--epochs', '2']) == 0
    assert load_head(tmp_path / 'r3' / 'head.pt').class_names == ('thing',)
    with pytest.raises(SapError, match='no class information'):
        load_classes(tmp_path / 'plain')


def test_an_objects_class_is_its_majority_and_no_class_never_wins():
    from sap_ros.train.classes import class_votes, majority
    instances = np.array([[1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 0]])
    semantic = np.array([[0, 0, 0, 0, 0, 3, 3, 3, 1, 0, 0, 2]])
    votes: dict = {}
    class_votes(instances, semantic, votes)
    class_votes(instances, semantic, votes)  # a second panorama of the same video
    assert votes[1] == {0: 10, 3: 6, 1: 2} and 0 not in votes
    assert majority(votes[1], 3) == 3 and majority(votes[2], 3) == 0  # only "none": no class


def test_a_head_learns_small_spread_inputs_and_reads_raw_ones_after_folding():
    # Pooled features of a frozen encoder share one big direction; the class lives in a small
    # spread around it (here: 1e-3). The head trains on z-scored inputs and the saved head,
    # with the z-scoring folded into its first layer, must classify the *raw* inputs.
    generator = torch.Generator().manual_seed(0)
    n, dims = 400, 12
    targets = torch.randint(0, 3, (n,), generator=generator)
    signal = torch.nn.functional.one_hot(targets, 3).float() + 0.3 * torch.randn(
        n, 3, generator=generator)
    inputs = torch.ones(n, dims)
    inputs[:, :3] += 1e-3 * signal
    inputs[:, 3:6] += 1e-3 * torch.randn(n, 3, generator=generator)  # noise; 6..11 constant
    spec = classify.HeadSpec(epochs=30, batch_size=64)
    head, _ = classify.train_head(inputs, targets, 3, pointer_dim=4, spec=spec)
    accuracy = float((classify.predict(head, inputs).argmax(dim=1) == targets).float().mean())
    assert accuracy > 0.9
    raw, _ = classify.train_head(inputs, targets, 3, pointer_dim=4,
                                 spec=classify.HeadSpec(epochs=30, batch_size=64,
                                                        standardize=False))
    assert float((classify.predict(raw, inputs).argmax(dim=1) == targets).float().mean()) < 0.6
    # An input that never varied in training is centred, not scaled up without bound.
    moved = inputs.clone()
    moved[:, 8] += 1e-3
    shift = (head(moved) - head(inputs)).abs().max()
    assert float(shift) < 1.0
