"""The pipeline encodes only the views it needs (issue 11 item 2), through the geometric oracle."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import pytest

from sap_ros.config import PipelineConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.segmenter import Candidates, Pixels, SegmentOutput, TrackRequest
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.geometry import erp_bearings, lonlat_to_bearing
from sap_ros.sphere.layout import PatchLayout

FLAT = {'model.device': 'cpu',
        'patches.fov_deg': 90.0, 'patches.size_px': 128, 'model.image_size': 128,
        'output.scale': 1.0, 'discovery.points_per_side': 16,
        'discovery.min_area_fraction': 0.0005, 'discovery.uncovered_fraction': 1.0}


class Recording:
    """The oracle, recording the views encoded per frame and the views every call names."""

    def __init__(self, oracle: OracleSegmenter) -> None:
        self.oracle = oracle
        self.low_res_px = oracle.low_res_px
        self.encoded: List[Set[int]] = []
        self.calls: List[Tuple[int, int]] = []  # (frame, view) of every track / discover
        self.discovered_in: List[Set[int]] = []

    def begin_frame(self, patches: Pixels, erp: np.ndarray,
                    views: Optional[Sequence[int]] = None) -> None:
        self.oracle.begin_frame(patches, erp, views=views)
        n = len(self.oracle._oracle.layout)
        self.encoded.append(set(range(n)) if views is None else set(views))
        self.discovered_in.append(set())

    def track(self, view_index: int, memory: MemoryContext, **kwargs: Any) -> SegmentOutput:
        self.calls.append((len(self.encoded) - 1, view_index))
        return self.oracle.track(view_index, memory, **kwargs)

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        self.calls.append((len(self.encoded) - 1, view_index))
        return self.oracle.track_many(view_index, requests)

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> List[Candidates]:
        self.calls.append((len(self.encoded) - 1, view_index))
        self.discovered_in[-1].add(view_index)
        return self.oracle.discover(view_index, points_px, points_per_batch)

    def close(self) -> None:
        self.oracle.close()


def _pipeline(**overrides: Any) -> Tuple[SapPipeline, Recording]:
    config = PipelineConfig.from_flat({**FLAT, **overrides})
    seg = Recording(OracleSegmenter(PatchLayout.from_config(config.patches)))
    return SapPipeline(config, segmenter=seg), seg


def _caps_frame(caps: Sequence[Tuple[float, float, float]], width: int = 512
                ) -> Tuple[np.ndarray, np.ndarray]:
    """ERP RGB and labels with caps ``(lon_deg, lat_deg, radius_deg)`` labelled 1, 2, ..."""
    bearings = erp_bearings(width, width // 2)
    gt = np.zeros((width // 2, width), np.uint16)
    for label, (lon, lat, radius) in enumerate(caps, start=1):
        centre = lonlat_to_bearing(np.array(lon), np.array(lat))
        gt[bearings @ centre >= np.cos(np.radians(radius))] = label
    rgb = np.repeat((60 + 40 * gt).clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    return rgb, gt


def _run(pipeline: SapPipeline, seg: Recording, frames: Sequence[Tuple[np.ndarray, np.ndarray]]
         ) -> List[np.ndarray]:
    labels = []
    for rgb, gt in frames:
        seg.oracle.set_ground_truth(gt)
        labels.append(pipeline.step(rgb).labels)
    return labels


def _moving_caps(n_frames: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    return [_caps_frame([(10.0 + 4.0 * k, 5.0, 14.0), (-120.0 - 3.0 * k, -30.0, 10.0)])
            for k in range(n_frames)]


def test_objects_are_decoded_and_remembered_only_in_encoded_views():
    """Skipped views are never decoded: every memory entry comes from a view encoded then."""
    pipeline, seg = _pipeline(**{'discovery.every_n_frames': 4})
    n_views = len(pipeline.layout)
    labels = _run(pipeline, seg, _moving_caps(6))
    assert len(seg.encoded[0]) == n_views  # the first frame searches everywhere
    assert all(len(views) < n_views for views in seg.encoded[1:]), seg.encoded
    assert all(view in seg.encoded[frame] for frame, view in seg.calls)
    ids = pipeline.bank.object_ids()
    assert len(ids) == 2
    for object_id in ids:
        cond, recent = pipeline.bank.entries(object_id)
        for entry in cond + recent:
            assert entry.view_index in seg.encoded[entry.frame_index], entry
    # Both caps are still tracked whole under their first ids.
    rgb, gt = _moving_caps(6)[-1]
    for object_id in ids:
        value = np.bincount(gt[labels[-1] == object_id]).argmax()
        mine, truth = labels[-1] == object_id, gt == value
        assert (mine & truth).sum() / (mine | truth).sum() > 0.95


@pytest.mark.parametrize('lon_lat', [(0.0, 0.0), (95.0, 40.0), (-160.0, -35.0), (30.0, 80.0),
                                     (-70.0, -85.0), (178.0, 10.0)])
def test_discovery_finds_a_new_object_anywhere_within_every_n_frames(lon_lat):
    """A cap appearing after the first frame is found within ``every_n_frames`` frames."""
    every_n = 3
    pipeline, seg = _pipeline(**{'discovery.every_n_frames': every_n})
    n_views = len(pipeline.layout)
    empty = _caps_frame([])
    appears = _caps_frame([(lon_lat[0], lon_lat[1], 12.0)])
    _run(pipeline, seg, [empty])
    found_at = None
    for k in range(every_n):
        labels = _run(pipeline, seg, [appears])[0]
        assert len(seg.encoded[-1]) < n_views  # a share, not the whole sphere
        if (labels > 0).any():
            found_at = k
            break
    assert found_at is not None, f'cap at {lon_lat} not found in {every_n} frames'
    # Each of those frames searched its own share: together every view once.
    searched = [v for views in seg.discovered_in[1:1 + every_n] for v in views]
    if found_at == every_n - 1:
        assert sorted(searched) == list(range(n_views))


def test_encode_all_views_encodes_and_searches_every_view_as_before():
    """``engine.encode_all_views``: every patch every frame, discovery everywhere when due."""
    pipeline, seg = _pipeline(**{'discovery.every_n_frames': 2,
                                 'engine.encode_all_views': True})
    n_views = len(pipeline.layout)
    _run(pipeline, seg, _moving_caps(4))
    assert all(views == set(range(n_views)) for views in seg.encoded)
    searched: Dict[int, int] = {k: len(v) for k, v in enumerate(seg.discovered_in)}
    assert searched[0] == n_views and searched[2] == n_views
    assert searched[1] == 0 and searched[3] == 0
    assert pipeline.last_schedule is None


def test_a_view_that_was_not_encoded_cannot_be_decoded():
    """A segmenter asked about a view it did not encode says so instead of answering stale."""
    layout = PatchLayout.from_config(PipelineConfig.from_flat(FLAT).patches)
    oracle = OracleSegmenter(layout)
    rgb, gt = _caps_frame([(0.0, 0.0, 20.0)])
    oracle.set_ground_truth(gt)
    oracle.begin_frame(np.zeros((2, 128, 128, 3), np.uint8), rgb, views=[3, 5])
    oracle.discover(5, np.array([[64.0, 64.0]]))
    with pytest.raises(Exception, match='not encoded'):
        oracle.discover(4, np.array([[64.0, 64.0]]))


def test_a_frame_that_needs_no_view_still_gives_an_empty_label_map_with_sam2():
    """Nothing live and no discovery share this frame: SAM2 encodes nothing, the frame goes on.

    (Found through the node: such frames were rejected, so a camera's newest frame could be lost.)
    """
    config = PipelineConfig.from_flat({
        'model.allow_random_weights': True, 'model.image_size': 64, 'patches.size_px': 64,
        'patches.fov_deg': 150.0, 'discovery.every_n_frames': 20,
        'discovery.uncovered_fraction': 1.0, 'discovery.points_per_side': 2})
    pipeline = SapPipeline(config)
    frame = np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    encoded = []
    for _ in range(len(pipeline.layout) + 3):
        result = pipeline.step(frame)
        assert result.labels.shape == (32, 64)
        schedule = pipeline.last_schedule
        encoded.append(len(schedule.encode) if schedule is not None else len(pipeline.layout))
        if encoded[-1] == 0:
            break
    pipeline.close()
    assert encoded[-1] == 0, f'no frame without views to encode: {encoded}'
