"""``SapPipeline``: one ERP frame in, one label map and one pointer per object out.

Per frame: extract all patches (cached tables) -> encode them in batches -> walk the zigzag path
(alternating direction each frame) and, per patch, decode every live object whose extent touches
it (view culling) from the memories the bank selects for that view, prompted with its mask
re-projected from the patches already visited (geometric prompt) -> external prompts -> discovery
in the uncovered part -> paint the logits on the sphere (least-distortion fusion) -> lifecycle and
pointers. Used unchanged by the ROS node and by replay; ``segmenter`` may be the geometric oracle.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from sap_ros.config import PipelineConfig
from sap_ros.engine.discovery import (
    CandidateFilter,
    merge_pairs,
    propose_new_masks,
    resolve_merges,
)
from sap_ros.engine.memory import MemoryBank, MemoryStats
from sap_ros.engine.objects import MAX_OBJECT_ID, ObjectRegistry, ObjectTrack
from sap_ros.engine.pointers import object_pointers
from sap_ros.engine.segmenter import Sam2Segmenter, Segmenter, SegmentOutput, TrackRequest
from sap_ros.engine.types import FrameResult, Prompt
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.culling import views_touching
from sap_ros.sphere.fusion import LabelCanvas, sample_bilinear
from sap_ros.sphere.geometry import (
    angular_distance_deg,
    erp_bearings,
    erp_row_weights,
    validate_erp_shape,
)
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches

WORK_HW = (128, 256)        # low-res sphere grid for geometric prompts and object extents
MIN_PROMPT_PX = 4           # fewer re-projected pixels than this: no mask prompt
MAX_MOTION_DEG = 90.0       # cap on the per-frame motion that dilates an extent for culling
HALF_DIAGONAL = 0.5 * 2.0 ** 0.5  # of a square pixel, in pixel sides: slack around pixel centres

_LOG = logging.getLogger(__name__)


class SapPipeline:
    """The ROS-free core. ``step`` is not thread-safe: call it from one worker.

    Args:
        config: validated configuration (:meth:`PipelineConfig.from_flat`).
        segmenter: SAM2 by default (built from ``config.model``); tests and evaluation pass an
            :class:`~sap_ros.eval.oracle_segmenter.OracleSegmenter`.

    """

    def __init__(self, config: PipelineConfig, segmenter: Optional[Segmenter] = None,
                 view_culling: bool = True) -> None:
        """Build the layout, the segmenter (loads the model) and empty state.

        ``view_culling=False`` decodes every live object in every patch (benchmark baseline).
        """
        self.config = config
        self.view_culling = view_culling
        self.layout = PatchLayout.from_config(config.patches)
        self.segmenter: Segmenter = segmenter or Sam2Segmenter(config.model)
        self._overlap = self.layout.overlap_matrix()
        mem = config.memory
        self.bank = MemoryBank(self._overlap, mem.short_term, mem.long_term, mem.refresh_score,
                               mem.max_objects)
        self.registry = ObjectRegistry(mem.retire_after_frames, mem.max_objects)
        self._filter = CandidateFilter.from_config(config.discovery)
        self._work = LabelCanvas(self.layout, WORK_HW)
        self._work_bearings = erp_bearings(WORK_HW[1], WORK_HW[0]).reshape(-1, 3)
        self._work_weights = np.repeat(erp_row_weights(WORK_HW[0]), WORK_HW[1])
        self._half_fov = self.layout.fov_deg / 2.0
        self._views_of: Dict[int, np.ndarray] = {}
        self._pending: List[Prompt] = []
        self._pending_masks: List[Tuple[int, np.ndarray]] = []
        self._obj_masks: Dict[int, np.ndarray] = {}
        self._frame = 0
        self._step = 0
        self._uncovered = 1.0
        self._exhausted_logged = False

    # ------------------------------------------------------------------ public API
    @property
    def description(self) -> str:
        """What segments (model, device, weights), for logs."""
        return getattr(self.segmenter, 'description', type(self.segmenter).__name__)

    @property
    def frame_index(self) -> int:
        """Frames processed since start or :meth:`reset`."""
        return self._frame

    @property
    def ids_left(self) -> int:
        """Object ids still to issue before :meth:`reset` (uint16, never reused)."""
        return self.registry.ids_left

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        """Queue external prompts for the next frame."""
        self._pending.extend(prompts)

    def add_object_mask(self, erp_mask: np.ndarray) -> None:
        """Seed an object from a mask on the sphere (e.g. an external detector) next frame.

        ``erp_mask`` is a ``(H, W)`` bool ERP mask of any 2:1 size. It is re-projected into the
        view that sees its centroid closest to the axis and given to SAM2 there as a
        conditioning mask (SAM2 then outputs exactly that mask, and remembers it).
        """
        mask = np.asarray(erp_mask).astype(bool)
        validate_erp_shape(mask.shape)
        if not mask.any():
            raise InvalidInputError('object mask is empty')
        h, w = mask.shape
        bearings = erp_bearings(w, h)[mask]
        weights = np.repeat(erp_row_weights(h)[:, None], w, axis=1)[mask]
        centroid = (bearings * weights[:, None]).sum(0)
        if np.linalg.norm(centroid) < 1e-9:
            centroid = bearings[0]
        view = int(self.layout.views_containing(centroid / np.linalg.norm(centroid))[0])
        low = self.segmenter.low_res_px
        patch = extract_patches(self.layout, mask.astype(np.uint8) * 255, low * 4, views=[view])
        self._pending_masks.append((view, patch[0] >= 128))

    def reset(self) -> None:
        """Forget all objects and memory (ids restart at 1)."""
        self.bank.clear()
        self._pending_masks.clear()
        self.registry.reset()
        self._views_of.clear()
        self._pending.clear()
        self._work.clear()
        self._frame = 0
        self._uncovered = 1.0
        self._exhausted_logged = False

    def close(self) -> None:
        """Free the model (and GPU memory); the pipeline cannot step afterwards."""
        self.segmenter.close()
        self.layout.clear_cache()

    def memory_stats(self) -> MemoryStats:
        """Objects and entries/bytes held by the memory bank, and the object ids left to issue."""
        return dataclasses.replace(self.bank.stats(), ids_left=self.registry.ids_left)

    def step(self, erp_rgb: np.ndarray, prompts: Sequence[Prompt] = ()) -> FrameResult:
        """Segment one ERP frame ``(H, W, 3)`` uint8 RGB (2:1) -> :class:`FrameResult`."""
        t_start = time.perf_counter()
        height, width = _check_frame(erp_rgb)
        self.add_prompts(prompts)
        timings: Dict[str, float] = {}
        frame = self._frame
        path = self.layout.frame_path(frame)

        t = time.perf_counter()
        patches = extract_patches(self.layout, erp_rgb)
        timings['extract'] = _ms(t)
        t = time.perf_counter()
        self.segmenter.begin_frame(patches, erp_rgb)
        timings['encode'] = _ms(t)

        out_hw = (max(1, round(height * self.config.output.scale)),
                  max(2, 2 * round(height * self.config.output.scale)))
        canvas = LabelCanvas(self.layout, out_hw, mode=self.config.output.fusion)
        self._work.clear()
        self._obj_masks = {}
        seen: Dict[int, List[Tuple[float, Optional[np.ndarray]]]] = {}
        discover_now = self._discovery_due(frame)
        created = 0
        decode_ms = discover_ms = fuse_ms = 0.0
        for view in path:
            self._step += 1
            t = time.perf_counter()
            results = self._decode_view(view, frame, seen)
            results += self._apply_prompts(view, frame, seen)
            decode_ms += _ms(t)
            if discover_now and created < self.config.discovery.max_new_per_frame:
                t = time.perf_counter()
                found = self._discover(view, frame, results, seen,
                                       self.config.discovery.max_new_per_frame - created)
                created += len(found)
                results += found
                discover_ms += _ms(t)
            t = time.perf_counter()
            low = self.segmenter.low_res_px
            ids = np.array([object_id for object_id, _ in results], dtype=np.uint16)
            logits = (np.stack([out.logits for _, out in results]) if results
                      else np.zeros((0, low, low), np.float32))
            # A view with no object still votes "nothing here" in blend mode.
            canvas.paint_logits(view, logits, ids)
            if results:
                self._work.paint_logits(view, logits, ids)
                self._accumulate_masks(view, ids, logits)
            fuse_ms += _ms(t)
        timings.update(decode=decode_ms, discover=discover_ms, fuse=fuse_ms)

        t = time.perf_counter()
        labels = canvas.labels.copy()
        objects = self._finish_frame(frame, labels, seen)
        timings['pointers'] = _ms(t)
        self._frame += 1
        timings['total'] = _ms(t_start)
        return FrameResult(labels, objects, frame, timings)

    # ------------------------------------------------------------------ per patch
    def _decode_view(self, view: int, frame: int,
                     seen: Dict[int, List[Tuple[float, Optional[np.ndarray]]]]
                     ) -> List[Tuple[int, SegmentOutput]]:
        """Decode the live objects whose extent touches ``view`` (view culling)."""
        candidates = [track.id for track in self.registry.live()
                      if self.bank.has_memory(track.id)
                      and (not self.view_culling
                           or self._views_of.get(track.id, np.ones(len(self.layout), bool))[view])]
        if not candidates:
            return []
        prior = self._project_work(view)
        mem = self.config.memory
        requests = []
        for object_id in candidates:
            cond, recent = self.bank.select(object_id, view, self._step, mem.long_term,
                                            mem.short_term)
            mask = prior == object_id
            requests.append(TrackRequest([e.payload for e in cond], [e.payload for e in recent],
                                         mask if mask.sum() >= MIN_PROMPT_PX else None))
        # One call: SAM2 batches the objects that share memory counts and prompt kind.
        outputs = self.segmenter.track_many(view, requests)
        return [(object_id, out) for object_id, out in zip(candidates, outputs)
                if self._record(object_id, view, frame, out, seen, prompted=False)]

    def _record(self, object_id: int, view: int, frame: int, out: SegmentOutput,
                seen: Dict[int, List[Tuple[float, Optional[np.ndarray]]]],
                prompted: bool) -> bool:
        """Store the memory of a confident, non-empty output; True when the object is there."""
        if not out.present:
            return False
        score = out.score
        self.bank.add(object_id, view, self._step, frame, score, out.memory, prompted=prompted)
        seen.setdefault(object_id, []).append((score, out.obj_ptr))
        # Follow the object beyond its known extent: add the views this sighting's mask can
        # touch (not every neighbour of the view, which decoded each object in ~15 of 26 views).
        views = self._views_of.setdefault(object_id, np.zeros(len(self.layout), bool))
        views |= self._views_near(view, out.logits > 0)
        return True

    def _views_near(self, view: int, mask: np.ndarray) -> np.ndarray:
        """Views that the cap around ``mask`` (a decoder-resolution mask in ``view``) touches."""
        low = mask.shape[0]
        grid = self.layout.cached(
            ('pipeline.grid_bearings', view, low),
            lambda: self.layout.views[view].pixel_grid_bearings(low).reshape(-1, 3))
        bearings = grid[mask.reshape(-1)]
        centroid = bearings.sum(axis=0)
        centroid /= np.linalg.norm(centroid)
        radius = float(angular_distance_deg(bearings, centroid).max())
        # A mask pixel reaches half its diagonal beyond its centre; a decoder pixel spans at most
        # fov / low degrees (at the patch centre).
        margin = self.config.memory.culling_margin_deg + HALF_DIAGONAL * self.layout.fov_deg / low
        return views_touching(self.layout.bases, self._half_fov, centroid, radius, margin)

    def _project_work(self, view: int) -> np.ndarray:
        """The current frame's labels so far, re-projected into ``view`` at decoder resolution."""
        low = self.segmenter.low_res_px
        work = self._work.labels
        return extract_patches(self.layout, work, low, views=[view],
                               interpolation=cv2.INTER_NEAREST)[0]

    def _apply_prompts(self, view: int, frame: int,
                       seen: Dict[int, List[Tuple[float, Optional[np.ndarray]]]]
                       ) -> List[Tuple[int, SegmentOutput]]:
        """External prompts whose direction this view sees best (nearest axis)."""
        results = []
        waiting = []
        for mask_view, mask in self._pending_masks:
            if mask_view != view:
                waiting.append((mask_view, mask))
                continue
            results += self._prompt_new_object(view, frame, seen, mask_prompt=mask)
        self._pending_masks = waiting
        keep = []
        for prompt in self._pending:
            if self.layout.views_containing(prompt.bearing)[0] != view:
                keep.append(prompt)
                continue
            u, v, _ = self.layout.views[view].bearing_to_pixel(prompt.bearing[None])
            point = np.array([[u[0], v[0]]])
            if prompt.positive and (prompt.object_id is None
                                    or prompt.object_id not in self.registry):
                results += self._prompt_new_object(view, frame, seen, points_px=point)
                continue
            target = prompt.object_id or int(self._project_work(view)[
                min(self.segmenter.low_res_px - 1, int(v[0] * self.segmenter.low_res_px
                                                         / self.layout.size_px)),
                min(self.segmenter.low_res_px - 1, int(u[0] * self.segmenter.low_res_px
                                                         / self.layout.size_px))])
            if not target or target not in self.registry:
                continue
            cond, recent = self.bank.select(target, view, self._step, 1, 1)
            out = self.segmenter.track(view, [e.payload for e in cond],
                                       [e.payload for e in recent], points_px=point,
                                       point_labels=np.array([1 if prompt.positive else 0]))
            if self._record(target, view, frame, out, seen, prompted=True):
                results.append((target, out))
        self._pending = keep
        return results

    def _prompt_new_object(self, view: int, frame: int,
                           seen: Dict[int, List[Tuple[float, Optional[np.ndarray]]]],
                           **prompt: np.ndarray) -> List[Tuple[int, SegmentOutput]]:
        """A new object from a conditioning prompt in ``view``; none when SAM2 finds nothing.

        The new id is retired at once when the output is empty (ids are never reused, so the
        id is spent) and not issued at all once ids are exhausted.
        """
        track = self._new_object(frame)
        if track is None:
            return []
        out = self.segmenter.track(view, [], [], as_conditioning=True, **prompt)
        if self._record(track.id, view, frame, out, seen, prompted=True):
            return [(track.id, out)]
        self.registry.retire(track.id)
        return []

    def _new_object(self, frame: int) -> Optional[ObjectTrack]:
        """A new object, or None once every uint16 id was issued (tracking goes on; reset)."""
        if self.registry.ids_left == 0:
            if not self._exhausted_logged:
                _LOG.error('object ids exhausted: %d objects were created since the last reset '
                           '(ids are uint16 and never reused); known objects are still tracked, '
                           'no new ones until the reset service is called', MAX_OBJECT_ID)
                self._exhausted_logged = True
            return None
        return self.registry.create(frame)

    def _discovery_due(self, frame: int) -> bool:
        cfg = self.config.discovery
        if not cfg.enabled or cfg.max_new_per_frame == 0 or self.registry.ids_left == 0:
            return False
        return frame % cfg.every_n_frames == 0 or self._uncovered > cfg.uncovered_fraction

    def _discover(self, view: int, frame: int, results: List[Tuple[int, SegmentOutput]],
                  seen: Dict[int, List[Tuple[float, Optional[np.ndarray]]]],
                  budget: int) -> List[Tuple[int, SegmentOutput]]:
        """Grid-point prompts in the part of the patch no object covers -> new objects."""
        covered = self._project_work(view) != 0
        for _, out in results:
            covered |= out.logits > 0
        proposals = propose_new_masks(self.segmenter, view, covered, self.layout.size_px,
                                      self.config.discovery.points_per_side, self._filter)
        found: List[Tuple[int, SegmentOutput]] = []
        for mask in proposals[:budget]:
            found += self._prompt_new_object(view, frame, seen, mask_prompt=mask)
        return found

    def _accumulate_masks(self, view: int, ids: np.ndarray, logits: np.ndarray) -> None:
        """Union of each object's masks over the views, on the work grid (for merging)."""
        tables = self._work.tables
        scores = sample_bilinear(logits, tables.pixel_coords(view, logits.shape[1]))
        for object_id, row in zip(ids.tolist(), scores):
            mask = self._obj_masks.get(object_id)
            if mask is None:
                mask = self._obj_masks[object_id] = np.zeros(WORK_HW[0] * WORK_HW[1], bool)
            mask[tables.erp_index[view][row > 0]] = True

    # ------------------------------------------------------------------ per frame
    def _merge_duplicates(self, frame: int, labels: np.ndarray,
                          seen: Dict[int, List[Tuple[float, Optional[np.ndarray]]]]) -> None:
        """Objects that coincide on the sphere become one (the older id is kept)."""
        masks = {i: m.reshape(WORK_HW) for i, m in self._obj_masks.items()
                 if i in self.registry and m.any()}
        pairs = merge_pairs(masks, erp_row_weights(WORK_HW[0]),
                            self.config.discovery.merge_iou)
        for drop, keep in resolve_merges(pairs).items():
            if drop not in self.registry or keep not in self.registry:
                continue
            self.registry.merge(keep, drop, frame)
            self.bank.remove_object(drop)
            self._views_of.pop(drop, None)
            seen.setdefault(keep, []).extend(seen.pop(drop, []))
            labels[labels == drop] = keep
            work = self._work.labels
            work[work == drop] = keep

    def _finish_frame(self, frame: int, labels: np.ndarray,
                      seen: Dict[int, List[Tuple[float, Optional[np.ndarray]]]]) -> list:
        self._merge_duplicates(frame, labels, seen)
        work = self._work.labels.reshape(-1)
        present = set(np.unique(labels[labels > 0]).tolist()) | set(
            np.unique(work[work > 0]).tolist())
        scores: Dict[int, float] = {}
        embeddings: Dict[int, np.ndarray] = {}
        for object_id in present:
            if object_id not in self.registry or object_id not in seen:
                continue
            sightings = seen[object_id]
            scores[object_id] = float(np.mean([s for s, _ in sightings]))
            ptrs = [p for _, p in sightings if p is not None]
            if ptrs:
                embeddings[object_id] = ptrs[int(np.argmax([s for s, p in sightings
                                                            if p is not None]))]
            elapsed = frame - self.registry.get(object_id).last_seen_frame
            self.registry.mark_seen(object_id, frame, scores[object_id])
            self._update_extent(object_id, work == object_id, elapsed)
        self._uncovered = float(self._work_weights[work == 0].sum() / self._work_weights.sum())
        for object_id in self.registry.end_frame(frame) + self.registry.enforce_capacity():
            self.bank.remove_object(object_id)
            self._views_of.pop(object_id, None)
        for object_id in self.bank.object_ids():
            if object_id not in self.registry:
                self.bank.remove_object(object_id)
        live = {t.id: t for t in self.registry.live()}
        ids_in_map = [i for i in np.unique(labels) if i and i in live]
        drop = np.ones(int(labels.max()) + 1 if labels.size else 1, dtype=bool)
        drop[ids_in_map] = False
        drop[0] = False
        if drop.any():
            labels[drop[labels]] = 0
        return object_pointers(
            labels, scores=scores,
            ages={i: live[i].age_frames(frame) for i in ids_in_map},
            frames_since_seen={i: live[i].frames_since_seen(frame) for i in ids_in_map},
            embeddings=embeddings if self.config.output.embeddings else None)

    def _update_extent(self, object_id: int, mask: np.ndarray, elapsed_frames: int) -> None:
        """Centroid, angular radius and motion on the work grid -> the views to decode it in next.

        The extent is dilated by ``memory.culling_margin_deg`` plus how far its centroid moved per
        frame since its previous sighting (``elapsed_frames`` ago), so an object that the camera's
        turn or its own motion carries across views is still decoded where it will be.
        """
        if not mask.any():
            return
        bearings = self._work_bearings[mask]
        weights = self._work_weights[mask]
        centroid = (bearings * weights[:, None]).sum(0)
        norm = np.linalg.norm(centroid)
        if norm < 1e-9:
            centroid, radius = np.array([1.0, 0.0, 0.0]), 180.0
        else:
            centroid = centroid / norm
            radius = float(angular_distance_deg(bearings, centroid).max())
        track = self.registry.get(object_id)
        if track.centroid is not None and elapsed_frames > 0:
            moved = float(angular_distance_deg(track.centroid, centroid))
            track.motion_deg = min(moved / elapsed_frames, MAX_MOTION_DEG)
        track.centroid, track.extent_radius_deg = centroid, radius
        # Half a work-grid pixel's diagonal (a pixel is at most 180 / rows degrees on a side).
        margin = (self.config.memory.culling_margin_deg + track.motion_deg
                  + HALF_DIAGONAL * 180.0 / WORK_HW[0])
        self._views_of[object_id] = views_touching(self.layout.bases, self._half_fov, centroid,
                                                   radius, margin)


def _check_frame(erp: np.ndarray) -> Tuple[int, int]:
    if not isinstance(erp, np.ndarray):
        raise InvalidInputError(f'ERP frame must be a NumPy array, got {type(erp).__name__}')
    if erp.ndim != 3 or erp.shape[2] != 3 or erp.dtype != np.uint8:
        raise InvalidInputError(f'ERP frame must be H x W x 3 uint8 RGB, got shape '
                                f'{tuple(erp.shape)} dtype {erp.dtype}')
    return validate_erp_shape(erp.shape)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
