"""MemoryBank: bounds, byte accounting, long-term refresh rules and ranking by view overlap."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest

from sap_ros.engine.memory import MemoryBank, MemoryEntry, MemoryStats
from sap_ros.errors import ConfigError, InvalidInputError


def ring_overlap(n_views: int) -> np.ndarray:
    """Views on a ring: 1 on the diagonal, 0.5 for neighbours, 0.2 two apart, 0 further."""
    idx = np.arange(n_views)
    dist = np.abs(idx[:, None] - idx[None, :])
    dist = np.minimum(dist, n_views - dist)
    return np.select([dist == 0, dist == 1, dist == 2], [1.0, 0.5, 0.2], 0.0)


def frame_path(n_views: int, frame_index: int) -> List[int]:
    """Zigzag along the ring, direction alternating between frames."""
    path = list(range(n_views))
    return path if frame_index % 2 == 0 else path[::-1]


def all_entries(bank: MemoryBank, object_id: int) -> tuple[List[MemoryEntry], List[MemoryEntry]]:
    """Every long-term entry and every short-term entry not long-term, through select()."""
    return bank.select(object_id, 0, 10**9, n_cond=10**6, n_recent=10**6)


def distinct_payload_bytes(bank: MemoryBank) -> int:
    payloads = {}
    for object_id in bank.object_ids():
        cond, recent = all_entries(bank, object_id)
        for entry in cond + recent:
            if entry.payload is not None:
                payloads[id(entry.payload)] = entry.payload
    return sum(p.nbytes for p in payloads.values())


def make_bank(n_views: int = 8, short_term: int = 4, long_term: int = 3,
              refresh_score: float = 0.7, max_objects: int = 16) -> MemoryBank:
    return MemoryBank(ring_overlap(n_views), short_term, long_term, refresh_score, max_objects)


def test_stream_stays_bounded_and_bytes_are_exact() -> None:
    rng = np.random.default_rng(7)
    n_views, short_term, long_term, max_objects = 8, 4, 3, 12
    bank = make_bank(n_views, short_term, long_term, 0.7, max_objects)
    live: List[int] = []
    next_id = 1
    step = 0
    bytes_seen = []
    for frame in range(150):
        # Objects come and go: a few retire (the engine removes their memory), a few appear.
        for object_id in list(live):
            if rng.random() < 0.1:
                live.remove(object_id)
                bank.remove_object(object_id)
        while len(live) < max_objects and rng.random() < 0.6:
            live.append(next_id)
            next_id += 1
        for view in frame_path(n_views, frame):
            for object_id in live:
                if rng.random() < 0.4:
                    payload = np.zeros(int(rng.integers(1, 64)), dtype=np.float32)
                    bank.add(object_id, view, step, frame, float(rng.random()), payload,
                             prompted=bool(rng.random() < 0.05))
            step += 1
        stats = bank.stats()
        assert stats.entries <= bank.entries_limit
        assert stats.objects <= max_objects
        for object_id in bank.object_ids():
            cond, recent = all_entries(bank, object_id)
            assert len(cond) <= long_term
            assert len(cond) + len(recent) <= short_term + long_term
        assert stats.bytes == distinct_payload_bytes(bank)
        # Flat: never more than one maximal payload per allowed entry.
        assert stats.bytes <= bank.entries_limit * 63 * 4
        bytes_seen.append(stats.bytes)
    assert next_id > 100  # hundreds of objects went through the bank
    assert bank.evicted_objects == 0  # the caller kept it within capacity
    assert max(bytes_seen[75:]) <= bank.entries_limit * 63 * 4
    for object_id in list(bank.object_ids()):
        bank.remove_object(object_id)
    assert bank.stats() == MemoryStats(0, 0, 0, 0, 0)


def test_new_object_beyond_capacity_evicts_the_stalest() -> None:
    bank = make_bank(max_objects=2)
    bank.add(1, 0, step=0, frame_index=0, score=0.9, payload=None)
    bank.add(2, 1, step=1, frame_index=0, score=0.9, payload=None)
    bank.add(1, 2, step=2, frame_index=0, score=0.9, payload=None)
    bank.add(3, 3, step=3, frame_index=0, score=0.9, payload=None)
    assert bank.object_ids() == [1, 3]
    assert bank.evicted_objects == 1
    assert not bank.has_memory(2)


def test_entry_in_both_parts_counts_once() -> None:
    bank = make_bank()
    payload = np.zeros(250, dtype=np.float32)
    bank.add(1, 0, 0, 0, score=0.2, payload=payload, prompted=True)
    stats = bank.stats()
    assert (stats.entries, stats.short_term, stats.long_term) == (1, 1, 1)
    assert stats.bytes == payload.nbytes
    cond, recent = bank.select(1, 0, 1, n_cond=4, n_recent=4)
    assert len(cond) == 1 and recent == []
    assert cond[0].conditioning and cond[0].nbytes == payload.nbytes


def test_shared_and_missing_payloads() -> None:
    bank = make_bank()
    payload = np.zeros(10, dtype=np.uint8)
    bank.add(1, 0, 0, 0, 0.1, payload)
    bank.add(2, 0, 0, 0, 0.1, payload)
    bank.add(3, 0, 0, 0, 0.1, None)
    assert bank.stats().bytes == 10
    bank.remove_object(1)
    assert bank.stats().bytes == 10
    bank.remove_object(2)
    assert bank.stats().bytes == 0
    assert bank.has_memory(3)


def test_low_score_stays_short_term_only() -> None:
    bank = make_bank(refresh_score=0.7)
    bank.add(1, 0, 0, 0, score=0.69, payload=None)
    cond, recent = bank.select(1, 0, 1, 4, 4)
    assert cond == [] and len(recent) == 1
    assert not recent[0].conditioning
    assert bank.stats().long_term == 0


def test_prompted_and_confident_enter_long_term() -> None:
    bank = make_bank(refresh_score=0.7)
    bank.add(1, 0, 0, 0, score=0.05, payload=None, prompted=True)
    bank.add(1, 3, 1, 0, score=0.7, payload=None)
    cond, _ = bank.select(1, 0, 2, 4, 4)
    assert sorted(e.view_index for e in cond) == [0, 3]


def test_same_view_replaces_its_long_term_entry() -> None:
    bank = make_bank()
    bank.add(1, 2, 0, 0, 0.9, None)
    bank.add(1, 2, 8, 1, 0.8, None)
    cond, recent = bank.select(1, 2, 9, 4, 4)
    assert [(e.view_index, e.step) for e in cond] == [(2, 8)]
    # The replaced memory is still in the short-term ring, no longer conditioning.
    assert [(e.step, e.conditioning) for e in recent] == [(0, False)]


def test_long_term_cap_evicts_lowest_decayed_score() -> None:
    bank = make_bank(n_views=8, long_term=2)
    bank.add(1, 0, 0, 0, 0.95, None)
    bank.add(1, 1, 1, 0, 0.75, None)
    bank.add(1, 2, 2, 0, 0.8, None)
    cond, _ = bank.select(1, 0, 3, 4, 0)
    assert sorted(e.view_index for e in cond) == [0, 2]  # 0.75 was the lowest
    # Many frames later an old, once-confident memory is worth less than a fresh one.
    later = 8 * 40
    bank.add(1, 2, later, 40, 0.75, None)  # same view: replaces the 0.8 one
    bank.add(1, 5, later + 1, 40, 0.75, None)
    cond, _ = bank.select(1, 5, later + 2, 4, 0)
    assert sorted((e.view_index, e.score) for e in cond) == [(2, 0.75), (5, 0.75)]
    assert bank.stats().long_term == 2


def test_most_recent_prompt_is_never_evicted() -> None:
    bank = make_bank(n_views=8, long_term=2)
    bank.add(1, 0, 0, 0, 0.1, None, prompted=True)
    step = 1
    for frame in range(5):
        for view in frame_path(8, frame):
            bank.add(1, view, step, frame, 0.99, None)
            step += 1
    cond, _ = bank.select(1, 4, step, 4, 0)
    assert len(cond) == 2
    assert any(e.step == 0 and e.view_index == 0 for e in cond)
    # A newer prompt takes over the protection; the old one may then go.
    bank.add(1, 5, step, 5, 0.1, None, prompted=True)
    bank.add(1, 6, step + 1, 5, 0.99, None)
    cond, _ = bank.select(1, 5, step + 2, 4, 0)
    assert any(e.step == step for e in cond)
    assert not any(e.step == 0 for e in cond)


def test_single_long_term_slot_keeps_the_prompt() -> None:
    bank = make_bank(long_term=1)
    bank.add(1, 0, 0, 0, 0.2, None, prompted=True)
    bank.add(1, 0, 1, 0, 0.99, None)  # same view but unprompted: does not replace the prompt
    bank.add(1, 1, 2, 0, 0.99, None)
    cond, recent = bank.select(1, 0, 3, 4, 4)
    assert [e.step for e in cond] == [0]
    assert sorted(e.step for e in recent) == [1, 2]
    bank.add(1, 0, 3, 0, 0.2, None, prompted=True)  # a new prompt in that view replaces it
    cond, _ = bank.select(1, 0, 4, 4, 0)
    assert [e.step for e in cond] == [3]


def test_select_ranks_same_view_then_neighbours() -> None:
    n_views = 8
    bank = make_bank(n_views=n_views, short_term=4, long_term=8)
    overlap = ring_overlap(n_views)
    # Frame 0 runs 0..7 and sees object 1 confidently everywhere; object 2 in every view too.
    step = 0
    for view in frame_path(n_views, 0):
        bank.add(1, view, step, 0, 0.9, None)
        bank.add(2, view, step, 0, 0.9, None)
        step += 1
    # Frame 1 runs 7..0; the object is seen weakly (short-term only) in views 7, 6, 5.
    for view in (7, 6, 5):
        bank.add(1, view, step, 1, 0.3, None)
        step += 1
    target = 4
    cond, recent = bank.select(1, target, step, n_cond=3, n_recent=3)
    assert len(cond) == 3 and len(recent) == 3
    assert cond[0].view_index == target and cond[0].frame_index == 0
    cond_overlaps = [overlap[target, e.view_index] for e in cond]
    assert cond_overlaps == sorted(cond_overlaps, reverse=True)
    # Among the equally overlapping neighbours 3 and 5, the more recent (5) first.
    assert [e.view_index for e in cond[1:]] == [5, 3]
    # Short-term: the neighbour just visited first.
    assert recent[0].view_index == 5 and recent[0].step == step - 1
    assert all(e.object_id == 1 for e in cond + recent)
    assert not {id(e) for e in cond} & {id(e) for e in recent}


def test_zero_overlap_memories_come_last_but_are_not_starved() -> None:
    n_views = 8
    overlap = ring_overlap(n_views)
    bank = make_bank(n_views=n_views, short_term=6, long_term=4)
    # Long-term in the opposite view (overlap 0) is more recent than in an overlapping one.
    bank.add(1, 2, 0, 0, 0.9, None)
    bank.add(1, 4, 1, 0, 0.9, None)
    bank.add(1, 5, 2, 0, 0.2, None)
    bank.add(1, 4, 3, 0, 0.2, None)
    cond, recent = bank.select(1, 0, 4, n_cond=4, n_recent=4)
    assert [e.view_index for e in cond] == [2, 4]
    assert [overlap[0, e.view_index] > 0 for e in recent] == [False, False]
    assert [e.step for e in recent] == [3, 2]  # by recency when nothing overlaps
    # An object seen only far away still gets memory.
    bank.add(2, 4, 5, 0, 0.2, None)
    cond, recent = bank.select(2, 0, 6, 2, 2)
    assert cond == [] and [e.view_index for e in recent] == [4]


def test_select_limits_and_unknown_object() -> None:
    bank = make_bank(short_term=4, long_term=3)
    for step in range(10):
        bank.add(1, step % 8, step, 0, 0.9, None)
    cond, recent = bank.select(1, 0, 10, n_cond=2, n_recent=1)
    assert len(cond) == 2 and len(recent) == 1
    assert bank.select(1, 0, 10, 0, 0) == ([], [])
    assert bank.select(99, 0, 10, 4, 4) == ([], [])
    assert not bank.has_memory(99)


def test_clear_and_remove() -> None:
    bank = make_bank()
    bank.add(1, 0, 0, 0, 0.9, np.zeros(4))
    bank.add(2, 1, 1, 0, 0.9, np.zeros(4))
    bank.remove_object(1)
    bank.remove_object(1)  # no-op
    assert bank.object_ids() == [2] and not bank.has_memory(1)
    bank.clear()
    assert bank.object_ids() == [] and bank.stats().bytes == 0


def test_invalid_arguments_name_the_problem() -> None:
    with pytest.raises(InvalidInputError, match='square'):
        MemoryBank(np.ones((3, 4)), 4, 2, 0.7, 8)
    with pytest.raises(ConfigError, match='memory.short_term'):
        MemoryBank(ring_overlap(4), 0, 2, 0.7, 8)
    with pytest.raises(ConfigError, match='memory.refresh_score'):
        MemoryBank(ring_overlap(4), 4, 2, 1.5, 8)
    bank = MemoryBank(ring_overlap(4), 4, 2, 0.7, 8)
    assert bank.entries_limit == 8 * 6
    with pytest.raises(InvalidInputError, match='view_index'):
        bank.add(1, 4, 0, 0, 0.5, None)
    with pytest.raises(InvalidInputError, match='view_index'):
        bank.select(1, -1, 0, 1, 1)


def test_recent_mixes_recency_and_overlap() -> None:
    n_views = 8
    bank = make_bank(n_views=n_views, short_term=4, long_term=1, refresh_score=1.0)
    bank.add(1, 4, 4, 0, 0.5, None)  # the target view, one frame ago
    step = 8
    for view in (7, 6, 5):  # frame 1 runs backwards and just visited 7, 6, 5
        bank.add(1, view, step, 1, 0.5, None)
        step += 1
    _, recent = bank.select(1, 4, step, n_cond=0, n_recent=4)
    # The neighbour just visited, then the same view of the previous frame, then the weaker
    # overlap, and the view that does not overlap at all last.
    assert [e.view_index for e in recent] == [5, 4, 6, 7]
