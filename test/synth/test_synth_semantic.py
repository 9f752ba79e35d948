"""Semantic ground truth of the synthetic scenes: objects by kind, surroundings by surface."""
from __future__ import annotations

import numpy as np
import pytest

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import erp_pixel_to_lonlat
from sap_ros.synth.scene import SceneSpec, SynthScene
from sap_ros.synth.semantic import KIND_CLASS, SEMANTIC_CLASSES, class_id

WIDTH = 256


def _lat(height: int) -> np.ndarray:
    _, lat = erp_pixel_to_lonlat(np.zeros(height), np.arange(height), 2 * height, height)
    return np.asarray(lat)


def test_the_class_list_is_fixed_and_one_based() -> None:
    assert SEMANTIC_CLASSES == ('box', 'sphere', 'cylinder', 'lamp', 'rug', 'floor', 'wall',
                                'ceiling', 'ground', 'sky')
    assert [class_id(c) for c in SEMANTIC_CLASSES] == list(range(1, 11))
    assert KIND_CLASS == {'box': 1, 'sphere': 2, 'cylinder': 3, 'lamp': 4, 'rug': 5}
    with pytest.raises(InvalidInputError, match='unknown synthetic class'):
        class_id('person')


def test_an_empty_room_is_floor_below_walls_around_ceiling_above() -> None:
    scene = SynthScene(SceneSpec(kind='room', seed=2))
    pose = scene.start_pose
    _, labels = scene.render(pose, WIDTH, object_ids=[])
    assert not labels.any()
    sem = scene.semantic(pose, labels)
    lat = _lat(sem.shape[0])
    # The camera is 1.5 m over the floor, >= 1.3 m under the ceiling, 3.7..6.9 m from the walls.
    assert np.all(sem[lat < -70.0] == class_id('floor'))
    assert np.all(sem[lat > 70.0] == class_id('ceiling'))
    assert np.all(sem[np.abs(lat) < 8.0] == class_id('wall'))  # corners: < 6.9 m away
    assert set(np.unique(sem).tolist()) == {class_id(c) for c in ('floor', 'wall', 'ceiling')}


def test_outdoors_is_ground_below_the_horizon_and_sky_above() -> None:
    scene = SynthScene(SceneSpec(kind='outdoor', seed=4))
    pose = scene.trajectory(3)[2]
    rgb, labels = scene.render(pose, WIDTH)
    sem = scene.semantic(pose, labels)
    lat = np.broadcast_to(_lat(sem.shape[0])[:, None], sem.shape)
    free = labels == 0
    assert np.all(sem[free & (lat < 0)] == class_id('ground'))
    assert np.all(sem[free & (lat > 0)] == class_id('sky'))
    for obj in scene.objects:
        assert np.all(sem[labels == obj.id] == KIND_CLASS[obj.kind])
    assert (sem == class_id('lamp')).any() and (sem == class_id('rug')).any()


def test_small_objects_are_spheres_and_bad_labels_are_refused() -> None:
    scene = SynthScene(SceneSpec(scene='small_objects'))
    pose = scene.start_pose
    _, labels = scene.render(pose, 1024)
    sem = scene.semantic(pose, labels)
    assert np.all(sem[labels > 0] == class_id('sphere'))
    assert (labels > 0).sum() > 100
    bad = labels.copy()
    bad[0, 0] = 99
    with pytest.raises(InvalidInputError, match='instance id 99 is not an object'):
        scene.semantic(pose, bad)
    with pytest.raises(InvalidInputError, match=r'\(H, 2H\)'):
        scene.semantic(pose, labels[:, :100])
