"""``sap_bench parity --model-config YAML --checkpoint FILE``: both copies run the given file."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from sap_ros.bench.parity import format_table, measure
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


def _absent_minded_file(train_export, tmp_path):
    """A file trained a few steps by ``sap_train fit``, its object score then pushed down by 30.

    As the 20-minute from-scratch run does on tracking patches, it calls the object absent almost
    everywhere: SAM2's gate sets those masks to -1024, so a comparison there is vacuous.
    """
    pytest.importorskip('training.model.sam2', reason="sam2's training package is not "
                        'installed (make setup)')
    from sap_ros.train.fit import WEIGHTS, FitConfig, run
    run(FitConfig(data=str(train_export), out=str(tmp_path / 'run'), steps=2, batch_size=1,
                  lr=1e-3, train=('all',), num_frames=2, max_objects=20, overfit=1,
                  prompts=(('prob_to_use_pt_input_for_train', 0.0),
                           ('num_init_cond_frames_for_train', 1))), progress=False)
    state = torch.load(tmp_path / 'run' / WEIGHTS, map_location='cpu', weights_only=True)
    state['model']['sam_mask_decoder.pred_obj_score_head.layers.2.bias'] -= 30.0
    torch.save(state, tmp_path / 'absent.pt')
    return str(tmp_path / 'absent.pt')


def test_present_bias_makes_parity_with_an_absent_minded_trained_file_meaningful(
        train_export, tmp_path):
    checkpoint = _absent_minded_file(train_export, tmp_path)
    run = functools.partial(measure, image_size=64, n_frames=24, only=['mask_prompt'],
                            mutations=('swap_slots',), model_config=str(NANO),
                            checkpoint=checkpoint)
    plain = run()
    (row,) = plain.scenarios
    # Equal -1024 masks on both sides: "passes", but the verdict calls it vacuous and fails.
    assert row.passed and row.vacuous and row.absent_steps >= row.steps - 1
    assert not plain.passed and 'VACUOUS' in format_table(plain)
    biased = run(present_bias=30.0)
    (row,) = biased.scenarios
    assert row.passed and not row.vacuous and row.absent_steps == 0, row
    (mutated,) = biased.mutations
    assert not mutated.passed and mutated.max_logit_diff > 100 * biased.float_noise, mutated
    assert biased.passed and 'present bias 30' in format_table(biased)


def _row(name, mutation, diff):
    from sap_ros.bench.parity import THRESHOLDS, ScenarioResult
    return ScenarioResult(name, mutation, 24, 24, 0, diff, 1.0, 0.0, 1.0, 1,
                          diff <= THRESHOLDS['max_logit_diff'], False)


def test_a_mutation_unseen_in_one_scenario_but_caught_in_another_still_counts_as_caught():
    from sap_ros.bench.parity import _mutation_effect
    # pointer_off_by_one: invisible in memory_bound (the trained attention ignores that pointer),
    # caught in mask_prompt; swap_slots caught in both.
    effect, unseen = _mutation_effect([
        _row('mask_prompt', 'pointer_off_by_one', 3e-3), _row('memory_bound',
                                                               'pointer_off_by_one', 5e-6),
        _row('mask_prompt', 'swap_slots', 0.05), _row('memory_bound', 'swap_slots', 0.03)])
    assert effect == 3e-3 and unseen == ['memory_bound/pointer_off_by_one']
    # A mutation caught nowhere leaves the harness blind to it: effect 0, the verdict fails.
    effect, unseen = _mutation_effect([_row('mask_prompt', 'swap_slots', 0.05),
                                       _row('mask_prompt', 'pointer_off_by_one', 5e-6)])
    assert effect == 0.0 and unseen == ['mask_prompt/pointer_off_by_one']
