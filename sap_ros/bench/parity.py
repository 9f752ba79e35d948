"""``sap_bench parity``: the engine's tracking core against upstream's ``SAM2VideoPredictor``.

One plain video (real crops of the Leader360V beach clip in ``../shared/data`` when present,
generated frames otherwise) goes through upstream's video predictor (``init_state`` on a JPEG
folder, ``add_new_mask`` / ``add_new_points_or_box``, ``propagate_in_video``) and through the
engine's own :class:`~sap_ros.engine.tracking.TrackingCore` (the memory bank, adapter and
decisions the pipeline uses, one view per frame). Both run one set of random weights, amplified
identically (temporal memory encodings and object-pointer projections scaled) so that a wrong
memory slot or pointer distance shows far above float noise. Per frame and object the low-res
logits, the object-score logit and the object pointer are compared.

Mutations (``--mutate``) break the engine's side on purpose: ``swap_slots`` swaps the two most
recent memories, ``pointer_off_by_one`` moves the conditioning pointer one step further; each
must fail the acceptance.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
import os
from pathlib import Path
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
from hydra.utils import instantiate
import numpy as np
from omegaconf import OmegaConf
from PIL import Image
import sam2
import torch

from sap_ros.bench.common import Progress, keys_help, result_field, run_and_report
from sap_ros.config import DiscoveryConfig, MemoryConfig, ModelConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.sam2_checkpoint import _VIDEO_OVERRIDES, spec_for
from sap_ros.engine.segmenter import Sam2Segmenter, SegmentOutput, TrackRequest
from sap_ros.engine.tracking import TrackingCore

DATA_DIR = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data' / 'leader360v_beach'
MUTATIONS = ('swap_slots', 'pointer_off_by_one')
THRESHOLDS = {'max_logit_diff': 1e-4, 'min_iou': 0.999, 'obj_score_diff': 1e-4,
              'ptr_cos_min': 0.9999}


@dataclass(frozen=True)
class Event:
    """A prompt at one frame: a new object (mask or clicks) or a correction (clicks)."""

    frame: int
    object_id: int
    mask: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    correction: bool = False


@dataclass(frozen=True)
class Scenario:
    """A video (frame list) and the prompts given on it."""

    name: str
    frames: List[np.ndarray]
    events: List[Event]


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
    passed: bool = result_field('all four within the thresholds')


@dataclass
class ParityResult:
    """``sap_bench parity`` report."""

    image_size: int = result_field('SAM2 input side, px (frames are this size)')
    source: str = result_field('where the frames come from')
    amplify: float = result_field('factor on maskmem_tpos_enc and the object-pointer '
                                  'projections, both copies')
    thresholds: Dict[str, float] = result_field('acceptance per scenario')
    scenarios: List[ScenarioResult] = result_field('engine as built, per scenario')
    mutations: List[ScenarioResult] = result_field('engine with a mutation, per scenario; '
                                                   'every one must fail')
    float_noise: float = result_field('largest max_logit_diff of the unmutated scenarios')
    mutation_min_effect: float = result_field('smallest max_logit_diff of a mutated run that '
                                              'the mutation changed anything in')
    effect_over_noise: float = result_field('mutation_min_effect / max(float_noise, 1e-9); '
                                            'acceptance >= 100')
    passed: bool = result_field('every scenario passes, every mutation fails, the ratio >= 100')

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


# ---------------------------------------------------------------------------- models
def build_models(image_size: int, seed: int, amplify: float) -> Tuple[Sam2Segmenter, Any]:
    """Our segmenter and upstream's video predictor with the same amplified random weights."""
    segmenter = Sam2Segmenter(ModelConfig(allow_random_weights=True, image_size=image_size,
                                          seed=seed, device='cpu', dtype='float32'))
    model: Any = segmenter.adapter.model
    with torch.no_grad():
        model.maskmem_tpos_enc.mul_(amplify)
        for p in model.obj_ptr_tpos_proj.parameters():
            p.mul_(amplify)
        for p in model.obj_ptr_proj.parameters():
            p.mul_(amplify ** 0.5)
    spec = spec_for(ModelConfig().config)
    cfg = OmegaConf.load(os.path.join(sam2.__path__[0], spec.yaml))
    OmegaConf.update(cfg, 'model.image_size', image_size)
    for key, value in _VIDEO_OVERRIDES.items():
        OmegaConf.update(cfg, f'model.{key}', value, force_add=True)
    OmegaConf.update(cfg, 'model._target_', 'sam2.sam2_video_predictor.SAM2VideoPredictor')
    # SAM2's training setting: a corrected frame becomes a conditioning frame. fill_hole_area
    # needs the CUDA extension (without it upstream skips the step, with a warning).
    OmegaConf.update(cfg, 'model.add_all_frames_to_correct_as_cond', True, force_add=True)
    OmegaConf.update(cfg, 'model.fill_hole_area', 0, force_add=True)
    OmegaConf.resolve(cfg)
    predictor = instantiate(cfg.model, _recursive_=True)
    predictor.load_state_dict(model.state_dict(), strict=True)
    predictor.eval()
    blank = segmenter.adapter.encode(np.zeros((1, image_size, image_size, 3), np.uint8))
    for net in (model, predictor):
        _memoise_image_encoder(net)
        _absent_on_blank_frames(net, blank.backbone_fpn[0])
    return segmenter, predictor


