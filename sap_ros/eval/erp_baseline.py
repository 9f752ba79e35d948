"""SAM2 on the raw panorama: the baseline the patch engine has to beat (``--baseline sam2-erp``).

Each ERP frame is resized to ``model.image_size`` squared (what SAM2 does to any input image),
encoded once, and every live object is tracked on it with SAM2's memory across frames, exactly
as SAM2's video predictor would track a video of panoramas. New objects come from grid-point
discovery in the part of the square no object covers. The memory, lifecycle and discovery
parameters are the engine's (``memory.*``, ``discovery.*``), so the two differ only in what
the network is shown: one squeezed panorama instead of overlapping perspective patches.

Nothing here knows the sphere: an object across the 0/360 deg seam is cut in two and gets two
ids, polar regions are stretched along their rows, and small objects lose most of their pixels
to the squeeze (a 4096 px wide frame shown at 1024 px is 4x narrower; SAM2's masks are at a
quarter of that again).
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from sap_ros.config import PipelineConfig
from sap_ros.engine.pixels import to_host
from sap_ros.engine.records import object_records
from sap_ros.engine.segmenter import Sam2Segmenter, Segmenter, SegmentOutput
from sap_ros.engine.segmenter import session as segmenter_session
from sap_ros.engine.tracking import OnTrackingCore, TrackingCore
from sap_ros.engine.types import FrameResult, Prompt
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import validate_erp_shape

_VIEW = 0  # the one "patch": the whole squeezed panorama


class Sam2ErpBaseline(OnTrackingCore):
    """SAM2 with its memory on the whole ERP frame squeezed to a square (see module docstring).

    The objects, their memory and the discovery schedule are the engine's own
    :class:`~sap_ros.engine.tracking.TrackingCore`, with one "view": the squeezed frame.
    """

    def __init__(self, config: PipelineConfig, segmenter: Optional[Segmenter] = None) -> None:
        """Load SAM2 (``model.*``) unless a ``segmenter`` is given (tests)."""
        self.config = config
        self.side_px = config.model.image_size
        self.segmenter: Segmenter = segmenter or Sam2Segmenter(config.model)
        self.core = TrackingCore(self.segmenter, np.ones((1, 1)), config.memory,
                                 config.discovery, config.model.image_size)
        self._frame = 0
        self._uncovered = 1.0

    @property
    def description(self) -> str:
        """What segments, for logs and reports."""
        return f'{super().description}; whole ERP squeezed to {self.side_px}x{self.side_px}'

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        """External prompts are not part of this baseline: any prompt is an error."""
        if prompts:
            raise InvalidInputError('the sam2-erp baseline takes no external prompts')

    def reset(self) -> None:
        """Forget all objects and memory (ids restart at 1)."""
        self.core.reset()
        self._frame = 0
        self._uncovered = 1.0

    def close(self) -> None:
        """Free the model."""
        self.segmenter.close()

    def step(self, erp_rgb: np.ndarray, prompts: Sequence[Prompt] = ()) -> FrameResult:
        """Segment one ERP frame ``(H, W, 3)`` uint8 RGB (2:1) -> :class:`FrameResult`."""
        self.add_prompts(prompts)
        t_start = time.perf_counter()
        if not isinstance(erp_rgb, np.ndarray) or erp_rgb.ndim != 3 or erp_rgb.shape[2] != 3 \
                or erp_rgb.dtype != np.uint8:
            raise InvalidInputError(f'ERP frame must be H x W x 3 uint8 RGB, got '
                                    f'{getattr(erp_rgb, "shape", type(erp_rgb).__name__)}')
        height, _ = validate_erp_shape(erp_rgb.shape)
        frame = self._frame
        timings: Dict[str, float] = {}

        with segmenter_session(self.segmenter):  # one autocast context for the frame
            t = time.perf_counter()
            square = cv2.resize(erp_rgb, (self.side_px, self.side_px),
                                interpolation=cv2.INTER_AREA)
            self.segmenter.begin_frame(square[None], erp_rgb)
            timings['encode'] = _ms(t)

            t = time.perf_counter()
            self.core.next_step()
            live = [track.id for track in self.registry.live()]
            outputs = [(i, out) for i, out in self.core.propagate(_VIEW, frame, live)
                       if out.present]
            timings['decode'] = _ms(t)

            t = time.perf_counter()
            if self.core.discovery_due(frame, self._uncovered):
                outputs += self.core.discover(_VIEW, frame, self._covered(outputs),
                                              self.side_px,
                                              self.config.discovery.max_new_per_frame)
            timings['discover'] = _ms(t)

        t = time.perf_counter()
        out_h = max(1, round(height * self.config.output.scale))
        labels = self._labels(outputs, (out_h, 2 * out_h))
        timings['fuse'] = _ms(t)

        t = time.perf_counter()
        objects = self._finish_frame(frame, labels, outputs)
        timings['pointers'] = _ms(t)
        self._frame += 1
        timings['total'] = _ms(t_start)
        return FrameResult(labels, objects, frame, timings)

    # ------------------------------------------------------------------ internals
    def _labels(self, outputs: List[Tuple[int, SegmentOutput]],
                out_hw: Tuple[int, int]) -> np.ndarray:
        """Each pixel to the object of the highest positive logit, resized square -> ERP."""
        labels = np.zeros(out_hw, np.uint16)
        if not outputs:
            self._uncovered = 1.0
            return labels
        size = (out_hw[1], out_hw[0])
        stack = np.stack([cv2.resize(to_host(out.logits).astype(np.float32), size,
                                     interpolation=cv2.INTER_LINEAR) for _, out in outputs])
        best = stack.argmax(axis=0)
        ids = np.array([object_id for object_id, _ in outputs], np.uint16)
        inside = np.take_along_axis(stack, best[None], 0)[0] > 0
        labels[inside] = ids[best[inside]]
        self._uncovered = 1.0 - float(self._covered(outputs).mean())
        return labels

    def _covered(self, outputs: List[Tuple[int, SegmentOutput]]) -> np.ndarray:
        """Where any of ``outputs`` is inside its mask, on the decoder grid of the square."""
        low = self.segmenter.low_res_px
        covered = np.zeros((low, low), bool)
        for _, out in outputs:
            covered |= to_host(out.logits) > 0
        return covered

    def _finish_frame(self, frame: int, labels: np.ndarray,
                      outputs: List[Tuple[int, SegmentOutput]]) -> list:
        present = set(np.unique(labels[labels > 0]).tolist())
        scores: Dict[int, float] = {}
        embeddings: Dict[int, np.ndarray] = {}
        for object_id, out in outputs:
            if object_id not in present:
                continue
            scores[object_id] = out.score
            if out.obj_ptr is not None:
                embeddings[object_id] = out.obj_ptr
            self.registry.mark_seen(object_id, frame, scores[object_id])
        self.core.end_frame(frame)
        live = {t.id: t for t in self.registry.live()}
        gone = [i for i in present if i not in live]
        for object_id in gone:
            labels[labels == object_id] = 0
        ids = [i for i in present if i in live]
        return object_records(
            labels, scores=scores,
            ages={i: live[i].age_frames(frame) for i in ids},
            frames_since_seen={i: live[i].frames_since_seen(frame) for i in ids},
            embeddings=embeddings if self.config.output.embeddings else None)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
