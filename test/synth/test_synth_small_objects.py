"""The ``small_objects`` scene: sizes, places and labels of its 1-3 deg spheres, and its CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sap_ros.errors import ConfigError
from sap_ros.eval.bags import open_label_stream
from sap_ros.sphere.geometry import bearing_to_lonlat, erp_lonlat_grid, erp_pixel_solid_angle_sr
from sap_ros.synth.cli import LABEL_TOPIC, main
from sap_ros.synth.scene import SceneSpec, SynthScene
from sap_ros.synth.small_objects import SITES, SMALL_OBJECTS

WIDTH = 2048  # 1 deg = 5.7 px: sizes are measured to a few percent


@pytest.fixture(scope='module', params=['room', 'outdoor'])
def scene(request: pytest.FixtureRequest) -> SynthScene:
    return SynthScene(SceneSpec(kind=request.param, scene='small_objects', seed=0))


@pytest.fixture(scope='module')
def start_labels(scene: SynthScene) -> np.ndarray:
    return scene.render(scene.start_pose, WIDTH)[1]


def cap_solid_angle_sr(size_deg: float) -> float:
    """Solid angle of a sphere seen at ``size_deg`` across (a spherical cap)."""
    return 2.0 * math.pi * (1.0 - math.cos(math.radians(size_deg) / 2.0))


def test_twelve_spheres_of_one_two_and_three_degrees_at_every_site() -> None:
    assert len(SMALL_OBJECTS) == 12
    for site in SITES:
        sizes = sorted(o.size_deg for o in SMALL_OBJECTS if o.site == site)
        assert sizes == [1.0, 2.0, 3.0], site
    on_pole = {o.lat_deg: o.size_deg for o in SMALL_OBJECTS if abs(o.lat_deg) == 90.0}
    assert on_pole == {90.0: 1.0, -90.0: 3.0}


def test_each_sphere_has_its_size_and_place_in_the_labels(scene: SynthScene,
                                                           start_labels: np.ndarray) -> None:
    pose = scene.start_pose
    per_row = erp_pixel_solid_angle_sr(WIDTH, WIDTH // 2)
    for obj, planned in zip(scene.objects, SMALL_OBJECTS):
        assert obj.kind == 'sphere'
        mask = start_labels == obj.id
        measured = float((per_row[:, None] * mask).sum())
        # Pixel quantisation of a 1 deg disc (~25 px at the equator) stays within 12 %.
        assert measured == pytest.approx(cap_solid_angle_sr(planned.size_deg), rel=0.12), planned
        lon, lat = bearing_to_lonlat(scene.bearing_of(obj.id, pose))
        assert float(lat) == pytest.approx(planned.lat_deg, abs=1e-6)
        if abs(planned.lat_deg) < 90.0:
            assert (float(lon) - planned.lon_deg + 180.0) % 360.0 - 180.0 == pytest.approx(
                0.0, abs=1e-6)


def test_pole_spheres_cover_the_poles_and_seam_spheres_both_borders(
        scene: SynthScene, start_labels: np.ndarray) -> None:
    by_place = {(o.site, o.size_deg): i + 1 for i, o in enumerate(SMALL_OBJECTS)}
    assert np.all(start_labels[0] == by_place['north_pole', 1.0])  # the top row is the pole
    assert np.all(start_labels[-1] == by_place['south_pole', 3.0])
    for size in (1.0, 2.0, 3.0):
        seam_id = by_place['seam', size]
        assert (start_labels[:, 0] == seam_id).any() and (start_labels[:, -1] == seam_id).any()
    _, lat = erp_lonlat_grid(WIDTH, WIDTH // 2)
    for obj, planned in zip(scene.objects, SMALL_OBJECTS):
        inside = lat[start_labels == obj.id]
        assert np.all(np.abs(inside - planned.lat_deg) <= planned.size_deg / 2.0 + 0.2)


def test_the_camera_turns_in_place_so_sizes_and_latitudes_stay(scene: SynthScene) -> None:
    poses = scene.trajectory(6)
    assert all(np.array_equal(p.position, scene.start_pose.position) for p in poses)
    assert [p.yaw_deg for p in poses] == pytest.approx([3.0 * k for k in range(6)])
    equator_3 = 1 + next(i for i, o in enumerate(SMALL_OBJECTS)
                         if (o.site, o.size_deg) == ('equator', 3.0))
    lon0, _ = bearing_to_lonlat(scene.bearing_of(equator_3, poses[0]))
    lon5, lat5 = bearing_to_lonlat(scene.bearing_of(equator_3, poses[5]))
    assert float(lon5) - float(lon0) == pytest.approx(15.0)  # turning left moves it right
    assert float(lat5) == pytest.approx(0.0, abs=1e-9)
    a, b = scene.render(poses[0], 512)[1], scene.render(poses[5], 512)[1]
    assert not np.array_equal(a, b)
    assert sorted(np.unique(a)) == sorted(np.unique(b))  # nothing left the view


def test_mixed_scene_is_the_default_and_unknown_scenes_are_rejected() -> None:
    assert SceneSpec().scene == 'mixed'
    assert [o.role for o in SynthScene().objects[:4]] == ['zenith', 'nadir', 'seam', 'large']
    with pytest.raises(ConfigError, match='SceneSpec.scene'):
        SceneSpec(scene='tiny')


def test_cli_writes_the_small_objects_scene(tmp_path) -> None:
    out = tmp_path / 'small'
    assert main([str(out), '--scene', 'small_objects', '--frames', '2', '--width', '1024',
                 '--quiet']) == 0
    labels = [lab for _, lab in open_label_stream(out, LABEL_TOPIC, use_header_stamp=True)]
    scene = SynthScene(SceneSpec(scene='small_objects'))
    for lab, pose in zip(labels, scene.trajectory(2)):
        assert np.array_equal(lab, scene.render(pose, 1024)[1])
    assert set(np.unique(labels[0])) == {0, *range(1, 13)}
