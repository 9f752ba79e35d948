"""The per-object video core: create, propagate and correct objects as SAM2's video predictor.

Shared by :class:`~sap_ros.engine.pipeline.SapPipeline` (many patches per frame),
:class:`~sap_ros.eval.erp_baseline.Sam2ErpBaseline` (one squeezed panorama per frame) and the
parity harness (``sap_bench parity``: one ordinary image per frame, against upstream's
``SAM2VideoPredictor``). Each decode of an object is one step of that object's own video
(:mod:`sap_ros.engine.memory`); the core owns the memory bank, the object registry, the
engine-wide step counter and the discovery schedule, and decides nothing about geometry.

Upstream's calls and ours:

* ``add_new_mask`` / ``add_new_points_or_box`` on a new object -> :meth:`TrackingCore.create`
  (no memory; the result is a conditioning step);
* ``propagate_in_video`` -> :meth:`TrackingCore.propagate` (every step is stored, also when SAM2
  finds the object absent: a no-object memory);
* ``add_new_points_or_box`` on a step already decoded -> :meth:`TrackingCore.correct` (the
  step's own memory context, its earlier logits as the previous mask, stored as a conditioning
  step like ``add_all_frames_to_correct_as_cond=True``, SAM2's training setting); on a patch
  where the object was not decoded at this step it is a fresh conditioning step, as upstream
  treats a click on a frame not yet tracked.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sap_ros.config import DiscoveryConfig, MemoryConfig
from sap_ros.engine.discovery_filter import (
    CandidateFilter,
    propose_new_masks,
    resolve_points_per_side,
)
from sap_ros.engine.memory import DEFAULT_POINTER_STEPS, MemoryBank, MemoryContext, MemoryStats
from sap_ros.engine.objects import MAX_OBJECT_ID, ObjectRegistry, ObjectTrack
from sap_ros.engine.segmenter import Pixels, Segmenter, SegmentOutput, TrackRequest

Decoded = Tuple[int, SegmentOutput]


@dataclass(frozen=True)
class _LastStep:
    """An object's latest step: when, where, what came out and what SAM2 attended to."""

    global_step: int
    view: int
    output: SegmentOutput
    memory: MemoryContext

_LOG = logging.getLogger(__name__)


