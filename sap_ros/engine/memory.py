"""Bounded per-object memory bank: each object's own video of SAM2 memories.

SAM2's video predictor keeps, per object, one memory per frame of the video: the prompted frames
as **conditioning** memories, every other frame as a **recent (non-conditioning)** memory, and
attends, at frame ``t``, to all conditioning memories, to the recent memories of frames
``t - 1 .. t - (num_maskmem - 1)`` and to the object pointers of frames ``t - 1 .. t - 15``, each
at its true distance. The engine decodes an object in a sequence of patches (several views per
camera frame, none where culling skips it): that sequence is the object's video here. A **step**
is one decode of the object; :meth:`MemoryBank.add` stores it under the object's next step index
(0, 1, 2, ...) whether SAM2 found the object there or not (an absent step carries SAM2's
no-object memory, exactly as upstream stores an occluded frame).

Bounds (config keys kept from before: ``memory.short_term`` is the recent part,
``memory.long_term`` the conditioning part):

* recent: the last ``short_term`` non-conditioning steps keep their full memory (``short_term =
  num_maskmem - 1 = 6`` is what SAM2 attends to); the last ``pointer_steps`` non-conditioning steps
  keep their object pointer (256 floats; 15 = ``max_obj_ptrs_in_encoder - 1`` is what SAM2 reads);
* conditioning: at most ``long_term`` steps, the latest ones, as upstream's
  ``max_cond_frames_in_attn`` selects them (``select_closest_cond_frames``: the closest in time,
  which in a forward video are the latest). Like upstream's unselected conditioning frames, a step
  that leaves the conditioning part still serves as a recent memory and pointer while it is among
  the object's last ``short_term`` / ``pointer_steps`` unselected steps. Promoted (unprompted)
  steps go before prompted ones. Upstream's default keeps every prompted frame
  (``max_cond_frames_in_attn = -1``): the same while an object has at most ``long_term`` of them.

Options (off by default, each changes what SAM2 receives; unmeasured with real weights):

* ``keep_creation`` (``memory.keep_creation_prompt``): past the bound the object's first
  conditioning step (its creation prompt) stays while ``long_term >= 2``; the oldest other goes;

* ``promote_confident`` (``memory.promote_confident``): a step whose score reaches
  ``refresh_score`` is also stored as conditioning (upstream: only prompted frames);
* ``select_by_view_overlap`` (``memory.select_by_view_overlap``): :meth:`MemoryBank.context`
  ranks the stored steps by the overlap of their view with the patch being decoded and gives
  SAM2 the best ones at slots by rank (the earlier engine), not at their true distance.

At most ``max_objects`` objects hold memory; a memory for a new object beyond that drops the one
whose newest memory is oldest (:attr:`MemoryBank.evicted_objects`; the engine keeps its registry
at the same capacity, so this is a safety net).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import math
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from sap_ros.errors import ConfigError, InvalidInputError

#: Object pointers SAM2 reads from earlier non-conditioning frames (max_obj_ptrs_in_encoder - 1).
DEFAULT_POINTER_STEPS = 15


@dataclass
class MemoryEntry:
    """One decode (step) of one object.

    Attributes:
        object_id: id of the object the memory belongs to.
        step: the step's index in the object's own video (0 = its first decode).
        view_index: patch view (0..N-1 in the layout) it was decoded in.
        global_step: engine-wide patch-step counter when it was made (monotonic across frames).
        frame_index: camera frame it was made in.
        score: confidence of the mask (predicted IoU x object score), in [0, 1].
        conditioning: True for a prompted (or promoted) step.
        prompted: True for a prompted step (creation, external prompt, correction).
        present: False when SAM2 found the object absent (a no-object memory).
        payload: the segmenter's memory (opaque here), or None (geometric oracle).
        nbytes: ``payload.nbytes`` when the payload has it, else 0.
        obj_ptr: the step's object pointer when it is conditioning (kept for when it leaves the
            conditioning part and serves as a recent step), else None.

    """

    object_id: int
    step: int
    view_index: int
    global_step: int
    frame_index: int
    score: float
    conditioning: bool
    prompted: bool
    present: bool
    payload: Any
    nbytes: int
    obj_ptr: Optional[np.ndarray] = None


@dataclass(frozen=True)
class MemoryContext:
    """What one object attends to at one step: memories and pointers with their distance.

    ``*_ago`` are how many steps of the object's video lie between each memory and the step being
    decoded (>= 1). ``pointers`` are object pointers of earlier non-conditioning steps (the
    recent memories' own pointers come with their payloads and are not repeated here).
    """

    cond: Tuple[Any, ...] = ()
    cond_ago: Tuple[int, ...] = ()
    recent: Tuple[Any, ...] = ()
    recent_ago: Tuple[int, ...] = ()
    pointers: Tuple[np.ndarray, ...] = ()
    pointers_ago: Tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        """No memory at all (a first, prompted step)."""
        return not self.cond and not self.recent

    def signature(self) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        """The distances: objects with equal signatures can share one batched SAM2 call."""
        return self.cond_ago, self.recent_ago, self.pointers_ago

    def map(self, fn: Callable[[Any], Any]) -> 'MemoryContext':
        """The same context with every payload passed through ``fn`` (segmenter wrappers)."""
        return MemoryContext(tuple(fn(p) for p in self.cond), self.cond_ago,
                             tuple(fn(p) for p in self.recent), self.recent_ago,
                             self.pointers, self.pointers_ago)


@dataclass(frozen=True)
class MemoryStats:
    """Size of the bank: objects, distinct memory entries and bytes, entries per part.

    ``bytes`` counts distinct payloads and the kept object pointers. ``ids_left`` is filled in by
    the pipeline: object ids it can still issue before a reset (None from the bank alone).
    """

    objects: int
    entries: int
    bytes: int
    recent: int
    conditioning: int
    pointers: int = 0
    ids_left: Optional[int] = None


@dataclass
class _ObjectVideo:
    steps: int = 0
    cond: List[MemoryEntry] = field(default_factory=list)
    recent: Deque[MemoryEntry] = field(default_factory=deque)
    pointers: Deque[Tuple[int, np.ndarray]] = field(default_factory=deque)
    first_cond: Optional[MemoryEntry] = None
    last_global_step: int = 0


def _payload_nbytes(payload: Any) -> int:
    if payload is None:
        return 0
    return int(getattr(payload, 'nbytes', 0) or 0)


class MemoryBank:
    """The videos of every tracked object, bounded in entries and bytes (module docstring)."""

    def __init__(self, view_overlap: np.ndarray, short_term: int, long_term: int,
                 max_objects: int, *, pointer_steps: int = DEFAULT_POINTER_STEPS,
                 promote_confident: bool = False, refresh_score: float = 0.7,
                 select_by_view_overlap: bool = False,
                 recent_half_life_steps: Optional[float] = None,
                 keep_creation: bool = False) -> None:
        """Create an empty bank.

        Args:
            view_overlap: ``(N, N)`` overlap fraction in [0, 1] between patch views (1 on the
                diagonal); used by ``select_by_view_overlap`` only.
            short_term: recent (non-conditioning) memories kept per object (>= 1).
            long_term: conditioning memories kept per object (>= 1).
            max_objects: most objects holding memory at once (>= 1).
            pointer_steps: object pointers of recent steps kept per object (>= 0).
            promote_confident: also store a step scoring ``refresh_score`` as conditioning.
            refresh_score: threshold of ``promote_confident``, in [0, 1].
            select_by_view_overlap: rank memories by view overlap (see module docstring).
            recent_half_life_steps: recency half-life of that ranking, in engine steps;
                None = half the number of views.
            keep_creation: past ``long_term`` keep the creation prompt (see module docstring).

        """
        overlap = np.asarray(view_overlap, dtype=np.float64)
        if (overlap.ndim != 2 or overlap.shape[0] != overlap.shape[1] or overlap.shape[0] == 0
                or not np.all(np.isfinite(overlap))
                or np.any(overlap < -1e-9) or np.any(overlap > 1.0 + 1e-9)):
            raise InvalidInputError(
                f'view_overlap must be a non-empty square matrix of fractions in [0, 1], '
                f'got shape {overlap.shape}')
        _check_int('memory.short_term', short_term, 1)
        _check_int('memory.long_term', long_term, 1)
        _check_int('memory.max_objects', max_objects, 1)
        _check_int('pointer_steps', pointer_steps, 0)
        if not 0.0 <= float(refresh_score) <= 1.0:
            raise ConfigError('memory.refresh_score', f'must be in [0, 1], got {refresh_score}')
        half_life = (max(1.0, 0.5 * overlap.shape[0]) if recent_half_life_steps is None
                     else float(recent_half_life_steps))
        if not (math.isfinite(half_life) and half_life > 0.0):
            raise ConfigError('recent_half_life_steps', f'must be a positive number, got '
                                                        f'{recent_half_life_steps}')
        self._overlap = np.clip(overlap, 0.0, 1.0)
        self._overlap.setflags(write=False)
        self.short_term, self.long_term = int(short_term), int(long_term)
        self.pointer_steps = int(pointer_steps)
        self.promote_confident = bool(promote_confident)
        self.refresh_score = float(refresh_score)
        self.select_by_view_overlap = bool(select_by_view_overlap)
        self.keep_creation = bool(keep_creation)
        self._half_life = half_life
        self._max_objects = int(max_objects)
        self._objects: Dict[int, _ObjectVideo] = {}
        self._evicted_objects = 0

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def n_views(self) -> int:
        """Number of patch views N the bank was built for."""
        return int(self._overlap.shape[0])

    @property
    def entries_limit(self) -> int:
        """Hard cap on memory entries: ``max_objects * (short_term + long_term)``."""
        return self._max_objects * (self.short_term + self.long_term)

    @property
    def evicted_objects(self) -> int:
        """Objects dropped because a new one arrived with ``max_objects`` already held."""
        return self._evicted_objects

    def stats(self) -> MemoryStats:
        """Current size of the bank."""
        recent = sum(len(v.recent) for v in self._objects.values())
        cond = sum(len(v.cond) for v in self._objects.values())
        pointers = sum(len(v.pointers) for v in self._objects.values())
        payloads = {id(e.payload): e.nbytes for v in self._objects.values()
                    for e in list(v.cond) + list(v.recent) if e.payload is not None}
        ptr_bytes = sum(p.nbytes for v in self._objects.values() for _, p in v.pointers)
        return MemoryStats(objects=len(self._objects), entries=recent + cond,
                           bytes=sum(payloads.values()) + ptr_bytes, recent=recent,
                           conditioning=cond, pointers=pointers)

    def object_ids(self) -> List[int]:
        """Ids of the objects holding memory, ascending."""
        return sorted(self._objects)

    def has_memory(self, object_id: int) -> bool:
        """True when the object holds a conditioning memory (SAM2 can propagate it)."""
        video = self._objects.get(object_id)
        return video is not None and bool(video.cond)

    def steps(self, object_id: int) -> int:
        """Steps the object was decoded in so far (the index of its next step)."""
        video = self._objects.get(object_id)
        return 0 if video is None else video.steps

    def entries(self, object_id: int) -> Tuple[List[MemoryEntry], List[MemoryEntry]]:
        """``(conditioning, recent)`` entries of the object, oldest first."""
        video = self._objects.get(object_id)
        return ([], []) if video is None else (list(video.cond), list(video.recent))

    # -- updates -------------------------------------------------------------------------------

    def add(self, object_id: int, view_index: int, global_step: int, frame_index: int,
            score: float, payload: Any, *, prompted: bool = False, present: bool = True,
            obj_ptr: Optional[np.ndarray] = None, replace_last: bool = False) -> MemoryEntry:
        """Store the memory of the object's next step (or redo its last one: ``replace_last``).

        ``prompted`` steps are conditioning; others recent (or conditioning too when
        ``promote_confident`` and ``score >= refresh_score``). ``obj_ptr`` is the step's object
        pointer, kept for ``pointer_steps`` steps after its full memory left the recent part.
        """
        self._check_view(view_index)
        if not math.isfinite(float(score)):
            raise InvalidInputError(f'memory score must be finite, got {score}')
        video = self._objects.get(object_id)
        if video is None:
            if len(self._objects) >= self._max_objects:
                self._evict_stalest_object()
            video = self._objects[object_id] = _ObjectVideo()
        if replace_last and video.steps > 0:
            video.steps -= 1
            self._forget_step(video, video.steps)
        promoted = (not prompted and self.promote_confident
                    and float(score) >= self.refresh_score)
        entry = MemoryEntry(object_id, video.steps, int(view_index), int(global_step),
                            int(frame_index), float(score), prompted or promoted, prompted,
                            bool(present), payload, _payload_nbytes(payload),
                            None if obj_ptr is None or not (prompted or promoted)
                            else np.asarray(obj_ptr, np.float32))
        video.steps += 1
        video.last_global_step = max(video.last_global_step, entry.global_step)
        if entry.conditioning:
            self._add_cond(video, entry, prompted)
            return entry
        video.recent.append(entry)
        while len(video.recent) > self.short_term:
            video.recent.popleft()
        if obj_ptr is not None and self.pointer_steps > 0:
            video.pointers.append((entry.step, np.asarray(obj_ptr, np.float32)))
            while len(video.pointers) > self.pointer_steps:
                video.pointers.popleft()
        return entry

    def remove_object(self, object_id: int) -> None:
        """Forget every memory of ``object_id`` (no-op when it has none)."""
        self._objects.pop(object_id, None)

    def clear(self) -> None:
        """Forget every object."""
        self._objects.clear()

    # -- queries -------------------------------------------------------------------------------

    def context(self, object_id: int, view_index: int = 0, global_step: int = 0
                ) -> MemoryContext:
        """What SAM2 attends to at the object's next step (decoded in ``view_index``).

        By default every conditioning memory, the recent memories and the kept pointers, each at
        its true distance in the object's video; ``global_step`` and the view matter only with
        ``select_by_view_overlap``. (A correction of a step reuses the context that step was
        decoded with: :class:`~sap_ros.engine.tracking.TrackingCore` keeps it.)
        """
        self._check_view(view_index)
        video = self._objects.get(object_id)
        if video is None:
            return MemoryContext()
        now = video.steps
        cond, recent = list(video.cond), list(video.recent)
        if self.select_by_view_overlap:
            return self._ranked_context(cond, recent, view_index, global_step)
        recent_steps = {e.step for e in recent}
        ptrs = [(s, p) for s, p in video.pointers if s not in recent_steps]
        return MemoryContext(
            tuple(e.payload for e in cond), tuple(now - e.step for e in cond),
            tuple(e.payload for e in recent), tuple(now - e.step for e in recent),
            tuple(p for _, p in ptrs), tuple(now - s for s, _ in ptrs))

    def _ranked_context(self, conds: List[MemoryEntry], recents: List[MemoryEntry],
                        view_index: int, global_step: int) -> MemoryContext:
        """The earlier engine: memories ranked by view overlap, slots by rank."""
        overlap = self._overlap[view_index]
        cond = sorted(conds, key=lambda e: (-overlap[e.view_index], -e.global_step))

        def recent_key(e: MemoryEntry) -> Tuple[bool, float, int]:
            ov = float(overlap[e.view_index])
            weight = ov * 0.5 ** (max(0, global_step - e.global_step) / self._half_life)
            return (ov <= 0.0, -weight, -e.global_step)

        recent = sorted(recents, key=recent_key)
        if not cond and recent:
            cond, recent = recent[:1], recent[1:]
        n_recent = len(recent)
        return MemoryContext(
            tuple(e.payload for e in cond),
            tuple(n_recent + 1 + j for j in range(len(cond))),
            tuple(e.payload for e in recent), tuple(k + 1 for k in range(n_recent)))

    # -- internals -----------------------------------------------------------------------------

    def _add_cond(self, video: _ObjectVideo, entry: MemoryEntry, prompted: bool) -> None:
        if prompted and video.first_cond is None:
            video.first_cond = entry
        video.cond.append(entry)
        while len(video.cond) > self.long_term:
            keep_first = (self.keep_creation and self.long_term >= 2
                          and video.first_cond is not None)
            candidates = [e for e in video.cond[:-1]
                          if not (keep_first and e is video.first_cond)]
            promoted = [e for e in candidates if not e.prompted]
            victim = (promoted or candidates or video.cond[:1])[0]
            video.cond.remove(victim)
            if victim is video.first_cond and not keep_first:
                video.first_cond = None
            self._unselect(video, victim)

    def _unselect(self, video: _ObjectVideo, entry: MemoryEntry) -> None:
        """A step that left the conditioning part: a recent one now (upstream: unselected).

        It is kept while it is among the last ``short_term`` (memory) / ``pointer_steps``
        (pointer) steps outside the conditioning part.
        """
        entry.conditioning = False
        video.recent = deque(sorted([*video.recent, entry],
                                    key=lambda e: e.step)[-self.short_term:])
        if entry.obj_ptr is not None and self.pointer_steps > 0:
            video.pointers = deque(sorted([*video.pointers, (entry.step, entry.obj_ptr)],
                                          key=lambda sp: sp[0])[-self.pointer_steps:])
        entry.obj_ptr = None

    def _forget_step(self, video: _ObjectVideo, step: int) -> None:
        video.cond = [e for e in video.cond if e.step != step]
        if video.first_cond is not None and video.first_cond.step == step:
            video.first_cond = None
        video.recent = deque(e for e in video.recent if e.step != step)
        video.pointers = deque((s, p) for s, p in video.pointers if s != step)

    def _evict_stalest_object(self) -> None:
        stalest = min(self._objects, key=lambda oid: (self._objects[oid].last_global_step, oid))
        self.remove_object(stalest)
        self._evicted_objects += 1

    def _check_view(self, view_index: int) -> None:
        if not 0 <= int(view_index) < self.n_views:
            raise InvalidInputError(
                f'view_index must be in [0, {self.n_views}), got {view_index}')


def _check_int(parameter: str, value: int, minimum: int) -> None:
    if int(value) != value or value < minimum:
        raise ConfigError(parameter, f'must be an integer >= {minimum}, got {value}')
