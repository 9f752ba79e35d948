"""The engine's tracking core gives what upstream's SAM2VideoPredictor gives (sap_bench parity).

One run of every scenario (mask prompt, point prompt, two objects prompted on different frames,
an object absent for 8 frames then back, correction clicks) and both mutations. Removing absent
memories, true pointer distances or the correction path of the engine fails these tests.
"""
from __future__ import annotations

import pytest

from sap_ros.bench.cli import build_parser
from sap_ros.bench.parity import MUTATIONS, THRESHOLDS, ParityResult, ScenarioResult, measure

SCENARIOS = ('mask_prompt', 'point_prompt', 'two_objects', 'absent_and_back',
             'correction_clicks')


@pytest.fixture(scope='module')
def parity() -> ParityResult:
    return measure(only=SCENARIOS)  # the extended ones: test_parity_extended.py


def _why(r: ScenarioResult) -> str:
    return (f'{r.name}/{r.mutation}: logit {r.max_logit_diff:.3g}, iou {r.min_iou:.5f}, '
            f'score {r.obj_score_diff:.3g}, ptr cos {r.ptr_cos_min:.6f}')


def test_every_scenario_matches_upstream(parity: ParityResult) -> None:
    assert [r.name for r in parity.scenarios] == list(SCENARIOS)
    for r in parity.scenarios:
        assert r.frames >= 24
        assert r.max_logit_diff <= THRESHOLDS['max_logit_diff'], _why(r)
        assert r.min_iou >= THRESHOLDS['min_iou'], _why(r)
        assert r.obj_score_diff <= THRESHOLDS['obj_score_diff'], _why(r)
        assert r.ptr_cos_min >= THRESHOLDS['ptr_cos_min'], _why(r)
    by_name = {r.name: r for r in parity.scenarios}
    assert by_name['absent_and_back'].absent_steps >= 8  # the no-object path really ran
    assert by_name['two_objects'].steps > by_name['mask_prompt'].steps


def test_mutations_fail_far_above_float_noise(parity: ParityResult) -> None:
    assert {(r.name, r.mutation) for r in parity.mutations} == {
        (name, m) for name in SCENARIOS for m in MUTATIONS}
    for r in parity.mutations:
        assert not r.passed, _why(r)
    assert parity.effect_over_noise >= 100.0
    assert parity.passed


def test_cli_help_explains_every_key() -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices['parity']  # noqa: SLF001
    text = sub.format_help()
    for key in list(ParityResult.__dataclass_fields__) + list(
            ScenarioResult.__dataclass_fields__):
        assert f'{key}:' in text, key
