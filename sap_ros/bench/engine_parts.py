"""``sap_bench engine``'s SAM2 parts: speed, view culling, RSS and the oracle (see ``engine``)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import gc
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple
import warnings

import numpy as np
import torch

from sap_ros.bench.common import Progress, median_ms
from sap_ros.bench.engine_result import STAGES
from sap_ros.bench.probes import (
    CallTimes,
    ShadowSegmenter,
    TimedSegmenter,
    cap_scene,
    count_host_syncs,
    rss_mib,
)
from sap_ros.config import PipelineConfig
from sap_ros.engine.frame_path import frame_path_for
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.segmenter import Sam2Segmenter
from sap_ros.errors import ConfigError
from sap_ros.eval.metrics import ClipEvaluator
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches
from sap_ros.sphere.torch_device import FramePathKind
from sap_ros.synth.scene import SceneSpec, SynthScene

CAP_RADIUS_DEG = 10.0       # culling scene: resolvable at the smallest decoder grid (16 px)
SCENE_FRAMES = 40           # RSS run: a new scene (seed) every 40 frames; old objects retire
RSS_POSES = 6               # RSS run: poses per scene, visited back and forth
RSS_SCENES = 4
MAX_CAPS = 60               # caps of CAP_RADIUS_DEG stay apart; below memory.max_objects (64)
RSS_PATCH_PX = 128


@dataclass
class EngineRun:
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


def measure_speed(args: argparse.Namespace, run: EngineRun) -> Dict[str, Any]:
    """Default engine on SAM2: fps, stages, overhead; then batched vs sequential encoding."""
    scene = SynthScene(SceneSpec(seed=args.seed))
    run.progress(f'speed: rendering {args.frames + 1} frames at {run.erp_width} px')
    frames = [scene.render(pose, run.erp_width)[0] for pose in scene.trajectory(args.frames + 1)]
    run.progress(f'speed: building SAM2 ({run.image_size} px, {run.device})')
    config = run.config(run.image_size)
    on_device = frame_path_for(config)[0] is FramePathKind.TORCH  # as the node builds it
    timed = TimedSegmenter(Sam2Segmenter(config.model, device_outputs=on_device), run.sync)
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
    bench_syncs = timed.syncs if run.device.startswith('cuda') else 0
    timed.reset_counters()
    timed.syncing = False  # the engine's waits only, not the benchmark's synchronize
    searched = _SearchedPatches(pipeline)
    with count_host_syncs(lambda: f'{searched.stage}/{timed.kind}') as syncs:
        pipeline.step(frames[-1])
    reads = [w for c, w in zip(syncs.calls, syncs.where)
             if c != 'Tensor.to' or run.device.startswith('cuda')]
    sam2_calls = timed.tracking.calls + timed.discovery.calls
    in_calls = sum(w.endswith(('/track', '/discover')) for w in reads)
    in_search = sum(w.startswith('discovery/') for w in reads)
    n_searched = searched.count
    cuda_syncs = count_cuda_syncs(lambda: pipeline.step(frames[-1]), run)
    timed.syncing = True
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
        batched.append(median_ms(lambda: adapter.encode(patches), 1, run.sync, warm_up=False)[0])
        sequential.append(median_ms(lambda: adapter.encode_sequential(patches), 1, run.sync,
                                      warm_up=False)[0])
    out = dict(
        weights=timed.description, patches=len(pipeline.layout), frames=args.frames,
        fps=len(walls) / float(np.sum(walls)), stage_ms=stage_ms,
        segmenter_ms=float(np.mean(inside)),
        overhead_fraction=(total_ms - float(np.sum(inside))) / total_ms,
        objects_mean=float(np.mean(objects)), discovery_frames=int(discovered),
        encode_batched_ms=float(statistics.median(batched)),
        encode_sequential_ms=float(statistics.median(sequential)),
        frame_path=pipeline.path_kind.value, engine_host_reads_per_frame=len(reads),
        engine_sam2_calls_per_frame=sam2_calls,
        engine_host_reads_per_sam2_call=in_calls / sam2_calls if sam2_calls else None,
        engine_searched_patches_per_frame=n_searched,
        engine_host_reads_per_searched_patch=in_search / n_searched if n_searched else None,
        engine_cuda_syncs_per_frame=cuda_syncs,
        bench_syncs_per_frame=bench_syncs / max(1, args.frames))
    out['encode_speedup'] = out['encode_sequential_ms'] / out['encode_batched_ms']
    pipeline.close()
    return out


class _SearchedPatches:
    """Counts the patches the pipeline searches (discovery stage) and says when it is in one."""

    def __init__(self, pipeline: SapPipeline) -> None:
        self.count, self.stage = 0, ''
        inner = pipeline._discovery

        def searched(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.stage = 'discovery'
            try:
                return inner(*args, **kwargs)
            finally:
                self.stage = ''

        setattr(pipeline, '_discovery', searched)


def count_cuda_syncs(step: Callable[[], Any], run: EngineRun) -> Optional[int]:
    """Synchronising CUDA calls during ``step()`` as torch's sync debug mode reports them.

    None off CUDA. Each synchronising call raises one "called a synchronizing CUDA operation"
    warning while the mode is ``warn``.
    """
    if not run.device.startswith('cuda'):
        return None
    run.sync()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    return sum('synchroniz' in str(w.message) for w in caught)


def measure_culling(args: argparse.Namespace, run: EngineRun) -> Dict[str, Any]:
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
    on_device = frame_path_for(config)[0] is FramePathKind.TORCH  # as the node builds it
    shadow = ShadowSegmenter(Sam2Segmenter(config.model, device_outputs=on_device), oracle)
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

    # Host reads of one more frame as the engine runs (culled, batched), the bench's sync off.
    pipeline.view_culling, shadow.batched, timed.syncing = True, True, False
    with count_host_syncs() as syncs:
        pipeline.step(rgb)
    timed.syncing = True
    culling_reads = sum(c != 'Tensor.to' or run.device.startswith('cuda') for c in syncs.calls)

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
        culling_host_reads_per_frame=culling_reads,
        decode_batch_speedup=float(np.mean(decode['on'])
                                   / max(float(np.mean(decode['batched'])), 1e-9)))
    pipeline.close()
    return out


def _oracle_pipeline(run: EngineRun, patch_px: int, **flat: Any
                     ) -> Tuple[SapPipeline, OracleSegmenter]:
    """The oracle through the engine on the run's device and frame path (``--frame-path``)."""
    config = PipelineConfig.from_flat({'patches.size_px': patch_px,
                                       'model.device': run.device,
                                       'engine.frame_path': run.model_flat['engine.frame_path'],
                                       'model.image_size': max(64, patch_px // 32 * 32),
                                       'discovery.every_n_frames': 1, **flat})
    oracle = OracleSegmenter(PatchLayout.from_config(config.patches))
    return SapPipeline(config, segmenter=oracle), oracle


def measure_rss(args: argparse.Namespace, run: EngineRun) -> Dict[str, Any]:
    """Process RSS over a long oracle run whose objects come and go."""
    width = args.rss_erp_width
    run.progress(f'rss: rendering {RSS_SCENES} scenes x {RSS_POSES} poses at {width} px')
    clips = []
    for seed in range(RSS_SCENES):
        scene = SynthScene(SceneSpec(seed=args.seed + seed))
        clips.append([scene.render(pose, width) for pose in scene.trajectory(RSS_POSES)])
    pipeline, oracle = _oracle_pipeline(run, RSS_PATCH_PX, **{
        'discovery.points_per_side': 16, 'discovery.min_area_fraction': 0.0005})
    early_frame = max(1, args.rss_frames // 6)
    early = late = cuda_early = cuda_late = None
    _cuda_peak_mib(run, reset=True)
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
            cuda_early = _cuda_peak_mib(run, reset=True)
        if k + 1 == args.rss_frames:
            gc.collect()
            late = rss_mib()
            cuda_late = _cuda_peak_mib(run, reset=False)
        if (k + 1) % 50 == 0 or k + 1 == args.rss_frames:
            run.progress(f'rss: frame {k + 1}/{args.rss_frames}, {len(pipeline.registry)} live '
                         f'objects, RSS {rss_mib() or 0.0:.1f} MiB')
    growth = None if early is None or late is None else 100.0 * (late - early) / early
    pipeline.close()
    return dict(rss_frames=args.rss_frames, rss_erp_width=width, rss_early_frame=early_frame,
                rss_early_mib=early, rss_late_mib=late, rss_growth_pct=growth,
                rss_ids_issued=ids_issued, cuda_peak_early_mib=cuda_early,
                cuda_peak_late_mib=cuda_late)


def _cuda_peak_mib(run: EngineRun, reset: bool) -> Optional[float]:
    """``torch.cuda.max_memory_allocated`` since the last reset, MiB (None off CUDA)."""
    if not run.device.startswith('cuda'):
        return None
    run.sync()
    peak = torch.cuda.max_memory_allocated() / 2.0 ** 20
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak


def measure_oracle(args: argparse.Namespace, run: EngineRun) -> Dict[str, Any]:
    """The oracle through the whole engine on a moving-camera sequence: J and id switches."""
    width, patch = args.oracle_erp_width, args.oracle_patch_size
    pipeline, oracle = _oracle_pipeline(run, patch, **{
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


def resolve_run(args: argparse.Namespace, progress: Progress) -> EngineRun:
    """The run's device, sizes and model settings from the arguments (CUDA checked)."""
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('model.device', f'--device cuda requested but CUDA is not available '
                          f'(torch {torch.__version__}); use auto or cpu')
    cuda = args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available())
    device = 'cuda' if cuda else 'cpu'
    image_size = args.image_size or (1024 if cuda else 256)
    model_flat: Dict[str, Any] = {'model.device': device, 'model.dtype': args.dtype,
                                  'model.config': args.model_config,
                                  'engine.frame_path': args.frame_path,
                                  'model.compile_image_encoder': args.compile_image_encoder}
    if args.checkpoint is not None:
        model_flat['model.checkpoint'] = str(args.checkpoint)
    else:
        model_flat['model.allow_random_weights'] = True
        print('sap_bench engine: no --checkpoint: SAM2 runs with RANDOM WEIGHTS. Timings are '
              'the real network cost, masks are meaningless (discovery then rarely finds '
              'anything, so it runs on every frame).', file=sys.stderr, flush=True)
    return EngineRun(device=device, image_size=image_size,
                     erp_width=args.erp_width or (4096 if cuda else 1024),
                     culling_image_size=args.culling_image_size or (image_size if cuda else 64),
                     model_flat=model_flat, progress=progress)
