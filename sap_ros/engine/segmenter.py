"""The segmenter seam of the engine: SAM2 (the network) or the geometric oracle (its stand-in).

The engine (``pipeline.py``, ``tracking.py``) owns objects, memory bookkeeping, culling, prompts,
discovery, lifecycle and fusion; a segmenter only answers "where is this object in this patch,
given these memories / prompts" and "which segments start at these points". Logits come at the
decoder's resolution, as NumPy arrays (the oracle; SAM2 on the host frame path) or as tensors on
the model device (SAM2 with ``device_outputs``, the torch frame path): the engine's per-pixel
stages take either, so everything after a segmenter runs unchanged on ground truth.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ContextManager,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
)

import numpy as np

from sap_ros.config import ModelConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.pixels import Pixels
from sap_ros.errors import InvalidInputError

if TYPE_CHECKING:  # sam2_types is needed for typing only
    from sap_ros.engine.sam2_types import EncodedPatches


@dataclass
class SegmentOutput:
    """One object in one patch.

    Attributes:
        logits: ``(h, w)`` float32 at the decoder's resolution, > 0 inside: a NumPy array, or a
            tensor on the model device (``Sam2Segmenter(device_outputs=True)``).
        iou: predicted IoU (1 for the oracle).
        object_score: probability that the object is in the patch at all.
        obj_ptr: ``(256,)`` float32 SAM2 object pointer, or None.
        memory: opaque memory payload for the bank (None when the segmenter has none).
        nonempty: whether any logit is > 0, when the segmenter already knows it (device
            logits: read in the same copy as the scores, so :attr:`present` costs no sync).
        pointer: the same object pointer still on the model device (SAM2), for the class
            stage; None when the segmenter has none there.

    """

    logits: Pixels
    iou: float
    object_score: float
    obj_ptr: Optional[np.ndarray]
    memory: Any
    nonempty: Optional[bool] = None
    pointer: Optional[Any] = None

    @property
    def present(self) -> bool:
        """The object is in the patch: a confident object score and a non-empty mask."""
        if self.object_score < 0.5:
            return False
        if self.nonempty is not None:
            return self.nonempty
        return bool((self.logits > 0).any())

    @property
    def score(self) -> float:
        """Confidence of the sighting: predicted IoU x object score, in [0, 1]."""
        return float(self.iou) * float(self.object_score)


@dataclass
class TrackRequest:
    """One object to propagate in a patch: its memory and, optionally, a dense mask prompt.

    ``prior`` is the object's mask re-projected from the patches already visited: information
    for segmenters that want it (the geometric oracle), never an input to SAM2. ``mask_prompt``
    is the dense prompt of the ``engine.mask_prompt`` option (not upstream).
    """

    memory: MemoryContext
    mask_prompt: Optional[Pixels] = None
    prior: Optional[Pixels] = None


@dataclass
class Candidates:
    """Discovery proposals of one batch of points: ``logits (B, M, h, w)``, ``iou (B, M)``.

    ``M`` masks per point (SAM2's 3 multimask outputs; the oracle's 1), logits at the decoder's
    resolution, NumPy or tensors on the model device. Tensor candidates answer the batch's points
    in order, one row each: the filter decodes the points it keeps again by their index
    (:func:`~sap_ros.engine.discovery_filter.search_points`); NumPy ones may hold a row per
    segment (the oracle).
    """

    logits: Pixels
    iou: Pixels


class Segmenter(Protocol):
    """What the engine needs from a segmenter."""

    low_res_px: int

    def begin_frame(self, patches: Pixels, erp: np.ndarray,
                    views: Optional[Sequence[int]] = None) -> None:
        """Prepare a frame: ``patches`` (N, S, S, 3) uint8 RGB of ``views``.

        ``views`` default to all, in view-index order; later calls name only those views.
        """

    def track(self, view_index: int, memory: MemoryContext, *,
              mask_prompt: Optional[Pixels] = None, points_px: Optional[np.ndarray] = None,
              point_labels: Optional[np.ndarray] = None,
              prev_logits: Optional[Pixels] = None,
              as_conditioning: bool = False) -> SegmentOutput:
        """Segment one object in one patch from its memory and/or prompts."""

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """Propagate several objects in one patch from their memories; one output each."""

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> Iterable[Candidates]:
        """Masks started by single positive points (no memory), one batch after another."""

    def close(self) -> None:
        """Free the model and caches."""


class Sam2Segmenter:
    """SAM2 through :class:`~sap_ros.engine.sam2_adapter.Sam2Adapter` (batched encoding).

    With ``device_outputs`` the logits (tracking and discovery) stay tensors on the model
    device and each SAM2 call reads its scores, object pointers and "any pixel inside" flags back
    in one copy; otherwise everything comes back as NumPy. Patches may be ``(N, S, S, 3)`` uint8
    on the host or ``(N, 3, S, S)`` float (0..255) tensors already on the device
    (:meth:`~sap_ros.engine.frame_path.TorchFramePath.sample`); :attr:`input_px` is the patch side
    the torch frame path samples at (``model.image_size``: no second resize).
    """

    def __init__(self, config: ModelConfig, device_outputs: bool = False) -> None:
        """Build the model (may raise CheckpointError / ConfigError)."""
        from sap_ros.engine.sam2_adapter import Sam2Adapter  # the only sam2 importer
        self.adapter = Sam2Adapter(config)
        self.device_outputs = bool(device_outputs)
        self.low_res_px = self.adapter.image_size // 4
        self.input_px = self.adapter.image_size
        #: Object pointers of earlier steps SAM2 reads (max_obj_ptrs_in_encoder - 1).
        model: Any = self.adapter.model
        self.pointer_steps = int(model.max_obj_ptrs_in_encoder) - 1
        self._encoded: Optional[EncodedPatches] = None
        self._rows: Optional[Dict[int, int]] = None

    @property
    def description(self) -> str:
        """What was loaded (for logs)."""
        adapter = self.adapter
        return f'{adapter.model_name} on {adapter.device}: {adapter.checkpoint_info}'

    def begin_frame(self, patches: Pixels, erp: np.ndarray,
                    views: Optional[Sequence[int]] = None) -> None:
        """Encode the frame's patches (those of ``views``, default all) in batches."""
        self._encoded = None
        self._rows = view_rows(views, len(patches))
        if len(patches):  # a frame may need no view at all (nothing live, no discovery share)
            self._encoded = self.adapter.encode(patches)

    def session(self) -> ContextManager[None]:
        """One inference context (autocast, device) around many calls: see :func:`session`."""
        return self.adapter.session()

    @property
    def _frame(self) -> EncodedPatches:
        if self._encoded is None:
            raise InvalidInputError('no frame is encoded: call begin_frame first')
        return self._encoded

    def _row(self, view_index: int) -> int:
        return view_index if self._rows is None else encoded_row(self._rows, view_index)

    @property
    def feature_dims(self) -> Tuple[int, int]:
        """``(C, C_ptr)`` of :meth:`patch_features` and of the object pointers."""
        model: Any = self.adapter.model
        return int(model.hidden_dim), int(model.hidden_dim)

    def patch_features(self, view_index: int) -> Any:
        """``(C, h, w)`` the view's image embedding as encoded this frame (device, no copy).

        SAM2's lowest-resolution backbone level, the one its mask decoder reads (for the class
        stage: no second encoder pass).
        """
        return self._frame.backbone_fpn[-1][self._row(view_index)]

    def track(self, view_index: int, memory: MemoryContext, *,
              mask_prompt: Optional[Pixels] = None, points_px: Optional[np.ndarray] = None,
              point_labels: Optional[np.ndarray] = None,
              prev_logits: Optional[Pixels] = None,
              as_conditioning: bool = False) -> SegmentOutput:
        """One SAM2 step (see :meth:`Sam2Adapter.track`)."""
        return self._output(self.adapter.track(
            self._frame, self._row(view_index), memory, mask_prompt=mask_prompt,
            points_px=points_px, point_labels=point_labels, prev_logits=prev_logits,
            as_conditioning=as_conditioning))

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """Objects with memory at the same distances and the same prompt kind share one call.

        (:meth:`Sam2Adapter.track_groups`: results equal one call each up to float rounding;
        the scores of all the patch's calls come back in one copy.)
        """
        groups: Dict[Tuple[Any, bool], List[int]] = {}
        for k, req in enumerate(requests):
            groups.setdefault((req.memory.signature(), req.mask_prompt is not None),
                              []).append(k)
        members = list(groups.values())
        results = self.adapter.track_groups(self._frame, self._row(view_index), [
            ([requests[k].memory for k in ks],
             [m for m in (requests[k].mask_prompt for k in ks) if m is not None] if prompted
             else None) for (_, prompted), ks in groups.items()])
        outputs: List[SegmentOutput] = [_EMPTY] * len(requests)
        for ks, group in zip(members, results):
            for k, out in zip(ks, group):
                outputs[k] = self._output(out)
        return outputs

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> Iterator[Candidates]:
        """Batched point prompts (see :meth:`Sam2Adapter.discover`), on the model device.

        The candidates stay on the device whatever ``device_outputs`` says: the filter reads a
        few numbers per mask, and the masks it keeps go back to SAM2 as new objects.
        """
        for res in self.adapter.discover(self._frame, self._row(view_index), points_px,
                                         points_per_batch):
            yield Candidates(res.low_res_logits, res.iou)

    def _output(self, out: Any) -> SegmentOutput:
        """A :class:`~sap_ros.engine.sam2_adapter.TrackResult` for the engine."""
        logits = out.low_res_logits.float()
        return SegmentOutput(logits if self.device_outputs else logits.cpu().numpy(),
                             out.iou, out.object_score, out.obj_ptr, out.memory,
                             nonempty=out.nonempty, pointer=out.memory.obj_ptr)

    def close(self) -> None:
        """Free the model and GPU memory."""
        self._encoded = None
        self.adapter.close()


