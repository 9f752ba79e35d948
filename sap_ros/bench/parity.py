"""``sap_bench parity``: the engine's tracking core against upstream's ``SAM2VideoPredictor``.

One plain video (real crops of the Leader360V beach clip in ``../shared/data`` when present,
generated frames otherwise) goes through upstream's video predictor (``init_state`` on a JPEG
folder, ``add_new_mask`` / ``add_new_points_or_box``, ``propagate_in_video``) and through the
engine's own :class:`~sap_ros.engine.tracking.TrackingCore` (the memory bank, adapter and
decisions the pipeline uses, one view per frame). Both run one set of random weights, amplified
identically (temporal memory encodings and object-pointer projections scaled) so that a wrong
memory slot or pointer distance shows far above float noise. Per frame and object the low-res
logits, the object-score logit and the object pointer are compared.

Extended scenarios (``parity_memory``, ``parity_pipeline``): ``batched_objects`` (three objects
in one batched SAM2 call), ``memory_bound`` (``memory.long_term`` 2 against upstream's
``max_cond_frames_in_attn`` 2), ``pipeline_zigzag`` / ``pipeline_culled`` (``SapPipeline`` over two
ERP frames of 14 patches against upstream on the same patches in path order, or on the
subsequence the engine decoded with culling); ``memory_short_term`` is a measured departure
(reported, not gating).

Mutations (``--mutate``) break the engine's side on purpose: ``swap_slots`` swaps the two most
recent memories, ``pointer_off_by_one`` moves the conditioning pointer one step further (both in
every scenario), ``rotate_batch_memories`` rotates memories inside a batched call,
``keep_creation_prompt`` keeps the creation prompt past the bound, ``reverse_path`` and
``skip_patch`` break the zigzag; each must fail the acceptance.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sap_ros.bench import parity_memory, parity_pipeline
from sap_ros.bench.common import Progress, keys_help, result_field, run_and_report
from sap_ros.bench.parity_discovery import (
    DiscoveryParityResult,
    discovery_passed,
    format_rows,
    measure_discovery,
)
from sap_ros.bench.parity_runs import (
    BATCH_MUTATIONS,
    DATA_DIR,
    MUTATIONS,
    MutatedSegmenter,
    Scenario,
    Setup,
    Step,
    build_models,
    decoded_frames,
    run_engine,
    run_upstream,
    scenarios,
    video_frames,
)

#: Every mutation; each scenario runs those that act on it (``swap_slots`` and
#: ``pointer_off_by_one`` everywhere).
ALL_MUTATIONS = (MUTATIONS + BATCH_MUTATIONS + parity_memory.CONFIG_MUTATIONS
                 + parity_pipeline.PATH_MUTATIONS)
THRESHOLDS = {'max_logit_diff': 1e-4, 'min_iou': 0.999, 'obj_score_diff': 1e-4,
              'ptr_cos_min': 0.9999}


@dataclass
class ScenarioResult:
    """Agreement of the engine with upstream over one scenario."""

    name: str = result_field('scenario')
    mutation: str = result_field('none or the mutation applied to the engine side')
    frames: int = result_field('frames of the video')
    steps: int = result_field('object-frames compared')
    absent_steps: int = result_field('object-frames upstream found the object absent in')
    max_logit_diff: float = result_field('largest |logit difference| of the low-res masks')
    min_iou: float = result_field('smallest IoU of the masks (logit > 0; both empty = 1)')
    obj_score_diff: float = result_field('largest |object-score logit difference|')
    ptr_cos_min: float = result_field('smallest cosine similarity of the object pointers')
    max_batch: int = result_field('largest batch of one SAM2 tracking call of the engine run')
    passed: bool = result_field('all four within the thresholds (and the same object-frames '
                                'decoded)')
    vacuous: bool = result_field('upstream found the object absent in more than half of the '
                                 'object-frames: the masks are -1024 there and nothing is '
                                 'compared; fails the acceptance of an unmutated scenario')


@dataclass
class ParityResult:
    """``sap_bench parity`` report."""

    image_size: int = result_field('SAM2 input side, px (frames are this size)')
    source: str = result_field('where the frames come from')
    amplify: float = result_field('factor on the temporal encodings (maskmem_tpos_enc, '
                                  'obj_ptr_tpos_proj), both copies')
    pointer_amplify: float = result_field('factor on the object pointers (obj_ptr_proj, each '
                                          'layer by its square root), both copies')
    present_bias: float = result_field('added to every object-score logit of the mask '
                                       'decoder, both copies')
    thresholds: Dict[str, float] = result_field('acceptance per scenario')
    scenarios: List[ScenarioResult] = result_field('engine as built, per scenario')
    mutations: List[ScenarioResult] = result_field(
        'engine with a mutation, per scenario; each mutation must fail in at least one scenario '
        '(with the default random weights, in every one: test_parity asserts it)')
    departures: List[ScenarioResult] = result_field(
        'documented departures from upstream, measured (not part of the acceptance)')
    float_noise: float = result_field('largest max_logit_diff of the unmutated scenarios')
    mutation_min_effect: float = result_field(
        'smallest, over the mutations, of the largest max_logit_diff a mutation caused in a '
        'scenario it failed')
    effect_over_noise: float = result_field('mutation_min_effect / max(float_noise, 1e-9); '
                                            'acceptance >= 100')
    insensitive: List[str] = result_field(
        "'scenario/mutation' pairs where the mutation changed nothing beyond the thresholds: "
        'these weights do not use what it breaks there (listed, not gating)')
    passed: bool = result_field('every scenario passes (and none is vacuous), every mutation '
                                'fails in at least one scenario, the ratio >= 100')
    discovery: List[DiscoveryParityResult] = result_field(
        'scenario discovery (sap_ros.bench.parity_discovery): per-patch candidates vs '
        'SAM2AutomaticMaskGenerator, unmutated (must pass) and mutated (must fail)')

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def compare(name: str, mutation: str, ours: Dict[Tuple[int, int], Step],
            theirs: Dict[Tuple[int, int], Step], n_frames: int, max_batch: int = 1
            ) -> ScenarioResult:
    """Per object-frame differences -> one :class:`ScenarioResult`.

    An unmutated engine must decode exactly upstream's object-frames (RuntimeError otherwise); a
    mutated one that decodes others fails, compared on the object-frames both decoded.
    """
    same_steps = set(ours) == set(theirs)
    if not same_steps and mutation == 'none':
        missing = sorted(set(ours) ^ set(theirs))[:5]
        raise RuntimeError(f'{name}: the runs decoded different object-frames, e.g. {missing}')
    theirs = {key: step for key, step in theirs.items() if key in ours}
    logit = score = 0.0
    iou = cos = 1.0
    absent = 0
    for key, (mask_a, score_a, ptr_a) in theirs.items():
        mask_b, score_b, ptr_b = ours[key]
        logit = max(logit, float(np.abs(mask_a - mask_b).max()))
        score = max(score, abs(score_a - score_b))
        absent += score_a <= 0
        a, b = mask_a > 0, mask_b > 0
        union = int((a | b).sum())
        iou = min(iou, 1.0 if union == 0 else int((a & b).sum()) / union)
        denom = float(np.linalg.norm(ptr_a) * np.linalg.norm(ptr_b))
        cos = min(cos, float(ptr_a @ ptr_b) / denom if denom > 0 else 1.0)
    passed = (same_steps and logit <= THRESHOLDS['max_logit_diff']
              and iou >= THRESHOLDS['min_iou'] and score <= THRESHOLDS['obj_score_diff']
              and cos >= THRESHOLDS['ptr_cos_min'])
    return ScenarioResult(name, mutation, n_frames, len(theirs), absent, logit, iou, score, cos,
                          max_batch, passed, 2 * absent > len(theirs))


#: The extended scenarios' modules: each gives ``comparisons(setup)`` and its ``SCENARIOS``.
EXTENDED = (parity_memory, parity_pipeline)


def measure(image_size: int = 128, n_frames: int = 24, seed: int = 0, amplify: float = 30.0,
            mutations: Sequence[str] = ALL_MUTATIONS, data_dir: Path = DATA_DIR,
            progress: Optional[Progress] = None,
            only: Optional[Sequence[str]] = None, model_config: str = 'sam2.1_hiera_t',
            checkpoint: Optional[str] = None, present_bias: float = 0.0,
            pointer_amplify: Optional[float] = None) -> ParityResult:
    """Run every scenario (or those named in ``only``) through both sides, mutations ours."""
    say = progress or (lambda message: None)
    frames, source = video_frames(n_frames, image_size, data_dir)
    segmenter, predictor = build_models(image_size, seed, amplify, model_config, checkpoint,
                                        present_bias, pointer_amplify)
    results: List[ScenarioResult] = []
    mutated: List[ScenarioResult] = []
    departures: List[ScenarioResult] = []
    with tempfile.TemporaryDirectory(prefix='sap_parity_') as tmp:
        for scenario in scenarios(frames):
            if only is not None and scenario.name not in only:
                continue
            folder = Path(tmp) / scenario.name
            folder.mkdir()
            say(f'{scenario.name}: upstream SAM2VideoPredictor')
            theirs = run_upstream(predictor, scenario, folder)
            # The engine sees the frames exactly as upstream decoded them from the JPEG files.
            scenario = Scenario(scenario.name, decoded_frames(folder, len(scenario.frames)),
                                scenario.events)
            say(f'{scenario.name}: engine')
            results.append(compare(scenario.name, 'none', run_engine(segmenter, scenario),
                                   theirs, len(scenario.frames)))
            for mutation in [m for m in mutations if m in MUTATIONS]:
                say(f'{scenario.name}: engine with {mutation}')
                ours = run_engine(MutatedSegmenter(segmenter, mutation), scenario)
                mutated.append(compare(scenario.name, mutation, ours, theirs,
                                       len(scenario.frames)))
        setup = Setup(frames, segmenter, predictor, Path(tmp), tuple(mutations), say, data_dir,
                      present_bias)
        for module in EXTENDED:
            for c in module.comparisons(setup, only):
                row = compare(c.name, c.mutation, c.ours, c.theirs, c.frames,
                              max(c.batches, default=1))
                (departures if not c.gating else results if c.mutation == 'none'
                 else mutated).append(row)
    noise = max((r.max_logit_diff for r in results), default=0.0)
    effect, insensitive = _mutation_effect(mutated)
    ratio = effect / max(noise, 1e-9)
    # A mutation has nothing to act on in a scenario without two recent slots, a pointer or a
    # batched call; each scenario runs only the mutations it gives something to act on.
    passed = (all(r.passed and not r.vacuous for r in results) and bool(mutated)
              and ratio >= 100.0)
    discovery: List[DiscoveryParityResult] = []
    if only is None or 'discovery' in only:
        discovery = measure_discovery(image_size, seed, data_dir=data_dir, progress=say)
        passed = passed and discovery_passed(discovery)
    return ParityResult(image_size, source, amplify,
                        amplify if pointer_amplify is None else pointer_amplify, present_bias,
                        dict(THRESHOLDS), results, mutated, departures, noise, effect, ratio,
                        insensitive, passed, discovery)


def _mutation_effect(mutated: List[ScenarioResult]) -> Tuple[float, List[str]]:
    """The weakest mutation's effect where caught (0: one is caught nowhere), and the unseen pairs.

    A planted mistake that changes nothing in a scenario is invisible there with these weights
    (a trained model may not use what it breaks: e.g. one object pointer taking all of the
    memory attention); the harness is sensitive to it if another scenario catches it.
    """
    best: Dict[str, float] = {}
    for r in mutated:
        caught = r.max_logit_diff if not r.passed else 0.0
        best[r.mutation] = max(best.get(r.mutation, 0.0), caught)
    insensitive = [f'{r.name}/{r.mutation}' for r in mutated if r.passed]
    return (min(best.values()) if best else 0.0), insensitive


def format_table(result: ParityResult) -> str:
    """The table printed by ``sap_bench parity``."""
    instruments = f'amplify {result.amplify:g}'
    if result.pointer_amplify != result.amplify:
        instruments += f', pointer amplify {result.pointer_amplify:g}'
    if result.present_bias:
        instruments += f', present bias {result.present_bias:g}'
    lines = [f'sap_bench parity: engine vs upstream SAM2VideoPredictor, image_size '
             f'{result.image_size}, {result.source}, {instruments}',
             f'{"scenario":<20}{"mutation":<22}{"steps":>6}{"absent":>7}{"batch":>6}'
             f'{"max_logit_diff":>16}{"min_iou":>10}{"obj_score_diff":>16}{"ptr_cos_min":>13}'
             '  result']
    for r in result.scenarios + result.mutations + result.departures:
        verdict = 'pass' if r.passed else 'FAIL'
        if r.vacuous and r in result.scenarios:
            verdict = f'VACUOUS ({verdict.lower()}; object absent in most steps)'
        if r in result.departures:
            verdict = f'departure ({verdict.lower()}; reported, not gating)'
        elif r.mutation != 'none' and r.passed:
            verdict = 'pass (mutation unseen here; not gating)'
        lines.append(f'{r.name:<20}{r.mutation:<22}{r.steps:>6}{r.absent_steps:>7}'
                     f'{r.max_batch:>6}{r.max_logit_diff:>16.3g}{r.min_iou:>10.4f}'
                     f'{r.obj_score_diff:>16.3g}{r.ptr_cos_min:>13.6f}  {verdict}')
    if result.discovery:
        lines += format_rows(result.discovery)
    lines.append(f'float noise {result.float_noise:.3g}, smallest mutation effect '
                 f'{result.mutation_min_effect:.3g}, ratio {result.effect_over_noise:.3g} '
                 f'(>= 100); each mutation must FAIL somewhere; overall: '
                 f'{"PASS" if result.passed else "FAIL"}')
    if result.insensitive:
        lines.append('mutations unseen with these weights (not gating): '
                     + ', '.join(result.insensitive))
    return '\n'.join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sap_bench parity``; the help lists every key of the JSON report."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (__doc__ or '').split('\n\n', 1)[1]
    keys = keys_help(ParityResult) + '\n  per scenario and mutation:\n' + keys_help(
        ScenarioResult).replace('  ', '    ', 1).replace('\n  ', '\n    ')
    keys += '\n  per discovery run and mutation:\n' + keys_help(
        DiscoveryParityResult).replace('  ', '    ', 1).replace('\n  ', '\n    ')
    parser.epilog = (f'JSON keys (--json):\n{keys}\n\nthresholds: {THRESHOLDS}\n\n'
                     'example: sap_bench parity --json p.json')
    parser.add_argument('--image-size', type=int, default=128,
                        help='SAM2 input side and frame size, px (default: %(default)s)')
    parser.add_argument('--frames', type=int, default=24,
                        help='frames per scenario, >= 24 (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random weights (default: 0)')
    parser.add_argument('--amplify', type=float, default=30.0,
                        help='factor on the temporal encodings (and on the object pointers '
                             'unless --pointer-amplify) (default: %(default)s)')
    parser.add_argument('--pointer-amplify', type=float, metavar='F',
                        help='factor on the object pointers instead of --amplify (a trained '
                             'file: 1, so that its pointer attention stays unsaturated)')
    parser.add_argument('--present-bias', type=float, default=0.0, metavar='B',
                        help='added to the object-score logit in both copies, so that a trained '
                             'file that calls the object absent keeps it present and memory '
                             'mistakes show (default: %(default)s)')
    parser.add_argument('--mutate', action='append', choices=ALL_MUTATIONS,
                        help='run only these mutations (repeatable; default: all)')
    parser.add_argument('--data-dir', type=Path, default=DATA_DIR,
                        help='Leader360V beach clip (frames/*.jpg) to crop the video from; '
                             'generated frames when absent (default: %(default)s)')
    parser.add_argument('--model-config', default='sam2.1_hiera_t',
                        help='model.config of both copies: a release name or a SAM2 model '
                             '.yaml path (default: %(default)s)')
    parser.add_argument('--checkpoint', help='weights for --model-config (e.g. a sap_train '
                        'model.pt; pass --amplify 1 to keep them as trained); default: random')
    parser.add_argument('--json', type=Path, metavar='PATH', help='write the report as JSON')
    parser.add_argument('--quiet', action='store_true', help='no progress lines')


def run(args: argparse.Namespace) -> int:
    """Engine's tracking core vs upstream SAM2VideoPredictor: logits, scores, pointers."""
    def measure_args(ns: argparse.Namespace, progress: Progress) -> ParityResult:
        return measure(ns.image_size, max(24, ns.frames), ns.seed, ns.amplify,
                       ns.mutate or ALL_MUTATIONS, ns.data_dir, progress=progress,
                       model_config=ns.model_config, checkpoint=ns.checkpoint,
                       present_bias=ns.present_bias, pointer_amplify=ns.pointer_amplify)

    status = run_and_report('parity', args, measure_args, format_table)
    return status
