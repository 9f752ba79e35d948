"""The geometric oracle behind the engine's segmenter interface (tests, benchmarks, evaluation).

It answers the engine's questions from a ground-truth label map instead of a network, so
everything after the segmenter (association, culling, fusion, ids) is measured on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.pixels import to_host
from sap_ros.engine.segmenter import (
    Candidates,
    Pixels,
    SegmentOutput,
    TrackRequest,
    encoded_row,
    view_rows,
)
from sap_ros.eval.oracle import GeometricOracle, OraclePatch
from sap_ros.sphere.layout import PatchLayout


@dataclass(frozen=True)
class OracleMemory:
    """The oracle's "memory": which ground-truth segment the object is."""

    gt_value: int
    nbytes: int = 0


#: Factor on the oracle's discovery logits: the transition between the stability cut-offs
#: (logit +-1) shrinks to 1/1000 of a decoder pixel, so a segment's stability is ~1.
DISCOVERY_SHARPEN = 1000.0

class OracleSegmenter:
    """The geometric oracle behind the segmenter interface (tests, benchmarks, evaluation).

    Call :meth:`set_ground_truth` with the frame's ERP label map before each ``step``. Tracking
    follows the ground-truth segment named by the object's memory (perfect memory), else the
    one its mask prompt or points overlap most; discovery returns the segments under the points.
    """

    def __init__(self, layout: PatchLayout, background: Optional[int] = 0, seed: int = 0,
                 size_px: Optional[int] = None, ignore: Optional[int] = None) -> None:
        """Cut patches of ``size_px`` (default: the layout's); ``ignore`` pixels are unknown."""
        self._oracle = GeometricOracle(layout, background, seed, ignore)
        self._size = size_px or layout.size_px
        self.low_res_px = max(1, self._size // 4)
        self._gt: Optional[np.ndarray] = None
        self._patches: List[OraclePatch] = []
        self._rows: Optional[Dict[int, int]] = None
        self.description = 'geometric oracle (ground-truth masks at decoder resolution)'

    def set_ground_truth(self, gt_erp: np.ndarray) -> None:
        """The ERP label map of the next frame."""
        self._gt = gt_erp

    def begin_frame(self, patches: Pixels, erp: np.ndarray,
                    views: Optional[Sequence[int]] = None) -> None:
        """Cut the ground truth into ``views`` (default every view); the others stay unknown."""
        if self._gt is None:
            raise RuntimeError('OracleSegmenter needs set_ground_truth() before each frame')
        gt = self._gt
        if gt.shape[:2] != erp.shape[:2]:
            gt = cv2.resize(gt, (erp.shape[1], erp.shape[0]), interpolation=cv2.INTER_NEAREST)
        self._rows = view_rows(views, len(patches))
        self._patches = self._oracle.patch_outputs(gt, self._size, views=views)

    def _patch(self, view_index: int) -> OraclePatch:
        row = view_index if self._rows is None else encoded_row(self._rows, view_index)
        return self._patches[row]

    def _segment_logits(self, view_index: int, gt_value: int) -> Optional[np.ndarray]:
        # Each segment knows its ground-truth value: a segment smaller than a decoder pixel
        # is named exactly, not by the nearest-resampled ground truth under it (often 0).
        out = self._patch(view_index)
        k = np.flatnonzero(out.gt_values == gt_value)
        return out.logits[k[0]] if len(k) else None

    def _value_under(self, view_index: int, mask: np.ndarray) -> Optional[int]:
        out = self._patch(view_index)
        inside = out.labels[mask & (out.labels != 0)]
        if not inside.size:
            return None
        local = int(np.bincount(inside).argmax())
        return int(out.gt_values[out.local_ids == local][0])

    def track(self, view_index: int, memory: MemoryContext, *,
              mask_prompt: Optional[Pixels] = None, points_px: Optional[np.ndarray] = None,
              point_labels: Optional[np.ndarray] = None,
              prev_logits: Optional[Pixels] = None, as_conditioning: bool = False,
              prior: Optional[Pixels] = None) -> SegmentOutput:
        """The ground-truth segment the memory, mask, points or prior name, at decoder resolution.

        ``prior`` (the object's re-projected mask, information the engine has) names the segment
        only when nothing else does; SAM2 never receives it.
        """
        low = self.low_res_px
        value = None
        if mask_prompt is not None:
            mask_prompt = to_host(mask_prompt)  # host or device (the torch frame path)
        memories = [m for m in reversed(memory.cond + memory.recent)
                    if isinstance(m, OracleMemory)]
        if memories:
            value = memories[0].gt_value
        elif mask_prompt is None and prior is not None and prior.any():
            value = self._value_under(view_index, to_host(prior))
        elif mask_prompt is not None:
            mask = cv2.resize(mask_prompt.astype(np.uint8), (low, low),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
            value = self._value_under(view_index, mask)
        elif points_px is not None and len(points_px):
            labels = np.ones(len(points_px)) if point_labels is None else point_labels
            pts = np.asarray(points_px)[np.asarray(labels) > 0]
            mask = np.zeros((low, low), dtype=bool)
            scale = low / self._size
            for x, y in pts:
                mask[min(low - 1, int(y * scale)), min(low - 1, int(x * scale))] = True
            value = self._value_under(view_index, mask)
        empty = np.full((low, low), -1.0, np.float32)
        if value is None:
            return SegmentOutput(empty, 0.0, 0.0, None, None)
        logits = self._segment_logits(view_index, value)
        if logits is None:
            return SegmentOutput(empty, 0.0, 0.0, None, OracleMemory(value))
        return SegmentOutput(logits.astype(np.float32), 1.0, 1.0, None, OracleMemory(value))

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """One :meth:`track` per request, with the request's prior as information."""
        return [self.track(view_index, r.memory, mask_prompt=r.mask_prompt, prior=r.prior)
                for r in requests]

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> List[Candidates]:
        """Every segment under at least one point, each once, as one batch of one mask each.

        The geometric stand-in for a perfect SAM2: predicted IoU 1 and crisp masks (the soft
        logits, which lie in [-1, 1], sharpened by :data:`DISCOVERY_SHARPEN`), so every segment
        passes the filter, whose stability is measured on these logits as on SAM2's.
        """
        out = self._patch(view_index)
        low = self.low_res_px
        scale = low / self._size
        hit = set()
        for x, y in np.asarray(points_px):
            local = out.labels[min(low - 1, int(y * scale)), min(low - 1, int(x * scale))]
            if local:
                hit.add(int(local))
        ks = [k for k, local in enumerate(out.local_ids) if int(local) in hit]
        logits = (out.logits[ks] if ks else np.zeros((0, low, low), np.float32))
        return [Candidates(logits[:, None] * DISCOVERY_SHARPEN,
                           np.ones((len(ks), 1), dtype=np.float32))]

    def close(self) -> None:
        """Nothing to free."""
        self._patches = []
