"""Bounded per-object memory bank: which SAM2 memories to attend to when decoding a patch.

Each object keeps two parts (DESIGN §5, after PanoSAM2's long-short memory):

* a **short-term ring** of its last ``short_term`` patch memories (every :meth:`MemoryBank.add`
  lands here; the oldest falls out);
* at most ``long_term`` **long-term (conditioning) entries**, kept across frames. A memory enters
  long-term when it was prompted (creation, external or geometric mask/point prompt) or when its
  score reaches ``refresh_score``. A new long-term entry replaces the entry of the same view;
  when there is none and the part is full, the entry with the lowest
  ``score x 0.5 ** (age / half-life)`` is evicted (age in frames, i.e. patch steps / number of
  views); the newcomer always enters. The most recent *prompted* entry is never evicted nor
  replaced by an unprompted one, so the user's (or creation's) prompt keeps conditioning the
  object. If it is the only slot left, an unprompted confident memory stays short-term only.

A memory that sits in both parts is one :class:`MemoryEntry` referenced twice: it counts once in
``entries`` and its payload's bytes count once. Byte accounting is by distinct payload object, so a
payload shared by several entries is counted once as well.

Bounds: at most ``max_objects`` objects, each with at most ``short_term + long_term`` distinct
entries, so entries never exceed :attr:`MemoryBank.entries_limit`. When a memory arrives for a new
object while ``max_objects`` objects already hold memory, the object whose newest memory is the
oldest is dropped first (counted in :attr:`MemoryBank.evicted_objects`); the engine normally keeps
the object registry at the same capacity and removes retired objects itself, so this is a safety
net, not the normal path.

Ranking for a patch view ``v`` (:meth:`MemoryBank.select`), both lists most relevant first:

* conditioning: long-term entries by view overlap with ``v`` (the same view in an earlier frame
  has overlap 1), then by recency;
* recent: short-term entries not already chosen, by ``overlap x 0.5 ** (age_steps / half-life)``
  (``recent_half_life_steps``, default half a frame of steps): the neighbours just visited come
  first, then the same or overlapping views of the previous frame; entries from views that do not
  overlap ``v`` come last (by recency), so an object is never starved of memory.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import math
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

from sap_ros.errors import ConfigError, InvalidInputError


@dataclass
class MemoryEntry:
    """One patch memory of one object.

    Attributes:
        object_id: id of the object the memory belongs to.
        view_index: index of the patch view (0..N-1 in the layout) it was decoded in.
        step: global patch-step counter when it was made (gap-free, monotonic across frames).
        frame_index: camera frame it was made in.
        score: confidence of the mask (e.g. predicted IoU x object score), in [0, 1].
        conditioning: True while the entry is held as a long-term (conditioning) memory.
        payload: the segmenter's memory (opaque here), or None (geometric oracle).
        nbytes: ``payload.nbytes`` when the payload has it, else 0.

    """

    object_id: int
    view_index: int
    step: int
    frame_index: int
    score: float
    conditioning: bool
    payload: Any
    nbytes: int


@dataclass(frozen=True)
class MemoryStats:
    """Size of the bank: objects, distinct entries, distinct payload bytes, entries per part.

    ``ids_left`` is filled in by the pipeline: object ids it can still issue before a reset
    (None from the bank alone).
    """

    objects: int
    entries: int
    bytes: int
    short_term: int
    long_term: int
    ids_left: Optional[int] = None


@dataclass
class _ObjectMemory:
    short: Deque[MemoryEntry] = field(default_factory=deque)
    long: List[MemoryEntry] = field(default_factory=list)
    protected: Optional[MemoryEntry] = None  # most recent prompted entry while long-term
    last_step: int = 0


def _payload_nbytes(payload: Any) -> int:
    if payload is None:
        return 0
    return int(getattr(payload, 'nbytes', 0) or 0)


class MemoryBank:
    """Short- and long-term memories of every tracked object, bounded in entries and bytes."""

    def __init__(self, view_overlap: np.ndarray, short_term: int, long_term: int,
                 refresh_score: float, max_objects: int,
                 long_term_half_life_frames: float = 8.0,
                 recent_half_life_steps: Optional[float] = None) -> None:
        """Create an empty bank.

        Args:
            view_overlap: ``(N, N)`` overlap fraction in [0, 1] between patch views (1 on the
                diagonal); row = the view being decoded.
            short_term: short-term ring length per object (>= 1).
            long_term: long-term (conditioning) entries per object (>= 1).
            refresh_score: score from which a memory also enters long-term, in [0, 1].
            max_objects: most objects holding memory at once (>= 1).
            long_term_half_life_frames: frames after which a long-term entry's eviction value
                halves (> 0).
            recent_half_life_steps: patch steps after which a short-term entry's recency weight
                halves (> 0); None = half the number of views.

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
        if not 0.0 <= float(refresh_score) <= 1.0:
            raise ConfigError('memory.refresh_score', f'must be in [0, 1], got {refresh_score}')
        n_views = overlap.shape[0]
        if recent_half_life_steps is None:
            recent_half_life_steps = max(1.0, 0.5 * n_views)
        for name, value in (('long_term_half_life_frames', long_term_half_life_frames),
                            ('recent_half_life_steps', recent_half_life_steps)):
            if not (math.isfinite(value) and value > 0.0):
                raise ConfigError(name, f'must be a positive number, got {value}')
        self._overlap = np.clip(overlap, 0.0, 1.0)
        self._overlap.setflags(write=False)
        self._short_term = int(short_term)
        self._long_term = int(long_term)
        self._refresh_score = float(refresh_score)
        self._max_objects = int(max_objects)
        self._long_half_life_steps = float(long_term_half_life_frames) * n_views
        self._recent_half_life_steps = float(recent_half_life_steps)
        self._objects: Dict[int, _ObjectMemory] = {}
        # id(payload) -> [payload, number of distinct entries holding it]; keeps ids stable.
        self._payload_refs: Dict[int, List[Any]] = {}
        self._bytes = 0
        self._evicted_objects = 0

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def n_views(self) -> int:
        """Number of patch views N the bank was built for."""
        return int(self._overlap.shape[0])

    @property
    def entries_limit(self) -> int:
        """Hard cap on distinct entries: ``max_objects * (short_term + long_term)``."""
        return self._max_objects * (self._short_term + self._long_term)

    @property
    def evicted_objects(self) -> int:
        """Objects dropped because a new one arrived with ``max_objects`` already held."""
        return self._evicted_objects

    def stats(self) -> MemoryStats:
        """Current size of the bank."""
        short = sum(len(m.short) for m in self._objects.values())
        long = sum(len(m.long) for m in self._objects.values())
        both = sum(1 for m in self._objects.values() for e in m.long if _in_short(m, e))
        return MemoryStats(objects=len(self._objects), entries=short + long - both,
                           bytes=self._bytes, short_term=short, long_term=long)

    def object_ids(self) -> List[int]:
        """Ids of the objects holding memory, ascending."""
        return sorted(self._objects)

    def has_memory(self, object_id: int) -> bool:
        """True when the object holds at least one memory."""
        mem = self._objects.get(object_id)
        return mem is not None and bool(mem.short or mem.long)

    # -- updates -------------------------------------------------------------------------------

    def add(self, object_id: int, view_index: int, step: int, frame_index: int, score: float,
            payload: Any, prompted: bool = False) -> None:
        """Store the memory made when decoding ``object_id`` in view ``view_index``.

        It always enters the short-term ring; it also enters long-term when ``prompted`` or
        ``score >= refresh_score`` (see the module docstring for replacement and eviction).
        """
        self._check_view(view_index)
        if not math.isfinite(float(score)):
            raise InvalidInputError(f'memory score must be finite, got {score}')
        mem = self._objects.get(object_id)
        if mem is None:
            if len(self._objects) >= self._max_objects:
                self._evict_stalest_object()
            mem = self._objects[object_id] = _ObjectMemory()
        entry = MemoryEntry(object_id=object_id, view_index=int(view_index), step=int(step),
                            frame_index=int(frame_index), score=float(score), conditioning=False,
                            payload=payload, nbytes=_payload_nbytes(payload))
        self._retain(entry)
        mem.last_step = max(mem.last_step, entry.step)
        if len(mem.short) >= self._short_term:
            old = mem.short.popleft()
            if not old.conditioning:
                self._release(old)
        mem.short.append(entry)
        if prompted or entry.score >= self._refresh_score:
            self._add_long(mem, entry, prompted)

    def remove_object(self, object_id: int) -> None:
        """Forget every memory of ``object_id`` (no-op when it has none)."""
        mem = self._objects.pop(object_id, None)
        if mem is None:
            return
        for entry in _distinct(mem):
            self._release(entry)

    def clear(self) -> None:
        """Forget every object."""
        self._objects.clear()
        self._payload_refs.clear()
        self._bytes = 0

    # -- queries -------------------------------------------------------------------------------

    def select(self, object_id: int, view_index: int, step: int, n_cond: int, n_recent: int
               ) -> Tuple[List[MemoryEntry], List[MemoryEntry]]:
        """Memories to attend to when decoding ``object_id`` in view ``view_index`` at ``step``.

        Returns:
            ``(cond, recent)``: up to ``n_cond`` long-term and up to ``n_recent`` short-term
            entries of this object only, each list most relevant first, no entry in both.

        """
        self._check_view(view_index)
        if n_cond < 0 or n_recent < 0:
            raise InvalidInputError(f'n_cond and n_recent must be >= 0, got {n_cond}, {n_recent}')
        mem = self._objects.get(object_id)
        if mem is None:
            return [], []
        overlap = self._overlap[view_index]
        cond = sorted(mem.long, key=lambda e: (-overlap[e.view_index], -e.step))[:n_cond]
        chosen = {id(e) for e in cond}
        rest = [e for e in mem.short if id(e) not in chosen]

        def recent_key(e: MemoryEntry) -> Tuple[bool, float, int]:
            ov = float(overlap[e.view_index])
            age = max(0, step - e.step)
            weight = ov * 0.5 ** (age / self._recent_half_life_steps)
            return (ov <= 0.0, -weight, -e.step)

        recent = sorted(rest, key=recent_key)[:n_recent]
        return cond, recent

    # -- internals -----------------------------------------------------------------------------

    def _add_long(self, mem: _ObjectMemory, entry: MemoryEntry, prompted: bool) -> None:
        same_view = [e for e in mem.long if e.view_index == entry.view_index
                     and (prompted or e is not mem.protected)]
        if same_view:
            victim: Optional[MemoryEntry] = same_view[0]
        elif len(mem.long) < self._long_term:
            victim = None
        else:
            candidates = [e for e in mem.long if prompted or e is not mem.protected]
            if not candidates:
                return  # only the protected prompt is left: stay short-term only
            victim = min(candidates, key=lambda e: (self._long_value(e, entry.step), e.step))
        if victim is not None:
            self._drop_long(mem, victim)
        entry.conditioning = True
        mem.long.append(entry)
        if prompted:
            mem.protected = entry

    def _long_value(self, entry: MemoryEntry, step: int) -> float:
        age = max(0, step - entry.step)
        return entry.score * 0.5 ** (age / self._long_half_life_steps)

    def _drop_long(self, mem: _ObjectMemory, entry: MemoryEntry) -> None:
        mem.long = [e for e in mem.long if e is not entry]
        entry.conditioning = False
        if mem.protected is entry:
            mem.protected = None
        if not _in_short(mem, entry):
            self._release(entry)

    def _evict_stalest_object(self) -> None:
        stalest = min(self._objects, key=lambda oid: (self._objects[oid].last_step, oid))
        self.remove_object(stalest)
        self._evicted_objects += 1

    def _retain(self, entry: MemoryEntry) -> None:
        if entry.payload is None:
            return
        ref = self._payload_refs.get(id(entry.payload))
        if ref is None:
            self._payload_refs[id(entry.payload)] = [entry.payload, 1]
            self._bytes += entry.nbytes
        else:
            ref[1] += 1

    def _release(self, entry: MemoryEntry) -> None:
        if entry.payload is None:
            return
        ref = self._payload_refs[id(entry.payload)]
        ref[1] -= 1
        if ref[1] == 0:
            del self._payload_refs[id(entry.payload)]
            self._bytes -= entry.nbytes

    def _check_view(self, view_index: int) -> None:
        if not 0 <= int(view_index) < self.n_views:
            raise InvalidInputError(
                f'view_index must be in [0, {self.n_views}), got {view_index}')


def _in_short(mem: _ObjectMemory, entry: MemoryEntry) -> bool:
    return any(e is entry for e in mem.short)


def _distinct(mem: _ObjectMemory) -> List[MemoryEntry]:
    out = list(mem.short)
    out.extend(e for e in mem.long if not _in_short(mem, e))
    return out


def _check_int(parameter: str, value: int, minimum: int) -> None:
    if int(value) != value or value < minimum:
        raise ConfigError(parameter, f'must be an integer >= {minimum}, got {value}')
