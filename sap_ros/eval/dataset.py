"""``sap_eval``: evaluate a whole dataset of 360 clips, from a laptop to a Ray cluster.

Every clip is evaluated as ``sap_replay`` evaluates one bag (same pipeline parameters,
baselines and variants, same metrics), by Ray workers that keep the model loaded and take
whole clips (:mod:`sap_ros.eval.dataset_ray`); the clip layouts are those of
:mod:`sap_ros.eval.dataset_clips`, the report that of :mod:`sap_ros.eval.dataset_report`.

Exit status: 0 when every clip was evaluated, 1 when some clips failed (the report lists them),
2 when the dataset or the options are unusable.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import List, Optional, Tuple

from sap_ros.errors import SapError
from sap_ros.eval.dataset_clips import DEFAULT_GT_TOPIC, EvalSpec, MethodSpec
from sap_ros.eval.dataset_ray import DatasetOptions, run_dataset
from sap_ros.eval.dataset_report import DEFAULT_SIZE_EDGES
from sap_ros.eval.replay_gt import ReplayError
from sap_ros.eval.replay_methods import MethodName
from sap_ros.eval.replay_params import (
    add_label_value_arguments,
    add_pipeline_arguments,
    add_semantic_arguments,
    build_config,
    parse_variant,
)
from sap_ros.eval.semantic_gt import ClassMap, scored_classes

EXIT_FAILED_CLIPS = 1
EXIT_USAGE = 2

def build_spec(args: argparse.Namespace) -> EvalSpec:
    """The EvalSpec of the command line (ConfigError / ReplayError when unusable)."""
    config = build_config(args.params, args.overrides, args.checkpoint, args.random_weights)
    methods = [MethodSpec('ours', MethodName.OURS)] if not args.skip_ours else []
    methods += [MethodSpec(b, MethodName(b)) for b in dict.fromkeys(args.baselines)]
    for item in args.variants:
        variant = parse_variant(item)
        if variant.name in {m.label for m in methods}:
            raise ReplayError(f'--variant {variant.name}: the name is already a column of the '
                              'report')
        methods.append(MethodSpec(variant.name, MethodName.OURS, variant.overrides))
    if not methods:
        raise ReplayError('nothing to run: --skip-ours needs at least one --baseline')
    spec = EvalSpec(config, tuple(methods), args.image_topic, args.gt_topic, args.gt_background,
                    args.gt_ignore, args.max_frames, args.gt_semantic_topic, args.class_names,
                    None if args.gt_class_map is None else str(args.gt_class_map),
                    args.semantic_classes)
    if spec.gt_class_map is not None:
        names = ClassMap.load(Path(spec.gt_class_map)).class_names  # a bad map fails now
        scored_classes(spec.semantic_classes, names)
    for method in methods:
        spec.method_config(method)  # an unknown or invalid override fails now, not per clip
    return spec


def _edges(text: str) -> Tuple[float, ...]:
    try:
        edges = tuple(float(x) for x in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated fractions, got {text!r}')
    if any(not 0 < e < 1 for e in edges) or list(edges) != sorted(set(edges)):
        raise argparse.ArgumentTypeError(f'size edges must be increasing in (0, 1), got {text}')
    return edges


LAYOUTS = """\
accepted layouts of DATASET (one clip per sub-folder, sorted by name; files directly under
DATASET are ignored, any other sub-folder is reported as a bad clip):
  rosbag2 clip   CLIP/metadata.yaml + mcap or sqlite3 (as sap_replay reads): the camera topic
                 (--image-topic, default: the one Image/CompressedImage topic that is not the
                 ground-truth topic) and, if present, the ground truth (--gt-topic, default
                 /gt/labels: mono16/mono8 label Images, one per camera frame, matched in order)
  frame folder   CLIP/frames/*.jpg|*.jpeg|*.png (or CLIP/JPEGImages/) ERP frames in file-name
                 order, and CLIP/labels/<same stem>.png (or CLIP/Annotations/) one label map per
                 frame (label PNGs without a frame are ignored): single-channel 8/16-bit or
                 palette PNG (palette index = label value)
  semantic       a bag's --gt-semantic-topic (e.g. /gt/semantic; class names from
                 --class-names, default /gt/class_names), or any clip's labels through
                 --gt-class-map: semantic mIoU, per-class IoU and class switches per method
                 that publishes class maps
  DAVIS-style    DATASET/JPEGImages/<clip>/ + DATASET/Annotations/<clip>/ (frame folders)
label values: --gt-background V (default 0) is no object, or none for dense annotations where
every value is a segment (e.g. Leader360V); --gt-ignore V (default 255 for 8-bit labels, none
for 16-bit) is left out of every score.

output: OUT/clips/<clip>-<digest>.json (one per finished clip; a rerun with the same options
skips them; --force evaluates again), OUT/report.json and OUT/report.md (per clip and overall J,
F, J&F, ID switches, seam and pole figures per method and variant, J&F by object size on the
sphere, frames per second per worker, failed and retried clips).

Ray: without --address (and without RAY_ADDRESS) a local Ray sized to this machine; with
--address (e.g. auto after `ray start --head`) the cluster. One worker per GPU (or per
--cpus-per-worker CPUs), each keeping its model loaded, takes whole clips.

examples:
  sap_eval clips/ --out eval_out --checkpoint sam2.1_hiera_tiny.pt --baseline naive
  sap_eval clips/ --out eval_out --skip-ours --baseline oracle --workers 2
  sap_eval /data/panovos --out eval_out --address auto --params config/sap.yaml \\
      --variant fov75:patches.fov_deg=75"""


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``sap_eval``."""
    parser = argparse.ArgumentParser(
        prog='sap_eval', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Evaluate the sap_ros pipeline, its variants and baselines on every clip of '
                    'a dataset, as sap_replay evaluates one bag, on Ray (a laptop or a '
                    'cluster), resumable; one report for the whole dataset.',
        epilog=LAYOUTS)
    parser.add_argument('dataset', metavar='DATASET', type=Path, help='folder of clips')
    parser.add_argument('--out', required=True, type=Path, help='output directory')
    clips = parser.add_argument_group('clips and ground truth')
    clips.add_argument('--image-topic', help='camera topic of the bags (default: the only '
                       'Image/CompressedImage topic besides the ground-truth topic)')
    clips.add_argument('--gt-topic', default=DEFAULT_GT_TOPIC,
                       help='label topic of the bags (default: %(default)s)')
    add_label_value_arguments(clips)
    clips.add_argument('--max-frames', type=int, metavar='N',
                       help='evaluate only the first N frames of every clip')
    add_semantic_arguments(parser, dataset=True)
    add_pipeline_arguments(parser)
    ray_group = parser.add_argument_group('Ray')
    ray_group.add_argument('--address', help='Ray cluster to join (e.g. auto, or '
                           'ray://head:10001); default: RAY_ADDRESS, else a local Ray')
    ray_group.add_argument('--workers', type=int, metavar='N', help='number of workers '
                           '(default: one per GPU of the cluster, else one per '
                           '--cpus-per-worker CPUs)')
    ray_group.add_argument('--cpus-per-worker', type=float, default=1.0, metavar='C',
                           help='CPUs reserved by each worker (default: %(default)s; on CPU '
                                'machines also its torch threads)')
    ray_group.add_argument('--retries', type=int, default=2, metavar='N',
                           help='retries of a clip whose worker dies: it is started at most '
                                'N + 1 times (default: %(default)s)')
    parser.add_argument('--size-bins', type=_edges, default=DEFAULT_SIZE_EDGES,
                        metavar='E1,E2', help='edges of the object-size bins, as fractions of '
                        'the sphere (default: 0.005,0.05: small < 0.5%%, medium, large >= 5%%)')
    parser.add_argument('--force', action='store_true',
                        help='evaluate every clip again, ignoring stored clip results')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    return parser


def _print_summary(report: dict) -> None:
    for label, block in report['overall'].items():
        values = ', '.join(f'{k} {block[k]:.3f}' if isinstance(block[k], float)
                           else f'{k} {block[k]}' for k in ('j_and_f', 'j', 'f', 'id_switches',
                                                            'semantic_miou', 'class_accuracy',
                                                            'class_switches', 'clips', 'frames')
                           if k in block)
        print(f'{label:>10}: {values}')
    run = report['run']
    print(f"clips: {run['evaluated']} evaluated, {run['reused']} reused, {run['failed']} failed "
          f"on {run['workers']} workers in {run['elapsed_s']:.1f} s")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``sap_eval`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ('max_frames', 'workers'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.retries < 0 or args.cpus_per_worker <= 0:
        parser.error('--retries must be >= 0 and --cpus-per-worker > 0')
    try:
        options = DatasetOptions(
            dataset=args.dataset, out=args.out, spec=build_spec(args), workers=args.workers,
            cpus_per_worker=args.cpus_per_worker, address=args.address, retries=args.retries,
            size_edges=args.size_bins, force=args.force, quiet=args.quiet)
        report = run_dataset(options)
    except SapError as err:
        print(f'sap_eval: error: {err}', file=sys.stderr)
        return EXIT_USAGE
    _print_summary(report)
    print(f'wrote {args.out / "report.json"} and {args.out / "report.md"}')
    return EXIT_FAILED_CLIPS if report['run']['failed'] else 0


if __name__ == '__main__':
    sys.exit(main())