class TrackingCore:
    """Objects, their memory videos and SAM2 steps (module docstring)."""

    def __init__(self, segmenter: Segmenter, view_overlap: np.ndarray, memory: MemoryConfig,
                 discovery: DiscoveryConfig, image_size: int = 1024) -> None:
        """Empty registry and bank sized by ``memory.*``; discovery filtered by ``discovery.*``.

        ``image_size`` (``model.image_size``) sets the automatic discovery grid
        (``discovery.points_per_side: 0``).
        """
        self.segmenter = segmenter
        self.bank = MemoryBank(
            view_overlap, memory.short_term, memory.long_term, memory.max_objects,
            pointer_steps=int(getattr(segmenter, 'pointer_steps', DEFAULT_POINTER_STEPS)),
            promote_confident=memory.promote_confident, refresh_score=memory.refresh_score,
            select_by_view_overlap=memory.select_by_view_overlap,
            keep_creation=memory.keep_creation_prompt)
        self.registry = ObjectRegistry(memory.retire_after_frames, memory.max_objects)
        self.discovery = discovery
        self._filter = CandidateFilter.from_config(discovery)
        self.points_per_side = resolve_points_per_side(discovery.points_per_side, image_size)
        self.global_step = 0
        self._last: Dict[int, _LastStep] = {}
        self._exhausted_logged = False

    def reset(self) -> None:
        """Forget every object and memory (ids restart at 1)."""
        self.bank.clear()
        self.registry.reset()
        self._last.clear()
        self._exhausted_logged = False

    def next_step(self) -> int:
        """Advance the engine-wide step counter (one per patch visited) and return it."""
        self.global_step += 1
        return self.global_step

    # ------------------------------------------------------------------ SAM2 steps
    def create(self, view: int, frame: int, *, mask: Optional[Pixels] = None,
               points_px: Optional[np.ndarray] = None,
               point_labels: Optional[np.ndarray] = None) -> Optional[Decoded]:
        """A new object from a mask or clicks in ``view``; None when SAM2 finds nothing there.

        The new id is retired at once when the output is empty (ids are never reused) and not
        issued at all once ids are exhausted.
        """
        track = self.new_object(frame)
        if track is None:
            return None
        out = self.segmenter.track(view, MemoryContext(), mask_prompt=mask, points_px=points_px,
                                   point_labels=point_labels, as_conditioning=mask is not None)
        if not out.present:
            self.registry.retire(track.id)
            return None
        self._store(track.id, view, frame, out, MemoryContext(), prompted=True)
        return track.id, out

    def propagate(self, view: int, frame: int, object_ids: Sequence[int],
                  priors: Optional[Mapping[int, Pixels]] = None,
                  mask_prompts: Optional[Mapping[int, Pixels]] = None) -> List[Decoded]:
        """One step of each object in ``view`` from its memory; every output, present or not.

        ``priors`` go to the segmenter as information only; ``mask_prompts`` are the dense
        prompts of ``engine.mask_prompt``. Objects whose memory lies at the same distances share
        one SAM2 call.
        """
        ids = [i for i in object_ids if self.bank.has_memory(i)]
        if not ids:
            return []
        priors = priors or {}
        mask_prompts = mask_prompts or {}
        requests = [TrackRequest(self.bank.context(i, view, self.global_step),
                                 mask_prompts.get(i), priors.get(i)) for i in ids]
        outputs = self.segmenter.track_many(view, requests)
        for object_id, out, req in zip(ids, outputs, requests):
            self._store(object_id, view, frame, out, req.memory, prompted=False)
        return list(zip(ids, outputs))

    def correct(self, view: int, frame: int, object_id: int, points_px: np.ndarray,
                point_labels: np.ndarray) -> SegmentOutput:
        """Clicks on a known object in ``view``: redo its step there, or a fresh prompted step."""
        last = self._last.get(object_id)
        if last is not None and last.global_step == self.global_step and last.view == view:
            # The step's own context (the bank's rings moved on when it was stored).
            memory, prev, redo = last.memory, last.output.logits, True
        else:
            memory, prev, redo = MemoryContext(), None, False
        out = self.segmenter.track(view, memory, points_px=points_px,
                                   point_labels=point_labels, prev_logits=prev)
        self._store(object_id, view, frame, out, memory, prompted=True, replace_last=redo)
        return out

    def _store(self, object_id: int, view: int, frame: int, out: SegmentOutput,
               memory: MemoryContext, *, prompted: bool, replace_last: bool = False) -> None:
        self.bank.add(object_id, view, self.global_step, frame, out.score, out.memory,
                      prompted=prompted, present=out.present, obj_ptr=out.obj_ptr,
                      replace_last=replace_last)
        self._last[object_id] = _LastStep(self.global_step, view, out, memory)

    # ------------------------------------------------------------------ discovery, lifecycle
    def new_object(self, frame: int) -> Optional[ObjectTrack]:
        """A new object, or None once every uint16 id was issued (tracking goes on; reset)."""
        if self.registry.ids_left == 0:
            if not self._exhausted_logged:
                _LOG.error('object ids exhausted: %d objects were created since the last reset '
                           '(ids are uint16 and never reused); known objects are still tracked, '
                           'no new ones until the reset service is called', MAX_OBJECT_ID)
                self._exhausted_logged = True
            return None
        return self.registry.create(frame)

    def discovery_due(self, frame: int, uncovered_fraction: float) -> bool:
        """Every ``every_n_frames`` frames, or when too much is uncovered; never without ids."""
        cfg = self.discovery
        if not cfg.enabled or cfg.max_new_per_frame == 0 or self.registry.ids_left == 0:
            return False
        return frame % cfg.every_n_frames == 0 or uncovered_fraction > cfg.uncovered_fraction

    def discover(self, view: int, frame: int, covered: Optional[Pixels], patch_px: int,
                 budget: int) -> List[Decoded]:
        """Grid-point prompts where nothing is ``covered`` -> up to ``budget`` new objects.

        ``covered`` None: nothing is (the engine knows it without reading the device).

        The candidates of the patch (upstream's generator on it,
        :func:`~sap_ros.engine.discovery_filter.propose_new_masks`), best predicted IoU first,
        each seeded as ``add_new_mask`` would: the mask at the patch's resolution is the
        conditioning output of the new object's first step (SAM2 resizes it to its input).
        """
        if budget <= 0:
            return []
        proposals = propose_new_masks(self.segmenter, view, covered, patch_px,
                                      self.points_per_side, self._filter,
                                      self.discovery.points_per_batch)
        found: List[Decoded] = []
        for mask in proposals[:budget]:
            made = self.create(view, frame, mask=mask)
            if made is not None:
                found.append(made)
        return found

    def end_frame(self, frame: int) -> List[int]:
        """Retire objects missing too long or over capacity; drop memory of every gone object.

        Returns the ids retired now (their memory is gone).
        """
        retired = self.registry.end_frame(frame) + self.registry.enforce_capacity()
        for object_id in retired:
            self.forget(object_id)
        for object_id in self.bank.object_ids():
            if object_id not in self.registry:
                self.forget(object_id)
        return retired

    def forget(self, object_id: int) -> None:
        """Drop an object's memory (it was retired or merged into another)."""
        self.bank.remove_object(object_id)
        self._last.pop(object_id, None)


class OnTrackingCore:
    """What every engine on a :class:`TrackingCore` answers alike (pipeline, ERP baseline).

    The part of the :class:`~sap_ros.engine.interface.Engine` interface that only reads the core.
    """

    core: TrackingCore
    segmenter: Segmenter
    _frame: int

    @property
    def bank(self) -> MemoryBank:
        """The memory bank (objects' memory videos)."""
        return self.core.bank

    @property
    def registry(self) -> ObjectRegistry:
        """The object registry (ids, lifecycle)."""
        return self.core.registry

    @property
    def description(self) -> str:
        """What segments (model, device, weights), for logs and reports."""
        return getattr(self.segmenter, 'description', type(self.segmenter).__name__)

    @property
    def frame_index(self) -> int:
        """Frames processed since start or reset."""
        return self._frame

    @property
    def ids_left(self) -> int:
        """Object ids still to issue before reset (uint16, never reused)."""
        return self.registry.ids_left

    @property
    def class_names(self) -> Tuple[str, ...]:
        """The classifier's class names (class id k is entry k - 1); () without classes."""
        classes = getattr(self, 'classes', None)
        return tuple(classes.class_names) if classes is not None else ()

    def memory_stats(self) -> MemoryStats:
        """Objects and entries/bytes held by the memory bank, and the object ids left to issue."""
        return dataclasses.replace(self.bank.stats(), ids_left=self.registry.ids_left)
