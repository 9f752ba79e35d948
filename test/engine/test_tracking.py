"""TrackingCore: what the segmenter receives at each step (memories, distances, corrections).

A recording segmenter stands in for SAM2, so these tests show the bookkeeping alone; the parity
harness (test/bench/test_parity.py) shows that SAM2 then gives what upstream gives.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np
import pytest

from sap_ros.config import DiscoveryConfig, MemoryConfig, PipelineConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.segmenter import Candidates, Pixels, SegmentOutput, TrackRequest
from sap_ros.engine.tracking import TrackingCore

LOW = 8


class Recorder:
    """Answers "present" or "absent" as told; records every call's memory and prompts."""

    low_res_px = LOW
    pointer_steps = 15

    def __init__(self) -> None:
        self.present = True
        self.lose_after: Optional[int] = None  # answer "absent" after this many more calls
        self.calls: List[Tuple[MemoryContext, dict]] = []
        self.requests: List[TrackRequest] = []
        self._n = 0

    def begin_frame(self, patches: Pixels, erp: np.ndarray, views: Any = None) -> None:
        pass

    def track(self, view_index: int, memory: MemoryContext, **prompts: Any) -> SegmentOutput:
        self.calls.append((memory, prompts))
        self._n += 1
        if self.lose_after is not None:
            self.lose_after -= 1
            self.present = self.lose_after >= 0
        present = self.present or prompts.get('points_px') is not None
        logits = np.full((LOW, LOW), 3.0 if present else -1024.0, np.float32)
        return SegmentOutput(logits, 1.0, 1.0 if present else 0.0,
                             np.full(256, self._n, np.float32), f'm{self._n}')

    def track_many(self, view_index: int, requests: List[TrackRequest]) -> List[SegmentOutput]:
        self.requests.extend(requests)
        return [self.track(view_index, r.memory, mask_prompt=r.mask_prompt) for r in requests]

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> List[Candidates]:
        z = np.zeros((0, 3, LOW, LOW), np.float32)
        return [Candidates(z, np.zeros((0, 3)))]

    def close(self) -> None:
        pass


def _core(seg: Recorder, **memory: Any) -> TrackingCore:
    return TrackingCore(seg, np.ones((1, 1)), MemoryConfig(**memory),
                        DiscoveryConfig(enabled=False))


def _step(core: TrackingCore, ids: List[int], frame: int) -> List[Tuple[int, SegmentOutput]]:
    core.next_step()
    return core.propagate(0, frame, ids)


def test_absent_steps_are_stored_and_keep_their_distance() -> None:
    seg = Recorder()
    core = _core(seg)
    core.next_step()
    made = core.create(0, 0, mask=np.ones((LOW, LOW), bool))
    assert made is not None
    object_id = made[0]
    for frame in range(1, 10):
        seg.present = not 3 <= frame < 7  # SAM2 loses it for four steps
        _step(core, [object_id], frame)
    memory, _ = seg.calls[-1]
    # Step 9 sees steps 3..8 (absent ones included) at distances 6..1, the creation at 9.
    assert memory.recent == ('m4', 'm5', 'm6', 'm7', 'm8', 'm9')
    assert memory.recent_ago == (6, 5, 4, 3, 2, 1)
    assert memory.cond == ('m1',) and memory.cond_ago == (9,)
    assert memory.pointers_ago == (8, 7)


def test_correction_redoes_the_step_with_its_context_and_previous_logits() -> None:
    seg = Recorder()
    core = _core(seg)
    core.next_step()
    object_id = core.create(0, 0, mask=np.ones((LOW, LOW), bool))[0]
    for frame in range(1, 9):
        _step(core, [object_id], frame)
    decoded_memory, _ = seg.calls[-1]
    click = np.array([[3.0, 3.0], [6.0, 6.0]])
    core.correct(0, 8, object_id, click, np.array([1, 0]))
    memory, prompts = seg.calls[-1]
    assert memory == decoded_memory  # the same memories the step was decoded with
    assert prompts['prev_logits'] is not None and (prompts['prev_logits'] == 3.0).all()
    np.testing.assert_array_equal(prompts['point_labels'], [1, 0])
    assert core.bank.steps(object_id) == 9  # redone, not a new step
    _step(core, [object_id], 9)
    memory, _ = seg.calls[-1]
    # The corrected step is now conditioning, one step back; it left the recent part.
    assert memory.cond_ago == (9, 1) and 1 not in memory.recent_ago


def test_click_on_a_patch_not_decoded_this_step_is_a_fresh_conditioning_step() -> None:
    seg = Recorder()
    core = _core(seg)
    core.next_step()
    object_id = core.create(0, 0, mask=np.ones((LOW, LOW), bool))[0]
    core.next_step()  # a new step, the object not decoded in it
    core.correct(0, 1, object_id, np.array([[2.0, 2.0]]), np.array([1]))
    memory, prompts = seg.calls[-1]
    assert memory.empty and prompts['prev_logits'] is None
    assert core.bank.steps(object_id) == 2


CLIP_FLAT_OPTIONS = {'model.device': 'cpu', 'discovery.enabled': False, 'patches.size_px': 32,
                     'patches.fov_deg': 120.0, 'model.image_size': 64}


@pytest.mark.parametrize('mask_prompt', [False, True])
def test_dense_mask_prompt_only_with_its_option(mask_prompt: bool) -> None:
    config = PipelineConfig.from_flat({**CLIP_FLAT_OPTIONS, 'engine.mask_prompt': mask_prompt})
    seg = Recorder()
    pipeline = SapPipeline(config, segmenter=seg)
    erp = np.zeros((64, 128, 3), np.uint8)
    mask = np.zeros((64, 128), bool)
    mask[24:40, 50:78] = True
    pipeline.add_object_mask(mask)
    for _ in range(2):
        pipeline.step(erp)
    assert seg.requests, 'the object was never propagated'
    sent = [r.mask_prompt is not None for r in seg.requests]
    assert any(sent) if mask_prompt else not any(sent)
    assert all(r.prior is not None for r in seg.requests)  # information, always given


@pytest.mark.parametrize('recovery', [False, True])
def test_click_recovery_only_with_its_option(recovery: bool) -> None:
    config = PipelineConfig.from_flat({**CLIP_FLAT_OPTIONS, 'engine.click_recovery': recovery})
    seg = Recorder()
    pipeline = SapPipeline(config, segmenter=seg)
    erp = np.zeros((64, 128, 3), np.uint8)
    mask = np.zeros((64, 128), bool)
    mask[24:40, 50:78] = True
    pipeline.add_object_mask(mask)
    pipeline.step(erp)
    # Found in the first patch of the next frame, then lost where the re-projection of that
    # sighting still puts it.
    seg.lose_after = 1
    pipeline.step(erp)
    clicks: List[Optional[Any]] = [p.get('points_px') for _, p in seg.calls]
    assert any(c is not None for c in clicks) == recovery
