"""``python -m sap_ros.eval.compare_outputs``: same outputs, or what differs."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List

import numpy as np

from sap_ros.engine.types import ObjectRecord
from sap_ros.eval.bags import BagWriter
from sap_ros.eval.compare_outputs import main


def _record(object_id: int, score: float) -> ObjectRecord:
    return ObjectRecord(object_id, np.array([1.0, 0.0, 0.0]), 0.0, 0.0, 10.0, 5.0, 0.01, 40,
                        score, 1, 0)


def _bag(path: Path, labels: List[np.ndarray], objects: List[List[ObjectRecord]]) -> Path:
    with BagWriter(path) as bag:
        for k, (lab, recs) in enumerate(zip(labels, objects)):
            bag.write_labels('/sap/masks', lab, k)
            bag.write_objects('/sap/objects', recs, k)
    return path


def test_identical_outputs_pass_and_any_difference_is_named(tmp_path, capsys):
    labels = [np.full((8, 16), k, np.uint16) for k in range(3)]
    objects = [[_record(1, 0.5), _record(2, 0.25)] for _ in range(3)]
    a = _bag(tmp_path / 'a.mcap', labels, objects)
    classed = [[replace(r, class_id=2, class_name='box', class_score=0.9) for r in recs]
               for recs in objects]
    b = _bag(tmp_path / 'b.mcap', labels, classed)  # same old fields, new fields set
    assert main([str(a), str(b)]) == 1  # the class fields differ
    assert 'field class_id differs' in capsys.readouterr().out
    assert main([str(a), str(b), '--ignore', 'class_id,class_score,class_name']) == 0
    assert 'identical: 3 label maps' in capsys.readouterr().out
    moved = [lab.copy() for lab in labels]
    moved[1][0, 0] = 7
    c = _bag(tmp_path / 'c.mcap', moved, [[replace(objects[0][0], score=0.75), objects[0][1]]]
             + objects[1:])
    assert main([str(a), str(c)]) == 1
    out = capsys.readouterr().out
    assert '/sap/masks: message 1 differs' in out
    assert '/sap/objects: message 0 field score differs' in out
    assert main([str(a), str(tmp_path / 'absent.mcap')]) == 2
