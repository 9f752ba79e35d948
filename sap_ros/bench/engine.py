"""``sap_bench engine``: the SAM2 streaming engine measured side by side in one run (DESIGN §9).

Four parts, each on its own pipeline, none of them asserted anywhere (a benchmark prints):

* **speed** - the default engine (``SapPipeline`` over ``Sam2Segmenter``) on a synthetic
  moving-camera sequence: frames per second and mean stage times over ``--frames`` frames after
  one warm-up frame. The segmenter is wrapped in a ``TimedSegmenter`` (``bench_probes``), so the
  part of a frame spent outside the network (extraction, memory selection, prompts, filtering,
  fusion, pointers) is measured, not inferred: ``overhead = (total - time inside segmenter
  calls) / total``. The same patches are then encoded batched and one per forward
  (``Sam2Adapter.encode`` vs ``encode_sequential``).
* **view culling** - 40 caps spread over the sphere, created by discovery in a first frame, then
  the decode stage timed with ``view_culling`` on and off on the same pipeline (same objects,
  same memory; the frames alternate). The segmenter is a ``ShadowSegmenter`` (``bench_probes``):
  every call runs SAM2 (the cost culling saves is the network's), the masks come from the ground
  truth (with random weights SAM2's masks cover most of every patch, so every extent would be
  the whole sphere and nothing could be culled).
* **memory** - the largest number of memory-bank entries seen in any step of the run against
  ``MemoryBank.entries_limit``; process RSS at 1/6 of a long oracle run and at its end, with
  objects coming and going (the scene changes every ``SCENE_FRAMES`` frames, so objects retire).
* **oracle** - the geometric oracle through the whole engine on a moving-camera sequence:
  J and id switches (:class:`~sap_ros.eval.metrics.ClipEvaluator`).

Timings on CUDA synchronise after every segmenter call, so the encode stage holds its GPU work.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
import gc
from pathlib import Path
import statistics
import sys
import textwrap
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from sap_ros.bench.common import (
    Progress,
    existing_file,
    keys_help,
    result_keys_of,
    run_and_report,
)
from sap_ros.bench.common import result_field as _key
from sap_ros.bench.encoder_schedule import measure_encoder_schedule
from sap_ros.bench.geometry import MachineInfo
from sap_ros.bench.nonnetwork import NONNETWORK_STAGES, measure_nonnetwork
from sap_ros.bench.probes import (
    CallTimes,
    ShadowSegmenter,
    TimedSegmenter,
    cap_scene,
    rss_mib,
)
from sap_ros.config import PipelineConfig
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.segmenter import Sam2Segmenter
from sap_ros.errors import ConfigError
from sap_ros.eval.metrics import ClipEvaluator
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.fusion import FusionMode
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches
from sap_ros.synth.scene import SceneSpec, SynthScene

CAP_RADIUS_DEG = 10.0       # culling scene: resolvable at the smallest decoder grid (16 px)
SCENE_FRAMES = 40           # RSS run: a new scene (seed) every 40 frames; old objects retire
RSS_POSES = 6               # RSS run: poses per scene, visited back and forth
RSS_SCENES = 4
MAX_CAPS = 60               # caps of CAP_RADIUS_DEG stay apart; below memory.max_objects (64)
RSS_PATCH_PX = 128
LIMITS = {'overhead_fraction': 0.15, 'culling_speedup': 3.0, 'rss_growth_pct': 5.0,
          'oracle_j': 0.98, 'encoder_schedule_speedup': 2.0, 'schedule_j_loss': 0.005}
STAGES = ('extract', 'encode', 'decode', 'discover', 'fuse', 'pointers', 'total')




@dataclass(frozen=True)
class EngineBenchResult:
    """Every number of one run; field order = JSON order; each field's help is in ``--help``."""

    device: str = _key('torch device of SAM2')
    weights: str = _key('what SAM2 runs with (checkpoint path, or RANDOM WEIGHTS)')
    image_size: int = _key('SAM2 input side and patch side of the speed part, px')
    erp_width: int = _key('ERP width of the speed part (height = width / 2), px')
    patches: int = _key('patches (views) per frame')
    frames: int = _key('timed SAM2 frames (after one warm-up frame)')
    fps: float = _key('timed frames / their summed wall time')
    stage_ms: Dict[str, float] = _key('mean ms per stage over the timed frames (timings_ms: '
                                      'extract, encode, decode, discover, fuse, pointers, total)')
    segmenter_ms: float = _key('mean ms per frame inside segmenter calls (begin_frame = patch '
                               'encoding, track, discover)')
    overhead_fraction: float = _key('(total - segmenter_ms) / total over the timed frames: the '
                                    'share of a frame not spent in the network; acceptance '
                                    '<= 0.15')
    objects_mean: float = _key('objects in the output per timed frame (mean)')
    discovery_frames: int = _key('timed frames in which discovery ran')
    encode_batched_ms: float = _key('all patches of one frame, Sam2Adapter.encode (batches of '
                                    'model.encode_batch), median')
    encode_sequential_ms: float = _key('the same patches, one per forward, median')
    encode_speedup: float = _key('encode_sequential_ms / encode_batched_ms')
    nonnetwork_device: str = _key('torch device of the non-network part (the device path runs '
                                  'there; the NumPy path on the host)')
    nonnetwork_erp_width: int = _key('ERP width of the non-network part, px (the label map is '
                                     'output.scale of it)')
    nonnetwork_image_size: int = _key('patch side of the non-network part (= model.image_size), '
                                      'px; logits at a quarter of it')
    nonnetwork_objects: int = _key('objects (caps over the sphere) painted per frame')
    nonnetwork_fusion: str = _key('fusion mode of the non-network part')
    nonnetwork_torch_threads: int = _key('torch intra-op threads (torch.get_num_threads) during '
                                         'the non-network part')
    nonnetwork_ms: Dict[str, Dict[str, float]] = _key(
        'per path (numpy: cv2 remap + LabelCanvas + object_records on the host; torch: one '
        'upload + grid_sample + device canvas + device pointers + one download), median ms per '
        'stage: sample (ERP -> every patch at image_size), fuse (every view painted on the '
        'published map and the work grid), pointers (object records and culling extents, '
        'incl. the host copy), total')
    nonnetwork_speedup: float = _key('nonnetwork_ms numpy total / torch total (> 1: the device '
                                     'path is faster on this device)')
    nonnetwork_labels_equal: float = _key('fraction of label-map pixels equal between the two '
                                          'paths (same frame, same logits)')
    host_syncs_per_frame: int = _key('host synchronisations counted in one torch-path frame '
                                     '(.cpu/.item/.tolist/.numpy/bool(tensor)/cuda waits; the '
                                     'design: 1, the download)')
    culling_segmenter: str = _key('segmenter of the culling part')
    culling_image_size: int = _key('SAM2 input side of the culling part, px')
    culling_objects: int = _key('live objects during the timed culling frames')
    culling_margin_deg: float = _key('memory.culling_margin_deg of the culling part')
    culling_decode_ms: float = _key('decode stage per frame, view_culling on (mean)')
    no_culling_decode_ms: float = _key('decode stage per frame, every object in every view')
    culling_speedup: float = _key('no_culling_decode_ms / culling_decode_ms (wall time); '
                                  'acceptance >= 3')
    culling_cpu_speedup: float = _key('the same ratio for the CPU time of this process inside '
                                      'the track calls (less disturbed by other processes)')
    culling_track_calls: float = _key('segmenter track calls per frame, culling on')
    no_culling_track_calls: float = _key('segmenter track calls per frame, culling off')
    batched_decode_ms: float = _key('decode stage per frame, culling on, the objects of a patch '
                                    'batched through SAM2 (as the engine runs; the two above '
                                    'decode one object per SAM2 call)')
    decode_batch_speedup: float = _key('culling_decode_ms / batched_decode_ms (wall time)')
    bank_entries_max: int = _key('most memory-bank entries after any step of any part')
    bank_entries_limit: int = _key('MemoryBank.entries_limit (every part uses the default '
                                   'memory.* sizes)')
    rss_frames: int = _key('frames of the long oracle run')
    rss_erp_width: int = _key('ERP width of the long run, px')
    rss_early_frame: int = _key('frame after which the first RSS is read')
    rss_early_mib: Optional[float] = _key('process RSS (VmRSS) after rss_early_frame, MiB')
    rss_late_mib: Optional[float] = _key('process RSS after the last frame, MiB')
    rss_growth_pct: Optional[float] = _key('100 * (rss_late - rss_early) / rss_early; '
                                           'acceptance <= 5')
    rss_ids_issued: int = _key('largest object id output in the long run (ids are never '
                               'reused: objects created)')
    oracle_frames: int = _key('frames of the oracle sequence')
    oracle_erp_width: int = _key('ERP width of the oracle sequence, px')
    oracle_patch_size: int = _key('patch side of the oracle sequence, px (decoder grid: 1/4)')
    oracle_j: Optional[float] = _key('J of the oracle through the engine (sphere-weighted IoU, '
                                     'Hungarian-matched ids, mean over objects); acceptance '
                                     '>= 0.98')
    oracle_id_switches: int = _key('id switches of the oracle run; acceptance 0')
    oracle_worst_gt_id: Optional[int] = _key('ground-truth id of the object with the lowest J')
    oracle_worst_j: Optional[float] = _key('its J')
    oracle_frame_ms: float = _key('mean engine ms per oracle frame')
    schedule_frames: int = _key('frames of the encoder schedule part (a camera turning 2 deg a '
                                'frame in front of a few caps; two oracle pipelines, '
                                'engine.encode_all_views off and on, frame by frame interleaved)')
    schedule_erp_width: int = _key('ERP width of the encoder schedule part, px')
    schedule_patch_size: int = _key('patch side of the encoder schedule part, px')
    schedule_objects: int = _key('caps in the encoder schedule scene')
    schedule_object_views_fraction: float = _key(
        'share of the views that view culling decodes the caps in (mean over frames; the '
        'issue: at most a third)')
    schedule_encode_ms_per_view: float = _key(
        'stand-in image-encoder cost per encoded patch, slept by the oracle segmenter of both '
        'pipelines: --schedule-encode-ms, default encode_batched_ms / patches of this run')
    schedule_every_n_frames: int = _key('discovery.every_n_frames of both pipelines '
                                        '(discovery.uncovered_fraction 1 in both)')
    encoded_views_per_frame: float = _key('patches encoded per frame with the schedule (mean, '
                                          'after the first frame, which encodes all)')
    all_views_encoded_per_frame: float = _key('patches encoded per frame with '
                                              'engine.encode_all_views (the old behaviour)')
    schedule_frame_ms: float = _key('mean ms per frame with the schedule (after the first)')
    all_views_frame_ms: float = _key('mean ms per frame encoding every view (after the first)')
    encoder_schedule_speedup: float = _key('all_views_frame_ms / schedule_frame_ms; acceptance '
                                           '>= 2')
    schedule_oracle_j: Optional[float] = _key('J of the oracle through the scheduled pipeline; '
                                              'acceptance: within 0.005 of all_views_oracle_j')
    all_views_oracle_j: Optional[float] = _key('J of the oracle encoding every view')
    schedule_id_switches: int = _key('id switches with the schedule; acceptance 0')
    all_views_id_switches: int = _key('id switches encoding every view')
    acceptance: Dict[str, bool] = _key('each acceptance criterion of the engine -> met')
    machine: MachineInfo = _key('cpu_count, cv2_threads, python, platform, library versions')
    elapsed_s: float = _key('wall time of the whole run, s')

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def result_keys() -> List[Tuple[str, str]]:
    """``(key, explanation)`` of every JSON key, in order."""
    return result_keys_of(EngineBenchResult)


