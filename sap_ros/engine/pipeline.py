"""``SapPipeline``: one ERP frame in, one label map and one pointer per object out.

Per frame: sample the patches the schedule needs -> encode them in batches -> walk the zigzag path
(alternating direction each frame) and, per patch, run the stages

* **decode**: every live object whose extent touches the patch (view culling) takes one step of
  its own video (:mod:`sap_ros.engine.tracking`): SAM2 sees its memories as upstream's video
  predictor would, and nothing else unless an ``engine.*`` option says so;
* **prompts**: external clicks and masks whose direction this patch sees best;
* **discovery**: grid-point prompts where neither this patch's outputs nor the re-projected
  labels of the patches already visited (the prior) cover anything;
* **fuse**: paint the logits on the output canvas and on the work grid (the prior);

then, per frame, **merge** (objects that coincide on the sphere), **lifecycle** (seen, missing,
retired; extents for the next frame's culling) and **pointers** (one record per object). Used
unchanged by the ROS node and by replay; ``segmenter`` may be the geometric oracle. With a
classifier, a **classify** stage after fuse scores each patch's sightings and fuses them per
object (:mod:`sap_ros.engine.class_stage`); the records and the semantic map carry the classes.

Every per-pixel step (sampling, priors, fusion, extents, records) goes through a frame path
(:mod:`sap_ros.engine.frame_path`, ``engine.frame_path``): on CUDA the frame is uploaded once,
patches, logits and canvases stay on the device and one copy per frame brings back the label map
and the object table. The host reads per patch visited only small values: one copy per SAM2 call
(scores, pointers), one for the caps of that patch's sightings, one or two on discovery patches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import time
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from sap_ros.config import PipelineConfig
from sap_ros.engine.class_stage import ClassStage
from sap_ros.engine.classify import Classifier
from sap_ros.engine.discovery import merge_pairs, resolve_merges
from sap_ros.engine.extents import WORK_HW, ObjectExtents
from sap_ros.engine.frame_path import FrameOutput, FramePath, frame_path_for, make_frame_path
from sap_ros.engine.inputs import check_frame, object_mask_in_patch
from sap_ros.engine.pixels import Pixels, label_counts, like, to_host
from sap_ros.engine.records import object_records
from sap_ros.engine.schedule import EncoderSchedule, schedule_encoder
from sap_ros.engine.segmenter import Sam2Segmenter, Segmenter, SegmentOutput
from sap_ros.engine.segmenter import session as segmenter_session
from sap_ros.engine.torch_records import clear_device_tables, records_from_table
from sap_ros.engine.tracking import Decoded, OnTrackingCore, TrackingCore
from sap_ros.engine.types import FrameResult, ObjectRecord, Prompt
from sap_ros.sphere.extents import object_extents
from sap_ros.sphere.geometry import erp_row_weights
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.torch_device import FramePathKind, current_device, resolve_device

MIN_PROMPT_PX = 4  # fewer re-projected pixels than this: no geometric prompt or recovery click


@dataclass
class Sighting:
    """An object found in one patch: its confidence and SAM2 object pointer."""

    score: float
    obj_ptr: Optional[np.ndarray]


@dataclass
class FrameState:
    """What the stages of one frame share."""

    index: int
    path: FramePath
    discover: bool
    encoded: Optional[FrozenSet[int]] = None    # None: every view
    discover_views: Optional[FrozenSet[int]] = None  # None: every view (when ``discover``)
    seen: Dict[int, List[Sighting]] = field(default_factory=dict)
    follow: List[Tuple[int, Any]] = field(default_factory=list)  # this patch's sightings
    created: int = 0
    timings_ms: Dict[str, float] = field(default_factory=dict)

    def add_time(self, stage: str, t0: float) -> None:
        """Add the time since ``t0`` to ``stage``."""
        self.timings_ms[stage] = self.timings_ms.get(stage, 0.0) + _ms(t0)


class SapPipeline(OnTrackingCore):
    """The ROS-free core. ``step`` is not thread-safe: call it from one worker.

    The frame path (``engine.frame_path``) runs on ``model.device``; on the torch path SAM2's
    outputs stay on the device and patches are sampled at the segmenter's ``input_px``
    (``model.image_size``) instead of ``patches.size_px``, so SAM2 gets them without a resize.

    Args:
        config: validated configuration (:meth:`PipelineConfig.from_flat`).
        segmenter: SAM2 by default (built from ``config.model``); tests and evaluation pass an
            :class:`~sap_ros.eval.oracle_segmenter.OracleSegmenter`.
        classifier: object classes (used whatever ``classifier.kind`` says); None: the one of
            ``classifier.kind`` (``none``: no class stage, no cost).
        view_culling: False decodes every live object in every patch (benchmark baseline).

    """

    def __init__(self, config: PipelineConfig, segmenter: Optional[Segmenter] = None,
                 classifier: Optional[Classifier] = None, view_culling: bool = True) -> None:
        """Build the layout, the segmenter (loads the model) and empty state."""
        self.config = config
        self.view_culling = view_culling
        self.layout = PatchLayout.from_config(config.patches)
        self.path_kind, self.path_device = frame_path_for(config)
        on_device = self.path_kind is FramePathKind.TORCH
        self.segmenter: Segmenter = segmenter or Sam2Segmenter(config.model,
                                                               device_outputs=on_device)
        # Patch pixels the segmenter reads points in (patches are sampled at that size).
        self.input_px = (int(getattr(self.segmenter, 'input_px', 0) or self.layout.size_px)
                         if on_device else self.layout.size_px)
        self._path: Optional[FramePath] = None
        self.core = TrackingCore(self.segmenter, self.layout.overlap_matrix(), config.memory,
                                 config.discovery, config.model.image_size)
        self.extents = ObjectExtents(self.layout, config.memory.culling_margin_deg)
        self.classes = ClassStage.build(config, self.segmenter, classifier, self.layout,
                                        resolve_device(config.model.device))
        self._pending: List[Prompt] = []
        self._pending_masks: List[Tuple[int, np.ndarray]] = []
        self._frame = 0
        self._uncovered = 1.0
        self._last_schedule: Optional[EncoderSchedule] = None

    # ------------------------------------------------------------------ public API
    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        """Queue external prompts for the next frame."""
        self._pending.extend(prompts)

    def add_object_mask(self, erp_mask: np.ndarray) -> None:
        """Seed an object from a mask on the sphere (e.g. an external detector) next frame.

        ``erp_mask`` is a ``(H, W)`` bool ERP mask of any 2:1 size. It is re-projected into the
        view that sees its centroid closest to the axis and given to SAM2 there as the object's
        first mask (``add_new_mask``: SAM2 outputs exactly that mask, and remembers it).
        """
        self._pending_masks.append(object_mask_in_patch(self.layout, erp_mask,
                                                        self.segmenter.low_res_px))

    def reset(self) -> None:
        """Forget all objects and memory (ids restart at 1)."""
        self.core.reset()
        self.extents.clear()
        if self.classes is not None:
            self.classes.reset()
        self._pending_masks.clear()
        self._pending.clear()
        self._frame = 0
        self._uncovered = 1.0

    def close(self) -> None:
        """Free the model (and GPU memory); the pipeline cannot step afterwards."""
        self.segmenter.close()
        self._path = None
        self.layout.clear_cache()
        clear_device_tables()

    def step(self, erp_rgb: np.ndarray, prompts: Sequence[Prompt] = ()) -> FrameResult:
        """Segment one ERP frame ``(H, W, 3)`` uint8 RGB (2:1) -> :class:`FrameResult`."""
        t_start = time.perf_counter()
        height, _ = check_frame(erp_rgb)
        self.add_prompts(prompts)
        scale = self.config.output.scale
        state = FrameState(self._frame, self._frame_path((max(1, round(height * scale)),
                                                          max(2, 2 * round(height * scale)))),
                           False)
        t = time.perf_counter()
        self._schedule(state)
        views = None if state.encoded is None else sorted(state.encoded)
        # One segmenter session for the frame's SAM2 calls (one autocast context: each weight is
        # cast once per frame); the frame path's device is the current one (events, streams).
        with current_device(self.path_device), segmenter_session(self.segmenter):
            patches = state.path.sample(erp_rgb, self.input_px, views=views)
            extract_ms = _ms(t)
            t = time.perf_counter()
            if views is None:
                self.segmenter.begin_frame(patches, erp_rgb)
            else:
                self.segmenter.begin_frame(patches, erp_rgb, views=views)
            encode_ms = _ms(t)
            state.timings_ms.update(extract=extract_ms, encode=encode_ms, decode=0.0,
                                    discover=0.0, fuse=0.0)
            state.path.begin_frame()
            for view in self.layout.frame_path(self._frame):
                self._visit(view, state)
            t = time.perf_counter()
            out = state.path.finish([track.id for track in self.registry.live()], records=False,
                                    classes=self.classes.fusion if self.classes else None)
        labels = out.labels
        merged = self._merge(state, out, labels)
        self._lifecycle(state, out, merged)
        objects = self._pointers(state, out, labels, merged)
        if self.classes is not None:
            objects = self.classes.label(objects, out.classes)
        state.timings_ms['pointers'] = _ms(t)
        self._frame += 1
        state.timings_ms['total'] = _ms(t_start)
        return FrameResult(labels, objects, state.index, state.timings_ms,
                           None if out.classes is None else out.classes.semantic)

    def _frame_path(self, out_hw: Tuple[int, int]) -> FramePath:
        """The frame path for this output size (built again only when the size changes)."""
        path = self._path
        if path is None or path.canvas.erp_hw != out_hw:
            path = self._path = make_frame_path(
                self.path_device, self.layout, out_hw, WORK_HW, self.config.output.fusion,
                kind=self.path_kind)
        return path

    @property
    def last_schedule(self) -> Optional[EncoderSchedule]:
        """The views encoded and searched in the latest frame (None: every view, unscheduled)."""
        return self._last_schedule

    def _schedule(self, state: FrameState) -> None:
        """Stage schedule: the views to encode and to search this frame (``engine.*``)."""
        if self.config.engine.encode_all_views:
            state.discover = self.core.discovery_due(self._frame, self._uncovered)
            self._last_schedule = None
            return
        cfg = self.config.discovery
        n_views = len(self.layout)
        object_views = {}
        for track in self.registry.live():
            if self.bank.has_memory(track.id):
                views = self.extents.views_of.get(track.id) if self.view_culling else None
                object_views[track.id] = (np.ones(n_views, bool) if views is None
                                          else views.copy())
        prompt_views = [v for v, _ in self._pending_masks] + [
            int(self.layout.views_containing(p.bearing)[0]) for p in self._pending]
        searching = (cfg.enabled and cfg.max_new_per_frame > 0 and self.registry.ids_left > 0)
        schedule = schedule_encoder(
            self.layout.path, object_views, self._frame, cfg.every_n_frames, prompt_views,
            sweep_all=self._frame == 0 or self._uncovered > cfg.uncovered_fraction,
            discovery=searching)
        self._last_schedule = schedule
        state.discover = bool(schedule.discover)
        state.discover_views = frozenset(schedule.discover)
        if len(schedule.encode) < n_views:
            state.encoded = frozenset(schedule.encode)

    # ------------------------------------------------------------------ per patch
    def _visit(self, view: int, state: FrameState) -> None:
        """The stages of one patch: decode, prompts, discovery, fuse."""
        self.core.next_step()
        t = time.perf_counter()
        results: List[Decoded] = []
        if state.encoded is None or view in state.encoded:
            results = self._decode(view, state) + self._prompts(view, state)
        state.add_time('decode', t)
        budget = self.config.discovery.max_new_per_frame - state.created
        searched = state.discover_views is None or view in state.discover_views
        if state.discover and searched and budget > 0:
            t = time.perf_counter()
            found = self._discovery(view, state, results, budget)
            state.created += len(found)
            results += found
            state.add_time('discover', t)
        t = time.perf_counter()
        self.extents.follow(view, state.follow)
        state.follow = []
        logits = self._fuse(view, state, results)
        state.add_time('fuse', t)
        if self.classes is not None and results:
            t = time.perf_counter()
            self.classes.observe(view, self.segmenter, results, logits)
            state.add_time('classify', t)

    def _decode(self, view: int, state: FrameState) -> List[Decoded]:
        """Stage decode: one SAM2 step of each live object the culling puts in ``view``."""
        ids = [track.id for track in self.registry.live()
               if not self.view_culling or self.extents.decodes_in(track.id, view)]
        ids = [i for i in ids if self.bank.has_memory(i)]
        if not ids:
            return []
        prior = state.path.project_work(view, self.segmenter.low_res_px)
        priors = {i: prior == i for i in ids}
        prompts = None
        if self.config.engine.mask_prompt:
            counts = label_counts(prior, ids)  # one read for all objects
            prompts = {i: m for i, m in priors.items() if counts[i] >= MIN_PROMPT_PX}
        found = []
        for object_id, out in self.core.propagate(view, state.index, ids, priors, prompts):
            final: Optional[SegmentOutput] = out
            if not out.present and self.config.engine.click_recovery:
                final = self._recover(view, state, object_id, priors[object_id])
            if final is not None and self._sighting(object_id, view, final, state):
                found.append((object_id, final))
        return found

    def _recover(self, view: int, state: FrameState, object_id: int,
                 prior: Pixels) -> Optional[SegmentOutput]:
        """``engine.click_recovery``: a click on the re-projected mask where SAM2 lost it.

        Reads the object's re-projected mask on the host (an opt-in departure, not upstream).
        """
        mask = to_host(prior)
        if mask.sum() < MIN_PROMPT_PX:
            return None
        inside = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)
        y, x = np.unravel_index(int(np.argmax(inside[1:-1, 1:-1])), mask.shape)
        scale = self.input_px / mask.shape[0]
        point = np.array([[(x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5]])
        return self.core.correct(view, state.index, object_id, point, np.array([1]))

    def _sighting(self, object_id: int, view: int, out: Optional[SegmentOutput],
                  state: FrameState) -> bool:
        """Count a present output as a sighting and follow the object into nearby views."""
        if out is None or not out.present:
            return False
        state.seen.setdefault(object_id, []).append(Sighting(out.score, out.obj_ptr))
        state.follow.append((object_id, out.logits))  # its cap, with the patch's others
        return True

    def _prompts(self, view: int, state: FrameState) -> List[Decoded]:
        """Stage prompts: external masks and clicks whose direction ``view`` sees best."""
        results: List[Decoded] = []
        waiting = [(v, m) for v, m in self._pending_masks if v != view]
        for mask in [m for v, m in self._pending_masks if v == view]:
            results += self._created(view, state, self.core.create(view, state.index, mask=mask))
        self._pending_masks = waiting
        keep = []
        for prompt in self._pending:
            if self.layout.views_containing(prompt.bearing)[0] != view:
                keep.append(prompt)
                continue
            u, v, _ = self.layout.views[view].bearing_to_pixel(prompt.bearing[None])
            scale = self.input_px / self.layout.size_px  # the segmenter's patch pixels
            point = np.array([[(u[0] + 0.5) * scale - 0.5, (v[0] + 0.5) * scale - 0.5]])
            if prompt.positive and (prompt.object_id is None
                                    or prompt.object_id not in self.registry):
                made = self.core.create(view, state.index, points_px=point)
                results += self._created(view, state, made)
                continue
            target = prompt.object_id or self._label_under(state, view, u[0], v[0])
            if not target or target not in self.registry or not self.bank.has_memory(target):
                continue
            label = np.array([1 if prompt.positive else 0])
            out = self.core.correct(view, state.index, target, point, label)
            if self._sighting(target, view, out, state):
                results.append((target, out))
        self._pending = keep
        return results

    def _label_under(self, state: FrameState, view: int, u_px: float, v_px: float) -> int:
        """The label re-projected under a click at ``(u_px, v_px)`` (``patches.size_px``)."""
        low = self.segmenter.low_res_px
        row = min(low - 1, int(v_px * low / self.layout.size_px))
        col = min(low - 1, int(u_px * low / self.layout.size_px))
        return int(state.path.project_work(view, low)[row, col])

    def _created(self, view: int, state: FrameState, made: Optional[Decoded]) -> List[Decoded]:
        if made is None or not self._sighting(made[0], view, made[1], state):
            return []
        return [made]

    def _discovery(self, view: int, state: FrameState, results: List[Decoded],
                   budget: int) -> List[Decoded]:
        """Stage discovery: new objects where neither the prior nor this patch has one."""
        low = self.segmenter.low_res_px
        covered: Optional[Pixels] = None  # nothing tracked can be here: every point free, no read
        if results or state.path.may_cover(view, low):
            covered = state.path.project_work(view, low) != 0
            for _, out in results:
                covered = covered | like(out.logits > 0, covered)
        found = self.core.discover(view, state.index, covered, self.input_px, budget)
        return [d for made in found for d in self._created(view, state, made)]

    def _fuse(self, view: int, state: FrameState, results: List[Decoded]) -> Pixels:
        """Stage fuse: paint the patch's logits on the output canvas and the work grid."""
        low = self.segmenter.low_res_px
        ids = [object_id for object_id, _ in results]
        logits: Pixels = np.zeros((0, low, low), np.float32)
        first = results[0][1].logits if results else None
        if isinstance(first, torch.Tensor):
            logits = torch.stack([torch.as_tensor(out.logits, device=first.device)
                                  for _, out in results])
        elif results:
            logits = np.stack([to_host(out.logits) for _, out in results])
        state.path.paint(view, logits, ids)  # an empty view votes "nothing" in blend
        return logits

    # ------------------------------------------------------------------ per frame
    def _merge(self, state: FrameState, out: FrameOutput, labels: np.ndarray) -> Dict[int, int]:
        """Stage merge: objects that coincide on the sphere become one (the older id stays).

        Relabels ``labels`` and the work grid of ``out`` (host copies); returns drop -> keep.
        """
        masks = {i: m for i, m in out.work_masks.items() if i in self.registry and m.any()}
        pairs = merge_pairs(masks, erp_row_weights(WORK_HW[0]),
                            self.config.discovery.merge_iou)
        merged: Dict[int, int] = {}
        for drop, keep in resolve_merges(pairs).items():
            if drop not in self.registry or keep not in self.registry:
                continue
            self.registry.merge(keep, drop, state.index)
            self.core.forget(drop)
            self.extents.relabel(drop, keep)
            state.seen.setdefault(keep, []).extend(state.seen.pop(drop, []))
            pixels = labels == drop
            labels[pixels] = keep
            if self.classes is not None:
                self.classes.merged(out.classes, pixels, keep, drop)
            out.work_labels[out.work_labels == drop] = keep
            merged[drop] = keep
        return merged

    def _lifecycle(self, state: FrameState, out: FrameOutput, merged: Dict[int, int]) -> None:
        """Stage lifecycle: mark sightings, update extents, retire missing objects."""
        present = sorted({merged.get(i, i) for i in out.present})
        # A merge moved pixels on the work grid: the extents are measured again (on the host).
        extents = object_extents(out.work_labels, present) if merged else out.extents
        for object_id in present:
            if object_id not in self.registry or object_id not in state.seen:
                continue
            track = self.registry.get(object_id)
            elapsed = state.index - track.last_seen_frame
            score = float(np.mean([s.score for s in state.seen[object_id]]))
            self.registry.mark_seen(object_id, state.index, score)
            self.extents.update(track, elapsed, extents.get(object_id))
        self._uncovered = out.uncovered_fraction
        for object_id in self.core.end_frame(state.index):
            self.extents.forget(object_id)
            if self.classes is not None:
                self.classes.forget(object_id)

    def _pointers(self, state: FrameState, out: FrameOutput, labels: np.ndarray,
                  merged: Dict[int, int]) -> List[ObjectRecord]:
        """Stage pointers: drop retired ids from the map, one record per object in it.

        From the downloaded object table when the frame had no merge (the device path), else
        from the host label map.
        """
        live = {t.id: t for t in self.registry.live()}
        table = None if merged else out.table
        in_map = sorted({merged.get(i, i) for i in out.on_map})
        gone = [i for i in in_map if i not in live]
        if gone:
            pixels = np.isin(labels, gone)
            labels[pixels] = 0
            ClassStage.cleared(out.classes, pixels)
        ids_in_map = [i for i in in_map if i in live]
        scores: Dict[int, float] = {}
        embeddings: Dict[int, np.ndarray] = {}
        for object_id in ids_in_map:
            sightings = state.seen.get(object_id)
            if not sightings:
                continue
            scores[object_id] = float(np.mean([s.score for s in sightings]))
            best = max(sightings, key=lambda s: (s.obj_ptr is not None, s.score))
            if best.obj_ptr is not None:
                embeddings[object_id] = best.obj_ptr
        ages = {i: live[i].age_frames(state.index) for i in ids_in_map}
        since = {i: live[i].frames_since_seen(state.index) for i in ids_in_map}
        shown = embeddings if self.config.output.embeddings else None
        if table is not None:
            return [r for r in records_from_table(table, scores, ages, since, shown)
                    if r.id in live]
        return object_records(labels, scores=scores, ages=ages, frames_since_seen=since,
                              embeddings=shown)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
