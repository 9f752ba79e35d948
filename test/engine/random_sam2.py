"""Shared by the random-weight SAM2 tests: a small, fast config and a short synthetic clip."""
from __future__ import annotations

from typing import List

import numpy as np

from sap_ros.synth.scene import SceneSpec, SynthScene

# Random weights at 128 px, thresholds at 0 so that discovery keeps something, small memory.
RANDOM_SAM2_FLAT = {
    'model.allow_random_weights': True, 'model.image_size': 128, 'output.scale': 0.5,
    'model.device': 'cpu',  # exact values: CUDA runs bf16 (test/gpu compares the two)
    'discovery.points_per_side': 4, 'discovery.pred_iou_thresh': 0.0,
    'discovery.stability_thresh': 0.0, 'discovery.max_new_per_frame': 3,
    'memory.short_term': 2, 'memory.long_term': 1}


def synth_frames(n_frames: int = 3, width: int = 256, seed: int = 1) -> List[np.ndarray]:
    """RGB ERP frames of a synthetic scene along its moving-camera trajectory."""
    scene = SynthScene(SceneSpec(seed=seed))
    return [scene.render(pose, width)[0] for pose in scene.trajectory(n_frames)]
