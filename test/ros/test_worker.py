"""Newest-frame hand-off: no queue, drops reported, the thread survives a failing frame."""
from __future__ import annotations

import threading
import time
from typing import Callable, List

from sap_ros.ros.worker import FrameWorker, LatestSlot


def _wait_until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.005)


def test_slot_keeps_only_the_newest_and_reports_replacements() -> None:
    slot: LatestSlot[int] = LatestSlot()
    replaced = [slot.put(i) for i in range(5)]
    assert replaced == [False, True, True, True, True]
    assert slot.take(timeout_s=0.0) == 4
    assert slot.take(timeout_s=0.0) is None
    slot.put(9)
    assert slot.close() is True  # the untaken 9 is discarded
    assert slot.take() is None  # closed: returns at once


def test_worker_takes_the_newest_and_survives_a_crash() -> None:
    busy, release = threading.Event(), threading.Event()
    seen: List[int] = []
    crashes: List[BaseException] = []

    def process(item: int) -> None:
        if item == 0:
            busy.set()
            assert release.wait(10.0)
        if item == 1:
            raise RuntimeError('boom')
        seen.append(item)

    worker = FrameWorker(process, crashes.append)
    assert worker.submit(0) is False
    assert busy.wait(10.0)
    dropped = [worker.submit(i) for i in (1, 2, 3)]  # 1 and 2 are replaced before processing
    assert dropped == [False, True, True]
    release.set()
    _wait_until(lambda: seen == [0, 3])
    worker.submit(1)  # crashes; the thread must go on
    _wait_until(lambda: crashes)
    worker.submit(5)
    _wait_until(lambda: 5 in seen)
    assert worker.stop(timeout_s=10.0) is False and not worker.alive
    assert seen == [0, 3, 5] and [str(c) for c in crashes] == ['boom']
