"""SapPipeline end to end: the geometric oracle (everything but the network) and real SAM2."""
from __future__ import annotations

import contextlib

import cv2
import numpy as np
import pytest
from random_sam2 import RANDOM_SAM2_FLAT, synth_frames

from sap_ros.config import PipelineConfig
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.segmenter import Sam2Segmenter, track_each
from sap_ros.engine.types import Prompt
from sap_ros.errors import ErpShapeError, InvalidInputError
from sap_ros.eval.metrics import ClipEvaluator
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.geometry import erp_bearings, lonlat_to_bearing
from sap_ros.sphere.layout import PatchLayout
from sap_ros.synth.scene import SceneSpec, SynthScene

ORACLE_FLAT = {'model.device': 'cpu',
               'patches.fov_deg': 90.0, 'patches.size_px': 256, 'model.image_size': 256,
               'output.scale': 1.0, 'discovery.every_n_frames': 1,
               'discovery.points_per_side': 16, 'discovery.max_new_per_frame': 64,
               'discovery.min_area_fraction': 0.0005}


def _oracle_pipeline(**overrides) -> tuple[SapPipeline, OracleSegmenter]:
    config = PipelineConfig.from_flat({**ORACLE_FLAT, **overrides})
    segmenter = OracleSegmenter(PatchLayout.from_config(config.patches))
    return SapPipeline(config, segmenter=segmenter), segmenter


@pytest.fixture(scope='module')
def clip():
    scene = SynthScene(SceneSpec(seed=3))
    return [scene.render(pose, 1024) for pose in scene.trajectory(5, turn_deg_per_frame=6.0)]


@pytest.mark.parametrize('fusion', ['least_distortion', 'blend'])
def test_oracle_through_the_engine_keeps_ids_and_masks(clip, fusion):
    pipeline, oracle = _oracle_pipeline(**{'output.fusion': fusion})
    evaluator = ClipEvaluator(gt_background=0, gt_ignore=None)
    for rgb, gt in clip:
        oracle.set_ground_truth(gt)
        result = pipeline.step(rgb)
        assert result.labels.shape == gt.shape and result.labels.dtype == np.uint16
        assert [p.id for p in result.objects] == sorted(np.unique(result.labels[
            result.labels > 0]).tolist())
        evaluator.add_frame(result.labels, gt)
    metrics = evaluator.result()
    assert metrics.id_switches == 0
    # The large objects (the first nine, rendered big) are rebuilt almost exactly.
    large = [o.j for o in metrics.objects if o.gt_id <= 9]
    assert min(large) > 0.95, large
    assert metrics.seam_consistency == 1.0


def test_memory_stays_bounded_and_ids_are_never_reused(clip):
    pipeline, oracle = _oracle_pipeline(**{'memory.retire_after_frames': 1,
                                           'memory.short_term': 2, 'memory.long_term': 1})
    ever_seen: set[int] = set()
    limit = pipeline.bank.entries_limit
    for k in range(12):
        rgb, gt = clip[k % len(clip)]
        if k % 3 == 2:  # a blank frame makes every object go missing, then retire
            gt = np.zeros_like(gt)
            rgb = np.zeros_like(rgb)
        oracle.set_ground_truth(gt)
        ids = {p.id for p in pipeline.step(rgb).objects}
        reappeared = ids & ever_seen - {t.id for t in pipeline.registry.live()}
        assert not reappeared
        ever_seen |= ids
        assert pipeline.memory_stats().entries <= limit


def test_reset_forgets_objects_and_restarts_ids(clip):
    pipeline, oracle = _oracle_pipeline()
    rgb, gt = clip[0]
    oracle.set_ground_truth(gt)
    first = pipeline.step(rgb)
    assert first.objects
    pipeline.reset()
    assert pipeline.memory_stats().entries == 0
    again = pipeline.step(rgb)
    assert min(p.id for p in again.objects) == 1


