"""Discovery's cost per searched patch: ms and mask-decoder calls, random weights on this machine.

``python -m sap_ros.bench.discovery_cost --image-size 256 512`` times
:func:`~sap_ros.engine.discovery_filter.propose_new_masks` on real patches (crops of the beach
clip when present) with nothing covered, for the shipped defaults, the defaults with every mask
passing the thresholds (the filter's worst case: all masks upsampled to the patch), and the
options that reproduce sap_ros's earlier discovery (8 x 8 grid, best mask only, decisions and
mask NMS at the decoder's resolution). Per frame, with ``discovery.every_n_frames`` N, the
rotating share searches 26 / N patches (every patch on the first frame).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Dict, List

import numpy as np
import torch

from sap_ros.bench.parity_runs import DATA_DIR, video_frames
from sap_ros.bench.probes import TimedSegmenter
from sap_ros.config import DiscoveryConfig, ModelConfig
from sap_ros.engine.discovery_filter import (
    CHUNK_VALUES,
    CandidateFilter,
    propose_new_masks,
    resolve_points_per_side,
)
from sap_ros.engine.segmenter import Sam2Segmenter

VARIANTS: Dict[str, Dict[str, object]] = {
    'defaults': {},
    'defaults_all_pass': {'pred_iou_thresh': 0.0, 'stability_thresh': 0.0},
    'earlier_discovery': {'points_per_side': 8, 'multimask': 'best', 'decide_at': 'decoder',
                       'nms': 'mask', 'pred_iou_thresh': 0.7, 'stability_thresh': 0.85,
                       'min_area_fraction': 0.002, 'max_covered_fraction': 0.5},
}


def measure(image_size: int, patches: int = 4, repeats: int = 2, device: str = 'cpu',
            dtype: str = 'float32') -> List[Dict[str, Any]]:
    """One row per variant: median ms per patch, decoder calls per patch, candidates.

    On CUDA the covered mask lives on the device (as on the torch frame path), the frame runs
    in the adapter's session (one autocast context) and each patch's time ends with a
    ``torch.cuda.synchronize`` (the benchmark's own wait, so the time is the GPU's).
    """
    torch.set_num_threads(1)
    frames, _ = video_frames(patches, image_size, DATA_DIR)
    inner = Sam2Segmenter(ModelConfig(allow_random_weights=True, image_size=image_size,
                                      device=device, dtype=dtype))
    segmenter = TimedSegmenter(inner)
    segmenter.begin_frame(np.stack(frames), frames[0])
    cuda = inner.adapter.device.type == 'cuda'
    covered: Any = np.zeros((image_size // 4, image_size // 4), bool)
    if cuda:
        covered = torch.zeros(covered.shape, dtype=torch.bool, device=inner.adapter.device)
    with inner.adapter.session():
        rows = _variants(segmenter, covered, image_size, patches, repeats, cuda)
    segmenter.close()
    return rows


def _variants(segmenter: Any, covered: Any, image_size: int, patches: int, repeats: int,
              cuda: bool) -> List[Dict[str, Any]]:
    rows = []
    for name, options in VARIANTS.items():
        cfg = DiscoveryConfig(**options)  # type: ignore[arg-type]
        filt = CandidateFilter.from_config(cfg)
        side = resolve_points_per_side(cfg.points_per_side, image_size)
        times, found = [], []
        segmenter.reset_counters()
        for _ in range(repeats):
            for view in range(patches):
                t0 = time.perf_counter()
                masks = propose_new_masks(segmenter, view, covered, image_size, side, filt,
                                          cfg.points_per_batch)
                if cuda:
                    torch.cuda.synchronize()
                times.append(1000 * (time.perf_counter() - t0))
                found.append(len(masks))
        searched = repeats * patches
        rows.append({'image_size': image_size, 'variant': name, 'points_per_side': side,
                     'ms_per_patch': statistics.median(times),
                     'decoder_calls_per_patch': segmenter.discovery.calls / searched,
                     'decoder_ms_per_patch': 1000 * segmenter.discovery.wall_s / searched,
                     'candidates_per_patch': float(np.mean(found))})
    return rows


def main() -> None:
    """Print one line per image size and variant."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--image-size', type=int, nargs='+', default=[256, 512])
    parser.add_argument('--patches', type=int, default=4)
    parser.add_argument('--device', default='cpu', help='cpu | cuda | cuda:N (default: cpu)')
    parser.add_argument('--chunk-mib', type=int, nargs='+', default=[0],
                        help='upsampled logits per chunk of the filter, MiB (0: the default of '
                             'the device; several values: one table each)')
    parser.add_argument('--dtype', default='float32',
                        help='float32 | bfloat16 (autocast on CUDA; default: float32)')
    args = parser.parse_args()
    for size, chunk_mib in [(s, c) for s in args.image_size for c in args.chunk_mib]:
        if chunk_mib:
            device_type = torch.device(args.device).type
            CHUNK_VALUES[device_type] = chunk_mib << 18  # float32 values in chunk_mib MiB
            print(f'filter chunk {chunk_mib} MiB on {device_type}')
        for row in measure(size, args.patches, device=args.device, dtype=args.dtype):
            per_frame = 26 / DiscoveryConfig().every_n_frames
            print(f"image_size {row['image_size']} {row['variant']:<18} grid "
                  f"{row['points_per_side']:>2}x{row['points_per_side']:<2} "
                  f"{row['ms_per_patch']:8.1f} ms/patch (decoder "
                  f"{row['decoder_ms_per_patch']:7.1f}) {row['decoder_calls_per_patch']:4.1f} "
                  f"decoder calls/patch = {row['decoder_calls_per_patch'] * per_frame:5.1f} "
                  f"per frame, {row['candidates_per_patch']:.1f} candidates/patch")


if __name__ == '__main__':
    main()
