"""The engine on the device frame path (``engine.frame_path: torch``), run here on the CPU.

What a user on CUDA gets: the same label maps and ids as the host path, SAM2 outputs that stay
tensors through fusion, culling and discovery, and host reads per frame that do not grow with the
number of objects.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import cv2
import numpy as np
import pytest
from random_sam2 import RANDOM_SAM2_FLAT, synth_frames
import torch

from sap_ros.bench.probes import cap_scene, count_host_syncs
from sap_ros.config import PipelineConfig
from sap_ros.engine.frame_path import NumpyFramePath, TorchFramePath, work_reach
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.pixels import label_counts
from sap_ros.engine.segmenter import Candidates, Sam2Segmenter, SegmentOutput, TrackRequest
from sap_ros.engine.types import FrameResult, Prompt
from sap_ros.errors import ConfigError
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.layout import PatchLayout
from sap_ros.synth.scene import SceneSpec, SynthScene

FLAT = {'patches.fov_deg': 90.0, 'patches.size_px': 128, 'model.image_size': 128,
        'model.device': 'cpu', 'output.scale': 1.0, 'discovery.every_n_frames': 2,
        'discovery.points_per_side': 16, 'discovery.max_new_per_frame': 64,
        'discovery.min_area_fraction': 0.0005}
SHARED_DATA = Path(os.environ.get('SAP_SHARED_DATA', '')
                   or Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data')
BEACH = SHARED_DATA / 'leader360v_beach'


def _oracle_run(frames: Sequence[Tuple[np.ndarray, np.ndarray]], path: str,
                segmenter_type: Any = OracleSegmenter, **overrides: Any
                ) -> Tuple[SapPipeline, List[FrameResult]]:
    config = PipelineConfig.from_flat({**FLAT, 'engine.frame_path': path, **overrides})
    oracle = segmenter_type(PatchLayout.from_config(config.patches))
    pipeline = SapPipeline(config, segmenter=oracle)
    results = []
    for rgb, gt in frames:
        oracle.set_ground_truth(gt)
        results.append(pipeline.step(rgb))
    return pipeline, results


def _assert_same_frames(host: List[FrameResult], device: List[FrameResult]) -> None:
    for k, (a, b) in enumerate(zip(host, device)):
        equal = float((a.labels == b.labels).mean())
        assert equal >= 0.999, (k, equal)
        assert [o.id for o in a.objects] == [o.id for o in b.objects], k
        for x, y in zip(a.objects, b.objects):
            assert abs(x.area_px - y.area_px) <= max(2, 0.01 * x.area_px), (k, x.id)
            assert np.degrees(np.arccos(min(1.0, float(x.bearing @ y.bearing)))) < 1.0


@pytest.fixture(scope='module')
def clip():
    scene = SynthScene(SceneSpec(seed=3))
    return [scene.render(pose, 512) for pose in scene.trajectory(4, turn_deg_per_frame=6.0)]


@pytest.mark.parametrize('fusion', ['least_distortion', 'blend'])
def test_torch_path_gives_the_host_paths_label_maps_and_ids(clip, fusion):
    host_pipeline, host = _oracle_run(clip, 'numpy', **{'output.fusion': fusion})
    dev_pipeline, device = _oracle_run(clip, 'torch', **{'output.fusion': fusion})
    assert isinstance(host_pipeline._path, NumpyFramePath)
    assert isinstance(dev_pipeline._path, TorchFramePath)
    assert host[-1].objects  # there is something to compare
    _assert_same_frames(host, device)


@pytest.mark.skipif(not (BEACH / 'labels' / '00000.png').exists(),
                    reason=f'real frame not found: {BEACH} (the team data, ../shared/data)')
def test_torch_path_matches_on_a_real_frame():
    rgb = cv2.cvtColor(cv2.imread(str(BEACH / 'frames' / '00000.jpg')), cv2.COLOR_BGR2RGB)
    seg = cv2.imread(str(BEACH / 'labels' / '00000.png'), cv2.IMREAD_UNCHANGED)
    rgb = cv2.resize(rgb, (512, 256), interpolation=cv2.INTER_AREA)
    seg = cv2.resize(seg, (512, 256), interpolation=cv2.INTER_NEAREST)
    gt = np.where(seg == 255, 0, seg.astype(np.uint16) + 1).astype(np.uint16)
    frames = [(rgb, gt), (rgb, gt)]
    for fusion in ('least_distortion', 'blend'):
        _assert_same_frames(_oracle_run(frames, 'numpy', **{'output.fusion': fusion})[1],
                            _oracle_run(frames, 'torch', **{'output.fusion': fusion})[1])


def test_frame_path_choice_follows_the_device():
    config = PipelineConfig.from_flat({**FLAT, 'model.device': 'cpu'})
    pipeline = SapPipeline(config, segmenter=OracleSegmenter(PatchLayout.from_config(
        config.patches)))
    assert pipeline.path_kind.value == 'numpy'  # auto on a CPU: the faster host path
    with pytest.raises(ConfigError, match='engine.frame_path'):
        PipelineConfig.from_flat({**FLAT, 'engine.frame_path': 'gpu'})


def test_sam2_outputs_stay_tensors_through_the_engine():
    """SAM2 with device outputs (what CUDA gets) gives what SAM2 with host outputs gives."""
    flat = {**RANDOM_SAM2_FLAT, 'model.device': 'cpu', 'engine.frame_path': 'torch',
            'patches.size_px': 128, 'discovery.every_n_frames': 1}
    config = PipelineConfig.from_flat(flat)
    device = SapPipeline(config)
    assert device.segmenter.device_outputs and device.input_px == 128
    host = SapPipeline(config, segmenter=Sam2Segmenter(config.model, device_outputs=False))
    seen_tensor: List[bool] = []
    paint = device._frame_path((64, 128)).paint

    def spy(view: int, logits: Any, ids: Sequence[int]) -> None:
        if len(ids):
            seen_tensor.append(isinstance(logits, torch.Tensor))
        paint(view, logits, ids)

    device._path.paint = spy  # type: ignore[method-assign]
    for rgb in synth_frames(3, width=256):
        a, b = host.step(rgb), device.step(rgb)
        assert np.array_equal(a.labels, b.labels)
        assert [o.id for o in a.objects] == [o.id for o in b.objects]
        for x, y in zip(a.objects, b.objects):
            assert x.score == pytest.approx(y.score, abs=1e-6)
            np.testing.assert_allclose(x.embedding, y.embedding, atol=1e-5)
    assert seen_tensor and all(seen_tensor)  # the logits reached fusion as tensors


class TensorOracle(OracleSegmenter):
    """The oracle answering as SAM2 with device outputs does: tensor logits, ``nonempty`` set."""

    @staticmethod
    def _as_device(out: SegmentOutput) -> SegmentOutput:
        if isinstance(out.logits, torch.Tensor):  # the oracle's track_many calls our track
            return out
        logits = np.asarray(out.logits)
        return SegmentOutput(torch.from_numpy(logits), out.iou, out.object_score, out.obj_ptr,
                             out.memory, nonempty=bool((logits > 0).any()))

    def track(self, view_index: int, memory: MemoryContext, **kwargs: Any) -> SegmentOutput:
        kwargs = {k: _quiet_host(v) for k, v in kwargs.items()}
        return self._as_device(super().track(view_index, memory, **kwargs))

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        requests = [TrackRequest(r.memory, _quiet_host(r.mask_prompt), _quiet_host(r.prior))
                    for r in requests]
        return [self._as_device(out) for out in super().track_many(view_index, requests)]

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> List[Candidates]:
        """One row per point, as SAM2 (the oracle's segment under it, or nothing there)."""
        rows = []
        for point in np.asarray(points_px):
            found = super().discover(view_index, point[None])[0]
            if len(found.iou):
                rows.append((np.asarray(found.logits)[0], np.asarray(found.iou)[0]))
            else:
                rows.append((np.full((1, self.low_res_px, self.low_res_px), -1, np.float32),
                             np.zeros(1, np.float32)))
        batches = [rows[k:k + points_per_batch] for k in range(0, len(rows), points_per_batch)]
        return [Candidates(torch.from_numpy(np.stack([r[0] for r in b])),
                           torch.from_numpy(np.stack([r[1] for r in b]))) for b in batches]


def _quiet_host(value: Any) -> Any:
    """A tensor input as NumPy without the counted ``Tensor`` methods.

    The stand-in segmenter's own reads are not the engine's (SAM2 takes its inputs on the device).
    """
    if isinstance(value, torch.Tensor):
        return torch._C.TensorBase.numpy(value)
    return value


def _frame_syncs(n_objects: int) -> Dict[str, Any]:
    """Host reads of the engine itself in one torch-path frame (the segmenter reads nothing)."""
    rgb, gt = cap_scene(n_objects, 10.0, 512)
    pipeline, _ = _oracle_run([(rgb, gt)] * 2, 'torch', TensorOracle)
    assert len(pipeline.registry.live()) == n_objects  # everything was found
    pipeline.segmenter.set_ground_truth(gt)
    sighting = pipeline._sighting
    sightings = []

    def counted(*args: Any) -> bool:
        seen = sighting(*args)
        sightings.append(seen)
        return seen

    pipeline._sighting = counted  # type: ignore[method-assign]
    with count_host_syncs() as syncs:
        result = pipeline.step(rgb)
    schedule = pipeline.last_schedule
    return {'syncs': syncs.count, 'calls': syncs.calls, 'objects': len(result.objects),
            'sightings': sum(sightings),
            'searched': len(schedule.discover) if schedule else len(pipeline.layout)}


def test_host_reads_per_frame_do_not_grow_with_objects():
    runs = {n: _frame_syncs(n) for n in (1, 20)}
    assert runs[1]['objects'] == 1 and runs[20]['objects'] == 20
    n_views = len(PatchLayout.from_config(PipelineConfig.from_flat(FLAT).patches))
    for run in runs.values():
        # One download, at most one read per patch visited (the caps of its sightings) and two
        # per patch searched (the prompt grid's flags, skipped where no painted view reaches;
        # the per-mask numbers of all its mask-decoder batches, read once).
        bound = 1 + n_views + 2 * run['searched']
        assert run['syncs'] <= bound, (run['syncs'], bound, run['calls'])
    # Reads are per patch, not per (object, patch) sighting.
    assert runs[20]['sightings'] > runs[20]['syncs'], runs[20]
    # One object reaches few views: most searched patches skip the prompt grid's read.
    assert runs[1]['syncs'] < runs[20]['syncs'], (runs[1], runs[20])


def test_work_reach_names_exactly_the_views_that_see_a_painted_view():
    """``may_cover`` is False exactly where the work grid re-projects to nothing (no read)."""
    layout = PatchLayout.from_config(PipelineConfig.from_flat(FLAT).patches)
    path = TorchFramePath(layout, (256, 512), device='cpu')
    low, views = 32, range(len(layout))
    reach = work_reach(layout, path.work.erp_hw, low)
    for painted in views:
        path.begin_frame()
        assert not any(path.may_cover(v, low) for v in views)
        path.paint(painted, torch.full((1, low, low), 5.0), [7])  # the whole view is object 7
        shows = [bool((path.project_work(v, low) != 0).any()) for v in views]
        assert shows == reach[:, painted].tolist(), painted
        assert [path.may_cover(v, low) for v in views] == shows
    assert 0 < int(reach.sum()) < reach.size  # some views see each other, some do not


class PromptRecorder(TensorOracle):
    """:class:`TensorOracle` recording every discovery prompt (view, points).

    Known objects are absent in odd views: there only the work grid (objects painted in other
    views) covers them, so the prompts depend on reading it.
    """

    def __init__(self, layout: PatchLayout) -> None:
        super().__init__(layout)
        self.prompts: List[Tuple[int, np.ndarray]] = []

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        outs = super().track_many(view_index, requests)
        if view_index % 2 == 0:
            return outs
        return [SegmentOutput(torch.full_like(torch.as_tensor(o.logits), -1.0), o.iou,
                              o.object_score, o.obj_ptr, o.memory, nonempty=False) for o in outs]

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> List[Candidates]:
        self.prompts.append((view_index, np.array(points_px)))
        return super().discover(view_index, points_px, points_per_batch)


@pytest.mark.parametrize('n_objects', [0, 3])
def test_skipping_the_free_point_read_prompts_and_finds_the_same(n_objects, monkeypatch):
    """Where no painted view reaches, every grid point is free: the same prompts, no read."""
    rgb, gt = cap_scene(max(1, n_objects), 10.0, 512)
    gt = gt if n_objects else np.zeros_like(gt)

    def run() -> Tuple[List[Tuple[int, np.ndarray]], List[FrameResult], int]:
        with count_host_syncs() as syncs:
            pipeline, results = _oracle_run([(rgb, gt)] * 3, 'torch', PromptRecorder)
        return pipeline.segmenter.prompts, results, syncs.count

    prompts, results, reads = run()
    monkeypatch.setattr(TorchFramePath, 'may_cover', lambda self, view, size_px: True)
    always_prompts, always_results, always_reads = run()
    assert [v for v, _ in prompts] == [v for v, _ in always_prompts]
    for (_, ours), (_, theirs) in zip(prompts, always_prompts):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(results, always_results):
        np.testing.assert_array_equal(ours.labels, theirs.labels)
        assert [o.id for o in ours.objects] == [o.id for o in theirs.objects]
    assert len(results[-1].objects) == n_objects
    assert reads < always_reads, (reads, always_reads)


class PointRecorder:
    """A segmenter reading patches at its own ``input_px`` (as SAM2 at ``model.image_size``)."""

    low_res_px = 16
    input_px = 64

    def __init__(self) -> None:
        self.patch_shapes: List[Tuple[int, ...]] = []
        self.points: List[np.ndarray] = []

    def begin_frame(self, patches: Any, erp: np.ndarray, views: Any = None) -> None:
        self.patch_shapes.append(tuple(patches.shape))

    def track(self, view_index: int, memory: MemoryContext, **kwargs: Any) -> SegmentOutput:
        self.points.append(np.asarray(kwargs['points_px']))
        return SegmentOutput(np.zeros((16, 16), np.float32), 0.0, 0.0, None, None)

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        return []

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> List[Candidates]:
        return [Candidates(np.zeros((0, 3, 16, 16), np.float32), np.zeros((0, 3), np.float32))]

    def close(self) -> None:
        pass


def test_torch_path_samples_at_the_segmenters_size_and_scales_clicks_to_it():
    """Patches at ``input_px`` (no resize in SAM2); a click on a view's axis lands mid-patch."""
    config = PipelineConfig.from_flat({**FLAT, 'engine.frame_path': 'torch',
                                       'discovery.enabled': False})
    recorder = PointRecorder()
    pipeline = SapPipeline(config, segmenter=recorder)
    assert pipeline.input_px == 64 != pipeline.layout.size_px
    view = 5
    axis = pipeline.layout.axes[view]
    pipeline.step(np.zeros((256, 512, 3), np.uint8), [Prompt(axis)])
    assert recorder.patch_shapes[-1][1:] == (3, 64, 64)
    assert len(recorder.points) == 1
    np.testing.assert_allclose(recorder.points[0], [[31.5, 31.5]], atol=0.05)


def test_label_counts_of_a_device_patch_read_back_once():
    """``engine.mask_prompt`` counts each object's prior pixels with one read (no bincount)."""
    labels = torch.zeros((32, 32), dtype=torch.int32)
    labels[:4, :5] = 7
    labels[10:12, :] = 300
    with count_host_syncs() as syncs:
        counts = label_counts(labels, [7, 300, 9])
    assert counts == {7: 20, 300: 64, 9: 0}
    assert counts == label_counts(labels.numpy(), [7, 300, 9])
    assert sum(call != 'Tensor.to' for call in syncs.calls) == 1