def test_external_prompt_creates_an_object_at_that_bearing(clip):
    pipeline, oracle = _oracle_pipeline(**{'discovery.enabled': False})
    rgb, gt = clip[0]
    oracle.set_ground_truth(gt)
    assert pipeline.step(rgb).objects == []
    ys, xs = np.nonzero(gt == 4)  # the large object
    prompt = Prompt.from_erp_pixel(float(xs[len(xs) // 2]), float(ys[len(ys) // 2]),
                                   gt.shape[1], gt.shape[0])
    result = pipeline.step(rgb, prompts=[prompt])
    assert len(result.objects) == 1
    created = result.labels == result.objects[0].id
    inter = (created & (gt == 4)).sum()
    assert inter / (created | (gt == 4)).sum() > 0.9


@pytest.mark.parametrize('frame', [np.zeros((100, 100, 3), np.uint8),
                                   np.zeros((0, 0, 3), np.uint8)])
def test_bad_frames_are_rejected_with_the_shape(frame):
    pipeline, _ = _oracle_pipeline()
    with pytest.raises(ErpShapeError, match=r'\(' + str(frame.shape[0])):
        pipeline.step(frame)


def test_wrong_dtype_is_rejected():
    pipeline, _ = _oracle_pipeline()
    with pytest.raises(InvalidInputError, match='uint8'):
        pipeline.step(np.zeros((64, 128, 3), np.float32))


@pytest.mark.slow
def test_sam2_random_weights_step_is_deterministic_and_bounded():
    flat = {**RANDOM_SAM2_FLAT, 'patches.size_px': 128, 'patches.fov_deg': 120.0}
    frames = synth_frames()
    runs = []
    for _ in range(2):
        pipeline = SapPipeline(PipelineConfig.from_flat(flat))
        results = [pipeline.step(f) for f in frames]
        assert pipeline.memory_stats().entries <= pipeline.bank.entries_limit
        runs.append(results)
        pipeline.close()
    for a, b in zip(*runs):
        assert a.labels.shape == (64, 128) and a.labels.dtype == np.uint16
        np.testing.assert_array_equal(a.labels, b.labels)
        assert [p.id for p in a.objects] == [p.id for p in b.objects]
        for p in a.objects:
            assert p.embedding.shape == (256,)
            assert abs(np.linalg.norm(p.embedding) - 1.0) < 1e-4


class OneByOne:
    """A SAM2 segmenter that decodes each object alone (no batching), for comparison."""

    def __init__(self, inner: Sam2Segmenter) -> None:
        self.inner, self.low_res_px = inner, inner.low_res_px

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def track_many(self, view_index, requests):
        return track_each(self.inner, view_index, requests)


@pytest.mark.slow
def test_batched_decoding_gives_what_one_object_at_a_time_gives(monkeypatch):
    """Objects sharing a patch go through SAM2 together; the label maps do not change."""
    flat = {**RANDOM_SAM2_FLAT, 'patches.size_px': 128, 'patches.fov_deg': 120.0,
            'discovery.enabled': False}
    frames = synth_frames(3)
    config = PipelineConfig.from_flat(flat)
    bearings = erp_bearings(256, 128)
    seeds = [bearings @ lonlat_to_bearing(np.array(lon), np.array(0.0)) > np.cos(np.radians(12))
             for lon in (0.0, 20.0, 40.0)]  # three objects seen together in several patches
    batched = SapPipeline(config)
    batch_sizes = []
    real_track_groups = batched.segmenter.adapter.track_groups

    def spy(*args, **kwargs):
        results = real_track_groups(*args, **kwargs)
        batch_sizes.extend(len(group) for group in results)
        return results

    monkeypatch.setattr(batched.segmenter.adapter, 'track_groups', spy)
    single = SapPipeline(config, segmenter=OneByOne(Sam2Segmenter(config.model)))
    for pipeline in (batched, single):
        for mask in seeds:
            pipeline.add_object_mask(mask)
    for frame in frames:
        a, b = batched.step(frame), single.step(frame)
        assert [p.id for p in a.objects] == [p.id for p in b.objects]
        assert (a.labels == b.labels).mean() > 0.995
    assert batch_sizes and max(batch_sizes) >= 2  # batching really happened
    batched.close()
    single.close()


def test_duplicate_objects_on_the_sphere_are_merged_into_the_older_id(clip):
    pipeline, oracle = _oracle_pipeline(**{'discovery.enabled': False})
    rgb, gt = clip[0]
    oracle.set_ground_truth(gt)
    pipeline.step(rgb)
    large = gt == 4
    pipeline.add_object_mask(large)
    pipeline.add_object_mask(large)  # the same object seeded twice
    result = pipeline.step(rgb)
    assert [p.id for p in result.objects] == [1]
    assert pipeline.registry.live()[0].id == 1
    assert 2 not in pipeline.registry


@pytest.mark.slow
def test_sam2_conditioning_mask_comes_back_under_its_id():
    """SAM2 uses a mask input as the output on a conditioning patch: the seeded object keeps it."""
    flat = {'model.allow_random_weights': True, 'model.image_size': 128,
            'patches.size_px': 128, 'patches.fov_deg': 120.0, 'output.scale': 1.0,
            'discovery.enabled': False}
    pipeline = SapPipeline(PipelineConfig.from_flat(flat))
    frame = SynthScene(SceneSpec(seed=2)).render(SynthScene(SceneSpec(seed=2)).start_pose, 256)[0]
    mask = np.zeros((128, 256), bool)
    mask[52:76, 110:146] = True  # a box straight ahead, well inside the forward view
    pipeline.add_object_mask(mask)
    result = pipeline.step(frame)
    assert [p.id for p in result.objects][:1] == [1]
    inside = result.labels[mask]
    assert (inside == 1).mean() > 0.9
    pipeline.close()


def _cap_frame(lon_deg: float, radius_deg: float, width: int = 512):
    """An ERP frame with one bright cap on the equator and its label map (label 1)."""
    bearings = erp_bearings(width, width // 2)
    centre = lonlat_to_bearing(np.array(lon_deg), np.array(0.0))
    gt = (bearings @ centre >= np.cos(np.radians(radius_deg))).astype(np.uint16)
    rgb = np.repeat(np.where(gt > 0, 200, 60).astype(np.uint8)[..., None], 3, axis=-1)
    return rgb, gt


def test_fast_object_is_still_decoded_where_it_moved_to():
    """Culling dilates an extent by the object's motion: a cap jumping 60 deg a frame stays whole.

    With 60 deg views and a 5 deg margin, the views around the last extent alone miss the next
    position; the first jump (motion still unknown) loses half the cap, the later ones must not.
    """
    pipeline, oracle = _oracle_pipeline(**{
        'patches.fov_deg': 60.0, 'patches.size_px': 128, 'model.image_size': 128,
        'discovery.every_n_frames': 1000, 'discovery.uncovered_fraction': 1.0,
        'memory.culling_margin_deg': 5.0})
    jaccard = []
    for k in range(7):
        rgb, gt = _cap_frame(60.0 * k, 8.0)
        oracle.set_ground_truth(gt)
        result = pipeline.step(rgb)
        assert [p.id for p in result.objects] == [1]
        mine = result.labels == 1
        jaccard.append((mine & (gt > 0)).sum() / (mine | (gt > 0)).sum())
    assert pipeline.registry.get(1).motion_deg == pytest.approx(60.0, abs=2.0)
    assert min(jaccard[2:]) > 0.95, jaccard


def test_exhausted_ids_stop_new_objects_but_tracking_goes_on(clip, monkeypatch, caplog):
    """Past the last uint16 id the engine keeps its objects, creates none, and says so once."""
    monkeypatch.setattr('sap_ros.engine.objects.MAX_OBJECT_ID', 3)
    pipeline, oracle = _oracle_pipeline(**{'memory.retire_after_frames': 5})
    for rgb, gt in clip[:3]:
        oracle.set_ground_truth(gt)
        result = pipeline.step(rgb, prompts=[Prompt.from_erp_pixel(10.0, 10.0, 1024, 512)])
        assert {p.id for p in result.objects} == {1, 2, 3}
    assert pipeline.memory_stats().ids_left == 0
    exhausted = [r for r in caplog.records if 'ids exhausted' in r.getMessage()]
    assert len(exhausted) == 1 and 'reset' in exhausted[0].getMessage()
    pipeline.reset()
    assert pipeline.memory_stats().ids_left == 3


class SessionSpy:
    """The oracle with a segmenter session: records which calls ran inside one, and how many."""

    def __init__(self, oracle: OracleSegmenter) -> None:
        self.oracle, self.low_res_px = oracle, oracle.low_res_px
        self.depth, self.sessions, self.outside = 0, 0, []

    @contextlib.contextmanager
    def session(self):
        self.sessions += self.depth == 0
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def __getattr__(self, name):
        inner = getattr(self.oracle, name)
        if name not in ('begin_frame', 'track', 'track_many', 'discover'):
            return inner

        def call(*args, **kwargs):
            if self.depth == 0:
                self.outside.append(name)
            return inner(*args, **kwargs)
        return call


def test_every_segmenter_call_of_a_frame_runs_in_one_session(clip):
    """One autocast context per frame: SAM2 casts each weight once per frame, not per call."""
    config = PipelineConfig.from_flat({**ORACLE_FLAT, 'patches.size_px': 64,
                                       'model.image_size': 64})
    spy = SessionSpy(OracleSegmenter(PatchLayout.from_config(config.patches)))
    pipeline = SapPipeline(config, segmenter=spy)
    for rgb, gt in clip[:2]:
        spy.oracle.set_ground_truth(cv2.resize(gt, (512, 256), interpolation=cv2.INTER_NEAREST))
        pipeline.step(cv2.resize(rgb, (512, 256), interpolation=cv2.INTER_AREA))
    assert len(pipeline.registry) > 0  # tracking and discovery calls were made
    assert spy.outside == [] and spy.sessions == 2
