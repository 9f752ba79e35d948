"""Encoder schedule: live objects' views, prompts and a discovery sweep of the whole sphere."""
from __future__ import annotations

from typing import Dict

import numpy as np
import pytest

from sap_ros.engine.schedule import discovery_share, schedule_encoder
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.culling import views_touching
from sap_ros.sphere.geometry import lonlat_to_bearing
from sap_ros.sphere.layout import PatchLayout

LAYOUT = PatchLayout.build(90.0, 64)
N_VIEWS = len(LAYOUT)


def object_views(*lonlat_radius: tuple) -> Dict[int, np.ndarray]:
    """Culled views of caps (lon, lat, radius) as the engine computes them."""
    return {k + 1: views_touching(LAYOUT.bases, 45.0, lonlat_to_bearing(
        np.array(lon), np.array(lat)), radius, 5.0)
        for k, (lon, lat, radius) in enumerate(lonlat_radius)}


@pytest.mark.parametrize('every_n', [1, 2, 5, 7, 26, 40])
@pytest.mark.parametrize('start', [0, 3, 11])
def test_any_n_consecutive_frames_search_every_view_once(every_n: int, start: int) -> None:
    searched = [v for f in range(start, start + every_n)
                for v in schedule_encoder(LAYOUT.path, {}, f, every_n).discover]
    assert sorted(searched) == list(range(N_VIEWS))


def test_an_object_appearing_anywhere_is_searched_within_n_frames() -> None:
    """Wherever a new object appears and whenever, a view seeing it is searched in time."""
    every_n = 5
    for lon, lat in [(0.0, 0.0), (179.0, 10.0), (-90.0, -88.0), (45.0, 60.0)]:
        point = lonlat_to_bearing(np.array(lon), np.array(lat))
        seeing = set(LAYOUT.views_containing(point).tolist())
        for appear in range(every_n):
            frames = range(appear, appear + every_n)
            assert any(seeing & set(schedule_encoder(LAYOUT.path, {}, f, every_n).discover)
                       for f in frames), (lon, lat, appear)


def test_encoded_views_are_the_objects_prompts_and_the_share() -> None:
    views = object_views((20.0, 5.0, 8.0), (-120.0, -30.0, 5.0))
    schedule = schedule_encoder(LAYOUT.path, views, 2, 5, prompt_views=[25])
    expected = set(np.flatnonzero(views[1] | views[2])) | {25} | set(schedule.discover)
    assert set(schedule.encode) == expected
    assert set(schedule.discover) <= set(schedule.encode)
    assert list(schedule.encode) == sorted(schedule.encode)
    # Two small objects leave part of the sphere unencoded (the point of the schedule).
    assert len(schedule.encode) < N_VIEWS


def test_old_behaviour_and_full_sweep_encode_everything() -> None:
    views = object_views((20.0, 5.0, 8.0))
    off = schedule_encoder(LAYOUT.path, views, 3, 5, enabled=False)
    assert off.encode == off.discover == tuple(range(N_VIEWS))
    swept = schedule_encoder(LAYOUT.path, views, 3, 5, sweep_all=True)
    assert swept.encode == swept.discover == tuple(range(N_VIEWS))


def test_share_runs_are_contiguous_along_the_path() -> None:
    shares = [discovery_share(LAYOUT.path, f, 4) for f in range(4)]
    for share in shares:
        positions = sorted(LAYOUT.path.index(v) for v in share)
        assert positions == list(range(positions[0], positions[0] + len(positions)))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # even load per frame


@pytest.mark.parametrize('kwargs, message', [
    (dict(every_n_frames=0), 'every_n_frames'),
    (dict(frame_index=-1), 'frame_index'),
    (dict(object_views={1: np.ones(3, bool)}), 'views of object 1'),
    (dict(prompt_views=[N_VIEWS]), 'prompt view'),
    (dict(path=[0, 0, 1]), 'path'),
])
def test_bad_input_is_rejected(kwargs: dict, message: str) -> None:
    args = dict(path=LAYOUT.path, object_views={}, frame_index=0, every_n_frames=5)
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=message):
        schedule_encoder(**args)
