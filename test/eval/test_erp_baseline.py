"""Sam2ErpBaseline: SAM2 with memory on the whole squeezed panorama (the baseline to beat)."""
from __future__ import annotations

from typing import Any, List, Optional

import cv2
import numpy as np
import pytest
from random_sam2 import RANDOM_SAM2_FLAT, synth_frames

from sap_ros.config import PipelineConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.segmenter import Candidates, Pixels, SegmentOutput, track_each
from sap_ros.errors import ErpShapeError, InvalidInputError
from sap_ros.eval.erp_baseline import Sam2ErpBaseline
from sap_ros.sphere.geometry import erp_bearings, lonlat_to_bearing

FLAT = {'model.device': 'cpu',
        'model.image_size': 256, 'output.scale': 1.0, 'discovery.every_n_frames': 1,
        'discovery.points_per_side': 16, 'discovery.min_area_fraction': 0.0005,
        'discovery.max_new_per_frame': 64}


class SquashedTruth:
    """Answers from the ground truth squeezed like the image: the network's best case.

    Memory is the ground-truth value an object was prompted on, so tracking follows it exactly
    as long as the value is in the square.
    """

    def __init__(self, side_px: int) -> None:
        self.low_res_px = side_px // 4
        self.gt: Optional[np.ndarray] = None
        self._low: Optional[np.ndarray] = None
        self.frames_seen = 0

    def set_ground_truth(self, gt: np.ndarray) -> None:
        self.gt = gt

    def begin_frame(self, patches: Pixels, erp: np.ndarray) -> None:
        assert patches.shape[0] == 1 and patches.shape[1] == patches.shape[2]
        side = self.low_res_px
        self._low = cv2.resize(self.gt, (side, side), interpolation=cv2.INTER_NEAREST)
        self.frames_seen += 1

    def _out(self, value: int) -> SegmentOutput:
        inside = self._low == value
        logits = np.where(inside, 5.0, -5.0).astype(np.float32)
        return SegmentOutput(logits, 1.0, float(inside.any()), np.ones(256, np.float32), value)

    def track(self, view_index: int, memory: MemoryContext, *,
              mask_prompt: Optional[Pixels] = None, **_: Any) -> SegmentOutput:
        assert view_index == 0
        if mask_prompt is not None:  # discovery seeds at the input's size (add_new_mask)
            side = self.low_res_px
            low = cv2.resize(np.asarray(mask_prompt, np.uint8), (side, side),
                             interpolation=cv2.INTER_NEAREST) > 0
            values = self._low[low]
            return self._out(int(np.bincount(values[values > 0]).argmax()))
        return self._out((memory.cond + memory.recent)[0])

    def track_many(self, view_index: int, requests):
        return track_each(self, view_index, requests)

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> List[Candidates]:
        scale = 0.25  # input pixels -> decoder pixels
        values = [int(self._low[int((v + 0.5) * scale), int((u + 0.5) * scale)])
                  for u, v in points_px]
        values = sorted({v for v in values if v > 0})
        logits = np.stack([self._out(v).logits for v in values]) if values else np.zeros(
            (0, self.low_res_px, self.low_res_px), np.float32)
        return [Candidates(logits[:, None], np.ones((len(values), 1), np.float32))]

    def close(self) -> None:
        pass


def _baseline(**overrides) -> tuple[Sam2ErpBaseline, SquashedTruth]:
    config = PipelineConfig.from_flat({**FLAT, **overrides})
    truth = SquashedTruth(config.model.image_size)
    return Sam2ErpBaseline(config, segmenter=truth), truth


def _caps(centres_deg, radius_deg: float, width: int = 512):
    bearings = erp_bearings(width, width // 2)
    gt = np.zeros((width // 2, width), np.uint16)
    for k, (lon, lat) in enumerate(centres_deg):
        centre = lonlat_to_bearing(np.array(lon), np.array(lat))
        gt[bearings @ centre >= np.cos(np.radians(radius_deg))] = k + 1
    rgb = np.repeat((gt * 40 % 200 + 30).astype(np.uint8)[..., None], 3, axis=-1)
    return rgb, gt


def test_objects_are_found_and_keep_their_ids_while_the_camera_turns():
    baseline, truth = _baseline()
    ids_per_frame = []
    for k in range(4):
        rgb, gt = _caps([(-100 + 5 * k, 0), (20 + 5 * k, 30), (120 + 5 * k, -20)], 15.0)
        truth.set_ground_truth(gt)
        result = baseline.step(rgb)
        assert result.labels.shape == gt.shape and result.labels.dtype == np.uint16
        assert result.frame_index == k
        ids_per_frame.append([p.id for p in result.objects])
        # Each object sits where its ground truth is; the squeeze to a 64 px decoder grid
        # costs it its rim (J about 0.8 for a cap of 15 deg at 512 px).
        for value, pointer in zip((1, 2, 3), result.objects):
            mine, truth_mask = result.labels == pointer.id, gt == value
            assert (mine & truth_mask).sum() / (mine | truth_mask).sum() > 0.7
    assert ids_per_frame == [[1, 2, 3]] * 4
    assert truth.frames_seen == 4  # one encoding per frame: the whole panorama at once


def test_objects_that_leave_retire_and_ids_are_never_reused():
    baseline, truth = _baseline(**{'memory.retire_after_frames': 1, 'memory.short_term': 2,
                                   'memory.long_term': 1})
    issued: set[int] = set()
    for k in range(10):
        if k % 4 >= 2:  # two blank frames: every object goes missing, then retires
            rgb, gt = _caps([], 10.0)
        else:
            rgb, gt = _caps([(-90.0 + 20 * (k % 4), 0.0), (90.0, 40.0)], 12.0)
        truth.set_ground_truth(gt)
        ids = {p.id for p in baseline.step(rgb).objects}
        live = {t.id for t in baseline.registry.live()}
        assert not (ids & issued - live), 'a retired id came back'
        issued |= ids
        assert baseline.memory_stats().entries <= baseline.bank.entries_limit
    assert len(issued) == 6  # two objects in each of the three visible spells, new ids each
    baseline.reset()
    assert baseline.memory_stats().entries == 0 and len(baseline.registry) == 0


@pytest.mark.parametrize('frame, error', [
    (np.zeros((100, 100, 3), np.uint8), ErpShapeError),
    (np.zeros((64, 128), np.uint8), InvalidInputError),
    (np.zeros((64, 128, 3), np.float32), InvalidInputError),
])
def test_bad_frames_are_rejected(frame, error):
    baseline, _ = _baseline()
    with pytest.raises(error):
        baseline.step(frame)


@pytest.mark.slow
def test_sam2_random_weights_runs_deterministically_on_the_squeezed_frame():
    frames = synth_frames()
    runs = []
    for _ in range(2):
        baseline = Sam2ErpBaseline(PipelineConfig.from_flat(RANDOM_SAM2_FLAT))
        assert 'squeezed to 128x128' in baseline.description
        runs.append([baseline.step(f) for f in frames])
        assert baseline.memory_stats().entries <= baseline.bank.entries_limit
        baseline.close()
    for a, b in zip(*runs):
        assert a.labels.shape == (64, 128) and a.labels.dtype == np.uint16
        np.testing.assert_array_equal(a.labels, b.labels)
        assert [p.id for p in a.objects] == [p.id for p in b.objects]
    assert any(r.objects for r in runs[0])  # thresholds at 0: random SAM2 keeps something
