"""Fixtures of the training tests (a plugin of test/conftest.py): tiny patch-video exports."""
from __future__ import annotations

from pathlib import Path

import pytest

from sap_ros.synth.scene import SynthScene
from sap_ros.synth.spec import SceneSpec
from sap_ros.train import data

SIZE_PX = 64  # the nano model at 64 px: ~0.1 s per training window on one CPU thread


def write_frames(folder: Path, seed: int, n_frames: int, width: int) -> None:
    """A frame-folder clip (frames/*.png + labels/*.png) of a synthetic scene."""
    import cv2
    scene = SynthScene(SceneSpec(seed=seed))
    (folder / 'frames').mkdir(parents=True)
    (folder / 'labels').mkdir()
    for k, pose in enumerate(scene.trajectory(n_frames)):
        rgb, labels = scene.render(pose, width)
        cv2.imwrite(str(folder / 'frames' / f'{k:04d}.png'), rgb[..., ::-1])
        cv2.imwrite(str(folder / 'labels' / f'{k:04d}.png'), labels)


def _export(root: Path, seed: int) -> Path:
    write_frames(root / f'scene{seed}', seed, n_frames=2, width=256)
    data.export([root / f'scene{seed}'], root / 'export',
                data.ExportSpec(size_px=SIZE_PX, min_area_px=8))
    return root / 'export'


@pytest.fixture(scope='session')
def train_export(tmp_path_factory) -> Path:
    """Patch videos of synthetic scene seed 1 (training)."""
    return _export(tmp_path_factory.mktemp('train_data'), seed=1)


@pytest.fixture(scope='session')
def heldout_export(tmp_path_factory) -> Path:
    """Patch videos of synthetic scene seed 2 (held out)."""
    return _export(tmp_path_factory.mktemp('heldout_data'), seed=2)
