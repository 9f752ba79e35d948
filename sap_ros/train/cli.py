"""``sap_train``: patch videos along the runtime's path, training on them, held-out IoU.

``sap_train data`` exports, ``sap_train fit`` trains (locally or on Ray Train workers),
``sap_train eval`` scores a checkpoint on held-out patch videos, ``sap_train classify`` trains
the class head (``classifier.kind: sam2_head``) on the videos' objects. See README "Training
along the trajectory".
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import List, Optional

from tqdm import tqdm

from sap_ros.errors import SapError
from sap_ros.train import NANO_CONFIG
from sap_ros.train.bench import add_bench, run_bench
from sap_ros.train.classify_cli import add_classify, run_classify
from sap_ros.train.fit_cli import add_eval, add_fit, run_eval, run_fit


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('data', help='ERP frames + labels -> patch videos (VOS layout)',
                       description='Cut labelled panoramas into patch videos along the '
                                   "runtime's path and write them in upstream's VOS layout.")
    p.add_argument('sources', nargs='+', type=Path, metavar='SOURCE',
                   help='a sap_synth rosbag2, a frame folder clip (frames/ + labels/), or a '
                        'dataset folder of them (DAVIS-style JPEGImages/ + Annotations/ too)')
    p.add_argument('--out', type=Path, required=True, help='output folder (new)')
    p.add_argument('--trajectory', choices=('zigzag', 'raster'), default='zigzag',
                   help="patch order: the runtime's zigzag, or raster (SAP's ablation)")
    p.add_argument('--size', type=int, default=128, help='patch side in px = model image_size '
                   '(default: %(default)s)')
    p.add_argument('--fov', type=float, default=90.0, help='patch FOV, degrees (default 90)')
    p.add_argument('--overlap', type=float, default=0.5, help='patch overlap (default 0.5)')
    p.add_argument('--frames-per-video', type=int, default=1,
                   help='chain the paths of this many consecutive frames into one video '
                        '(memory across frames; default: %(default)s)')
    p.add_argument('--every', type=int, default=1, help='take every n-th camera frame')
    p.add_argument('--max-frames', type=int, default=None, help='at most this many per source')
    p.add_argument('--min-area-px', type=int, default=16,
                   help='leave an object out of a patch where it covers fewer pixels '
                        '(default: %(default)s)')
    p.add_argument('--class-map', type=Path, default=None,
                   help='instance id -> class JSON ({"class_names": [...], "classes": {"<id>": '
                        'name}}, as sap_replay --gt-class-map) for classes.json; default: the '
                        "sources' semantic ground truth (/gt/semantic), where they have it")


def _run_data(args: argparse.Namespace) -> int:
    from sap_ros.eval.semantic_gt import ClassMap
    from sap_ros.train.classes import CLASSES_FILE
    from sap_ros.train.data import ExportSpec, export
    spec = ExportSpec(args.fov, args.overlap, args.size, args.trajectory, args.frames_per_video,
                      args.every, args.max_frames, args.min_area_px)
    class_map = None if args.class_map is None else ClassMap.load(args.class_map)
    with tqdm(unit='video', desc='sap_train data', file=sys.stderr) as bar:
        records = export(args.sources, args.out, spec, on_video=lambda _: bar.update(1),
                         class_map=class_map)
    frames = sum(len(r.views) for r in records)
    classes = args.out / CLASSES_FILE
    print(f'wrote {len(records)} videos ({frames} patches of {args.size} px, '
          f'{args.trajectory}) to {args.out}'
          + (f'; object classes in {classes}' if classes.is_file() else ''))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``sap_train``."""
    parser = argparse.ArgumentParser(
        prog='sap_train', description=__doc__.split('\n')[0],
        epilog=f'The nano model for tests and CPU experiments: --model-config {NANO_CONFIG}')
    sub = parser.add_subparsers(dest='command', required=True)
    _add_data(sub)
    add_fit(sub)
    add_eval(sub)
    add_bench(sub)
    add_classify(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``sap_train`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == 'data':
            return _run_data(args)
        if args.command == 'fit':
            return run_fit(args)
        if args.command == 'classify':
            run_classify(args)
            return 0
        if args.command == 'bench':
            print(json.dumps(run_bench(args), indent=1))
            return 0
        print(json.dumps(run_eval(args), indent=1))
        return 0
    except SapError as err:
        print(f'sap_train: error: {err}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