def session(segmenter: Any) -> ContextManager[None]:
    """The segmenter's inference context for a frame (or an engine step), entered by the engine.

    SAM2 (:meth:`Sam2Segmenter.session`) keeps one autocast context, and so one cast of each
    weight, around every call made inside it; segmenters without one (the oracle) get a no-op.
    """
    enter = getattr(segmenter, 'session', None)
    return enter() if callable(enter) else contextlib.nullcontext()


def view_rows(views: Optional[Sequence[int]], n_patches: int) -> Optional[Dict[int, int]]:
    """View index -> row of the frame's patches (None: row = view, every view given)."""
    if views is None:
        return None
    rows = {int(v): k for k, v in enumerate(views)}
    if len(rows) != len(views) or len(rows) != n_patches:
        raise InvalidInputError(f'{n_patches} patches for views {list(views)}: need one patch '
                                'per distinct view')
    return rows


def encoded_row(rows: Dict[int, int], view_index: int) -> int:
    """The row of ``view_index`` among the encoded patches; a clear error when not encoded."""
    row = rows.get(int(view_index))
    if row is None:
        raise InvalidInputError(f'view {view_index} was not encoded this frame '
                                f'(encoded: {sorted(rows)})')
    return row


def track_each(segmenter: Any, view_index: int, requests: Sequence[TrackRequest]
               ) -> List[SegmentOutput]:
    """``track_many`` for segmenters without a batched path: one ``track`` per request."""
    return [segmenter.track(view_index, r.memory, mask_prompt=r.mask_prompt)
            for r in requests]


_EMPTY = SegmentOutput(np.zeros((1, 1), np.float32), 0.0, 0.0, None, None)
