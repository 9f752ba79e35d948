"""Class fusion (issue 21): evidence per object, the hysteresis rule, merges, and the head file."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import torch

from sap_ros.config import PipelineConfig
from sap_ros.engine.class_fusion import ClassFusion
from sap_ros.engine.class_head import (
    HEAD_FORMAT,
    Sam2Head,
    Sam2HeadClassifier,
    head_inputs,
    load_head,
    save_head,
)
from sap_ros.engine.class_stage import distortion_weights
from sap_ros.engine.classify import Sightings
from sap_ros.errors import ConfigError
from sap_ros.sphere.layout import PatchLayout


def _one_hot(classes: Sequence[int], k: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(list(classes)), k).float()


def _published(fusion: ClassFusion, ids: Sequence[int]) -> List[int]:
    labels = torch.tensor([list(ids)], dtype=torch.int32)
    _, table = fusion.on_device(labels, ids)
    return [int(c) for c in table[:, 0].tolist()]


def test_a_minority_does_not_flip_the_class_a_sustained_majority_does_after_the_margin():
    fusion = ClassFusion(3, switch_margin=0.1)
    history = []
    for frame in range(10):  # object 1 seen as class index 0, with one dissenting view a frame
        fusion.add([1, 1, 1], _one_hot([0, 0, 2]), torch.ones(3))
        history.append(_published(fusion, [1])[0])
    assert history == [1] * 10  # 1-based: the class never flickered to 3
    flips = []
    for frame in range(30):  # from now on the views agree on class index 2
        fusion.add([1, 1, 1], _one_hot([2, 2, 2]), torch.ones(3))
        flips.append(_published(fusion, [1])[0])
    # Evidence: class 1 has 20, class 3 has 10 + 3 n; the switch needs 10 + 3 n > 20 + 0.1 x
    # (30 + 3 n), i.e. n > 4.8: the fifth frame of the new majority, not before.
    assert flips[:4] == [1] * 4 and flips[4:] == [3] * 26, flips


def test_class_score_is_the_published_share_and_merge_sums_evidence():
    fusion = ClassFusion(2, switch_margin=0.0)
    fusion.add([4, 9], _one_hot([0, 1], 2) * 0.5 + 0.25, torch.tensor([2.0, 1.0]))
    labels = torch.tensor([[4, 9, 0, 7]], dtype=torch.int32)
    semantic, table = fusion.on_device(labels, [4, 9, 7])
    assert table.tolist() == [[1.0, 0.75], [2.0, 0.75], [0.0, 0.0]]  # 7: no evidence, no class
    assert semantic.tolist() == [[1, 2, 0, 0]]
    fusion.add([9], _one_hot([1], 2), torch.tensor([3.0]))
    fusion.merge(4, 9)  # evidence of 4: (1.5, 0.5) + (0.25, 0.75 + 3) = (1.75, 4.25)
    _, table = fusion.on_device(labels, [4, 9])
    assert table[0].tolist() == pytest.approx([2.0, 4.25 / 6.0])
    assert table[1].tolist() == [0.0, 0.0]  # 9 is gone
    fusion.forget(4)
    assert fusion.on_device(labels, [4])[1].tolist() == [[0.0, 0.0]]


def test_fusion_rejects_mismatched_probabilities():
    fusion = ClassFusion(3, 0.1)
    with pytest.raises(ValueError, match=r'\(2, 3\) probabilities'):
        fusion.add([1, 2], torch.ones(2, 4), torch.ones(2))


def test_distortion_weight_is_highest_at_the_patch_centre():
    layout = PatchLayout.build(fov_deg=90.0, size_px=128)
    table = distortion_weights(layout, 32)
    assert table[15:17, 15:17].min() > 0.99
    # A 90 degree patch: 45 degrees at the middle of an edge, 54.7 at a corner (cos^3).
    assert table[16, 0] == pytest.approx(np.cos(np.radians(45.0)) ** 3, abs=0.03)
    assert table[0, 0] == pytest.approx((1 / np.sqrt(3)) ** 3, abs=0.03)


def _sightings(n: int, features: int = 8, pointers: int = 4) -> Sightings:
    gen = torch.Generator().manual_seed(0)
    return Sightings(0, tuple(range(1, n + 1)), torch.randn(n, features, generator=gen),
                     torch.randn(n, pointers, generator=gen), torch.zeros(n, 4, 4),
                     torch.ones(n))


def test_the_head_runs_in_float32_inside_the_frames_autocast():
    # A trained head's first layer holds the folded z-scoring of inputs that barely vary
    # (pooled features share one direction): weights ~1e3 and a bias that cancels their sum.
    # Under the engine's bf16 autocast it must still answer as in float32 (bf16 keeps ~3
    # digits: the cancellation would leave noise).
    gen = torch.Generator().manual_seed(2)
    n = 32
    sightings = Sightings(0, tuple(range(1, n + 1)),
                          1.0 + 1e-2 * torch.randn(n, 8, generator=gen),
                          1.0 + 1e-2 * torch.randn(n, 4, generator=gen),
                          torch.zeros(n, 4, 4), torch.ones(n))
    inputs = head_inputs(sightings.features, sightings.pointers)
    mean, std = inputs.mean(dim=0), inputs.std(dim=0)
    head = Sam2Head(8, 4, 3)
    with torch.no_grad():
        head.layers.weight.div_(std[None, :])
        head.layers.bias.sub_(head.layers.weight @ mean)
    classifier = Sam2HeadClassifier(head, ['a', 'b', 'c'])
    reference = classifier.classify(sightings)
    assert float(reference.max(dim=1).values.min()) < 0.99  # logits of order 1, not saturated
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        under_autocast = classifier.classify(sightings)
    torch.testing.assert_close(under_autocast, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('hidden', [0, 16])
def test_head_file_roundtrip(tmp_path: Path, hidden: int):
    torch.manual_seed(1)
    head = Sam2Head(8, 4, 3, hidden_dim=hidden)
    path = save_head(tmp_path / 'heads' / 'head.pt', head, ['person', 'door', 'wall'])
    loaded = load_head(path, dims=(8, 4))
    assert loaded.class_names == ('person', 'door', 'wall')
    sightings = _sightings(5)
    probs = loaded.classify(sightings)
    assert torch.equal(probs, Sam2HeadClassifier(head, loaded.class_names).classify(sightings))
    assert probs.shape == (5, 3) and torch.allclose(probs.sum(1), torch.ones(5))


def test_head_file_errors_name_the_parameter(tmp_path: Path):
    with pytest.raises(ConfigError, match='classifier.head.*does not exist'):
        load_head(tmp_path / 'missing.pt')
    checkpoint = tmp_path / 'sam2.pt'
    torch.save({'model': {'w': torch.zeros(2)}}, checkpoint)
    with pytest.raises(ConfigError, match='not a sap_ros head file'):
        load_head(checkpoint)
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'not a torch file')
    with pytest.raises(ConfigError, match='not a readable head file'):
        load_head(garbage)
    old = tmp_path / 'old.pt'
    torch.save({'format': HEAD_FORMAT, 'version': 0}, old)
    with pytest.raises(ConfigError, match='version 0'):
        load_head(old)
    path = save_head(tmp_path / 'head.pt', Sam2Head(8, 4, 2), ['a', 'b'])
    with pytest.raises(ConfigError, match='reads 8-d features and 4-d object pointers.*256'):
        load_head(path, dims=(256, 256))
    with pytest.raises(ConfigError, match='reads 8-d features'):
        load_head(path).classify(_sightings(2, features=0, pointers=0))  # e.g. the oracle
    with pytest.raises(ConfigError, match='distinct'):
        save_head(tmp_path / 'bad.pt', Sam2Head(8, 4, 2), ['a', 'a'])
    with pytest.raises(ConfigError, match='classifier.head: must name a head file'):
        PipelineConfig.from_flat({'classifier.kind': 'sam2_head'})
    with pytest.raises(ConfigError, match='classifier.kind'):
        PipelineConfig.from_flat({'classifier.kind': 'clip'})
