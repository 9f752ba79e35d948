"""The segmenter seam of the engine: SAM2 (the network) or the geometric oracle (its stand-in).

The engine (``pipeline.py``) owns objects, memory bookkeeping, culling, prompts, discovery,
lifecycle and fusion; a segmenter only answers "where is this object in this patch, given these
memories / prompts" and "which segments start at these points". Both implementations return
NumPy logits at the decoder's resolution, so everything after them runs unchanged on ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import cv2
import numpy as np

from sap_ros.core.config import ModelConfig
from sap_ros.core.layout import PatchLayout
from sap_ros.core.oracle import GeometricOracle, OraclePatch


@dataclass
class SegmentOutput:
    """One object in one patch.

    Attributes:
        logits: ``(h, w)`` float32 at the decoder's resolution, > 0 inside.
        iou: predicted IoU (1 for the oracle).
        object_score: probability that the object is in the patch at all.
        obj_ptr: ``(256,)`` float32 SAM2 object pointer, or None.
        memory: opaque memory payload for the bank (None when the segmenter has none).

    """

    logits: np.ndarray
    iou: float
    object_score: float
    obj_ptr: Optional[np.ndarray]
    memory: Any

    @property
    def present(self) -> bool:
        """The object is in the patch: a confident object score and a non-empty mask."""
        return self.object_score >= 0.5 and bool((self.logits > 0).any())

    @property
    def score(self) -> float:
        """Confidence of the sighting: predicted IoU x object score, in [0, 1]."""
        return float(self.iou) * float(self.object_score)


@dataclass
class TrackRequest:
    """One object to propagate in a patch: its memories and, optionally, a dense mask prompt."""

    cond: Sequence[Any]
    recent: Sequence[Any]
    mask_prompt: Optional[np.ndarray] = None


@dataclass
class Candidates:
    """Discovery proposals in one patch: ``logits (P, h, w)``, ``iou (P,)``, ``stability (P,)``."""

    logits: np.ndarray
    iou: np.ndarray
    stability: np.ndarray


class Segmenter(Protocol):
    """What the engine needs from a segmenter."""

    low_res_px: int

    def begin_frame(self, patches: np.ndarray, erp: np.ndarray) -> None:
        """Prepare a frame: ``patches`` (N, S, S, 3) uint8 RGB in view-index order."""

    def track(self, view_index: int, cond: Sequence[Any], recent: Sequence[Any], *,
              mask_prompt: Optional[np.ndarray] = None, points_px: Optional[np.ndarray] = None,
              point_labels: Optional[np.ndarray] = None,
              as_conditioning: bool = False) -> SegmentOutput:
        """Segment one object in one patch from its memories and/or prompts."""

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """Propagate several objects in one patch from their memories; one output each."""

    def discover(self, view_index: int, points_px: np.ndarray) -> Candidates:
        """Masks started by single positive points (no memory)."""

    def close(self) -> None:
        """Free the model and caches."""


class Sam2Segmenter:
    """SAM2 through :class:`~sap_ros.core.sam2_adapter.Sam2Adapter` (batched encoding)."""

    def __init__(self, config: ModelConfig) -> None:
        """Build the model (may raise CheckpointError / ConfigError)."""
        from sap_ros.core.sam2_adapter import Sam2Adapter  # the only sam2 importer
        self.adapter = Sam2Adapter(config)
        self.low_res_px = self.adapter.image_size // 4
        self._encoded = None

    @property
    def description(self) -> str:
        """What was loaded (for logs)."""
        adapter = self.adapter
        return f'{adapter.model_name} on {adapter.device}: {adapter.checkpoint_info}'

    def begin_frame(self, patches: np.ndarray, erp: np.ndarray) -> None:
        """Encode all patches of the frame in batches."""
        self._encoded = None
        self._encoded = self.adapter.encode(patches)

    def track(self, view_index: int, cond: Sequence[Any], recent: Sequence[Any], *,
              mask_prompt: Optional[np.ndarray] = None, points_px: Optional[np.ndarray] = None,
              point_labels: Optional[np.ndarray] = None,
              as_conditioning: bool = False) -> SegmentOutput:
        """One SAM2 step (see :meth:`Sam2Adapter.track`)."""
        return _segment_output(self.adapter.track(
            self._encoded, view_index, cond=cond, recent=recent, mask_prompt=mask_prompt,
            points_px=points_px, point_labels=point_labels, as_conditioning=as_conditioning))

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """Objects with the same memory counts and prompt kind share one SAM2 call.

        (:meth:`Sam2Adapter.track_batch`; results equal one call each up to float rounding.)
        """
        groups: Dict[Tuple[int, int, bool], List[int]] = {}
        for k, req in enumerate(requests):
            key = (len(req.cond), len(req.recent), req.mask_prompt is not None)
            groups.setdefault(key, []).append(k)
        outputs: List[Optional[SegmentOutput]] = [None] * len(requests)
        for (_, _, prompted), members in groups.items():
            if len(members) == 1:
                req = requests[members[0]]
                outputs[members[0]] = self.track(view_index, req.cond, req.recent,
                                                 mask_prompt=req.mask_prompt)
                continue
            results = self.adapter.track_batch(
                self._encoded, view_index, cond=[requests[k].cond for k in members],
                recent=[requests[k].recent for k in members],
                mask_prompts=[requests[k].mask_prompt for k in members] if prompted else None)
            for k, out in zip(members, results):
                outputs[k] = _segment_output(out)
        return outputs  # type: ignore[return-value]

    def discover(self, view_index: int, points_px: np.ndarray) -> Candidates:
        """Batched point prompts (see :meth:`Sam2Adapter.discover`)."""
        res = self.adapter.discover(self._encoded, view_index, points_px)
        return Candidates(res.low_res_logits.float().cpu().numpy(),
                          res.iou.float().cpu().numpy(), res.stability.float().cpu().numpy())

    def close(self) -> None:
        """Free the model and GPU memory."""
        self._encoded = None
        self.adapter.close()


@dataclass(frozen=True)
class OracleMemory:
    """The oracle's "memory": which ground-truth segment the object is."""

    gt_value: int
    nbytes: int = 0


