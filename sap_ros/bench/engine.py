"""``sap_bench engine``: the SAM2 streaming engine measured side by side in one run.

ARCHITECTURE §9 (performance and benchmarks) says what the figures are for.

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
from dataclasses import fields
from pathlib import Path
import textwrap
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from sap_ros.bench.autocast_casts import measure_casts
from sap_ros.bench.common import Progress, existing_file, keys_help, run_and_report
from sap_ros.bench.encoder_schedule import measure_encoder_schedule
from sap_ros.bench.engine_parts import (
    MAX_CAPS,
    RSS_PATCH_PX,
    EngineRun,
    measure_culling,
    measure_oracle,
    measure_rss,
    measure_speed,
    resolve_run,
)
from sap_ros.bench.engine_result import STAGES, EngineBenchResult, result_keys
from sap_ros.bench.geometry import MachineInfo
from sap_ros.bench.nonnetwork import NONNETWORK_STAGES, measure_nonnetwork
from sap_ros.sphere.fusion import FusionMode

__all__ = ['STAGES', 'EngineBenchResult', 'acceptance', 'add_arguments', 'format_table',
           'result_keys', 'run', 'run_engine_bench']

CASTS_IMAGE_PX = 128  # the casts part's largest SAM2 input: casts do not depend on it
LIMITS = {'weight_casts_ratio': 1.1, 'overhead_fraction': 0.15, 'culling_speedup': 3.0,
          'rss_growth_pct': 5.0,
          'oracle_j': 0.98, 'encoder_schedule_speedup': 2.0, 'schedule_j_loss': 0.005}


# ---------------------------------------------------------------------------- the run
def _patch_geometry(run: EngineRun) -> Tuple[float, float, float]:
    """``patches.fov_deg``, ``patches.overlap`` and ``output.scale`` of the run's config."""
    config = run.config(run.image_size)
    return config.patches.fov_deg, config.patches.overlap, config.output.scale


def acceptance(values: Dict[str, Any]) -> Dict[str, bool]:
    """Each acceptance criterion of the engine (issue "SAM2 streaming engine") -> met.

    >>> acceptance({'weight_casts_ratio': 1.0, 'overhead_fraction': 0.1, 'culling_speedup': 2.0,
    ...             'bank_entries_max': 5,
    ...             'bank_entries_limit': 640, 'rss_growth_pct': None, 'oracle_j': 0.99,
    ...             'oracle_id_switches': 0, 'encoder_schedule_speedup': 2.1,
    ...             'schedule_oracle_j': 0.99, 'all_views_oracle_j': 0.99,
    ...             'schedule_id_switches': 0})['culling_speedup >= 3']
    False
    """
    def at_most(key: str, limit: float) -> bool:
        return values[key] is not None and values[key] <= limit

    return {
        f'weight_casts_ratio <= {LIMITS["weight_casts_ratio"]:g}':
            at_most('weight_casts_ratio', LIMITS['weight_casts_ratio']),
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
    run = resolve_run(args, progress)
    values: Dict[str, Any] = dict(device=run.device, image_size=run.image_size,
                                  erp_width=run.erp_width)
    values.update(measure_rss(args, run))
    values.update(measure_oracle(args, run))
    values.update(measure_culling(args, run))
    values.update(measure_speed(args, run))
    casts_px = min(CASTS_IMAGE_PX, run.image_size)
    run.progress(f'casts: one SAM2 call under CPU bf16 autocast ({casts_px} px)')
    values.update(measure_casts(run.config(casts_px).model, casts_px))
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
        f'  frame path   {r.frame_path}: {r.engine_host_reads_per_frame} host reads in one frame '
        f'of {r.engine_sam2_calls_per_frame} SAM2 calls'
        + ('' if r.engine_cuda_syncs_per_frame is None
           else f'; {r.engine_cuda_syncs_per_frame} synchronising CUDA calls'),
        f'               {_num(r.engine_host_reads_per_sam2_call, 2)} per SAM2 call, '
        f'{_num(r.engine_host_reads_per_searched_patch, 2)} per searched patch '
        f"({r.engine_searched_patches_per_frame} searched); the bench's own synchronize "
        f'({_num(r.bench_syncs_per_frame, 1)} per timed frame) not counted',
        f'  autocast     {r.weight_casts_per_sam2_call} weight casts (aten::_to_copy) per SAM2 '
        f'call in the frame session, {r.weight_casts_per_sam2_call_outer} in one outer context, '
        f'{r.weight_casts_per_sam2_call_own_context} in its own (CPU bf16)  '
        f'[<= {LIMITS["weight_casts_ratio"]:g}x {ok["weight_casts_ratio"]}]',
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
        f'(x{_num(r.decode_batch_speedup, 2)}); {r.culling_host_reads_per_frame} host reads '
        f'in a culled, batched frame',
        *_nonnetwork_lines(r),
        f'  memory bank  at most {r.bank_entries_max} entries, limit {r.bank_entries_limit}  '
        f'[{ok["bank_entries_max"]}]',
        f'  RSS          {r.rss_frames} oracle frames at {r.rss_erp_width} px: '
        f'{_num(r.rss_early_mib, 1)} MiB after frame {r.rss_early_frame}, '
        f'{_num(r.rss_late_mib, 1)} MiB after frame {r.rss_frames} '
        f'({_num(r.rss_growth_pct, 2)} %; {r.rss_ids_issued} ids issued)  '
        f'[<= {LIMITS["rss_growth_pct"]:g} % {ok["rss_growth_pct"]}]'
        + ('' if r.cuda_peak_early_mib is None else
           f'; CUDA peak {_num(r.cuda_peak_early_mib, 1)} MiB to frame {r.rss_early_frame}, '
           f'{_num(r.cuda_peak_late_mib, 1)} MiB after'),
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
    add('--frame-path', choices=('auto', 'numpy', 'torch'), default='auto',
        help='engine.frame_path of the speed, culling, RSS and oracle parts (default: '
             '%(default)s: torch on CUDA, numpy elsewhere)')
    add('--erp-width', type=_int_at_least(64, 2), default=None,
        help='ERP width of the SAM2 frames, px (default: 1024 on CPU, 4096 on CUDA)')
    add('--checkpoint', type=existing_file, metavar='PATH',
        help='SAM2 checkpoint matching --model-config (default: random weights, said loudly)')
    add('--model-config', default='sam2.1_hiera_t',
        help='SAM2 config name (default: %(default)s)')
    add('--dtype', choices=('auto', 'float32', 'float16', 'bfloat16'), default='auto',
        help='SAM2 compute dtype (default: %(default)s: bf16/fp16 autocast on CUDA, fp32 on CPU)')
    add('--compile-image-encoder', action='store_true',
        help="model.compile_image_encoder: torch.compile SAM2's image encoder (the warm-up "
             'frame pays the compilation)')
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
