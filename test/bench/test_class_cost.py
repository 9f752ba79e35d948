"""``python -m sap_ros.bench.class_cost``: the engine with and without a class head."""
from __future__ import annotations

import json

from sap_ros.bench.class_cost import main
from sap_ros.train import NANO_CONFIG


def test_class_cost_prints_both_engines_and_the_class_stage(capsys, tmp_path):
    out = tmp_path / 'cost.json'
    assert main(['--frames', '2', '--erp-width', '256', '--image-size', '64',
                 '--model-config', str(NANO_CONFIG), '--classes', '5', '--hidden', '0',
                 '--set', 'engine.frame_path=torch', '--json', str(out)]) == 0
    text = capsys.readouterr().out
    figures = json.loads(out.read_text())
    # The classes change nothing a planner reads in the label map, cost a stage that really
    # ran on the frame's sightings, and add no host read to a device-path frame.
    assert figures['same_labels'] is True and 'identical with and without classes' in text
    assert figures['sightings_per_frame'] > 0 and figures['class_stage_ms'] > 0
    assert figures['host_reads_head'] == figures['host_reads_none'] > 0
    assert figures['frame_path'] == 'torch' and figures['frames'] == 1
    assert 'none' in text and 'sam2_head' in text and 'ratio' in text
