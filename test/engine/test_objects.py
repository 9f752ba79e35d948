"""ObjectRegistry: ids, ACTIVE -> MISSING -> RETIRED, merges, capacity and reset."""
from __future__ import annotations

import numpy as np
import pytest

from sap_ros.engine.objects import MAX_OBJECT_ID, ObjectRegistry, ObjectStatus
from sap_ros.errors import ConfigError, InvalidInputError, SapError


def test_ids_start_at_one_and_are_never_reused() -> None:
    registry = ObjectRegistry(retire_after_frames=2, max_objects=8)
    issued = []
    for frame in range(20):
        issued.append(registry.create(frame).id)
        for track in registry.live():
            if track.id % 3 == 0:
                registry.retire(track.id)
        registry.end_frame(frame)
    assert issued[0] == 1
    assert issued == sorted(set(issued))  # strictly increasing: nothing handed out twice
    assert all(t.id in issued for t in registry.live())


@pytest.mark.parametrize('retire_after', [1, 3])
def test_missing_then_retired_after_exactly_the_allowed_frames(retire_after: int) -> None:
    registry = ObjectRegistry(retire_after_frames=retire_after, max_objects=8)
    track = registry.create(frame_index=10)
    assert registry.end_frame(10) == []
    assert track.status is ObjectStatus.ACTIVE
    for frame in range(11, 11 + retire_after):
        assert registry.end_frame(frame) == []
        assert track.status is ObjectStatus.MISSING
        assert track.frames_since_seen(frame) == frame - 10
    assert registry.end_frame(11 + retire_after) == [track.id]
    assert track.status is ObjectStatus.RETIRED
    assert track.id not in registry and registry.live() == []


def test_seen_again_becomes_active_and_restarts_the_count() -> None:
    registry = ObjectRegistry(retire_after_frames=2, max_objects=8)
    track = registry.create(0)
    registry.end_frame(1)
    registry.end_frame(2)
    assert track.status is ObjectStatus.MISSING
    registry.mark_seen(track.id, 3, score=0.8)
    assert registry.active() == [track] and track.score == 0.8
    assert registry.end_frame(3) == []
    registry.end_frame(4)
    registry.end_frame(5)
    assert track.status is ObjectStatus.MISSING
    assert registry.end_frame(6) == [track.id]
    assert track.age_frames(6) == 6


def test_merge_retires_the_duplicate_and_keeps_the_freshest_sighting() -> None:
    registry = ObjectRegistry(retire_after_frames=5, max_objects=8)
    old = registry.create(0)
    old.centroid = np.array([1.0, 0.0, 0.0])
    registry.end_frame(0)
    registry.end_frame(1)
    assert old.status is ObjectStatus.MISSING
    new = registry.create(2)  # re-discovered under a new id
    new.centroid = np.array([0.0, 1.0, 0.0])
    new.embedding = np.ones(256, dtype=np.float32)
    registry.merge(keep_id=old.id, drop_id=new.id, frame_index=2)
    assert new.status is ObjectStatus.RETIRED and new.id not in registry
    assert old.status is ObjectStatus.ACTIVE
    assert old.last_seen_frame == 2 and old.created_frame == 0
    np.testing.assert_array_equal(old.centroid, [0.0, 1.0, 0.0])
    assert old.embedding is not None
    assert registry.live() == [old]
    with pytest.raises(InvalidInputError, match='retired'):
        registry.get(new.id)
    with pytest.raises(InvalidInputError, match='itself'):
        registry.merge(old.id, old.id, 2)
    assert registry.create(2).id == new.id + 1


def test_capacity_retires_longest_missing_first_then_least_recently_seen() -> None:
    registry = ObjectRegistry(retire_after_frames=100, max_objects=3)
    a = registry.create(0)  # seen at 0 only: longest missing
    b = registry.create(0)
    c = registry.create(0)
    registry.mark_seen(b.id, 2, 0.9)  # missing since 2
    registry.mark_seen(c.id, 4, 0.9)
    registry.end_frame(4)
    assert [a.status, b.status, c.status] == [ObjectStatus.MISSING, ObjectStatus.MISSING,
                                              ObjectStatus.ACTIVE]
    d = registry.create(4)
    e = registry.create(4)
    assert registry.enforce_capacity() == [a.id, b.id]
    assert registry.live() == [c, d, e]
    f = registry.create(5)
    registry.mark_seen(d.id, 5, 0.9)
    registry.mark_seen(e.id, 5, 0.9)
    assert registry.enforce_capacity() == [c.id]  # all active: the one seen least recently
    assert registry.enforce_capacity() == []
    assert [t.id for t in registry.live()] == [d.id, e.id, f.id]


def test_reset_restarts_ids_and_forgets_everything() -> None:
    registry = ObjectRegistry(retire_after_frames=3, max_objects=4)
    tracks = [registry.create(0) for _ in range(3)]
    registry.reset()
    assert registry.live() == [] and len(registry) == 0
    assert all(t.status is ObjectStatus.RETIRED for t in tracks)
    assert registry.create(7).id == 1


def test_ids_fit_uint16_and_exhaustion_is_an_error() -> None:
    registry = ObjectRegistry(retire_after_frames=1, max_objects=4)
    for _ in range(MAX_OBJECT_ID - 1):
        registry.retire(registry.create(0).id)
    assert registry.ids_left == 1
    assert registry.create(0).id == 65535
    with pytest.raises(SapError, match='65535'):
        registry.create(0)
    registry.reset()
    assert registry.create(0).id == 1


def test_errors_name_the_offending_value() -> None:
    with pytest.raises(ConfigError, match='memory.retire_after_frames'):
        ObjectRegistry(retire_after_frames=0, max_objects=4)
    with pytest.raises(ConfigError, match='memory.max_objects'):
        ObjectRegistry(retire_after_frames=1, max_objects=0)
    registry = ObjectRegistry(retire_after_frames=1, max_objects=4)
    with pytest.raises(InvalidInputError, match='42'):
        registry.get(42)
    with pytest.raises(InvalidInputError, match='42'):
        registry.mark_seen(42, 0, 0.5)
    with pytest.raises(InvalidInputError, match='42'):
        registry.retire(42)
    track = registry.create(0)
    registry.retire(track.id)
    registry.retire(track.id)  # retiring twice is harmless
