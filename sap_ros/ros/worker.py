"""Newest-frame-only hand-off from a subscription callback to one processing thread (no rclpy).

The callback :meth:`FrameWorker.submit` s every frame and returns at once; the thread always takes
the newest one. A frame replaced before the thread took it is reported as dropped, so a slow model
never builds a queue and never works on stale frames.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar('T')


class LatestSlot(Generic[T]):
    """A one-element mailbox: ``put`` replaces, ``take`` blocks until there is something.

    >>> slot = LatestSlot()
    >>> slot.put('a'), slot.put('b'), slot.take(timeout_s=0.0), slot.take(timeout_s=0.0)
    (False, True, 'b', None)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced an item nobody took (a dropped frame)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout_s: Optional[float] = None) -> Optional[T]:
        """The newest item, waiting for one; None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout_s)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> bool:
        """Wake the taker for good; True when an untaken item was discarded."""
        with self._cond:
            discarded = self._item is not None
            self._item, self._closed = None, True
            self._cond.notify_all()
        return discarded


class FrameWorker(Generic[T]):
    """One daemon thread that calls ``process(item)`` on the newest submitted item.

    ``process`` must handle its own errors (the node counts and logs them); an exception that
    escapes it is passed to ``on_crash`` and the thread keeps going.
    """

    def __init__(self, process: Callable[[T], None], on_crash: Callable[[BaseException], None],
                 name: str = 'sap_worker') -> None:
        self._process = process
        self._on_crash = on_crash
        self._slot: LatestSlot[T] = LatestSlot()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Hand over ``item``; True when it replaced one that was never processed."""
        return self._slot.put(item)

    def stop(self, timeout_s: Optional[float] = None) -> bool:
        """Stop after the item in progress; True when an unprocessed item was discarded."""
        discarded = self._slot.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        return discarded

    @property
    def alive(self) -> bool:
        """Whether the thread is still running."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._slot.take()
            if item is None:
                return
            try:
                self._process(item)
            except Exception as error:  # noqa: BLE001 - the node must outlive any frame
                self._on_crash(error)
