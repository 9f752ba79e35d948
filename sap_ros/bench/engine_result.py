"""``sap_bench engine``'s report: every key of the JSON with its explanation (``--help``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from sap_ros.bench.common import result_field as _key
from sap_ros.bench.common import result_keys_of
from sap_ros.bench.geometry import MachineInfo

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
    frame_path: str = _key('frame path of the speed part (engine.frame_path auto on its device: '
                           'torch on CUDA, numpy elsewhere)')
    engine_host_reads_per_frame: int = _key(
        'host reads counted in one more frame of the speed part, whole engine with SAM2, the '
        "benchmark's own synchronize left out (as host_syncs_per_frame; on a CPU run "
        '.to(device) is left out, it cannot be told from an upload). By design: one per patch '
        'with decoded objects (all its SAM2 calls together), one per created or corrected '
        "object, one per patch with sightings, discovery's one per patch searched (all its "
        'batches; plus the free prompt points where an object may be on the work grid), one '
        'download; not per object')
    engine_sam2_calls_per_frame: int = _key('SAM2 track + discover calls in that frame')
    engine_host_reads_per_sam2_call: Optional[float] = _key(
        'host reads made inside SAM2 calls (track, discover) of that frame / its SAM2 calls; the '
        'calls of one patch share one read')
    engine_searched_patches_per_frame: int = _key('patches discovery searched in that frame')
    engine_host_reads_per_searched_patch: Optional[float] = _key(
        'host reads in the discovery stage of that frame (its SAM2 calls included) / the '
        'patches searched')
    bench_syncs_per_frame: float = _key(
        "the benchmark's own torch.cuda.synchronize per timed frame (one after each segmenter "
        'call, so the stage times hold their GPU work; 0 off CUDA); not counted in the engine '
        'reads and syncs above')
    engine_cuda_syncs_per_frame: Optional[int] = _key(
        'on CUDA: synchronising CUDA calls in that frame as torch reports them '
        '(torch.cuda.set_sync_debug_mode warn; also those inside kernels the Python count cannot '
        'see); null elsewhere')
    weight_casts_per_sam2_call: int = _key(
        'aten::_to_copy ops (torch profiler) of one SAM2 track call under CPU bf16 autocast, '
        'made inside the segmenter session the engine holds around a frame (the part forces '
        'bf16 autocast on the CPU to count)')
    weight_casts_per_sam2_call_outer: int = _key(
        'the same call inside one outer torch.autocast context held by the caller (upstream)')
    weight_casts_per_sam2_call_own_context: int = _key(
        'the same call in its own autocast context (each engine call before the frame session)')
    weight_casts_ratio: float = _key('weight_casts_per_sam2_call / '
                                     'weight_casts_per_sam2_call_outer; acceptance <= 1.1')
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
    culling_host_reads_per_frame: int = _key(
        'host reads of one more frame of the culling part as the engine runs it (culled, '
        "batched; SAM2 outputs on the device with --frame-path torch; the bench's synchronize "
        'left out): with many objects, one read per patch for all its SAM2 calls')
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
    cuda_peak_early_mib: Optional[float] = _key(
        'on CUDA: torch.cuda.max_memory_allocated over the long run up to rss_early_frame, MiB '
        '(the warm-up); null elsewhere')
    cuda_peak_late_mib: Optional[float] = _key(
        'on CUDA: the same peak from rss_early_frame to the last frame (flat: not above the '
        'warm-up peak), MiB; null elsewhere')
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
