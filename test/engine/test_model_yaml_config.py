"""``model.config`` as the path of a SAM2 model yaml (e.g. the nano model ``sap_train`` trains).

The file here has the layout ``sap_train fit`` writes (``{'model': state_dict}`` of the yaml's
architecture); test/train/test_train_runtime.py loads a file actually trained.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sap_ros.config import ModelConfig, PipelineConfig
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.sam2_checkpoint import build_sam2_model
from sap_ros.engine.weights import resolve_checkpoint_path, spec_for
from sap_ros.errors import CheckpointError, ConfigError

# The runtime must not import sap_ros.train (test_layering): the yaml is found as a file.
NANO = Path(__file__).resolve().parents[2] / 'sap_ros' / 'train' / 'configs' / 'sam2.1_nano.yaml'
SMALL = {'model.image_size': 64, 'patches.size_px': 64, 'patches.fov_deg': 120.0,
         'discovery.points_per_side': 4, 'discovery.pred_iou_thresh': 0.0,
         'discovery.stability_thresh': 0.0, 'discovery.max_new_per_frame': 2,
         'memory.short_term': 2, 'memory.long_term': 1}


@pytest.fixture(scope='module')
def nano_file(tmp_path_factory) -> Path:
    model = build_sam2_model(str(NANO), 64, seed=5)
    path = tmp_path_factory.mktemp('nano') / 'nano.pt'
    torch.save({'model': model.state_dict(), 'step': 3}, path)
    return path


def test_a_yaml_path_selects_that_architecture_with_a_file_for_it(nano_file):
    config = PipelineConfig.from_flat({**SMALL, 'model.config': str(NANO),
                                       'model.checkpoint': str(nano_file)})
    pipeline = SapPipeline(config)
    try:
        adapter = pipeline.segmenter.adapter  # type: ignore[attr-defined]
        saved = torch.load(nano_file, weights_only=True)['model']
        for name, value in adapter.model.state_dict().items():
            assert torch.equal(value, saved[name]), name
        assert str(nano_file) in adapter.checkpoint_info
        frame = np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)
        result = pipeline.step(frame)
        assert result.labels.shape[1] == 2 * result.labels.shape[0]
    finally:
        pipeline.close()


def test_a_yaml_path_needs_a_file_and_a_file_must_fit_it(nano_file, tmp_path):
    with pytest.raises(ConfigError, match='model.config.*no SAM2 model yaml'):
        spec_for(str(tmp_path / 'missing.yaml'))
    with pytest.raises(CheckpointError, match='no official checkpoint'):
        resolve_checkpoint_path('auto', spec_for(str(NANO)))
    with pytest.raises(CheckpointError, match='does not fit model.config=sam2.1_hiera_t'):
        SapPipeline(PipelineConfig.from_flat({**SMALL, 'model.config': 'sam2.1_hiera_t',
                                              'model.checkpoint': str(nano_file)}))
    assert ModelConfig().config == 'sam2.1_hiera_t'  # the default is unchanged
