"""``sap_bench engine``'s non-network part: the frame's stages outside SAM2, host vs device path.

One frame of the engine without the network: sample every patch at ``image_size`` from the ERP
frame, paint each view's logits on the published canvas and the work grid (fusion), then the
object pointers and the extents (one host copy on the device path). Both paths
(:mod:`sap_ros.engine.frame_path`) run on the same frame and the same logits, frames interleaved
(numpy, torch, torch, numpy, ...) after one warm-up frame each (the tables are built then), median
per stage. The logits stand in for SAM2's: caps spread over the sphere, cut into each view at the
decoder grid (``view_logits_from_labels``); on the device path they are uploaded before the clock
starts (SAM2 leaves them there). The torch path's host synchronisations are counted in one more
frame (``count_host_syncs``).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch

from sap_ros.bench.probes import cap_scene, count_host_syncs, view_logits_from_labels
from sap_ros.engine.frame_path import (
    DEFAULT_WORK_HW,
    FrameOutput,
    NumpyFramePath,
    TorchFramePath,
)
from sap_ros.sphere.fusion import FusionMode
from sap_ros.sphere.layout import PatchLayout

NONNETWORK_STAGES = ('sample', 'fuse', 'pointers', 'total')
CAP_RADIUS_DEG = 10.0
FramePath = Union[NumpyFramePath, TorchFramePath]


def _timed_frame(path: FramePath, rgb: np.ndarray, size_px: int,
                 logits: Sequence[Tuple[List[int], Any]], ids: Sequence[int],
                 sync: Callable[[], None]) -> Tuple[Dict[str, float], FrameOutput]:
    """One frame's stages in ms (``sync`` before each clock stops)."""
    times: Dict[str, float] = {}
    start = time.perf_counter()
    path.sample(rgb, size_px)
    sync()
    times['sample'] = (time.perf_counter() - start) * 1e3
    t = time.perf_counter()
    path.begin_frame()
    for view in path.layout.frame_path(0):
        view_ids, view_logits = logits[view]
        path.paint(view, view_logits, view_ids)
    sync()
    times['fuse'] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    out = path.finish(ids)
    times['pointers'] = (time.perf_counter() - t) * 1e3
    times['total'] = (time.perf_counter() - start) * 1e3
    return times, out


def measure_nonnetwork(erp_width: int, image_size: int, n_objects: int, repeats: int,
                       device: str, fusion: str, fov_deg: float, overlap: float,
                       output_scale: float, progress: Callable[[str], None]) -> Dict[str, Any]:
    """``nonnetwork_*`` keys and ``host_syncs_per_frame`` of ``sap_bench engine``."""
    layout = PatchLayout.build(fov_deg, image_size, 'zigzag', overlap)
    height = erp_width // 2
    out_hw = (max(1, round(height * output_scale)), max(2, 2 * round(height * output_scale)))
    progress(f'non-network: {n_objects} caps on a {erp_width} px frame, patches '
             f'{image_size} px, label map {out_hw[1]}x{out_hw[0]}, {fusion}')
    rgb, gt = cap_scene(n_objects, CAP_RADIUS_DEG, erp_width)
    host_logits = view_logits_from_labels(layout, gt, max(1, image_size // 4))
    ids = sorted(int(i) for i in np.unique(gt) if i)
    target = torch.device(device)
    dev_logits = [(view_ids.tolist(), torch.from_numpy(lg).to(target))
                  for view_ids, lg in host_logits]
    numpy_logits = [(view_ids.tolist(), lg) for view_ids, lg in host_logits]

    def sync() -> None:
        if target.type == 'cuda':
            torch.cuda.synchronize(target)

    paths: Dict[str, Tuple[FramePath, Sequence[Tuple[List[int], Any]]]] = {
        'numpy': (NumpyFramePath(layout, out_hw, DEFAULT_WORK_HW, FusionMode(fusion)),
                  numpy_logits),
        'torch': (TorchFramePath(layout, out_hw, DEFAULT_WORK_HW, FusionMode(fusion),
                                 device=target), dev_logits)}
    stages: Dict[str, List[Dict[str, float]]] = {name: [] for name in paths}
    outputs: Dict[str, FrameOutput] = {}
    order = ['numpy', 'torch']
    for k in range(repeats + 1):  # frame 0 of each path builds its tables: not counted
        for name in (order if k % 2 == 0 else order[::-1]):
            path, logits = paths[name]
            times, outputs[name] = _timed_frame(path, rgb, image_size, logits, ids, sync)
            progress(f'non-network: {name} frame {k}/{repeats}: '
                     + ', '.join(f'{s} {times[s]:.0f} ms' for s in NONNETWORK_STAGES))
            if k:
                stages[name].append(times)
    torch_path, logits = paths['torch']
    with count_host_syncs() as syncs:
        _timed_frame(torch_path, rgb, image_size, logits, ids, lambda: None)
    ms = {name: {s: float(statistics.median(t[s] for t in stages[name]))
                 for s in NONNETWORK_STAGES} for name in paths}
    equal = float((outputs['numpy'].labels == outputs['torch'].labels).mean())
    return dict(nonnetwork_device=str(target), nonnetwork_erp_width=erp_width,
                nonnetwork_image_size=image_size, nonnetwork_objects=len(ids),
                nonnetwork_fusion=fusion, nonnetwork_ms=ms,
                nonnetwork_speedup=ms['numpy']['total'] / ms['torch']['total'],
                nonnetwork_labels_equal=equal, host_syncs_per_frame=syncs.count)
