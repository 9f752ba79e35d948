"""``sap_eval --variant NAME:model.checkpoint=FILE``: a trained file beside the base weights."""
from __future__ import annotations

import json

import pytest

pytest.importorskip('training.model.sam2', reason="sam2's training package is not installed: "
                    'SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation --no-binary '
                    'sam2 sam2==1.1.0 (make setup)')

import ray  # noqa: E402
import torch  # noqa: E402

from sap_ros.eval.dataset import main as sap_eval  # noqa: E402
from sap_ros.synth import cli as synth  # noqa: E402
from sap_ros.train import NANO_CONFIG  # noqa: E402
from sap_ros.train.fit import WEIGHTS, FitConfig, run  # noqa: E402

SMALL = ['--set', f'model.config={NANO_CONFIG}', '--set', 'model.image_size=64',
         '--set', 'patches.size_px=64', '--set', 'patches.fov_deg=120',
         '--set', 'discovery.points_per_side=4', '--set', 'discovery.pred_iou_thresh=0',
         '--set', 'discovery.stability_thresh=0']


def test_sap_eval_compares_a_trained_file_with_the_base_weights(train_export, tmp_path):
    run(FitConfig(data=str(train_export), out=str(tmp_path / 'run'), steps=1), progress=False)
    weights = tmp_path / 'run' / WEIGHTS
    base = tmp_path / 'base.pt'  # the "base" file: the trained one with its mask decoder reset
    state = torch.load(weights, map_location='cpu', weights_only=True)
    state['model'] = {k: (torch.zeros_like(v) if k.startswith('sam_mask_decoder.') else v)
                      for k, v in state['model'].items()}
    torch.save(state, base)
    assert synth.main([str(tmp_path / 'clips' / 'a'), '--frames', '2', '--width', '256',
                       '--quiet']) == 0
    out = tmp_path / 'eval'
    try:
        code = sap_eval([str(tmp_path / 'clips'), '--out', str(out), '--checkpoint', str(base),
                         '--variant', f'trained:model.checkpoint={weights}', *SMALL,
                         '--workers', '1', '--quiet'])
    finally:
        ray.shutdown()
    assert code == 0
    report = json.loads((out / 'report.json').read_text())
    (clip,) = report['clips']
    assert clip['status'] == 'ok', clip
    ours, trained = clip['methods']['ours'], clip['methods']['trained']
    assert ours['frames'] == trained['frames'] == 2
    # Each column ran its own weights: the base file's zeroed mask decoder segments nothing,
    # the trained file (discovery thresholds at 0) does.
    assert ours['pred_objects'] == 0 < trained['pred_objects']
    methods = {m['label']: m['overrides'] for m in report['spec']['methods']}
    assert methods == {'ours': {}, 'trained': {'model.checkpoint': str(weights)}}
    assert report['spec']['config']['model.checkpoint'] == str(base)
    assert '| metric | ours | trained |' in (out / 'report.md').read_text()
