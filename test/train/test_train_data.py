"""``sap_train data``: patch videos along the runtime's path, in upstream's VOS layout."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image
import pytest

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.layout import PatchLayout
from sap_ros.synth.scene import SynthScene
from sap_ros.synth.spec import SceneSpec
from sap_ros.train import data
from sap_ros.train.cli import main


def write_clip(folder: Path, seed: int, n_frames: int, width: int) -> list:
    """A frame-folder clip (frames/*.png + labels/*.png) of a synthetic scene; its label maps."""
    scene = SynthScene(SceneSpec(seed=seed))
    (folder / 'frames').mkdir(parents=True)
    (folder / 'labels').mkdir()
    labels = []
    for k, pose in enumerate(scene.trajectory(n_frames)):
        rgb, lab = scene.render(pose, width)
        cv2.imwrite(str(folder / 'frames' / f'{k:04d}.png'), rgb[..., ::-1])
        cv2.imwrite(str(folder / 'labels' / f'{k:04d}.png'), lab)
        labels.append(lab)
    return labels


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp('clip') / 'room1'
    return folder, write_clip(folder, seed=1, n_frames=2, width=512)


def test_exported_masks_fuse_back_to_the_source_labels(clip, tmp_path):
    folder, labels = clip
    spec = data.ExportSpec(size_px=256, min_area_px=0)
    records = data.export([folder], tmp_path / 'out', spec)
    assert [r.camera_frames for r in records] == [(0,), (1,)]
    for record, source in zip(records, labels):
        fused = data.fused_source_labels(tmp_path / 'out', record, spec)
        assert data.oracle_j(fused, source) >= 0.99
    # Upstream's VOS layout: a file list, JPEG frames and palette PNGs, one per patch.
    names = (tmp_path / 'out' / 'videos.txt').read_text().split()
    assert names == [r.name for r in records]
    frames = sorted((tmp_path / 'out' / 'JPEGImages' / names[0]).glob('*.jpg'))
    masks = sorted((tmp_path / 'out' / 'Annotations' / names[0]).glob('*.png'))
    assert [f.stem for f in frames] == [m.stem for m in masks] == [f'{t:05d}' for t in range(26)]
    with Image.open(masks[0]) as png:
        assert png.mode == 'P' and png.size == (256, 256)


def test_ids_are_consistent_through_a_chained_video(clip, tmp_path):
    folder, labels = clip
    spec = data.ExportSpec(size_px=128, frames_per_video=2)
    (record,) = data.export([folder], tmp_path / 'out', spec)
    masks = data.read_masks(tmp_path / 'out', record.name)
    layout = spec.layout()
    assert len(masks) == 2 * len(layout)
    # The second panorama runs the path backwards, as the runtime runs odd frames.
    assert record.views == layout.path + layout.path[::-1]
    # Each palette index is the same source object in every patch of both panoramas.
    source_patches = [data.patch_labels(layout, lab, spec.min_area_px) for lab in labels]
    for t, (view, mask) in enumerate(zip(record.views, masks)):
        truth = source_patches[t // len(layout)][view]
        for index in np.unique(mask[mask > 0]):
            assert np.array_equal(mask == index, truth == record.object_ids[int(index)])


def test_raster_trajectory_gives_the_raster_order(clip, tmp_path):
    folder, _ = clip
    zigzag = data.export([folder], tmp_path / 'z', data.ExportSpec(max_frames=1))[0]
    raster = data.export([folder], tmp_path / 'r',
                         data.ExportSpec(trajectory='raster', max_frames=1))[0]
    assert zigzag.views == PatchLayout.build(90.0, 128, 'zigzag', 0.5).path
    assert raster.views == PatchLayout.build(90.0, 128, 'raster', 0.5).path
    assert raster.views != zigzag.views
    # Raster: north cap, then rows from the top down, each by increasing yaw, south cap last.
    views = PatchLayout.build(90.0, 128, 'raster', 0.5).views
    pitches = [views[i].pitch_deg for i in raster.views]
    assert pitches == sorted(pitches, reverse=True)


def test_objects_too_small_in_a_patch_are_left_out_there(clip):
    _, labels = clip
    layout = PatchLayout.build(90.0, 128, 'zigzag', 0.5)
    kept = data.patch_labels(layout, labels[0], min_area_px=16)
    every = data.patch_labels(layout, labels[0], min_area_px=0)
    for patch in kept:
        ids, counts = np.unique(patch[patch > 0], return_counts=True)
        assert np.all(counts >= 16)
    assert (kept > 0).sum() < (every > 0).sum()  # something was small somewhere


def test_a_sap_synth_bag_is_a_source_and_bad_input_is_named(tmp_path):
    from sap_ros.synth.cli import main as synth
    assert synth([str(tmp_path / 'bag'), '--frames', '2', '--width', '256', '--quiet']) == 0
    assert main(['data', str(tmp_path / 'bag'), '--out', str(tmp_path / 'out'),
                 '--size', '64']) == 0
    spec, records = data.load_meta(tmp_path / 'out')
    assert len(records) == 2 and spec.size_px == 64 and records[0].erp_hw == (128, 256)
    assert main(['data', str(tmp_path / 'bag'), '--out', str(tmp_path / 'out')]) == 1
    with pytest.raises(InvalidInputError, match='trajectory'):
        data.ExportSpec(trajectory='spiral')