def _memoise_image_encoder(net: Any) -> None:
    """Encode each distinct image once per model (the scenarios share their frames)."""
    cache: Dict[bytes, Dict[str, Any]] = {}
    encode = net.forward_image

    def forward_image(img_batch: torch.Tensor) -> Dict[str, Any]:
        key = img_batch.detach().cpu().numpy().tobytes()
        if key not in cache:
            cache[key] = encode(img_batch)
        out = cache[key]
        return {k: list(v) if isinstance(v, list) else v for k, v in out.items()}

    net.forward_image = forward_image


def _absent_on_blank_frames(net: Any, blank_features: torch.Tensor) -> None:
    """Random weights barely notice an empty frame: make the object score say "absent" there.

    A forward hook on the mask decoder lowers the object-score logit by 40 wherever the image
    features are those of an all-black frame. Both copies get the same hook, so SAM2's own
    no-object path (masks to -1024, no-object pointer and memory embedding) runs in both.
    """
    ref = blank_features.detach()

    def hook(module: Any, args: Any, kwargs: Dict[str, Any], output: Any) -> Any:
        high_res = kwargs.get('high_res_features')
        if not high_res or high_res[0].shape[-2:] != ref.shape[-2:]:
            return output
        gap = (high_res[0] - ref).abs().flatten(1).amax(dim=1)
        blank = (gap < 1e-3).to(output[3].dtype)[:, None]
        return output[:3] + (output[3] - 40.0 * blank,)

    net.sam_mask_decoder.register_forward_hook(hook, with_kwargs=True)