class OracleSegmenter:
    """The geometric oracle behind the segmenter interface (tests, benchmarks, evaluation).

    Call :meth:`set_ground_truth` with the frame's ERP label map before each ``step``. Tracking
    follows the ground-truth segment named by the object's memory (perfect memory), else the
    one its mask prompt or points overlap most; discovery returns the segments under the points.
    """

    def __init__(self, layout: PatchLayout, background: Optional[int] = 0, seed: int = 0,
                 size_px: Optional[int] = None) -> None:
        """Cut patches of ``size_px`` (default: the layout's)."""
        self._oracle = GeometricOracle(layout, background, seed)
        self._size = size_px or layout.size_px
        self.low_res_px = max(1, self._size // 4)
        self._gt: Optional[np.ndarray] = None
        self._patches: List[OraclePatch] = []
        self.description = 'geometric oracle (ground-truth masks at decoder resolution)'

    def set_ground_truth(self, gt_erp: np.ndarray) -> None:
        """The ERP label map of the next frame."""
        self._gt = gt_erp

    def begin_frame(self, patches: np.ndarray, erp: np.ndarray) -> None:
        """Cut the ground truth into every view."""
        if self._gt is None:
            raise RuntimeError('OracleSegmenter needs set_ground_truth() before each frame')
        gt = self._gt
        if gt.shape[:2] != erp.shape[:2]:
            gt = cv2.resize(gt, (erp.shape[1], erp.shape[0]), interpolation=cv2.INTER_NEAREST)
        self._patches = self._oracle.patch_outputs(gt, self._size)

    def _segment_logits(self, view_index: int, gt_value: int) -> Optional[np.ndarray]:
        # Each segment knows its ground-truth value: a segment smaller than a decoder pixel
        # is named exactly, not by the nearest-resampled ground truth under it (often 0).
        out = self._patches[view_index]
        k = np.flatnonzero(out.gt_values == gt_value)
        return out.logits[k[0]] if len(k) else None

    def _value_under(self, view_index: int, mask: np.ndarray) -> Optional[int]:
        out = self._patches[view_index]
        inside = out.labels[mask & (out.labels != 0)]
        if not inside.size:
            return None
        local = int(np.bincount(inside).argmax())
        return int(out.gt_values[out.local_ids == local][0])

    def track(self, view_index: int, cond: Sequence[Any], recent: Sequence[Any], *,
              mask_prompt: Optional[np.ndarray] = None, points_px: Optional[np.ndarray] = None,
              point_labels: Optional[np.ndarray] = None,
              as_conditioning: bool = False) -> SegmentOutput:
        """The ground-truth segment the memory, mask or points name, at decoder resolution."""
        low = self.low_res_px
        value = None
        memories = [m for m in list(recent) + list(cond) if isinstance(m, OracleMemory)]
        if memories:
            value = memories[0].gt_value
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
        logits = None if value is None else self._segment_logits(view_index, value)
        if logits is None:
            return SegmentOutput(np.full((low, low), -1.0, np.float32), 0.0, 0.0, None,
                                 None if value is None else OracleMemory(value))
        return SegmentOutput(logits.astype(np.float32), 1.0, 1.0, None, OracleMemory(value))

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """One :meth:`track` per request."""
        return track_each(self, view_index, requests)

    def discover(self, view_index: int, points_px: np.ndarray) -> Candidates:
        """Every segment under at least one point (each once)."""
        out = self._patches[view_index]
        low = self.low_res_px
        scale = low / self._size
        hit = set()
        for x, y in np.asarray(points_px):
            local = out.labels[min(low - 1, int(y * scale)), min(low - 1, int(x * scale))]
            if local:
                hit.add(int(local))
        ks = [k for k, local in enumerate(out.local_ids) if int(local) in hit]
        logits = (out.logits[ks] if ks else np.zeros((0, low, low), np.float32))
        ones = np.ones(len(ks), dtype=np.float32)
        return Candidates(logits, ones, ones)

    def close(self) -> None:
        """Nothing to free."""
        self._patches = []


def track_each(segmenter: Any, view_index: int, requests: Sequence[TrackRequest]
               ) -> List[SegmentOutput]:
    """``track_many`` for segmenters without a batched path: one ``track`` per request."""
    return [segmenter.track(view_index, r.cond, r.recent, mask_prompt=r.mask_prompt)
            for r in requests]


def _segment_output(out: Any) -> SegmentOutput:
    """A :class:`~sap_ros.core.sam2_adapter.TrackResult` as NumPy, for the engine."""
    return SegmentOutput(out.low_res_logits.float().cpu().numpy(), float(out.iou),
                         float(out.object_score), out.obj_ptr, out.memory)
