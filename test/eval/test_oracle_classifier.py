"""The oracle classifier: one-hot of the ground-truth class under each sighting's mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sap_ros.engine.classify import Sightings
from sap_ros.errors import InvalidInputError
from sap_ros.eval.oracle import GeometricOracle
from sap_ros.eval.oracle_classifier import OracleClassifier
from sap_ros.sphere.layout import PatchLayout
from sap_ros.synth.scene import SceneSpec, SynthScene
from sap_ros.synth.semantic import KIND_CLASS, SEMANTIC_CLASSES

SIZE = 64
NAMES = ('box', 'floor', 'sky')


def sightings(view: int, logits: np.ndarray) -> Sightings:
    n = logits.shape[0]
    return Sightings(view, tuple(range(1, n + 1)), torch.zeros((n, 0)), torch.zeros((n, 0)),
                     torch.from_numpy(logits.astype(np.float32)), torch.ones(n))


@pytest.fixture(scope='module')
def layout() -> PatchLayout:
    return PatchLayout.build(90.0, SIZE)


def test_each_sighting_gets_the_class_under_its_mask(layout: PatchLayout) -> None:
    # ERP: upper half sky (3), lower half floor (2), a box (1) on the equator ahead, a
    # strip of "none" (0) at the seam.
    sem = np.full((64, 128), 2, np.uint16)
    sem[:32] = 3
    sem[28:36, 56:72] = 1
    sem[:, :3] = 0
    sem[:, -3:] = 0
    view = int(np.argmin([abs(v.yaw_deg) + abs(v.pitch_deg) for v in layout.views]))
    oracle = OracleClassifier(layout, SIZE, NAMES)
    oracle.set_ground_truth(sem)
    low = SIZE // 4
    logits = np.full((4, low, low), -1.0)
    logits[0, 7:9, 7:9] = 1.0     # the centre of the view: the box
    logits[1, :3, :] = 1.0        # its top rows: sky
    logits[2, -3:, :] = 1.0       # its bottom rows: floor
    logits[3, -2:, 7:9] = 0.5     # nothing > 0: the peak pixels (floor) decide ...
    logits[3] -= 1.0              # ... even when every logit is negative
    out = oracle.classify(sightings(view, logits))
    assert out.shape == (4, 3) and out.dtype == torch.float32
    assert out.argmax(dim=1).tolist() == [0, 2, 1, 1]
    assert torch.all(out.sum(dim=1) == 1.0) and torch.all(out.max(dim=1).values == 1.0)


def test_no_class_under_the_mask_gives_the_uniform_row(layout: PatchLayout) -> None:
    sem = np.zeros((64, 128), np.uint16)
    sem[:4] = 255                 # unknown
    sem[60:] = 1
    oracle = OracleClassifier(layout, SIZE, NAMES, ignore=255)
    oracle.set_ground_truth(sem)
    low = SIZE // 4
    view = int(np.argmin([abs(v.yaw_deg) + abs(v.pitch_deg) for v in layout.views]))
    out = oracle.classify(sightings(view, np.ones((1, low, low))))
    assert torch.allclose(out, torch.full((1, 3), 1 / 3))
    assert oracle.classify(sightings(view, np.ones((0, low, low)))).shape == (0, 3)


def test_it_names_the_geometric_oracles_segments_of_a_synthetic_frame() -> None:
    """Fed the oracle segmenter's own masks, every segment gets its object's kind."""
    scene = SynthScene(SceneSpec(seed=3, n_small=0))
    pose = scene.trajectory(4)[3]
    _, labels = scene.render(pose, 512)
    sem = scene.semantic(pose, labels)
    layout = PatchLayout.build(90.0, 128)
    patches = GeometricOracle(layout).patch_outputs(labels, 128)
    oracle = OracleClassifier(layout, 128, SEMANTIC_CLASSES)
    oracle.set_ground_truth(sem)
    checked = 0
    for view, patch in enumerate(patches):
        if not len(patch.gt_values):
            continue
        out = oracle.classify(sightings(view, patch.logits))
        expected = [KIND_CLASS[scene.object(int(v)).kind] - 1 for v in patch.gt_values]
        big = (patch.logits > 0).sum(axis=(1, 2)) >= 2   # a segment that wins a decoder pixel
        got = out.argmax(dim=1).numpy()
        assert np.array_equal(got[big], np.asarray(expected)[big])
        checked += int(big.sum())
    assert checked > 20


def test_bad_input_is_refused(layout: PatchLayout) -> None:
    with pytest.raises(InvalidInputError, match='at least one class name'):
        OracleClassifier(layout, SIZE, ())
    oracle = OracleClassifier(layout, SIZE, NAMES)
    with pytest.raises(RuntimeError, match='set_ground_truth'):
        oracle.classify(sightings(0, np.ones((1, 16, 16))))
    with pytest.raises(InvalidInputError, match='class id 4, outside 0..3'):
        oracle.set_ground_truth(np.full((64, 128), 4, np.uint16))
    with pytest.raises(InvalidInputError, match='integer class map'):
        oracle.set_ground_truth(np.zeros((64, 128), np.float32))