# ---------------------------------------------------------------------------- the video
def video_frames(n_frames: int, size: int, data_dir: Path = DATA_DIR
                 ) -> Tuple[List[np.ndarray], str]:
    """``n_frames`` RGB frames ``size`` squared: crops of real 360 video, or generated ones."""
    files = sorted(Path(data_dir).glob('frames/*.jpg'))
    if files:
        frames = []
        for k in range(n_frames):
            erp: np.ndarray = np.asarray(Image.open(files[k % len(files)]).convert('RGB'))
            h, w = erp.shape[:2]
            # A square around the horizon, drifting right: close to a perspective view.
            x0 = (w // 3 + 8 * k) % (w - h // 2)
            crop = erp[h // 4:h // 4 + h // 2, x0:x0 + h // 2]
            frames.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
        return frames, f'{data_dir.name}: {n_frames} crops of its ERP frames'
    rng = np.random.default_rng(0)
    base: np.ndarray = rng.integers(0, 255, (size // 8, size // 8, 3)).astype(np.uint8)
    base = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    frames = []
    for k in range(n_frames):
        frame = np.roll(base, 2 * k, axis=1).copy()
        cv2.circle(frame, (size // 3 + k, size // 2), size // 6, (230, 60, 40), -1)
        frames.append(frame)
    return frames, f'generated: {n_frames} frames of a moving disc on texture'


def _disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def scenarios(frames: List[np.ndarray]) -> List[Scenario]:
    """The five scenarios of issue 10 on ``frames`` (each as long as ``frames``)."""
    size = frames[0].shape[0]
    n = len(frames)
    mask_a = _disc(size, size * 0.4, size * 0.5, size * 0.18)
    mask_b = _disc(size, size * 0.7, size * 0.3, size * 0.12)
    click = np.array([[size * 0.4, size * 0.5]])
    blank = [f if not 8 <= k < 16 else np.full_like(f, 0) for k, f in enumerate(frames)]
    fix = np.array([[size * 0.45, size * 0.5], [size * 0.8, size * 0.8]])
    return [
        Scenario('mask_prompt', frames, [Event(0, 1, mask=mask_a)]),
        Scenario('point_prompt', frames, [Event(0, 1, points=click, labels=np.array([1]))]),
        Scenario('two_objects', frames, [Event(0, 1, mask=mask_a), Event(5, 2, mask=mask_b)]),
        Scenario('absent_and_back', blank, [Event(0, 1, mask=mask_a)]),
        Scenario('correction_clicks', frames, [
            Event(0, 1, mask=mask_a),
            Event(n // 2, 1, points=fix, labels=np.array([1, 0]), correction=True)]),
    ]


# ---------------------------------------------------------------------------- the two runs
Step = Tuple[np.ndarray, float, np.ndarray]  # low-res logits, object-score logit, pointer


def run_upstream(predictor: Any, scenario: Scenario, folder: Path) -> Dict[Tuple[int, int], Step]:
    """Upstream's video predictor, frame by frame as an interactive session would drive it."""
    for k, frame in enumerate(scenario.frames):
        Image.fromarray(frame).save(folder / f'{k:05d}.jpg', quality=95)
    with torch.inference_mode():
        state = predictor.init_state(str(folder))
        started = False
        for k in range(len(scenario.frames)):
            for ev in [e for e in scenario.events if e.frame == k and not e.correction]:
                if ev.mask is not None:
                    predictor.add_new_mask(state, k, ev.object_id, ev.mask)
                else:
                    predictor.add_new_points_or_box(state, k, ev.object_id, points=ev.points,
                                                    labels=ev.labels)
                started = True
            if started:
                for _ in predictor.propagate_in_video(state, start_frame_idx=k,
                                                      max_frame_num_to_track=0):
                    pass
            for ev in [e for e in scenario.events if e.frame == k and e.correction]:
                predictor.add_new_points_or_box(state, k, ev.object_id, points=ev.points,
                                                labels=ev.labels)
        predictor.propagate_in_video_preflight(state)
    steps: Dict[Tuple[int, int], Step] = {}
    for obj_id in state['obj_ids']:
        out_dict = state['output_dict_per_obj'][predictor._obj_id_to_idx(state, obj_id)]
        for part in ('cond_frame_outputs', 'non_cond_frame_outputs'):
            for k, out in out_dict[part].items():
                steps[(k, obj_id)] = (out['pred_masks'][0, 0].float().numpy(),
                                      float(out['object_score_logits'].reshape(-1)[0]),
                                      out['obj_ptr'].reshape(-1).float().numpy())
    return steps


class MutatedSegmenter:
    """Our segmenter with one deliberate bookkeeping error (the harness must catch it)."""

    def __init__(self, inner: Sam2Segmenter, mutation: str) -> None:
        """Wrap ``inner``; ``mutation`` is one of :data:`MUTATIONS`."""
        if mutation not in MUTATIONS:
            raise ValueError(f'unknown mutation {mutation!r}; known: {MUTATIONS}')
        self.inner, self.mutation = inner, mutation
        self.low_res_px, self.pointer_steps = inner.low_res_px, inner.pointer_steps

    def mutate(self, memory: MemoryContext) -> MemoryContext:
        """The context with two recent slots swapped or the conditioning pointer one further."""
        if self.mutation == 'swap_slots':
            order = sorted(range(len(memory.recent_ago)), key=lambda k: memory.recent_ago[k])
            if len(order) < 2:
                return memory
            recent = list(memory.recent)
            recent[order[0]], recent[order[1]] = recent[order[1]], recent[order[0]]
            return replace(memory, recent=tuple(recent))
        if not memory.cond_ago:
            return memory
        return replace(memory, cond_ago=(memory.cond_ago[0] + 1,) + memory.cond_ago[1:])

    def begin_frame(self, patches: np.ndarray, erp: np.ndarray) -> None:
        """Encode."""
        self.inner.begin_frame(patches, erp)

    def track(self, view_index: int, memory: MemoryContext, **kwargs: Any) -> SegmentOutput:
        """Track with the mutated context."""
        return self.inner.track(view_index, self.mutate(memory), **kwargs)

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """Track each with its mutated context."""
        return [self.track(view_index, r.memory, mask_prompt=r.mask_prompt) for r in requests]

    def discover(self, view_index: int, points_px: np.ndarray) -> Any:
        """Unused by the harness."""
        return self.inner.discover(view_index, points_px)

    def close(self) -> None:
        """Nothing to free here."""


def run_engine(segmenter: Any, scenario: Scenario) -> Dict[Tuple[int, int], Step]:
    """The engine's tracking core over the same video, one view (the frame) per step."""
    memory = MemoryConfig(max_objects=8)
    core = TrackingCore(segmenter, np.ones((1, 1)), memory, DiscoveryConfig(enabled=False))
    ids: Dict[int, int] = {}  # scenario object id -> engine id
    steps: Dict[Tuple[int, int], Step] = {}
    for k, frame in enumerate(scenario.frames):
        segmenter.begin_frame(frame[None], frame)
        core.next_step()
        outputs: Dict[int, SegmentOutput] = {}
        for engine_id, out in core.propagate(0, k, sorted(ids.values())):
            outputs[engine_id] = out
        for ev in [e for e in scenario.events if e.frame == k]:
            if ev.correction and ev.points is not None and ev.labels is not None:
                outputs[ids[ev.object_id]] = core.correct(0, k, ids[ev.object_id], ev.points,
                                                          ev.labels)
                continue
            made = core.create(0, k, mask=ev.mask, points_px=ev.points, point_labels=ev.labels)
            if made is None:
                raise RuntimeError(f'{scenario.name}: the engine found nothing at the prompt of '
                                   f'object {ev.object_id} (try another --seed)')
            ids[ev.object_id] = made[0]
            outputs[made[0]] = made[1]
        for obj_id, engine_id in ids.items():
            out = outputs[engine_id]
            score = float(out.memory.object_score_logits.reshape(-1)[0])
            steps[(k, obj_id)] = (out.logits, score, np.asarray(out.obj_ptr))
    return steps


def compare(name: str, mutation: str, ours: Dict[Tuple[int, int], Step],
            theirs: Dict[Tuple[int, int], Step], n_frames: int) -> ScenarioResult:
    """Per object-frame differences -> one :class:`ScenarioResult`."""
    if set(ours) != set(theirs):
        missing = sorted(set(ours) ^ set(theirs))[:5]
        raise RuntimeError(f'{name}: the runs decoded different object-frames, e.g. {missing}')
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
    passed = (logit <= THRESHOLDS['max_logit_diff'] and iou >= THRESHOLDS['min_iou']
              and score <= THRESHOLDS['obj_score_diff'] and cos >= THRESHOLDS['ptr_cos_min'])
    return ScenarioResult(name, mutation, n_frames, len(theirs), absent, logit, iou, score, cos,
                          passed)


def measure(image_size: int = 128, n_frames: int = 24, seed: int = 0, amplify: float = 30.0,
            mutations: Sequence[str] = MUTATIONS, data_dir: Path = DATA_DIR,
            progress: Optional[Progress] = None,
            only: Optional[Sequence[str]] = None) -> ParityResult:
    """Run every scenario (or those named in ``only``) through both sides, mutations ours."""
    say = progress or (lambda message: None)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    frames, source = video_frames(n_frames, image_size, data_dir)
    segmenter, predictor = build_models(image_size, seed, amplify)
    results: List[ScenarioResult] = []
    mutated: List[ScenarioResult] = []
    with tempfile.TemporaryDirectory(prefix='sap_parity_') as tmp:
        for scenario in scenarios(frames):
            if only is not None and scenario.name not in only:
                continue
            folder = Path(tmp) / scenario.name
            folder.mkdir()
            say(f'{scenario.name}: upstream SAM2VideoPredictor')
            theirs = run_upstream(predictor, scenario, folder)
            # The engine sees the frames exactly as upstream decoded them from the JPEG files.
            decoded = [np.array(Image.open(folder / f'{j:05d}.jpg').convert('RGB'))
                       for j in range(len(scenario.frames))]
            scenario = Scenario(scenario.name, decoded, scenario.events)
            say(f'{scenario.name}: engine')
            results.append(compare(scenario.name, 'none', run_engine(segmenter, scenario),
                                   theirs, len(decoded)))
            for mutation in mutations:
                say(f'{scenario.name}: engine with {mutation}')
                ours = run_engine(MutatedSegmenter(segmenter, mutation), scenario)
                mutated.append(compare(scenario.name, mutation, ours, theirs, len(decoded)))
    noise = max(r.max_logit_diff for r in results)
    changed = [r.max_logit_diff for r in mutated if r.max_logit_diff > noise]
    effect = min(changed) if changed else 0.0
    ratio = effect / max(noise, 1e-9)
    # A mutation has nothing to act on in a scenario without two recent slots or a pointer
    # (never here: every scenario runs past 16 frames); it must fail everywhere else.
    passed = (all(r.passed for r in results) and all(not r.passed for r in mutated)
              and ratio >= 100.0)
    return ParityResult(image_size, source, amplify, dict(THRESHOLDS), results, mutated, noise,
                        effect, ratio, passed)


def format_table(result: ParityResult) -> str:
    """The table printed by ``sap_bench parity``."""
    lines = [f'sap_bench parity: engine vs upstream SAM2VideoPredictor, image_size '
             f'{result.image_size}, {result.source}, amplify {result.amplify:g}',
             f'{"scenario":<20}{"mutation":<20}{"steps":>6}{"absent":>7}{"max_logit_diff":>16}'
             f'{"min_iou":>10}{"obj_score_diff":>16}{"ptr_cos_min":>13}  result']
    for r in result.scenarios + result.mutations:
        verdict = 'pass' if r.passed else 'FAIL'
        lines.append(f'{r.name:<20}{r.mutation:<20}{r.steps:>6}{r.absent_steps:>7}'
                     f'{r.max_logit_diff:>16.3g}{r.min_iou:>10.4f}{r.obj_score_diff:>16.3g}'
                     f'{r.ptr_cos_min:>13.6f}  {verdict}')
    lines.append(f'float noise {result.float_noise:.3g}, smallest mutation effect '
                 f'{result.mutation_min_effect:.3g}, ratio {result.effect_over_noise:.3g} '
                 f'(>= 100); mutations must FAIL; overall: '
                 f'{"PASS" if result.passed else "FAIL"}')
    return '\n'.join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sap_bench parity``; the help lists every key of the JSON report."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (__doc__ or '').split('\n\n', 1)[1]
    keys = keys_help(ParityResult) + '\n  per scenario and mutation:\n' + keys_help(
        ScenarioResult).replace('  ', '    ', 1).replace('\n  ', '\n    ')
    parser.epilog = (f'JSON keys (--json):\n{keys}\n\nthresholds: {THRESHOLDS}\n\n'
                     'example: sap_bench parity --json p.json')
    parser.add_argument('--image-size', type=int, default=128,
                        help='SAM2 input side and frame size, px (default: %(default)s)')
    parser.add_argument('--frames', type=int, default=24,
                        help='frames per scenario, >= 24 (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random weights (default: 0)')
    parser.add_argument('--amplify', type=float, default=30.0,
                        help='factor on the temporal encodings (default: %(default)s)')
    parser.add_argument('--mutate', action='append', choices=MUTATIONS,
                        help='run only these mutations (repeatable; default: all)')
    parser.add_argument('--data-dir', type=Path, default=DATA_DIR,
                        help='Leader360V beach clip (frames/*.jpg) to crop the video from; '
                             'generated frames when absent (default: %(default)s)')
    parser.add_argument('--json', type=Path, metavar='PATH', help='write the report as JSON')
    parser.add_argument('--quiet', action='store_true', help='no progress lines')


def run(args: argparse.Namespace) -> int:
    """Engine's tracking core vs upstream SAM2VideoPredictor: logits, scores, pointers."""
    def measure_args(ns: argparse.Namespace, progress: Progress) -> ParityResult:
        return measure(ns.image_size, max(24, ns.frames), ns.seed, ns.amplify,
                       ns.mutate or MUTATIONS, ns.data_dir, progress=progress)

    status = run_and_report('parity', args, measure_args, format_table)
    return status
