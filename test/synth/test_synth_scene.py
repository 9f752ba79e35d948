"""Tests of the synthetic ERP renderer: determinism, geometry, the hard cases, speed-free."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sap_ros.errors import ConfigError, ErpShapeError, InvalidInputError
from sap_ros.sphere.geometry import (
    bearing_to_lonlat,
    erp_lonlat_grid,
    erp_pixel_solid_angle_sr,
    lonlat_to_erp_pixel,
    validate_erp_shape,
)
from sap_ros.synth.raycast import render_erp
from sap_ros.synth.scene import (
    KEEP_OUT_M,
    LIGHT_DIR,
    CameraPose,
    SceneSpec,
    SynthScene,
)


@pytest.fixture(scope='module', params=['room', 'outdoor'])
def scene(request: pytest.FixtureRequest) -> SynthScene:
    return SynthScene(SceneSpec(kind=request.param, seed=0))


def labels_at_bearing(labels: np.ndarray, bearing: np.ndarray, radius_px: int = 0) -> set:
    """Labels of the ERP pixel nearest to ``bearing`` and of its neighbours up to ``radius_px``."""
    height, width = labels.shape
    lon, lat = bearing_to_lonlat(bearing)
    u, v = lonlat_to_erp_pixel(lon, lat, width, height)
    u0, v0 = int(round(float(u))), int(round(float(v)))
    found = set()
    for dv in range(-radius_px, radius_px + 1):
        for du in range(-radius_px, radius_px + 1):
            found.add(int(labels[min(max(v0 + dv, 0), height - 1), (u0 + du) % width]))
    return found


def seen_along_bearing(labels: np.ndarray, scene: SynthScene, obj: object,
                       pose: CameraPose) -> bool:
    """The object's centre pixel is its own (small objects: one within one pixel of it).

    A small object (< 3 deg) can fall between pixel centres near the nearest one.
    """
    found = labels_at_bearing(labels, scene.bearing_of(obj.id, pose),
                              radius_px=1 if obj.role == 'small' else 0)
    return obj.id in found if obj.role == 'small' else found == {obj.id}


def solid_angle_sr(labels: np.ndarray, object_id: int) -> float:
    height, width = labels.shape
    per_row = erp_pixel_solid_angle_sr(width, height)
    return float((per_row * (labels == object_id).sum(axis=1)).sum())


def by_role(scene: SynthScene, role: str) -> list:
    return [o for o in scene.objects if o.role == role]


# ------------------------------------------------------------------------------- determinism

def test_same_seed_renders_identical_frames() -> None:
    a, b = SynthScene(SceneSpec(seed=3)), SynthScene(SceneSpec(seed=3))
    pose = a.trajectory(6)[5]
    rgb_a, labels_a = a.render(pose, 128)
    rgb_b, labels_b = b.render(pose, 128)
    assert np.array_equal(rgb_a, rgb_b) and np.array_equal(labels_a, labels_b)
    assert all(np.array_equal(x.center, y.center) for x, y in zip(a.objects, b.objects))


def test_other_seed_builds_another_scene() -> None:
    a, b = SynthScene(SceneSpec(seed=3)), SynthScene(SceneSpec(seed=4))
    centres_a = np.array([o.center for o in a.objects if o.role == 'plain'])
    centres_b = np.array([o.center for o in b.objects if o.role == 'plain'])
    assert not np.allclose(centres_a, centres_b)
    assert not np.array_equal(a.render(a.start_pose, 128)[1], b.render(b.start_pose, 128)[1])


# ------------------------------------------------------------------------------ shapes, errors

@pytest.mark.parametrize('width', [8, 64, 256, 258])
def test_output_shapes_and_dtypes(width: int) -> None:
    scene = SynthScene(SceneSpec(seed=1))
    rgb, labels = scene.render(scene.start_pose, width)
    assert rgb.shape == (width // 2, width, 3) and rgb.dtype == np.uint8
    assert labels.shape == (width // 2, width) and labels.dtype == np.uint16
    assert validate_erp_shape(rgb.shape) == (width // 2, width)
    assert set(np.unique(labels)) <= {0} | {o.id for o in scene.objects}


@pytest.mark.parametrize('width', [7, 255, 6, 0, -16, 100000, 256.0, True])
def test_invalid_width_is_rejected_naming_it(width: object) -> None:
    scene = SynthScene()
    with pytest.raises(ErpShapeError, match=repr(width).replace('.', r'\.')):
        scene.render(scene.start_pose, width)


def test_invalid_spec_and_unknown_id_are_rejected() -> None:
    with pytest.raises(ConfigError, match='SceneSpec.kind'):
        SceneSpec(kind='forest')
    with pytest.raises(ConfigError, match='SceneSpec.n_small'):
        SceneSpec(n_small=-1)
    scene = SynthScene()
    with pytest.raises(InvalidInputError, match='999'):
        scene.bearing_of(999, scene.start_pose)
    with pytest.raises(InvalidInputError, match='position'):
        CameraPose(np.array([0.0, np.nan, 1.0]))


# ------------------------------------------------------------------------------------ geometry

def test_every_object_is_seen_along_its_bearing_at_the_start(scene: SynthScene) -> None:
    # The layout keeps objects' cones apart at the start pose, so none occludes another.
    pose = scene.start_pose
    _, labels = scene.render(pose, 512)
    for obj in scene.objects:
        assert seen_along_bearing(labels, scene, obj, pose), obj


def test_bearings_follow_the_moving_camera(scene: SynthScene) -> None:
    # Alone in the scene (nothing can occlude it), each object's centre pixel is its own;
    # small objects need finer pixels than 256 px across (1.4 deg) to be hit at all.
    poses = scene.trajectory(41)[10::15]
    for pose in poses:
        for obj in scene.objects:
            if obj.role != 'small':
                _, labels = scene.render(pose, 256, object_ids=[obj.id])
                assert seen_along_bearing(labels, scene, obj, pose), obj
    for obj in by_role(scene, 'small'):
        _, labels = scene.render(poses[1], 1024, object_ids=[obj.id])
        assert seen_along_bearing(labels, scene, obj, poses[1]), obj
    for pose in poses:
        # In the full scene the large close object stays in view with its id.
        (large,) = by_role(scene, 'large')
        _, labels = scene.render(pose, 256)
        assert seen_along_bearing(labels, scene, large, pose)


def test_turning_left_moves_the_image_right(scene: SynthScene) -> None:
    start = scene.start_pose
    turned = CameraPose(start.position, start.yaw_deg + 10.0)
    width = 360  # one column per degree: a 10 deg turn is a 10 column shift
    _, labels_start = scene.render(start, width)
    _, labels_turned = scene.render(turned, width)
    same = labels_turned == np.roll(labels_start, 10, axis=1)
    assert same.mean() > 0.999
    for obj in scene.objects:
        if obj.role in ('zenith', 'nadir'):
            continue
        lon_start, _ = bearing_to_lonlat(scene.bearing_of(obj.id, start))
        lon_turned, _ = bearing_to_lonlat(scene.bearing_of(obj.id, turned))
        assert (float(lon_turned - lon_start) + 180.0) % 360.0 - 180.0 == pytest.approx(10.0)


def test_culling_does_not_change_the_image(scene: SynthScene) -> None:
    # Every primitive tested on every pixel, in odd-sized chunks: bit-identical output.
    for pose in scene.trajectory(60)[::29]:
        for width in (128, 130):
            fast = render_erp(scene.primitives, [o.id for o in scene.objects], scene.background,
                              pose.position, pose.yaw_deg, width, LIGHT_DIR)
            full = render_erp(scene.primitives, [o.id for o in scene.objects], scene.background,
                              pose.position, pose.yaw_deg, width, LIGHT_DIR,
                              max_chunk_px=1000, cull=False)
            assert np.array_equal(fast[1], full[1]) and np.array_equal(fast[0], full[0])


# ---------------------------------------------------------------------------------- hard cases

@pytest.mark.parametrize('width', [256, 512])
def test_seam_object_touches_both_borders_at_frame_0(scene: SynthScene, width: int) -> None:
    (seam,) = by_role(scene, 'seam')
    _, labels = scene.render(scene.trajectory(1)[0], width)
    assert (labels[:, 0] == seam.id).any() and (labels[:, -1] == seam.id).any()


def test_lamp_covers_the_zenith_and_rug_the_nadir(scene: SynthScene) -> None:
    (lamp,), (rug,) = by_role(scene, 'zenith'), by_role(scene, 'nadir')
    _, labels = scene.render(scene.start_pose, 256)
    _, lat = erp_lonlat_grid(256, 128)
    # The lamp lies above 60 deg and covers the pole region; the (larger) rug below -45 deg
    # covers everything below -60 deg.
    assert np.all(lat[labels == lamp.id] > 60.0)
    assert np.all(labels[lat > 70.0] == lamp.id)
    assert np.all(labels[lat < -60.0] == rug.id)
    assert np.all(lat[labels == rug.id] < -45.0)


def test_small_far_objects_and_one_large_close_object(scene: SynthScene) -> None:
    pose = scene.start_pose
    _, labels = scene.render(pose, 512)
    small = by_role(scene, 'small')
    assert len(small) == scene.spec.n_small
    for obj in small:
        distance = np.linalg.norm(obj.center - pose.position)
        assert math.degrees(2.0 * math.asin(obj.radius_m / distance)) < 3.0
        assert solid_angle_sr(labels, obj.id) < 0.01
    assert sum(solid_angle_sr(labels, o.id) > 0 for o in small) >= len(small) // 2
    (large,) = by_role(scene, 'large')
    others = [solid_angle_sr(labels, o.id) for o in scene.objects if o.role not in
              ('large', 'zenith', 'nadir')]
    assert solid_angle_sr(labels, large.id) > max(others)


def test_trajectory_is_smooth_and_keeps_clear_of_objects(scene: SynthScene) -> None:
    poses = scene.trajectory(120, speed_m_per_frame=0.05, turn_deg_per_frame=3.0)
    assert np.array_equal(poses[0].position, scene.start_pose.position)
    assert poses[0].yaw_deg == scene.start_pose.yaw_deg
    assert np.diff([p.yaw_deg for p in poses]) == pytest.approx(3.0)
    steps = np.linalg.norm(np.diff([p.position for p in poses[:10]], axis=0), axis=1)
    assert steps == pytest.approx(0.05, rel=0.01)
    for turn in (3.0, -2.0, 0.0):
        for pose in scene.trajectory(300, 0.08, turn):
            assert np.hypot(*(pose.position[:2] - scene.start_pose.position[:2])) < KEEP_OUT_M
    for obj in scene.objects:
        if obj.role in ('zenith', 'nadir'):  # above / below the camera's height
            assert abs(obj.center[2] - scene.start_pose.position[2]) > 0.5 * obj.size[2] + 0.4
        else:
            assert np.hypot(*obj.center[:2]) - obj.footprint_radius_m > KEEP_OUT_M


# ------------------------------------------------------------------------------------- colours

def test_objects_have_distinct_visible_colours(scene: SynthScene) -> None:
    rgb, labels = scene.render(scene.start_pose, 512)
    means = []
    for obj in scene.objects:
        mask = labels == obj.id
        if mask.sum() >= 20:
            means.append(rgb[mask].astype(np.float64).mean(axis=0))
    means = np.array(means)
    assert len(means) >= len(scene.objects) // 2
    pairwise = np.linalg.norm(means[:, None] - means[None], axis=-1)
    pairwise = pairwise[np.triu_indices(len(means), 1)]
    assert np.median(pairwise) > 40.0
    assert (pairwise > 10.0).mean() > 0.9
    background = rgb[labels == 0].astype(np.float64).mean(axis=0)
    assert np.all(np.linalg.norm(means - background, axis=1) > 10.0)
