"""MemoryBank: each object's own video of memories, true distances, bounds and the options."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from sap_ros.engine.memory import MemoryBank, MemoryContext
from sap_ros.errors import ConfigError, InvalidInputError


@dataclass(frozen=True)
class Payload:
    name: str
    nbytes: int = 100


def ring_overlap(n_views: int) -> np.ndarray:
    """Views on a ring: 1 on the diagonal, 0.5 for neighbours, 0 further."""
    idx = np.arange(n_views)
    dist = np.abs(idx[:, None] - idx[None, :])
    dist = np.minimum(dist, n_views - dist)
    return np.select([dist == 0, dist == 1], [1.0, 0.5], 0.0)


def make_bank(short_term: int = 6, long_term: int = 3, max_objects: int = 4,
              **options) -> MemoryBank:
    return MemoryBank(ring_overlap(8), short_term, long_term, max_objects, **options)


def add(bank: MemoryBank, object_id: int, name: str, prompted: bool = False,
        present: bool = True, view: int = 0, score: float = 0.5, **kw) -> None:
    bank.add(object_id, view, 0, 0, score, Payload(name), prompted=prompted, present=present,
             obj_ptr=np.full(256, len(name), np.float32), **kw)


def test_recent_memories_sit_at_their_true_distance_and_absent_steps_count() -> None:
    bank = make_bank()
    add(bank, 1, 'c0', prompted=True)
    for k in range(1, 9):
        add(bank, 1, f's{k}', present=k % 3 != 0)  # steps 3 and 6: SAM2 found it absent
    ctx = bank.context(1)
    assert [p.name for p in ctx.cond] == ['c0'] and ctx.cond_ago == (9,)
    # The last six steps, absent ones included, each at its distance from step 9.
    assert [p.name for p in ctx.recent] == ['s3', 's4', 's5', 's6', 's7', 's8']
    assert ctx.recent_ago == (6, 5, 4, 3, 2, 1)
    # Older steps leave only their object pointer, at its distance.
    assert ctx.pointers_ago == (8, 7)


def test_records_are_kept_for_fifteen_steps_then_dropped() -> None:
    bank = make_bank(short_term=2, pointer_steps=15)
    add(bank, 1, 'c', prompted=True)
    for k in range(30):
        add(bank, 1, f's{k}')
    ctx = bank.context(1)
    assert ctx.recent_ago == (2, 1)
    assert ctx.pointers_ago == tuple(range(15, 2, -1))
    assert bank.stats().pointers == 15


def test_conditioning_is_the_latest_prompted_steps_as_upstream_selects_them() -> None:
    bank = make_bank(long_term=3)
    add(bank, 1, 'create', prompted=True)
    add(bank, 1, 'confident', score=0.99)  # not promoted by default
    for k in range(4):
        add(bank, 1, f'fix{k}', prompted=True)
    cond, recent = bank.entries(1)
    # SAM2 with max_cond_frames_in_attn=3 attends to the 3 closest prompted frames ...
    assert [e.payload.name for e in cond] == ['fix1', 'fix2', 'fix3']
    # ... and to the unselected ones as recent frames while they are recent.
    assert [e.payload.name for e in recent] == ['create', 'confident', 'fix0']
    ctx = bank.context(1)
    assert ctx.cond_ago == (3, 2, 1) and ctx.recent_ago == (6, 5, 4)


def test_unselected_conditioning_steps_keep_their_pointer_at_its_distance() -> None:
    bank = make_bank(short_term=2, long_term=2)
    add(bank, 1, 'c', prompted=True)  # pointer filled with len('c') = 1
    for k in range(3):
        add(bank, 1, f's{k}')
    add(bank, 1, 'fix0', prompted=True)
    add(bank, 1, 'fix1', prompted=True)  # 'c' leaves the conditioning part here
    ctx = bank.context(1)
    assert [p.name for p in ctx.cond] == ['fix0', 'fix1']
    assert [p.name for p in ctx.recent] == ['s1', 's2'] and ctx.recent_ago == (4, 3)
    assert ctx.pointers_ago == (6, 5)  # 'c' and 's0', beyond the recent memories
    assert ctx.pointers[0][0] == 1.0 and ctx.pointers[1][0] == 2.0


def test_keep_creation_option_keeps_the_creation_prompt() -> None:
    bank = make_bank(long_term=3, keep_creation=True)
    add(bank, 1, 'create', prompted=True)
    for k in range(4):
        add(bank, 1, f'fix{k}', prompted=True)
    cond, recent = bank.entries(1)
    assert [e.payload.name for e in cond] == ['create', 'fix2', 'fix3']
    assert [e.payload.name for e in recent] == ['fix0', 'fix1']


def test_promote_confident_option_stores_confident_steps_as_conditioning() -> None:
    bank = make_bank(long_term=3, promote_confident=True, refresh_score=0.9)
    add(bank, 1, 'create', prompted=True)
    add(bank, 1, 'weak', score=0.5)
    add(bank, 1, 'strong', score=0.95)
    cond, recent = bank.entries(1)
    assert [e.payload.name for e in cond] == ['create', 'strong']
    assert [e.payload.name for e in recent] == ['weak']


def test_replace_last_redoes_the_last_step_as_conditioning() -> None:
    bank = make_bank()
    add(bank, 1, 'c', prompted=True)
    add(bank, 1, 'a')
    add(bank, 1, 'b')
    assert bank.context(1) == MemoryContext((Payload('c'),), (3,), (Payload('a'), Payload('b')),
                                            (2, 1), (), ())
    add(bank, 1, 'b_fixed', prompted=True, replace_last=True)
    assert bank.steps(1) == 3
    cond, recent = bank.entries(1)
    assert [e.payload.name for e in cond] == ['c', 'b_fixed']
    assert [e.payload.name for e in recent] == ['a']
    assert bank.context(1).cond_ago == (3, 1)


def test_view_overlap_option_ranks_by_overlap_and_uses_rank_slots() -> None:
    bank = make_bank(select_by_view_overlap=True)
    add(bank, 1, 'c', prompted=True, view=0)
    add(bank, 1, 'far', view=4)
    add(bank, 1, 'same', view=2)
    add(bank, 1, 'near', view=1)
    ctx = bank.context(1, view_index=2, global_step=0)
    assert [p.name for p in ctx.recent][:2] == ['same', 'near']
    assert ctx.recent_ago == (1, 2, 3) and ctx.cond_ago == (4,) and not ctx.pointers


def test_bounded_in_entries_objects_and_bytes() -> None:
    bank = make_bank(short_term=3, long_term=2, max_objects=4)
    for step in range(200):
        object_id = 1 + step % 6  # six objects through a bank of four
        add(bank, object_id, f'{object_id}-{step}', prompted=bank.steps(object_id) == 0)
        stats = bank.stats()
        assert stats.objects <= 4 and stats.entries <= bank.entries_limit == 4 * 5
        assert stats.bytes <= bank.entries_limit * 100 + 4 * 15 * 1024
    assert bank.evicted_objects > 0


def test_clear_remove_and_invalid_arguments() -> None:
    bank = make_bank()
    add(bank, 1, 'c', prompted=True)
    assert bank.has_memory(1) and not bank.has_memory(2)
    bank.remove_object(1)
    assert bank.context(1).empty and bank.stats().entries == 0
    with pytest.raises(InvalidInputError, match='view_index'):
        bank.context(1, view_index=99)
    with pytest.raises(InvalidInputError, match='finite'):
        bank.add(1, 0, 0, 0, float('nan'), None)
    with pytest.raises(ConfigError, match='memory.short_term'):
        MemoryBank(ring_overlap(4), 0, 1, 1)
    with pytest.raises(InvalidInputError, match='square'):
        MemoryBank(np.ones((2, 3)), 1, 1, 1)