@dataclass
class _Run:
    """Settings resolved from the arguments, and what every part adds to."""

    device: str
    image_size: int
    erp_width: int
    culling_image_size: int
    model_flat: Dict[str, Any]
    progress: Progress
    entries_max: int = 0
    entries_limits: List[int] = field(default_factory=list)

    def config(self, image_size: int, **flat: Any) -> PipelineConfig:
        return PipelineConfig.from_flat({**self.model_flat, 'model.image_size': image_size,
                                         'patches.size_px': image_size, **flat})

    def sync(self) -> None:
        if self.device.startswith('cuda'):
            torch.cuda.synchronize()

    def watch(self, pipeline: SapPipeline) -> None:
        self.entries_max = max(self.entries_max, pipeline.memory_stats().entries)
        if pipeline.bank.entries_limit not in self.entries_limits:
            self.entries_limits.append(pipeline.bank.entries_limit)


def _median_ms(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(times))


# ---------------------------------------------------------------------------- the parts
def measure_speed(args: argparse.Namespace, run: _Run) -> Dict[str, Any]:
    """Default engine on SAM2: fps, stages, overhead; then batched vs sequential encoding."""
    scene = SynthScene(SceneSpec(seed=args.seed))
    run.progress(f'speed: rendering {args.frames + 1} frames at {run.erp_width} px')
    frames = [scene.render(pose, run.erp_width)[0] for pose in scene.trajectory(args.frames + 1)]
    run.progress(f'speed: building SAM2 ({run.image_size} px, {run.device})')
    timed = TimedSegmenter(Sam2Segmenter(run.config(run.image_size).model), run.sync)
    pipeline = SapPipeline(run.config(run.image_size), segmenter=timed)
    walls, stages, inside, objects, discovered = [], [], [], [], 0
    for k, rgb in enumerate(frames):
        timed.reset_counters()
        start = time.perf_counter()
        result = pipeline.step(rgb)
        wall = time.perf_counter() - start
        run.watch(pipeline)
        label = 'warm-up' if k == 0 else f'{k}/{args.frames}'
        run.progress(f'speed: frame {label}: {wall:.1f} s, {len(result.objects)} objects, '
                     f'{timed.tracking.calls} track / {timed.discovery.calls} discover calls')
        if k == 0:
            continue
        walls.append(wall)
        stages.append(result.timings_ms)
        inside.append(timed.wall_s * 1e3)
        objects.append(len(result.objects))
        discovered += timed.discovery.calls > 0
    stage_ms = {name: float(np.mean([s.get(name, 0.0) for s in stages])) for name in STAGES}
    total_ms = float(np.sum([s['total'] for s in stages]))
    adapter = timed.inner.adapter
    patches = extract_patches(pipeline.layout, frames[0])
    run.progress(f'speed: encoding {len(patches)} patches batched vs sequential '
                 f'({args.repeats} repeats + 1 warm-up each)')
    adapter.encode_sequential(patches)
    run.sync()
    batched, sequential = [], []
    for _ in range(args.repeats):  # interleaved: load changes hit both alike
        batched.append(_median_ms(lambda: adapter.encode(patches), 1, run.sync))
        sequential.append(_median_ms(lambda: adapter.encode_sequential(patches), 1, run.sync))
    out = dict(
        weights=timed.description, patches=len(pipeline.layout), frames=args.frames,
        fps=len(walls) / float(np.sum(walls)), stage_ms=stage_ms,
        segmenter_ms=float(np.mean(inside)),
        overhead_fraction=(total_ms - float(np.sum(inside))) / total_ms,
        objects_mean=float(np.mean(objects)), discovery_frames=int(discovered),
        encode_batched_ms=float(statistics.median(batched)),
        encode_sequential_ms=float(statistics.median(sequential)))
    out['encode_speedup'] = out['encode_sequential_ms'] / out['encode_batched_ms']
    pipeline.close()
    return out


