"""Newest-frame-only hand-off from a subscription callback to one processing thread (no rclpy).

The callback :meth:`FrameWorker.submit` s every frame and returns at once; the thread always takes
the newest one. A frame replaced before the thread took it is reported as dropped, so a slow model
never builds a queue and never works on stale frames. Work that must not run beside a frame (a
reset, closing the model) is handed to the same thread with :meth:`FrameWorker.between_frames`
or :meth:`FrameWorker.stop`: it runs after the frame in progress, before the next one, and the
caller (the executor thread) never waits for a frame.
"""
from __future__ import annotations

import collections
import threading
from typing import Callable, Deque, Generic, List, Optional, Tuple, TypeVar

T = TypeVar('T')
Task = Callable[[], None]


class LatestSlot(Generic[T]):
    """A one-element mailbox plus a task queue: ``put`` replaces, ``take`` blocks for work.

    >>> slot = LatestSlot()
    >>> slot.put('a'), slot.put('b'), slot.take(timeout_s=0.0), slot.take(timeout_s=0.0)
    (False, True, 'b', None)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._tasks: Deque[Task] = collections.deque()
        self._closed = False

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced an item nobody took, or the slot is closed."""
        with self._cond:
            if self._closed:
                return True
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def add_task(self, task: Task) -> None:
        """Queue ``task`` for the taker; RuntimeError once closed."""
        with self._cond:
            if self._closed:
                raise RuntimeError('the worker is stopped')
            self._tasks.append(task)
            self._cond.notify()

    def take(self, timeout_s: Optional[float] = None) -> Optional[T]:
        """The newest item, waiting for one; None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout_s)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def take_work(self) -> Tuple[List[Task], Optional[T], bool]:
        """Wait for work: ``(queued tasks, newest item or None, closed)``, taken at once."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._tasks or self._closed)
            tasks, item = list(self._tasks), self._item
            self._tasks.clear()
            self._item = None
            return tasks, item, self._closed

    def close(self, last: Optional[Task] = None) -> bool:
        """Wake the taker for good, ``last`` queued as its final task.

        True when an untaken item was discarded.
        """
        with self._cond:
            discarded = self._item is not None
            self._item, self._closed = None, True
            if last is not None:
                self._tasks.append(last)
            self._cond.notify_all()
        return discarded


class FrameWorker(Generic[T]):
    """One daemon thread that calls ``process(item)`` on the newest submitted item.

    ``process`` must handle its own errors (the node counts and logs them); an exception that
    escapes it, or a task, is passed to ``on_crash`` and the thread keeps going.
    """

    def __init__(self, process: Callable[[T], None], on_crash: Callable[[BaseException], None],
                 name: str = 'sap_worker') -> None:
        self._process = process
        self._on_crash = on_crash
        self._slot: LatestSlot[T] = LatestSlot()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Hand over ``item``.

        True when it replaced one that was never processed, or the worker is stopped (it never
        will be).
        """
        return self._slot.put(item)

    def between_frames(self, task: Task) -> bool:
        """Run ``task`` on the worker thread after the frame in progress, before the next one.

        Returns at once: True when a frame is in progress (the task waits for it), False when
        the worker is idle (the task runs right away). RuntimeError once stopped.
        """
        busy = self._busy.is_set()
        self._slot.add_task(task)
        return busy

    def stop(self, last: Optional[Task] = None, timeout_s: Optional[float] = None) -> bool:
        """Stop after the item in progress, then run ``last`` on the worker thread.

        Waits at most ``timeout_s`` (None: until done) for that; :attr:`alive` tells whether it
        is done. True when an unprocessed item was discarded.
        """
        discarded = self._slot.close(last)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        return discarded

    @property
    def busy(self) -> bool:
        """Whether a frame is being processed right now."""
        return self._busy.is_set()

    @property
    def alive(self) -> bool:
        """Whether the thread is still running."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            tasks, item, closed = self._slot.take_work()
            for task in tasks:
                self._guarded(task)
            if item is not None:
                self._busy.set()
                try:
                    self._process(item)
                except Exception as error:  # noqa: BLE001 - the node must outlive any frame
                    self._on_crash(error)
                finally:
                    self._busy.clear()
            if closed:
                return

    def _guarded(self, task: Task) -> None:
        try:
            task()
        except Exception as error:  # noqa: BLE001 - a failing task must not end the thread
            self._on_crash(error)
