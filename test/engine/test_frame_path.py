"""The frame's non-network part on the host and on the device: same outputs, one host copy."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import pytest
import torch

from sap_ros.bench.probes import cap_scene, count_host_syncs, view_logits_from_labels
from sap_ros.engine.frame_path import (
    FrameOutput,
    NumpyFramePath,
    PointerInfo,
    TorchFramePath,
    make_frame_path,
)
from sap_ros.sphere.fusion import FusionMode
from sap_ros.sphere.layout import PatchLayout
from sap_ros.synth.scene import SceneSpec, SynthScene

LOW_PX = 32
LAYOUT = PatchLayout.build(90.0, 4 * LOW_PX)
OUT_HW = (128, 256)
WORK_HW = (64, 128)
MODES = [FusionMode.LEAST_DISTORTION, FusionMode.BLEND]
# The shared data lies next to the repository (../shared/data); SAP_SHARED_DATA points elsewhere
# (e.g. from a git worktree).
SHARED_DATA = Path(os.environ.get('SAP_SHARED_DATA', '')
                   or Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data')
BEACH = SHARED_DATA / 'leader360v_beach'
ViewLogits = List[Tuple[np.ndarray, np.ndarray]]


def run_frame(path, rgb: np.ndarray, view_logits: ViewLogits, ids: Sequence[int],
              views: Sequence[int] = LAYOUT.path) -> Tuple[np.ndarray, FrameOutput]:
    """One frame through a frame path: (patches on the host as (N, S, S, 3), output)."""
    patches = path.sample(rgb, 4 * LOW_PX)
    path.begin_frame()
    for view in views:
        view_ids, logits = view_logits[view]
        if isinstance(path, TorchFramePath):
            path.paint(view, torch.from_numpy(logits), view_ids.tolist())
        else:
            path.paint(view, logits, view_ids)
    out = path.finish(ids)
    if isinstance(patches, torch.Tensor):
        patches = patches.permute(0, 2, 3, 1).numpy()
    return patches, out


def compare_paths(rgb: np.ndarray, gt: np.ndarray, mode: FusionMode) -> None:
    """Both paths on one frame: patches, label maps, pointer ids and values, extents."""
    view_logits = view_logits_from_labels(LAYOUT, gt, LOW_PX)
    ids = sorted(int(i) for i in np.unique(gt) if i)
    host_patches, host = run_frame(NumpyFramePath(LAYOUT, OUT_HW, WORK_HW, mode), rgb,
                                   view_logits, ids)
    dev_patches, dev = run_frame(TorchFramePath(LAYOUT, OUT_HW, WORK_HW, mode, device='cpu'),
                                 rgb, view_logits, ids)
    assert np.abs(dev_patches - host_patches.astype(np.float32)).mean() < 1.0
    assert dev.labels.dtype == np.uint16 and dev.labels.shape == OUT_HW
    assert len(host.pointers) >= 3
    assert (dev.labels == host.labels).mean() >= 0.999
    assert [p.id for p in dev.pointers] == [p.id for p in host.pointers]
    # The ids on each map, as the engine reads them (no pass over the map on the host).
    for out in (host, dev):
        assert out.on_map == sorted(int(i) for i in np.unique(out.labels) if i in ids)
    for a, b in zip(host.pointers, dev.pointers):
        assert b.solid_angle_sr == pytest.approx(a.solid_angle_sr, rel=0.02, abs=1e-4), a.id
        assert float(a.bearing @ b.bearing) > np.cos(np.radians(1.0)), a.id
    assert sorted(dev.extents) == sorted(host.extents)
    assert 0.0 <= host.uncovered_fraction < 1.0  # dense real segments: 0
    assert dev.uncovered_fraction == pytest.approx(host.uncovered_fraction, abs=0.002)
    assert sorted(dev.work_masks) == sorted(host.work_masks) and host.work_masks
    assert dev.work_labels.dtype == np.uint16 and dev.work_labels.shape == WORK_HW
    assert (dev.work_labels == host.work_labels).mean() >= 0.999
    assert sum(mask.any() for mask in host.work_masks.values()) >= 3
    for object_id, mask in host.work_masks.items():
        assert mask.shape == WORK_HW, object_id
        assert (dev.work_masks[object_id] == mask).mean() >= 0.999, object_id
    for object_id, (centroid, radius) in host.extents.items():
        dev_centroid, dev_radius = dev.extents[object_id]
        assert float(centroid @ dev_centroid) > np.cos(np.radians(1.0)), object_id
        assert dev_radius == pytest.approx(radius, abs=2.0), object_id


@pytest.mark.parametrize('mode', MODES, ids=lambda m: m.value)
def test_synthetic_scene_gives_the_same_frame_on_both_paths(mode: FusionMode) -> None:
    scene = SynthScene(SceneSpec(seed=5))
    rgb, gt = scene.render(scene.trajectory(1)[0], 512)
    compare_paths(rgb, gt, mode)


@pytest.mark.skipif(not BEACH.is_dir(), reason=f'real sample data not found at {BEACH} '
                                                '(../shared/data is not part of the repo)')
@pytest.mark.parametrize('mode', MODES, ids=lambda m: m.value)
def test_real_frame_gives_the_same_frame_on_both_paths(mode: FusionMode) -> None:
    """A real 360 frame (leader360v beach) and its manual segments as the objects."""
    rgb = cv2.cvtColor(cv2.imread(str(BEACH / 'frames' / '00000.jpg')), cv2.COLOR_BGR2RGB)
    seg = cv2.imread(str(BEACH / 'labels' / '00000.png'), cv2.IMREAD_UNCHANGED)
    rgb = cv2.resize(rgb, (512, 256), interpolation=cv2.INTER_AREA)
    seg = cv2.resize(seg, (512, 256), interpolation=cv2.INTER_NEAREST)
    gt = np.where(seg == 255, 0, seg.astype(np.uint16) + 1).astype(np.uint16)  # 255 = ignore
    compare_paths(rgb, gt, mode)


def torch_frame_syncs(n_objects: int, views: Sequence[int]) -> Tuple[int, List[str], int]:
    """Host syncs of one warm torch-path frame (sample, fuse, pointers/extents, download)."""
    rgb, gt = cap_scene(n_objects, 10.0, 512)
    view_logits = view_logits_from_labels(LAYOUT, gt, LOW_PX)
    device_logits = [(ids.tolist(), torch.from_numpy(lg)) for ids, lg in view_logits]
    path = TorchFramePath(LAYOUT, OUT_HW, WORK_HW, FusionMode.BLEND, device='cpu')
    ids = list(range(1, n_objects + 1))

    def frame() -> FrameOutput:
        path.sample(rgb, 4 * LOW_PX)
        path.begin_frame()
        for view in views:
            path.paint(view, device_logits[view][1], device_logits[view][0])
            path.project_work(view, LOW_PX)
        return path.finish(ids)

    frame()  # warm-up: tables are built (and uploaded) once
    with count_host_syncs() as syncs:
        out = frame()
    return syncs.count, syncs.calls, len(out.pointers)


def test_host_syncs_per_frame_do_not_grow_with_objects_or_views() -> None:
    runs = {(n, len(views)): torch_frame_syncs(n, views)
            for n, views in ((1, LAYOUT.path), (20, LAYOUT.path), (20, LAYOUT.path[:4]))}
    found = {key: run[2] for key, run in runs.items()}
    assert found[(1, 26)] == 1 and found[(20, 26)] == 20 and found[(20, 4)] > 0  # work done
    # The one download per frame, whatever the objects and views.
    assert {run[0] for run in runs.values()} == {1}, {key: run[1] for key, run in runs.items()}


def test_the_counter_sees_host_reads() -> None:
    """The counter sees host reads (so the count above is not blind)."""
    labels = torch.zeros(OUT_HW, dtype=torch.int32)
    with count_host_syncs() as syncs:
        labels.numpy()
        bool(labels.any())
        labels.sum().item()
        labels.to('cpu')
    assert syncs.count == 4


def test_chooser_builds_the_path_of_the_device() -> None:
    assert isinstance(make_frame_path('cpu', LAYOUT, OUT_HW), NumpyFramePath)
    if torch.cuda.is_available():
        assert isinstance(make_frame_path('cuda', LAYOUT, OUT_HW), TorchFramePath)


def test_pointer_info_reaches_the_records_on_both_paths() -> None:
    rgb, gt = cap_scene(3, 15.0, 512)
    view_logits = view_logits_from_labels(LAYOUT, gt, LOW_PX)
    info = PointerInfo(scores={2: 0.25}, ages={2: 7}, frames_since_seen={3: 1},
                       embeddings={1: np.ones(256)})
    for path in (NumpyFramePath(LAYOUT, OUT_HW, WORK_HW),
                 TorchFramePath(LAYOUT, OUT_HW, WORK_HW, device='cpu')):
        path.begin_frame()
        for view in LAYOUT.path:
            ids, lg = view_logits[view]
            path.paint(view, torch.from_numpy(lg) if isinstance(path, TorchFramePath) else lg,
                       ids.tolist())
        # Id 3 is not asked for: it is in the map but gets no record; 9 is absent.
        out = path.finish([1, 2, 9], info)
        by_id = {p.id: p for p in out.pointers}
        assert sorted(by_id) == [1, 2] and 3 in out.labels
        assert by_id[2].score == 0.25 and by_id[2].age_frames == 7
        assert np.isclose(np.linalg.norm(by_id[1].embedding), 1.0)
        assert sorted(out.extents) == [1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
def test_cuda_frame_queues_without_a_sync_until_the_download() -> None:
    rgb, gt = cap_scene(20, 10.0, 512)
    view_logits = [(ids.tolist(), torch.from_numpy(lg).cuda())
                   for ids, lg in view_logits_from_labels(LAYOUT, gt, LOW_PX)]
    path = TorchFramePath(LAYOUT, OUT_HW, WORK_HW, FusionMode.BLEND, device='cuda')
    ids = list(range(1, 21))

    def queue_frame() -> None:
        path.sample(rgb, 4 * LOW_PX)
        path.begin_frame()
        for view in LAYOUT.path:
            path.paint(view, view_logits[view][1], view_logits[view][0])
            path.project_work(view, LOW_PX)

    queue_frame()  # warm-up: the tables are built and uploaded (synchronously) once
    path.finish(ids)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')  # any synchronising CUDA call raises
    try:
        queue_frame()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert len(path.finish(ids).pointers) == 20
