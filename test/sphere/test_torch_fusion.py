"""The device canvas (torch) against the host canvas (NumPy / cv2): same rules, same maps."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np
import pytest
import torch

from sap_ros.bench.probes import cap_scene, view_logits_from_labels
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.fusion import FusionMode, LabelCanvas, fuse_labels
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches
from sap_ros.sphere.torch_fusion import (
    TorchLabelCanvas,
    device_fusion_tables,
    fuse_labels_torch,
    labels_to_host,
)
from sap_ros.synth.scene import SceneSpec, SynthScene

LOW_PX = 32
LAYOUT = PatchLayout.build(90.0, 4 * LOW_PX)
OUT_HW = (128, 256)
MODES = [FusionMode.LEAST_DISTORTION, FusionMode.BLEND]
ViewLogits = List[Tuple[np.ndarray, np.ndarray]]


def paint_both(view_logits: ViewLogits, mode: FusionMode, hw: Tuple[int, int] = OUT_HW,
               views: Sequence[int] = LAYOUT.path) -> Tuple[np.ndarray, np.ndarray]:
    """Host and device label maps after painting the same logits in path order."""
    host = LabelCanvas(LAYOUT, hw, mode)
    device = TorchLabelCanvas(LAYOUT, hw, mode, device='cpu')
    for view in views:
        ids, logits = view_logits[view]
        host.paint_logits(view, logits, ids)
        device.paint_logits(view, torch.from_numpy(logits), ids.tolist())
    return host.labels.copy(), labels_to_host(device.labels)


def synth_logits(seed: int, width: int = 512) -> ViewLogits:
    scene = SynthScene(SceneSpec(seed=seed))
    _, gt = scene.render(scene.trajectory(1)[0], width)
    return view_logits_from_labels(LAYOUT, gt, LOW_PX)


@pytest.mark.parametrize('mode', MODES, ids=lambda m: m.value)
@pytest.mark.parametrize('seed', [0, 3])
def test_synthetic_scene_gives_the_same_map_and_ids(mode: FusionMode, seed: int) -> None:
    host, device = paint_both(synth_logits(seed), mode)
    assert device.dtype == np.uint16 and device.shape == OUT_HW
    assert len(np.unique(host)) > 5  # a scene with objects, not an empty map
    assert np.unique(device).tolist() == np.unique(host).tolist()
    assert (device == host).mean() >= 0.999


@pytest.mark.parametrize('mode', MODES, ids=lambda m: m.value)
def test_twenty_caps_and_a_partial_path_agree(mode: FusionMode) -> None:
    _, gt = cap_scene(20, 12.0, 512)
    # Only half the views painted: the blend's weights then differ per pixel.
    host, device = paint_both(view_logits_from_labels(LAYOUT, gt, LOW_PX), mode,
                              views=LAYOUT.path[::2])
    assert np.unique(device).tolist() == np.unique(host).tolist()
    assert (device == host).mean() >= 0.999


def test_blend_and_least_distortion_differ_where_views_disagree() -> None:
    """The mode matters on the device as on the host (not one rule under two names)."""
    logits = synth_logits(0)
    # One view votes for an object all over its image that no other view sees: least distortion
    # paints it wherever that view is the least distorted, the blend only where that view
    # outweighs all others (near its axis).
    ids, lg = logits[0]
    logits[0] = (np.append(ids, 999).astype(np.uint16),
                 np.concatenate([lg, np.full((1, LOW_PX, LOW_PX), 8.0, np.float32)]))
    maps = {mode: paint_both(logits, mode) for mode in MODES}
    for host, device in maps.values():
        assert (host == device).mean() >= 0.999
    blend_px = int((maps[FusionMode.BLEND][1] == 999).sum())
    assert 0 < blend_px < 0.8 * (maps[FusionMode.LEAST_DISTORTION][1] == 999).sum()


def test_blend_view_without_objects_votes_no_object() -> None:
    """A view that sees no object still counts in the blend.

    The object shrinks where that view outweighs the one that saw it (on both canvases).
    """
    seen_by, empty = LAYOUT.path[10], LAYOUT.path[11]
    everywhere = np.full((1, LOW_PX, LOW_PX), 8.0, np.float32)
    areas = []
    for views in ([seen_by], [seen_by, empty]):
        logits: ViewLogits = [(np.zeros(0, np.uint16), np.zeros((0, LOW_PX, LOW_PX),
                                                                 np.float32))] * len(LAYOUT)
        logits[seen_by] = (np.array([5], np.uint16), everywhere)
        host, device = paint_both(logits, FusionMode.BLEND, views=views)
        assert np.array_equal(host, device)
        areas.append(int((device == 5).sum()))
    assert 0 < areas[1] < 0.9 * areas[0]


@pytest.mark.parametrize('mode', MODES, ids=lambda m: m.value)
def test_label_patches_fuse_like_fuse_labels(mode: FusionMode) -> None:
    _, gt = cap_scene(8, 15.0, 512)
    patches = extract_patches(LAYOUT, gt.astype(np.int32), 4 * LOW_PX,
                              interpolation=cv2.INTER_NEAREST).astype(np.uint16)
    host = fuse_labels(LAYOUT, patches, OUT_HW, mode)
    device = fuse_labels_torch(LAYOUT, torch.from_numpy(patches.astype(np.int32)), OUT_HW, mode)
    assert np.array_equal(labels_to_host(device), host)


@pytest.mark.parametrize('mode', MODES, ids=lambda m: m.value)
def test_relabel_merges_and_erases_like_the_host_canvas(mode: FusionMode) -> None:
    logits = synth_logits(3)
    host = LabelCanvas(LAYOUT, OUT_HW, mode)
    device = TorchLabelCanvas(LAYOUT, OUT_HW, mode)
    for view in LAYOUT.path:
        ids, lg = logits[view]
        host.paint_logits(view, lg, ids)
        device.paint_logits(view, torch.from_numpy(lg), ids.tolist())
    present = [int(i) for i in np.unique(host.labels) if i]
    gone, merged, into = present[0], present[1], present[2]
    mapping = np.arange(65536, dtype=np.uint16)
    mapping[merged] = into
    mapping[gone] = 0  # erased
    for canvas in (host, device):
        canvas.relabel(mapping)
    expected = host.labels
    got = labels_to_host(device.labels)
    assert gone not in got and merged not in got and into in got
    assert (got == expected).mean() >= 0.999


def test_clear_forgets_and_tables_are_built_once_per_device() -> None:
    ids, lg = synth_logits(0)[LAYOUT.path[0]]
    canvas = TorchLabelCanvas(LAYOUT, OUT_HW, FusionMode.BLEND)
    canvas.paint_logits(LAYOUT.path[0], torch.from_numpy(lg), ids.tolist())
    assert canvas.labels.any()
    canvas.clear()
    assert not canvas.labels.any() and canvas.object_ids == []
    assert device_fusion_tables(LAYOUT, OUT_HW, 'cpu') is canvas.tables


@pytest.mark.parametrize('bad, error', [
    (dict(mode='median'), 'fusion mode'),
    (dict(logit_clip=0.0), 'logit_clip'),
])
def test_bad_settings_are_rejected(bad: dict, error: str) -> None:
    with pytest.raises(InvalidInputError, match=error):
        TorchLabelCanvas(LAYOUT, OUT_HW, **bad)


def test_logits_that_do_not_match_the_ids_are_rejected() -> None:
    canvas = TorchLabelCanvas(LAYOUT, OUT_HW)
    with pytest.raises(InvalidInputError, match='K = 2'):
        canvas.paint_logits(0, torch.zeros(1, LOW_PX, LOW_PX), [1, 2])
    with pytest.raises(InvalidInputError, match='65535'):
        canvas.paint_logits(0, torch.zeros(1, LOW_PX, LOW_PX), [70000])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
@pytest.mark.parametrize('mode', MODES, ids=lambda m: m.value)
def test_on_cuda_paints_without_a_host_sync_and_matches_the_cpu(mode: FusionMode) -> None:
    logits = synth_logits(0)
    maps = []
    for device in ('cpu', 'cuda'):
        canvas = TorchLabelCanvas(LAYOUT, OUT_HW, mode, device=device)
        canvas.paint_logits(0, torch.from_numpy(logits[0][1]).to(device),
                            logits[0][0].tolist())  # warm-up: tables, allocator
        canvas.clear()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            for view in LAYOUT.path:
                ids, lg = logits[view]
                upload = torch.from_numpy(lg).pin_memory().to(device, non_blocking=True)
                canvas.paint_logits(view, upload, ids.tolist())
            labels = canvas.labels
        finally:
            torch.cuda.set_sync_debug_mode('default')
        maps.append(labels_to_host(labels))
    assert (maps[0] == maps[1]).mean() >= 0.999


def test_blend_evidence_shrinks_back_after_a_crowded_frame() -> None:
    """A frame with many objects does not keep its evidence rows (one H x W row each) for ever."""
    canvas = TorchLabelCanvas(LAYOUT, OUT_HW, FusionMode.BLEND)
    view = LAYOUT.path[0]
    crowd = torch.full((40, LOW_PX, LOW_PX), 5.0)
    canvas.paint_logits(view, crowd, list(range(1, 41)))
    canvas.clear()
    canvas.paint_logits(view, crowd[:1], [1])
    canvas.clear()
    assert canvas._evidence.shape[0] <= 8
    canvas.paint_logits(view, crowd[:3], [4, 5, 6])  # and grows again when needed
    assert canvas.object_ids == [4, 5, 6]
