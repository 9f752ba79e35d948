"""Issue 18: the geometric oracle through the whole pipeline finds the small_objects spheres.

The oracle answers discovery with the ground-truth segment under each grid point, so what it
finds is decided by the pipeline alone: the grid, the layout, the schedule, the caps per frame,
fusion. Run at the shipped defaults (``model.image_size`` and ``patches.size_px`` 1024), every
sphere of 2 and 3 deg, at both poles, on the seam and on the equator, must be found within
``discovery.every_n_frames`` frames. The 1 deg spheres are not asserted: at upstream's grid
density (32 points per side at 1024 px, one point every 3.6 deg at a patch centre) most of them
fall between the points (README "Offline evaluation" has the measured table).
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest

from sap_ros.config import PipelineConfig
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.eval.metrics import resize_nearest
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.geometry import erp_pixel_solid_angle_sr
from sap_ros.sphere.layout import PatchLayout
from sap_ros.synth.scene import SceneSpec, SynthScene
from sap_ros.synth.small_objects import SMALL_OBJECTS

WIDTH = 1024  # ERP of the ground truth: a 1 deg sphere is ~6 px, 3 deg ~55 px
FOUND_IOU = 0.5  # a predicted id that overlaps the sphere this much (on the sphere) found it


def found_per_frame(config: PipelineConfig, frames: int) -> List[Dict[int, float]]:
    """Per frame, every sphere's IoU with the predicted id covering most of it (0 if none)."""
    scene = SynthScene(SceneSpec(scene='small_objects'))
    oracle = OracleSegmenter(PatchLayout.from_config(config.patches), background=0,
                             size_px=min(config.patches.size_px, config.model.image_size))
    pipeline = SapPipeline(config, segmenter=oracle)
    weights = erp_pixel_solid_angle_sr(WIDTH, WIDTH // 2)[:, None]
    out = []
    for pose in scene.trajectory(frames):
        rgb, gt = scene.render(pose, WIDTH)
        oracle.set_ground_truth(gt)
        pred = resize_nearest(pipeline.step(rgb).labels, gt.shape)
        ious = {}
        for obj in scene.objects:
            inside = gt == obj.id
            ids, counts = np.unique(pred[inside], return_counts=True)
            best = int(ids[np.argmax(counts)])
            mine = pred == best
            ious[obj.id] = (0.0 if best == 0 else
                            float((weights * (inside & mine)).sum()
                                  / (weights * (inside | mine)).sum()))
        out.append(ious)
    pipeline.close()
    return out


@pytest.mark.slow
def test_oracle_at_the_defaults_finds_every_sphere_of_two_and_three_degrees() -> None:
    config = PipelineConfig()  # the shipped defaults
    assert config.model.image_size == 1024 and config.patches.size_px == 1024
    frames = config.discovery.every_n_frames
    history = found_per_frame(config, frames)
    for object_id, planned in enumerate(SMALL_OBJECTS, start=1):
        if planned.size_deg < 2.0:
            continue
        first = next((k for k, ious in enumerate(history) if ious[object_id] >= FOUND_IOU),
                     None)
        assert first is not None, (
            f'{planned} not found in {frames} frames: IoU per frame '
            f'{[round(ious[object_id], 2) for ious in history]}')
        # Found means kept: tracked in every later frame of the window.
        assert all(ious[object_id] >= FOUND_IOU for ious in history[first:]), planned
