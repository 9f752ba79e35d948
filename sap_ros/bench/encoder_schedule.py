"""``sap_bench engine``, encoder schedule part: encode only where needed vs every view.

Two pipelines, side by side in one run and frame by frame interleaved, over the same sequence:
a camera turning on the spot in front of a few caps that stay in a small part of the sphere. One
pipeline has ``engine.encode_all_views`` off (the schedule), the other on (every view). Both
answer with the geometric oracle (so J and id switches say whether the schedule loses
anything) wrapped in :class:`EncoderCostSegmenter`, which counts the patches encoded and pays a
fixed cost per patch for the image encoder the oracle does not have (``encode_ms_per_view``,
slept, so the machine's load does not change it). ``encoder_schedule_speedup`` is the ratio of
the two pipelines' mean frame times: the stand-in encoder plus everything the engine really does
(extraction, oracle decoding, discovery, fusion).

Both pipelines set ``discovery.uncovered_fraction`` to 1: a scene of a few caps leaves most of
the sphere unlabelled, and above that fraction discovery searches every view every frame in
either mode (the rule of ``discovery.uncovered_fraction``; with real SAM2 masks the background
surfaces are objects too and cover most of the sphere).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sap_ros.config import PipelineConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.segmenter import Candidates, Pixels, SegmentOutput, TrackRequest
from sap_ros.eval.metrics import ClipEvaluator
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.geometry import erp_bearings, lonlat_to_bearing
from sap_ros.sphere.layout import PatchLayout

# (lon_deg, lat_deg, radius_deg) of the caps in the world frame: a few objects ahead.
SCHEDULE_CAPS = ((0.0, 6.0, 8.0), (14.0, -4.0, 5.0), (-10.0, 0.0, 5.0))
TURN_DEG_PER_FRAME = 2.0


class EncoderCostSegmenter:
    """The oracle with a stand-in image-encoder cost: ``encode_ms_per_view`` per encoded patch."""

    def __init__(self, oracle: OracleSegmenter, encode_ms_per_view: float) -> None:
        """Wrap ``oracle``; no patch encoded yet."""
        self.oracle = oracle
        self.low_res_px = oracle.low_res_px
        self.encode_ms_per_view = float(encode_ms_per_view)
        self.encoded_views: List[int] = []  # per frame

    def begin_frame(self, patches: Pixels, erp: np.ndarray,
                    views: Optional[Sequence[int]] = None) -> None:
        """Pay the encoder cost of ``len(patches)`` patches, then let the oracle cut them."""
        self.encoded_views.append(len(patches))
        time.sleep(self.encode_ms_per_view * len(patches) / 1000.0)
        self.oracle.begin_frame(patches, erp, views=views)

    def track(self, view_index: int, memory: MemoryContext, **kwargs: Any) -> SegmentOutput:
        """The oracle's answer."""
        return self.oracle.track(view_index, memory, **kwargs)

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """The oracle's answers."""
        return self.oracle.track_many(view_index, requests)

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> List[Candidates]:
        """The oracle's segments under the points."""
        return self.oracle.discover(view_index, points_px, points_per_batch)

    def close(self) -> None:
        """Nothing to free."""
        self.oracle.close()


def schedule_frame(caps: Sequence[Tuple[float, float, float]], yaw_deg: float, width: int
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """ERP RGB and labels (cap ``k`` = ``k + 1``) seen by a camera turned ``yaw_deg`` left."""
    bearings = erp_bearings(width, width // 2)
    labels = np.zeros((width // 2, width), np.uint16)
    for label, (lon, lat, radius) in enumerate(caps, start=1):
        centre = lonlat_to_bearing(np.array(lon - yaw_deg), np.array(lat))
        labels[bearings @ centre >= np.cos(np.radians(radius))] = label
    palette = np.random.default_rng(1).integers(40, 255, (len(caps) + 1, 3)).astype(np.uint8)
    palette[0] = 128
    return palette[labels], labels


def measure_encoder_schedule(frames: int, erp_width: int, patch_px: int,
                             encode_ms_per_view: float, every_n_frames: int,
                             progress: Callable[[str], None] = lambda _: None
                             ) -> Dict[str, Any]:
    """The two pipelines over the same frames -> the ``schedule_*`` keys of the engine bench."""
    runs: Dict[bool, Tuple[SapPipeline, EncoderCostSegmenter]] = {}
    for encode_all in (False, True):
        config = PipelineConfig.from_flat({
            'patches.size_px': patch_px, 'model.image_size': max(64, patch_px // 32 * 32),
            'output.scale': 1.0, 'discovery.every_n_frames': every_n_frames,
            'discovery.uncovered_fraction': 1.0, 'discovery.points_per_side': 16,
            'discovery.min_area_fraction': 0.0005, 'engine.encode_all_views': encode_all})
        seg = EncoderCostSegmenter(OracleSegmenter(PatchLayout.from_config(config.patches)),
                                   encode_ms_per_view)
        runs[encode_all] = (SapPipeline(config, segmenter=seg), seg)
    evaluators = {mode: ClipEvaluator(gt_background=0, gt_ignore=None) for mode in runs}
    frame_ms: Dict[bool, List[float]] = {mode: [] for mode in runs}
    object_views: List[float] = []
    for k in range(frames):
        rgb, gt = schedule_frame(SCHEDULE_CAPS, TURN_DEG_PER_FRAME * k, erp_width)
        for mode, (pipeline, seg) in runs.items():
            seg.oracle.set_ground_truth(gt)
            t0 = time.perf_counter()
            result = pipeline.step(rgb)
            frame_ms[mode].append((time.perf_counter() - t0) * 1000.0)
            evaluators[mode].add_frame(result.labels, gt)
        extents = runs[False][0].extents
        union = np.zeros(len(runs[False][0].layout), bool)
        for views in extents.views_of.values():
            union |= views
        object_views.append(float(union.mean()))
        progress(f'encoder schedule: frame {k + 1}/{frames}: '
                 f'{runs[False][1].encoded_views[-1]} vs {runs[True][1].encoded_views[-1]} '
                 'patches encoded')
    metrics = {mode: evaluators[mode].result() for mode in runs}
    steady = slice(1, None) if frames > 1 else slice(None)  # frame 0 sweeps in both modes
    mean_ms = {mode: float(np.mean(frame_ms[mode][steady])) for mode in runs}
    out = dict(
        schedule_frames=frames, schedule_erp_width=erp_width, schedule_patch_size=patch_px,
        schedule_objects=len(SCHEDULE_CAPS),
        schedule_object_views_fraction=float(np.mean(object_views)),
        schedule_encode_ms_per_view=float(encode_ms_per_view),
        schedule_every_n_frames=every_n_frames,
        encoded_views_per_frame=float(np.mean(runs[False][1].encoded_views[steady])),
        all_views_encoded_per_frame=float(np.mean(runs[True][1].encoded_views[steady])),
        schedule_frame_ms=mean_ms[False], all_views_frame_ms=mean_ms[True],
        encoder_schedule_speedup=mean_ms[True] / max(mean_ms[False], 1e-9),
        schedule_oracle_j=metrics[False].j, all_views_oracle_j=metrics[True].j,
        schedule_id_switches=metrics[False].id_switches,
        all_views_id_switches=metrics[True].id_switches)
    for pipeline, _ in runs.values():
        pipeline.close()
    return out
