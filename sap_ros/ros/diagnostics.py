"""Counters, throttled logging and the ``/diagnostics`` status of the node.

The worker thread and the executor thread both touch :class:`NodeStats`; every method takes the
lock, and :meth:`NodeStats.snapshot` hands out a copy for publishing.
"""
from __future__ import annotations

import collections
import copy
from dataclasses import dataclass, field
import enum
import threading
import time
from typing import Callable, Deque, Dict, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header


class RejectKind(str, enum.Enum):
    """Why an input was rejected (one counter and one log throttle each)."""

    IMAGE = 'image'            # unsupported encoding, empty, step/data too short
    COMPRESSED = 'compressed'  # corrupt or unsupported compressed image
    SHAPE = 'shape'            # not a 2:1 equirectangular frame
    PROMPT = 'prompt'          # zero / NaN bearing, or a frame other than the camera's
    PIPELINE = 'pipeline'      # the pipeline failed on a frame (e.g. CUDA out of memory)


@dataclass
class NodeStats:
    """What ``/diagnostics`` reports; counts since the node started."""

    frames_received: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    rejected: Dict[RejectKind, int] = field(
        default_factory=lambda: {kind: 0 for kind in RejectKind})
    last_latency_ms: float = 0.0
    last_pipeline_ms: float = 0.0
    objects: int = 0
    memory_objects: int = 0
    memory_entries: int = 0
    memory_bytes: int = 0
    ids_left: Optional[int] = None
    last_error: str = ''
    done_times_s: Deque[float] = field(default_factory=lambda: collections.deque(maxlen=20))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def count_received(self, replaced_unprocessed: bool) -> None:
        """A frame arrived; it replaced one the worker had not started on yet."""
        with self.lock:
            self.frames_received += 1
            self.frames_dropped += int(replaced_unprocessed)

    def count_dropped(self) -> None:
        """A received frame was discarded unprocessed (e.g. on deactivate)."""
        with self.lock:
            self.frames_dropped += 1

    def count_rejected(self, kind: RejectKind, message: str) -> None:
        """An input was rejected."""
        with self.lock:
            self.rejected[kind] += 1
            self.last_error = f'{kind.value}: {message}'

    def count_processed(self, latency_ms: float, pipeline_ms: float, objects: int,
                        memory_objects: int, memory_entries: int, memory_bytes: int,
                        ids_left: Optional[int] = None) -> None:
        """A frame went through the pipeline and its outputs were published."""
        with self.lock:
            self.ids_left = ids_left
            self.frames_processed += 1
            self.last_latency_ms, self.last_pipeline_ms = latency_ms, pipeline_ms
            self.objects = objects
            self.memory_objects, self.memory_entries = memory_objects, memory_entries
            self.memory_bytes = memory_bytes
            self.done_times_s.append(self.clock())

    def clear_memory(self) -> None:
        """The pipeline forgot everything (reset or deactivate)."""
        with self.lock:
            self.objects = self.memory_objects = self.memory_entries = self.memory_bytes = 0
            self.ids_left = None  # known again after the next frame

    def snapshot(self) -> 'NodeStats':
        """A consistent copy (without the lock) for publishing."""
        with self.lock:
            out = copy.copy(self)
            out.rejected = dict(self.rejected)
            out.done_times_s = collections.deque(self.done_times_s, maxlen=20)
        out.lock = threading.Lock()
        return out

    @property
    def frames_rejected(self) -> int:
        """Rejected frames (all kinds but prompts)."""
        return sum(n for kind, n in self.rejected.items() if kind is not RejectKind.PROMPT)

    def fps(self, now_s: Optional[float] = None) -> float:
        """Processed frames per second over the last few frames (0 when idle for 5 s)."""
        times = self.done_times_s
        now_s = self.clock() if now_s is None else now_s
        if len(times) < 2 or now_s - times[-1] > 5.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


def diagnostic_array(stats: NodeStats, name: str, state: str, stamp) -> DiagnosticArray:
    """One DiagnosticStatus named ``name`` with every counter as a key/value pair."""
    level, message = DiagnosticStatus.OK, f'{state}, {stats.fps():.2f} fps'
    if state != 'active':
        level = DiagnosticStatus.WARN
    elif stats.rejected[RejectKind.PIPELINE]:
        level, message = DiagnosticStatus.WARN, f'{message}; last error: {stats.last_error}'
    if state == 'active' and stats.ids_left == 0:
        level = DiagnosticStatus.WARN
        message = (f'{message}; object ids exhausted: no new objects until ~/reset '
                   '(known ones are still tracked)')
    values = {
        'state': state,
        'fps': f'{stats.fps():.3f}',
        'latency_ms': f'{stats.last_latency_ms:.1f}',
        'pipeline_ms': f'{stats.last_pipeline_ms:.1f}',
        'frames_received': stats.frames_received,
        'frames_processed': stats.frames_processed,
        'frames_dropped': stats.frames_dropped,
        'frames_rejected': stats.frames_rejected,
        'prompts_rejected': stats.rejected[RejectKind.PROMPT],
        **{f'rejected_{kind.value}': n for kind, n in stats.rejected.items()},
        'objects': stats.objects,
        'memory_objects': stats.memory_objects,
        'memory_entries': stats.memory_entries,
        'memory_bytes': stats.memory_bytes,
        'ids_left': '' if stats.ids_left is None else stats.ids_left,
        'last_error': stats.last_error,
    }
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id='',
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


class Throttle:
    """Let one message per kind through every ``period_s`` seconds; counts what it held back.

    >>> throttle = Throttle(5.0, clock=iter([0.0, 1.0, 6.0]).__next__)
    >>> [throttle.allow(RejectKind.IMAGE) for _ in range(3)]
    [0, None, 1]
    """

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._period_s = period_s
        self._clock = clock
        self._last: Dict[RejectKind, float] = {}
        self._held: Dict[RejectKind, int] = {}
        self._lock = threading.Lock()

    def allow(self, kind: RejectKind) -> Optional[int]:
        """None to stay silent, else how many messages of this kind were held back since."""
        with self._lock:
            now = self._clock()
            last = self._last.get(kind)
            if last is not None and now - last < self._period_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            self._last[kind] = now
            return self._held.pop(kind, 0)
