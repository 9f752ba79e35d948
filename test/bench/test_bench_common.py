"""``median_ms`` of ``bench.common``: what the geometry and engine benchmarks time with."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sap_ros.bench import common


def _clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(common, 'time', SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def test_sync_is_inside_the_timing_and_warm_up_is_not(monkeypatch):
    """A call of 1 ms whose device work ends 3 ms later measures 4 ms; the warm-up is not timed."""
    now = _clock(monkeypatch)
    calls = []

    def fn() -> int:
        calls.append(now[0])
        now[0] += 1e-3 if len(calls) > 1 else 50e-3  # the warm-up call is slow
        return len(calls)

    def sync() -> None:
        now[0] += 3e-3

    ms, last = common.median_ms(fn, 3, sync)
    assert ms == pytest.approx(4.0)
    assert len(calls) == 4 and last == 4


def test_without_warm_up_every_call_is_timed(monkeypatch):
    """``warm_up=False``: exactly ``repeats`` calls, the first one among the timed ones."""
    now = _clock(monkeypatch)
    costs_s = iter([9e-3, 1e-3, 2e-3])

    def fn() -> None:
        now[0] += next(costs_s)

    ms, _ = common.median_ms(fn, 3, warm_up=False)
    assert ms == pytest.approx(2.0)
