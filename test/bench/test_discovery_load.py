"""``python -m sap_ros.bench.discovery_load``: discovery's points and decoder calls on a clip."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sap_ros.bench import discovery_load
from sap_ros.synth.scene import SceneSpec, SynthScene

SMALL = ['model.image_size=64', 'patches.size_px=64', 'output.scale=1.0']


def _clip(folder: Path, frames: int) -> None:
    scene = SynthScene(SceneSpec())
    (folder / 'frames').mkdir(parents=True)
    (folder / 'labels').mkdir()
    for k, pose in enumerate(scene.trajectory(frames)):
        rgb, gt = scene.render(pose, 256)
        cv2.imwrite(str(folder / 'frames' / f'{k:05d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / 'labels' / f'{k:05d}.png'), gt.astype(np.uint16))


def test_counts_the_points_discovery_prompts_frame_by_frame(tmp_path, capsys):
    _clip(tmp_path, 3)
    rows = discovery_load.measure(tmp_path / 'frames', tmp_path / 'labels', [1, 3],
                                  background=0, overrides=SMALL)
    for row in rows:
        assert row['frames'] == 3
        # The first frame searches every patch; points on tracked objects are not prompted, so
        # later frames (the scene labelled by then) prompt fewer points than the first.
        assert row['points_per_frame'][0] > 0
        assert max(row['points_per_frame'][1:]) < row['points_per_frame'][0]
        assert row['decoder_calls_per_frame'][0] >= row['searched_patches_per_frame'][0] > 0
    assert discovery_load.main([str(tmp_path / 'frames'), str(tmp_path / 'labels'), '--every-n',
                                '2', '--background', '0', '--max-frames', '2',
                                *[a for s in SMALL for a in ('--set', s)]]) == 0
    assert 'every_n_frames 2: 2 frames' in capsys.readouterr().out
