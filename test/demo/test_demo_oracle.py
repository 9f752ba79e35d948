"""``make demo``'s oracle column at the demo's own settings (J >= 0.9).

The demo's geometric oracle is the upper bound of what its node ran: the same parameters file,
the same frames. This runs that column alone (no node, no DDS: the oracle needs no network) on
the demo's default sequence, 8 frames at 1024 x 512 with SAM2's input at 256 px.
"""
from __future__ import annotations

import numpy as np

from sap_ros.demo import demo
from sap_ros.eval.bags import open_image_stream, open_label_stream
from sap_ros.eval.replay_methods import MethodName, build_method
from sap_ros.eval.replay_params import build_config
from sap_ros.eval.replay_timeline import MethodScores
from sap_ros.synth import cli as synth

DEMO_FRAMES, DEMO_WIDTH, RANDOM_WEIGHT_IMAGE_SIZE = 8, 1024, 256  # demo.main's defaults


def test_demo_oracle_reaches_j_0_9_with_the_nodes_parameters(tmp_path) -> None:
    bag = tmp_path / 'input'
    assert synth.main(demo._synth_arguments(bag, DEMO_FRAMES, DEMO_WIDTH)) == 0
    params = demo._write_params_file(tmp_path / 'params.yaml',
                                     demo._demo_parameters(None, RANDOM_WEIGHT_IMAGE_SIZE))
    config = demo._oracle_config(params)
    # The oracle runs exactly what the node ran (no discovery settings of its own).
    assert config.to_flat() == build_config(params, []).to_flat()
    assert config.model.image_size == RANDOM_WEIGHT_IMAGE_SIZE
    oracle = build_method(MethodName.ORACLE, config, gt_background=0, gt_ignore=None)
    scores = MethodScores(0, None)
    frames = list(open_image_stream(bag, synth.IMAGE_TOPIC))
    labels = [f.labels for f in open_label_stream(bag, synth.LABEL_TOPIC)]
    assert len(frames) == len(labels) == DEMO_FRAMES
    for frame, gt in zip(frames, labels):
        result = oracle.step(frame.rgb, gt)
        scores.add(result.labels, result.latency_ms, gt)
    oracle.close()
    metrics = scores.metrics()
    assert metrics is not None
    per_object = {o.gt_id: round(o.j, 3) for o in metrics.objects}
    assert metrics.j >= 0.9, per_object
    assert metrics.id_switches == 0
    assert len(np.unique(np.concatenate([np.unique(gt) for gt in labels]))) - 1 == len(per_object)