def measure_culling(args: argparse.Namespace, run: _Run) -> Dict[str, Any]:
    """Decode stage with and without view culling, same objects and memory, frames alternating."""
    size = run.culling_image_size
    width = min(2048, max(256, 4 * size))  # the RGB only sets the cost; labels need ~1 deg
    rgb, gt = cap_scene(args.culling_objects, CAP_RADIUS_DEG, width)
    flat = {'discovery.every_n_frames': 1_000_000, 'discovery.uncovered_fraction': 1.0,
            'discovery.points_per_side': 16, 'discovery.min_area_fraction': 0.0,
            'discovery.max_new_per_frame': 2 * args.culling_objects}
    if args.culling_margin_deg is not None:
        flat['memory.culling_margin_deg'] = args.culling_margin_deg
    config = run.config(size, **flat)
    oracle = OracleSegmenter(PatchLayout.from_config(config.patches), size_px=size)
    shadow = ShadowSegmenter(Sam2Segmenter(config.model), oracle)
    timed = TimedSegmenter(shadow, run.sync)
    pipeline = SapPipeline(config, segmenter=timed)
    shadow.set_ground_truth(gt)
    run.progress(f'culling: creating {args.culling_objects} caps by discovery '
                 f'(SAM2 {size} px, ERP {width} px)')
    pipeline.step(rgb)
    run.watch(pipeline)
    # Modes: culling on / off with SAM2 once per object (the culling ratio), and culling on with
    # the objects of a patch batched (as the engine runs). Order ABC CBA ABC ...: drift hits all.
    modes = ('on', 'off', 'batched')
    decode: Dict[str, List[float]] = {m: [] for m in modes}
    tracking: Dict[str, List[CallTimes]] = {m: [] for m in modes}
    total = len(modes) * args.culling_frames
    for i in range(total):
        mode = modes[i % 3] if (i // 3) % 2 == 0 else modes[2 - i % 3]
        pipeline.view_culling = mode != 'off'
        shadow.batched = mode == 'batched'
        timed.reset_counters()
        result = pipeline.step(rgb)
        run.watch(pipeline)
        decode[mode].append(result.timings_ms['decode'])
        tracking[mode].append(timed.tracking)
        run.progress(f'culling: frame {i + 1}/{total} {mode}: decode '
                     f'{result.timings_ms["decode"] / 1e3:.1f} s, {timed.tracking.calls} track '
                     f'calls, {timed.tracking.cpu_s:.1f} CPU s')

    def mean(mode: str, key: Callable[[CallTimes], float]) -> float:
        return float(np.mean([key(t) for t in tracking[mode]]))

    out = dict(
        culling_segmenter=f'ShadowSegmenter (SAM2 cost at {size} px, masks from the ground '
                          f'truth of {args.culling_objects} caps of {CAP_RADIUS_DEG:g} deg)',
        culling_image_size=size, culling_objects=len(pipeline.registry),
        culling_margin_deg=config.memory.culling_margin_deg,
        culling_decode_ms=float(np.mean(decode['on'])),
        no_culling_decode_ms=float(np.mean(decode['off'])),
        culling_speedup=float(np.mean(decode['off']) / max(float(np.mean(decode['on'])), 1e-9)),
        culling_cpu_speedup=mean('off', lambda t: t.cpu_s) / max(mean('on', lambda t: t.cpu_s),
                                                                 1e-9),
        culling_track_calls=mean('on', lambda t: t.calls),
        no_culling_track_calls=mean('off', lambda t: t.calls),
        batched_decode_ms=float(np.mean(decode['batched'])),
        decode_batch_speedup=float(np.mean(decode['on'])
                                   / max(float(np.mean(decode['batched'])), 1e-9)))
    pipeline.close()
    return out


def _oracle_pipeline(patch_px: int, **flat: Any) -> Tuple[SapPipeline, OracleSegmenter]:
    config = PipelineConfig.from_flat({'patches.size_px': patch_px,
                                       'model.image_size': max(64, patch_px // 32 * 32),
                                       'discovery.every_n_frames': 1, **flat})
    oracle = OracleSegmenter(PatchLayout.from_config(config.patches))
    return SapPipeline(config, segmenter=oracle), oracle


def measure_rss(args: argparse.Namespace, run: _Run) -> Dict[str, Any]:
    """Process RSS over a long oracle run whose objects come and go."""
    width = args.rss_erp_width
    run.progress(f'rss: rendering {RSS_SCENES} scenes x {RSS_POSES} poses at {width} px')
    clips = []
    for seed in range(RSS_SCENES):
        scene = SynthScene(SceneSpec(seed=args.seed + seed))
        clips.append([scene.render(pose, width) for pose in scene.trajectory(RSS_POSES)])
    pipeline, oracle = _oracle_pipeline(RSS_PATCH_PX, **{'discovery.points_per_side': 16,
                                                         'discovery.min_area_fraction': 0.0005})
    early_frame = max(1, args.rss_frames // 6)
    early = late = None
    ids_issued = 0
    period = 2 * (RSS_POSES - 1)
    for k in range(args.rss_frames):
        clip = clips[(k // SCENE_FRAMES) % RSS_SCENES]
        phase = k % period
        rgb, gt = clip[phase if phase < RSS_POSES else period - phase]
        oracle.set_ground_truth(gt)
        result = pipeline.step(rgb)
        run.watch(pipeline)
        ids_issued = max([ids_issued] + [p.id for p in result.objects])
        if k + 1 == early_frame:
            gc.collect()
            early = rss_mib()
        if k + 1 == args.rss_frames:
            gc.collect()
            late = rss_mib()
        if (k + 1) % 50 == 0 or k + 1 == args.rss_frames:
            run.progress(f'rss: frame {k + 1}/{args.rss_frames}, {len(pipeline.registry)} live '
                         f'objects, RSS {rss_mib() or 0.0:.1f} MiB')
    growth = None if early is None or late is None else 100.0 * (late - early) / early
    pipeline.close()
    return dict(rss_frames=args.rss_frames, rss_erp_width=width, rss_early_frame=early_frame,
                rss_early_mib=early, rss_late_mib=late, rss_growth_pct=growth,
                rss_ids_issued=ids_issued)


def measure_oracle(args: argparse.Namespace, run: _Run) -> Dict[str, Any]:
    """The oracle through the whole engine on a moving-camera sequence: J and id switches."""
    width, patch = args.oracle_erp_width, args.oracle_patch_size
    pipeline, oracle = _oracle_pipeline(patch, **{
        'output.scale': 1.0, 'discovery.points_per_side': 32,
        'discovery.min_area_fraction': 0.0, 'discovery.max_new_per_frame': 64})
    scene = SynthScene(SceneSpec(seed=args.seed))
    evaluator = ClipEvaluator(gt_background=0, gt_ignore=None)
    totals = []
    for k, pose in enumerate(scene.trajectory(args.oracle_frames)):
        rgb, gt = scene.render(pose, width)
        oracle.set_ground_truth(gt)
        result = pipeline.step(rgb)
        run.watch(pipeline)
        evaluator.add_frame(result.labels, gt)
        totals.append(result.timings_ms['total'])
        run.progress(f'oracle: frame {k + 1}/{args.oracle_frames} at {width} px: '
                     f'{totals[-1] / 1e3:.1f} s, {len(result.objects)} objects')
    metrics = evaluator.result()
    worst = min(metrics.objects, key=lambda o: o.j) if metrics.objects else None
    pipeline.close()
    return dict(oracle_frames=args.oracle_frames, oracle_erp_width=width,
                oracle_patch_size=patch, oracle_j=metrics.j,
                oracle_id_switches=metrics.id_switches,
                oracle_worst_gt_id=None if worst is None else worst.gt_id,
                oracle_worst_j=None if worst is None else worst.j,
                oracle_frame_ms=float(np.mean(totals)))


# ---------------------------------------------------------------------------- the run
def _resolve(args: argparse.Namespace, progress: Progress) -> _Run:
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('model.device', f'--device cuda requested but CUDA is not available '
                          f'(torch {torch.__version__}); use auto or cpu')
    cuda = args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available())
    device = 'cuda' if cuda else 'cpu'
    image_size = args.image_size or (1024 if cuda else 256)
    model_flat: Dict[str, Any] = {'model.device': device, 'model.dtype': args.dtype,
                                  'model.config': args.model_config}
    if args.checkpoint is not None:
        model_flat['model.checkpoint'] = str(args.checkpoint)
    else:
        model_flat['model.allow_random_weights'] = True
        print('sap_bench engine: no --checkpoint: SAM2 runs with RANDOM WEIGHTS. Timings are '
              'the real network cost, masks are meaningless (discovery then rarely finds '
              'anything, so it runs on every frame).', file=sys.stderr, flush=True)
    return _Run(device=device, image_size=image_size,
                erp_width=args.erp_width or (4096 if cuda else 1024),
                culling_image_size=args.culling_image_size or (image_size if cuda else 64),
                model_flat=model_flat, progress=progress)


def _patch_geometry(run: _Run) -> Tuple[float, float, float]:
    """``patches.fov_deg``, ``patches.overlap`` and ``output.scale`` of the run's config."""
    config = run.config(run.image_size)
    return config.patches.fov_deg, config.patches.overlap, config.output.scale


def acceptance(values: Dict[str, Any]) -> Dict[str, bool]:
    """Each acceptance criterion of the engine (issue "SAM2 streaming engine") -> met.

    >>> acceptance({'overhead_fraction': 0.1, 'culling_speedup': 2.0, 'bank_entries_max': 5,
    ...             'bank_entries_limit': 640, 'rss_growth_pct': None, 'oracle_j': 0.99,
    ...             'oracle_id_switches': 0})['culling_speedup >= 3']
    False
    """
    def at_most(key: str, limit: float) -> bool:
        return values[key] is not None and values[key] <= limit

    return {
        f'overhead_fraction <= {LIMITS["overhead_fraction"]:g}':
            at_most('overhead_fraction', LIMITS['overhead_fraction']),
        f'culling_speedup >= {LIMITS["culling_speedup"]:g}':
            values['culling_speedup'] >= LIMITS['culling_speedup'],
        'bank_entries_max <= bank_entries_limit':
            values['bank_entries_max'] <= values['bank_entries_limit'],
        f'rss_growth_pct <= {LIMITS["rss_growth_pct"]:g}':
            at_most('rss_growth_pct', LIMITS['rss_growth_pct']),
        f'oracle_j >= {LIMITS["oracle_j"]:g}':
            values['oracle_j'] is not None and values['oracle_j'] >= LIMITS['oracle_j'],
        'oracle_id_switches == 0': values['oracle_id_switches'] == 0,
        f'encoder_schedule_speedup >= {LIMITS["encoder_schedule_speedup"]:g}':
            values['encoder_schedule_speedup'] >= LIMITS['encoder_schedule_speedup'],
        f'schedule_j_loss <= {LIMITS["schedule_j_loss"]:g}': _j_loss(values) is not None and (
            _j_loss(values) or 0.0) <= LIMITS['schedule_j_loss'],
        'schedule_id_switches == 0': values['schedule_id_switches'] == 0,
    }


def _j_loss(values: Dict[str, Any]) -> Optional[float]:
    """How much J the schedule loses against encoding every view (None: no J)."""
    ours, all_views = values['schedule_oracle_j'], values['all_views_oracle_j']
    return None if ours is None or all_views is None else all_views - ours


def run_engine_bench(args: argparse.Namespace, progress: Progress) -> EngineBenchResult:
    """Run every part for the parsed ``sap_bench engine`` arguments.

    The RSS part runs first, before SAM2 is loaded, so its baseline is the smallest.
    """
    run = _resolve(args, progress)
    values: Dict[str, Any] = dict(device=run.device, image_size=run.image_size,
                                  erp_width=run.erp_width)
    values.update(measure_rss(args, run))
    values.update(measure_oracle(args, run))
    values.update(measure_culling(args, run))
    values.update(measure_speed(args, run))
    values.update(measure_encoder_schedule(
        args.schedule_frames, args.schedule_erp_width, args.schedule_patch_size,
        args.schedule_encode_ms if args.schedule_encode_ms is not None
        else values['encode_batched_ms'] / values['patches'],
        args.schedule_every_n_frames, progress=run.progress))
    values['nonnetwork_torch_threads'] = torch.get_num_threads()
    values.update(measure_nonnetwork(
        args.nonnetwork_erp_width, args.nonnetwork_image_size, args.nonnetwork_objects,
        args.nonnetwork_repeats, run.device, args.fusion, *_patch_geometry(run),
        progress=run.progress))
    values['bank_entries_max'] = run.entries_max
    values['bank_entries_limit'] = min(run.entries_limits)
    values['acceptance'] = acceptance(values)
    values['machine'] = MachineInfo.current()
    values['elapsed_s'] = progress.elapsed_s()
    return EngineBenchResult(**{f.name: values[f.name] for f in fields(EngineBenchResult)})


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return 'n/a'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def _nonnetwork_lines(r: EngineBenchResult) -> List[str]:
    def split(path: str) -> str:
        return '  '.join(f'{s} {_num(r.nonnetwork_ms[path][s], 1)}' for s in NONNETWORK_STAGES)

    return [
        f'  non-network  ERP {r.nonnetwork_erp_width}x{r.nonnetwork_erp_width // 2}, patches '
        f'{r.nonnetwork_image_size} px, {r.nonnetwork_objects} objects, {r.nonnetwork_fusion}, '
        f'torch on {r.nonnetwork_device} ({r.nonnetwork_torch_threads} threads)',
        f'               numpy (ms)  {split("numpy")}',
        f'               torch (ms)  {split("torch")}  (numpy / torch x'
        f'{_num(r.nonnetwork_speedup, 2)})',
        f'               label maps equal on {_num(100.0 * r.nonnetwork_labels_equal, 3)} % of '
        f'pixels; host syncs per torch frame {r.host_syncs_per_frame}',
    ]


def format_table(result: EngineBenchResult) -> str:
    """The human-readable report printed at the end of a run."""
    r = result
    ok = {name.split()[0]: ('PASS' if met else 'FAIL') for name, met in r.acceptance.items()}
    stages = '  '.join(f'{name} {_num(r.stage_ms[name], 1)}' for name in STAGES)
    lines = [
        f'sap_bench engine: SAM2 {r.weights}',
        f'  image {r.image_size} px, ERP {r.erp_width}x{r.erp_width // 2}, {r.patches} patches '
        f'({r.machine.cpu_count} CPUs, torch {r.machine.torch})',
        f'  speed        {_num(r.fps)} fps over {r.frames} frames after 1 warm-up '
        f'({_num(r.stage_ms["total"], 1)} ms per frame)',
        f'  stages (ms)  {stages}',
        f'  overhead     {_num(r.overhead_fraction)} of a frame outside segmenter calls '
        f'(segmenter {_num(r.segmenter_ms, 1)} ms)  [<= {LIMITS["overhead_fraction"]:g} '
        f'{ok["overhead_fraction"]}]',
        f'  workload     {_num(r.objects_mean, 1)} objects per frame, discovery in '
        f'{r.discovery_frames}/{r.frames} frames',
        f'  encoding     batched {_num(r.encode_batched_ms, 1)} ms, one patch per forward '
        f'{_num(r.encode_sequential_ms, 1)} ms (x{_num(r.encode_speedup, 2)})',
        f'  culling      {r.culling_objects} objects, margin {r.culling_margin_deg:g} deg: decode '
        f'{_num(r.culling_decode_ms, 1)} ms culled vs {_num(r.no_culling_decode_ms, 1)} ms in '
        f'every view (x{_num(r.culling_speedup, 2)})  [>= {LIMITS["culling_speedup"]:g} '
        f'{ok["culling_speedup"]}]',
        f'               CPU time in track calls x{_num(r.culling_cpu_speedup, 2)}; track calls '
        f'{_num(r.culling_track_calls, 0)} vs {_num(r.no_culling_track_calls, 0)} '
        f'(x{_num(r.no_culling_track_calls / max(r.culling_track_calls, 1.0), 2)})',
        f'               {r.culling_segmenter}',
        f'  batching     culled decode {_num(r.batched_decode_ms, 1)} ms with the objects of a '
        f'patch batched vs {_num(r.culling_decode_ms, 1)} ms one per SAM2 call '
        f'(x{_num(r.decode_batch_speedup, 2)})',
        *_nonnetwork_lines(r),
        f'  memory bank  at most {r.bank_entries_max} entries, limit {r.bank_entries_limit}  '
        f'[{ok["bank_entries_max"]}]',
        f'  RSS          {r.rss_frames} oracle frames at {r.rss_erp_width} px: '
        f'{_num(r.rss_early_mib, 1)} MiB after frame {r.rss_early_frame}, '
        f'{_num(r.rss_late_mib, 1)} MiB after frame {r.rss_frames} '
        f'({_num(r.rss_growth_pct, 2)} %; {r.rss_ids_issued} ids issued)  '
        f'[<= {LIMITS["rss_growth_pct"]:g} % {ok["rss_growth_pct"]}]',
        f'  oracle       J {_num(r.oracle_j, 4)}, {r.oracle_id_switches} id switches over '
        f'{r.oracle_frames} frames at {r.oracle_erp_width} px, patches {r.oracle_patch_size} px; '
        f'worst object {r.oracle_worst_gt_id}: J {_num(r.oracle_worst_j, 4)}  '
        f'[>= {LIMITS["oracle_j"]:g} {ok["oracle_j"]}, 0 switches {ok["oracle_id_switches"]}]',
        f'  schedule     {_num(r.encoded_views_per_frame, 1)} of '
        f'{_num(r.all_views_encoded_per_frame, 0)} patches encoded per frame '
        f'({r.schedule_objects} caps in {_num(100.0 * r.schedule_object_views_fraction, 0)} % of '
        f'the views, {_num(r.schedule_encode_ms_per_view, 1)} ms per encoded patch): '
        f'{_num(r.schedule_frame_ms, 1)} vs {_num(r.all_views_frame_ms, 1)} ms per frame '
        f'(x{_num(r.encoder_schedule_speedup, 2)})  [>= {LIMITS["encoder_schedule_speedup"]:g} '
        f'{ok["encoder_schedule_speedup"]}]',
        f'               oracle J {_num(r.schedule_oracle_j, 4)} vs '
        f'{_num(r.all_views_oracle_j, 4)} every view  [loss <= {LIMITS["schedule_j_loss"]:g} '
        f'{ok["schedule_j_loss"]}], id switches {r.schedule_id_switches} vs '
        f'{r.all_views_id_switches}  [0 {ok["schedule_id_switches"]}]',
        f'  elapsed      {r.elapsed_s:.1f} s',
    ]
    return '\n'.join(lines)


# ---------------------------------------------------------------------------- command line
def _int_at_least(minimum: int, multiple: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum or value % multiple:
            rule = f' and a multiple of {multiple}' if multiple > 1 else ''
            raise argparse.ArgumentTypeError(f'must be >= {minimum}{rule}, got {value}')
        return value
    return parse


def _culling_objects(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_CAPS:
        raise argparse.ArgumentTypeError(f'must be in [1, {MAX_CAPS}], got {value}')
    return value




def _non_negative_ms(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 60_000.0:
        raise argparse.ArgumentTypeError(f'must be in [0, 60000) ms, got {value}')
    return value


def _margin(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 90.0:
        raise argparse.ArgumentTypeError(f'must be in [0, 90) degrees, got {value}')
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sap_bench engine``; the help lists every key of the JSON report."""
    keys = keys_help(EngineBenchResult)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = textwrap.dedent("""\
        Measure the SAM2 streaming engine side by side in one run: frames per second, stage
        times and the share of a frame outside the network; batched vs sequential patch
        encoding; decode time with vs without view culling (40 objects over the sphere); the
        memory bank's size and the process RSS over a long run; J and id switches of the
        geometric oracle through the whole engine; the encoder schedule (only the patches a
        frame needs) against encoding every patch, with J and id switches of both. Without
        --checkpoint SAM2 has random weights (real cost, meaningless masks). Nothing here is a
        test: it prints what it measured.""")
    parser.epilog = (f'JSON keys (--json) and table rows:\n{keys}\n\nexample: sap_bench engine '
                     '--json engine.json   (2 CPU cores: 7 min idle, 20 min shared)')
    add = parser.add_argument
    add('--json', type=Path, metavar='PATH', help='write the report as JSON')
    add('--frames', type=_int_at_least(1), default=5,
        help='SAM2 frames timed after one warm-up frame (default: %(default)s)')
    add('--image-size', type=_int_at_least(64, 32), default=None,
        help='SAM2 input side = patch side, px (default: 256 on CPU, 1024 on CUDA)')
    add('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
        help='device of SAM2 (default: %(default)s)')
    add('--erp-width', type=_int_at_least(64, 2), default=None,
        help='ERP width of the SAM2 frames, px (default: 1024 on CPU, 4096 on CUDA)')
    add('--checkpoint', type=existing_file, metavar='PATH',
        help='SAM2 checkpoint matching --model-config (default: random weights, said loudly)')
    add('--model-config', default='sam2.1_hiera_t',
        help='SAM2 config name (default: %(default)s)')
    add('--dtype', choices=('auto', 'float32', 'float16', 'bfloat16'), default='auto',
        help='SAM2 compute dtype (default: %(default)s: bf16/fp16 autocast on CUDA, fp32 on CPU)')
    add('--repeats', type=_int_at_least(1), default=2,
        help='encoding repeats, batched and sequential interleaved, median reported '
             '(default: %(default)s)')
    add('--culling-objects', type=_culling_objects, default=40,
        help=f'caps spread over the sphere for the culling part, 1..{MAX_CAPS} (default: '
             f'%(default)s)')
    add('--culling-frames', type=_int_at_least(1), default=1,
        help='timed frames per mode in the culling part (default: %(default)s)')
    add('--culling-image-size', type=_int_at_least(64, 32), default=None,
        help='SAM2 input side of the culling part, px (default: 64 on CPU, where every object '
             'in every view costs minutes; --image-size on CUDA)')
    add('--culling-margin-deg', type=_margin, default=None,
        help='memory.culling_margin_deg of the culling part (default: the parameter default)')
    add('--oracle-frames', type=_int_at_least(1), default=30,
        help='frames of the oracle sequence (default: %(default)s)')
    add('--oracle-erp-width', type=_int_at_least(64, 2), default=2048,
        help='ERP width of the oracle sequence, px (default: %(default)s)')
    add('--oracle-patch-size', type=_int_at_least(16), default=1024,
        help='patch side of the oracle sequence, px (default: %(default)s)')
    add('--rss-frames', type=_int_at_least(2), default=300,
        help='frames of the long oracle run; RSS is read after 1/6 of them and at the end '
             '(default: %(default)s)')
    add('--rss-erp-width', type=_int_at_least(64, 2), default=512,
        help=f'ERP width of the long run, px; patches of {RSS_PATCH_PX} px '
             f'(default: %(default)s)')
    add('--nonnetwork-erp-width', type=_int_at_least(64, 2), default=4096,
        help='ERP width of the non-network part (numpy vs torch path), px (default: '
             '%(default)s)')
    add('--nonnetwork-image-size', type=_int_at_least(16, 4), default=1024,
        help="patch side of the non-network part, px (default: %(default)s, the robot's "
             'model.image_size)')
    add('--nonnetwork-objects', type=_culling_objects, default=20,
        help=f'objects painted in the non-network part, 1..{MAX_CAPS} (default: %(default)s)')
    add('--nonnetwork-repeats', type=_int_at_least(1), default=3,
        help='timed frames per path after one warm-up each, interleaved, median reported '
             '(default: %(default)s)')
    add('--fusion', choices=[m.value for m in FusionMode], default='least_distortion',
        help='fusion mode of the non-network part (default: %(default)s)')
    add('--schedule-frames', type=_int_at_least(1), default=15,
        help='frames of the encoder schedule part (default: %(default)s)')
    add('--schedule-erp-width', type=_int_at_least(64, 2), default=1024,
        help='ERP width of the encoder schedule part, px (default: %(default)s)')
    add('--schedule-patch-size', type=_int_at_least(16), default=256,
        help='patch side of the encoder schedule part, px (default: %(default)s)')
    add('--schedule-encode-ms', type=_non_negative_ms, default=None,
        help='stand-in encoder cost per encoded patch in the schedule part, ms (default: this '
             "run's encode_batched_ms / patches, the real SAM2 cost here)")
    add('--schedule-every-n-frames', type=_int_at_least(1), default=5,
        help='discovery.every_n_frames of the encoder schedule part (default: %(default)s)')
    add('--seed', type=int, default=0, help='synthetic scene seed (default: %(default)s)')
    add('--quiet', action='store_true', help='no progress lines on stderr')


def run(args: argparse.Namespace) -> int:
    """SAM2 engine: fps, overhead, batched encoding, view culling, memory, RSS, oracle J."""
    return run_and_report('engine', args, run_engine_bench, format_table)
