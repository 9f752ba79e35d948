"""A trained file in ``sap_replay`` (``--set model.config=YAML --checkpoint FILE``)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip('training.model.sam2', reason="sam2's training package is not installed: "
                    'SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation --no-binary '
                    'sam2 sam2==1.1.0 (make setup)')

from sap_ros.eval.replay import main as replay  # noqa: E402
from sap_ros.synth import cli as synth  # noqa: E402
from sap_ros.train import NANO_CONFIG  # noqa: E402
from sap_ros.train.fit import WEIGHTS, FitConfig, run  # noqa: E402


def test_sap_replay_runs_a_trained_file_and_names_it(train_export, tmp_path, capsys):
    run(FitConfig(data=str(train_export), out=str(tmp_path / 'run'), steps=1), progress=False)
    weights = tmp_path / 'run' / WEIGHTS
    assert synth.main([str(tmp_path / 'bag'), '--frames', '2', '--width', '256', '--quiet']) == 0
    code = replay([str(tmp_path / 'bag'), '--image-topic', synth.IMAGE_TOPIC, '--gt-topic',
                   synth.LABEL_TOPIC, '--out', str(tmp_path / 'replay'), '--quiet',
                   '--checkpoint', str(weights), '--set', f'model.config={NANO_CONFIG}',
                   '--set', 'model.image_size=64', '--set', 'patches.size_px=64',
                   '--set', 'patches.fov_deg=120', '--set', 'discovery.points_per_side=4'])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / 'replay' / 'report.json').read_text())
    assert report['frames'] == 2
    assert str(weights) in report['model']['description']
    assert report['config']['model.config'] == str(NANO_CONFIG)
