"""How much discovery a real clip asks for: free grid points and mask-decoder calls per frame.

``python -m sap_ros.bench.discovery_load FRAMES_DIR LABELS_DIR --every-n 4 5`` runs the
pipeline at the shipped defaults (``--set`` to change them) with the geometric oracle on a folder
of ERP frames and dense label PNGs (``--background none``: every value a segment, 255 ignored, as
Leader360V), and counts, per frame, the grid points that discovery prompts (only those no
tracked object covers) and the mask-decoder calls they cost (``ceil(points / points_per_batch)``
per searched patch). The oracle's coverage is the best case of a real model's: a model that
leaves part of the sphere unlabelled prompts more points. Multiply the calls by the measured
cost of one call (``sap_ros.bench.discovery_cost`` on the GPU) for the frame budget.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from sap_ros.engine.pipeline import SapPipeline
from sap_ros.eval.dataset_clips import FRAME_SUFFIXES, FolderFrames, FolderLabels
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.eval.replay_params import build_config
from sap_ros.sphere.layout import PatchLayout


class CountingOracle(OracleSegmenter):
    """The oracle, counting the points of every ``discover`` call (one list per frame)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As :class:`OracleSegmenter`; ``frames`` holds the point counts of each frame."""
        super().__init__(*args, **kwargs)
        self.frames: List[List[int]] = []

    def discover(self, view_index: int, points_px: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        """Count, then answer as the oracle does."""
        if self.frames:
            self.frames[-1].append(len(points_px))
        return super().discover(view_index, points_px, *args, **kwargs)


def measure(frames_dir: Path, labels_dir: Path, every_n: Sequence[int],
            background: Optional[int] = None, max_frames: Optional[int] = None,
            overrides: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """One row per ``every_n``: points and decoder calls per frame, and their summary."""
    torch.set_num_threads(1)
    files = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    files = files[:max_frames]
    labels = FolderLabels(labels_dir, files)
    base = build_config(None, overrides)
    rows = []
    for n in every_n:
        config = replace(base, discovery=replace(base.discovery, every_n_frames=n))
        oracle = CountingOracle(PatchLayout.from_config(config.patches), background,
                                size_px=min(config.patches.size_px, config.model.image_size),
                                ignore=255)
        pipeline = SapPipeline(config, segmenter=oracle)
        try:
            for frame, gt in zip(FolderFrames(files), labels):
                oracle.set_ground_truth(gt.labels)
                oracle.frames.append([])
                pipeline.step(frame.rgb)
        finally:
            pipeline.close()
        batch = config.discovery.points_per_batch
        calls = [sum(math.ceil(p / batch) for p in frame) for frame in oracle.frames]
        later = calls[1:] or [0]
        rows.append({'every_n_frames': n, 'frames': len(calls),
                     'points_per_frame': [sum(f) for f in oracle.frames],
                     'searched_patches_per_frame': [len(f) for f in oracle.frames],
                     'decoder_calls_per_frame': calls, 'first_frame_calls': calls[0],
                     'later_mean_calls': float(np.mean(later)),
                     'later_max_calls': int(max(later))})
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog='python -m sap_ros.bench.discovery_load', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('frames', type=Path, help='folder of ERP frames (jpg/png)')
    parser.add_argument('labels', type=Path, help='folder of label PNGs with the same stems')
    parser.add_argument('--every-n', type=int, nargs='+', default=[4],
                        help='discovery.every_n_frames values to measure (default: 4)')
    parser.add_argument('--background', default='none',
                        help="label value that is no object, or 'none' (default: none)")
    parser.add_argument('--max-frames', type=int, default=None, help='first N frames only')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='pipeline parameter override (repeatable)')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Print one block per ``every_n``."""
    args = build_parser().parse_args(argv)
    if any(n < 1 for n in args.every_n):
        build_parser().error('--every-n values must be >= 1')
    background = None if args.background == 'none' else int(args.background)
    for row in measure(args.frames, args.labels, args.every_n, background, args.max_frames,
                       args.set):
        print(f"every_n_frames {row['every_n_frames']}: {row['frames']} frames; mask-decoder "
              f"calls first frame {row['first_frame_calls']}, later frames mean "
              f"{row['later_mean_calls']:.2f} max {row['later_max_calls']}")
        print(f"  points per frame {row['points_per_frame']}")
        print(f"  decoder calls per frame {row['decoder_calls_per_frame']}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
