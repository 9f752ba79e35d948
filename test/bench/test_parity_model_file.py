"""``sap_bench parity --model-config YAML --checkpoint FILE``: both copies run the given file."""
from __future__ import annotations

from pathlib import Path

import torch

from sap_ros.bench.parity import measure
from sap_ros.bench.parity_runs import build_models
from sap_ros.engine.sam2_checkpoint import build_sam2_model

NANO = Path(__file__).resolve().parents[2] / 'sap_ros' / 'train' / 'configs' / 'sam2.1_nano.yaml'


def test_parity_runs_a_model_yaml_with_its_file(tmp_path):
    model = build_sam2_model(str(NANO), 64, seed=11)
    with torch.no_grad():  # a file unlike the seed-0 random init parity would build
        model.obj_ptr_proj.layers[0].weight.mul_(2.0)
    torch.save({'model': model.state_dict()}, tmp_path / 'nano.pt')
    result = measure(image_size=64, n_frames=24, amplify=1.0, mutations=(),
                     only=['mask_prompt'], model_config=str(NANO),
                     checkpoint=str(tmp_path / 'nano.pt'))
    (row,) = result.scenarios
    assert row.name == 'mask_prompt' and row.passed
    # Both copies hold the file's weights (not the random init of --seed).
    segmenter, predictor = build_models(64, 0, 1.0, str(NANO), str(tmp_path / 'nano.pt'))
    for name, value in model.state_dict().items():
        assert torch.equal(segmenter.adapter.model.state_dict()[name], value), name
        assert torch.equal(predictor.state_dict()[name], value), name
