"""``sap_replay``: run the pipeline offline on a rosbag2 and evaluate it (ARCHITECTURE §8).

Reads the camera topic (``sensor_msgs/Image`` or ``CompressedImage``, mcap or sqlite3), runs our
pipeline and the requested baselines on the same frames, writes ``OUT/sap.mcap`` (``/sap/masks``
mono16 and ``/sap/objects`` PointCloud2 with the input header stamps) and the report files of
:mod:`sap_ros.eval.report`. Ground truth comes from a label topic or a folder of PNGs; semantic
ground truth (:mod:`sap_ros.eval.semantic_gt`) from a class-map topic, a folder, or the labels
through an id -> class map, and scores every method that publishes class maps.

Exit status: 0 on success, 2 when the input or the options are unusable (wrong topic, unsupported
type, empty topic, ground-truth count mismatch, invalid parameter, missing checkpoint); the
message says what is wrong and, for topic problems, lists every topic of the bag with its type.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
import shutil
import sys
import time
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from sap_ros.config import PipelineConfig
from sap_ros.errors import SapError
from sap_ros.eval.bags import BagWriter, MessageStream, open_image_stream
from sap_ros.eval.replay_gt import (
    AUTO_IGNORE,
    GroundTruth,
    ReplayError,
    open_ground_truth,
    resolve_ignore,
)
from sap_ros.eval.replay_methods import (
    Method,
    MethodName,
    Variant,
    build_method,
    close_all,
    step_methods,
)
from sap_ros.eval.replay_params import (
    add_label_value_arguments,
    add_pipeline_arguments,
    add_semantic_arguments,
    build_config,
    parse_variant,
    uses_random_weights,
)
from sap_ros.eval.replay_timeline import SEMANTIC_KEYS, MethodScores
from sap_ros.eval.report import (
    OVERLAY_WIDTH_PX,
    MethodRun,
    OverlaySample,
    ReplayInfo,
    ReportFiles,
    sample_every,
    shrink_rgb,
    write_report,
)
from sap_ros.eval.semantic_gt import SemanticTruth, open_semantic_truth, scored_classes

MASKS_TOPIC = '/sap/masks'
OBJECTS_TOPIC = '/sap/objects'
OUTPUT_BAG = 'sap.mcap'
#: Everything a run writes under OUT (``--force`` removes exactly these).
OUTPUT_NAMES = (OUTPUT_BAG, 'report.json', 'report.md', 'overlays', 'j_over_time.png',
                'latency_hist.png')
EXIT_USAGE = 2


@dataclass(frozen=True)
class ReplayOptions:
    """One replay, as the command line describes it."""

    bag: Path
    image_topic: str
    out: Path
    config: PipelineConfig
    gt_topic: Optional[str] = None
    gt_dir: Optional[Path] = None
    gt_background: Optional[int] = 0
    gt_ignore: Optional[int] = AUTO_IGNORE
    baselines: Tuple[MethodName, ...] = ()
    variants: Tuple[Variant, ...] = ()
    run_ours: bool = True
    max_frames: Optional[int] = None
    quiet: bool = False
    force: bool = False
    gt_semantic_topic: Optional[str] = None
    gt_semantic_dir: Optional[Path] = None
    gt_class_map: Optional[Path] = None
    class_names: Optional[str] = None
    semantic_classes: Optional[str] = None


# ---------------------------------------------------------------------- the run
def _existing_output(out: Path, force: bool) -> List[Path]:
    """Output files of an earlier run in ``out``; ReplayError unless ``force``."""
    existing = [out / name for name in OUTPUT_NAMES if (out / name).exists()]
    if existing and not force:
        raise ReplayError(f'{out} already holds replay output ({existing[0].name}); pass --force '
                          'to replace it or choose another --out')
    return existing


def _prepare_out(out: Path, existing: Sequence[Path]) -> None:
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _warn(message: str) -> None:
    print(f'sap_replay: WARNING: {message}', file=sys.stderr)


def run_replay(options: ReplayOptions) -> ReportFiles:
    """Replay the bag through every method, write the output bag and the report."""
    t_start = time.perf_counter()
    frames = open_image_stream(options.bag, options.image_topic)
    methods: List[Method] = []
    gt_source: Optional[GroundTruth] = None
    semantic: Optional[SemanticTruth] = None
    try:
        n_frames = min(len(frames), options.max_frames or len(frames))
        gt_source = open_ground_truth(options.bag, options.gt_topic, options.gt_dir,
                                      len(frames), options.image_topic)
        gt_ignore = resolve_ignore(options.gt_ignore, gt_source)
        semantic = open_semantic_truth(
            options.bag, options.gt_semantic_topic, options.gt_semantic_dir,
            options.gt_class_map, options.class_names, len(frames), gt_ignore)
        if semantic is not None and options.gt_class_map is not None and gt_source is None:
            raise ReplayError('--gt-class-map maps the instance ground truth: add --gt-topic '
                              'or --gt-dir')
        names_scored = (() if semantic is None else semantic.class_names,
                        None if semantic is None
                        else scored_classes(options.semantic_classes, semantic.class_names))
        if options.semantic_classes is not None and semantic is None:
            raise ReplayError('--semantic-classes needs semantic ground truth '
                              '(--gt-semantic-topic, --gt-semantic-dir or --gt-class-map)')
        names = ([MethodName.OURS] if options.run_ours else []) + list(options.baselines)
        if not names and not options.variants:
            raise ReplayError('nothing to run: --skip-ours needs at least one --baseline or '
                              '--variant')
        if gt_source is None and any(n.needs_ground_truth for n in names):
            raise ReplayError('--baseline oracle and --baseline naive are built from the ground '
                              'truth: add --gt-topic or --gt-dir')
        existing = _existing_output(options.out, options.force)
        if len({v.name for v in options.variants}) != len(options.variants):
            raise ReplayError('two --variant options have the same NAME')
        for variant in options.variants:
            variant.apply(options.config)  # a bad value fails before any model is loaded
        if uses_random_weights(options.config) and (
                options.variants or any(n.runs_sam2 for n in names)):
            _warn('SAM2 runs with RANDOM WEIGHTS (model.allow_random_weights, no checkpoint): '
                  'the masks of ours/raster are meaningless; use this only to test the plumbing')
        # Ours first, then the variants, then the baselines (the first one fills the bag).
        plan: List[Tuple[MethodName, Optional[Variant]]] = [(n, None) for n in names]
        variants: List[Tuple[MethodName, Optional[Variant]]] = [
            (MethodName.OURS, v) for v in options.variants]
        plan[int(options.run_ours):int(options.run_ours)] = variants
        runs = []
        for name, which in plan:
            methods.append(build_method(name, options.config, options.gt_background, gt_ignore,
                                        variant=which, semantic=semantic))
            runs.append(MethodRun(name, methods[-1].description,
                                  MethodScores(options.gt_background, gt_ignore,
                                               class_names=names_scored[0],
                                               scored_classes=names_scored[1]), which))
        _prepare_out(options.out, existing)
        samples, stamps, mismatches = _loop(options, frames, gt_source, methods, runs, n_frames,
                                            semantic)
    finally:
        close_all(methods, frames, gt_source, semantic)
    if mismatches:
        _warn(f'{mismatches} of {n_frames} ground-truth stamps differ from their frame '
              '(matched in order anyway)')
    info = ReplayInfo(
        bag=str(options.bag), image_topic=options.image_topic, image_type=frames.msgtype,
        bag_frames=len(frames), frames=len(stamps),
        gt_source=None if gt_source is None else gt_source.description,
        gt_background=options.gt_background, gt_ignore=gt_ignore,
        gt_stamp_mismatches=mismatches, config=options.config.to_flat(),
        model=_model_note(methods),
        random_weights=uses_random_weights(options.config) and any(
            m.name.runs_sam2 for m in methods),
        output_bag=str(options.out / OUTPUT_BAG), output_method=runs[0].key,
        elapsed_s=time.perf_counter() - t_start, stamps_ns=tuple(stamps),
        semantic_source=None if semantic is None else semantic.description,
        class_names=() if semantic is None else semantic.class_names)
    return write_report(options.out, info, runs, samples)


def _model_note(methods: Sequence[Method]) -> str:
    sam2 = [m for m in methods if m.name.runs_sam2]
    return sam2[0].description if sam2 else 'no SAM2 model run (baselines from ground truth)'


def _loop(options: ReplayOptions, frames: MessageStream, gt_source: Optional[GroundTruth],
          methods: Sequence[Method], runs: Sequence[MethodRun], n_frames: int,
          semantic: Optional[SemanticTruth] = None
          ) -> Tuple[List[OverlaySample], List[int], int]:
    """Step every method on every frame; write the first method's output to the bag."""
    every = sample_every(n_frames)
    samples: List[OverlaySample] = []
    stamps: List[int] = []
    mismatches = 0
    embeddings = options.config.output.embeddings
    with BagWriter(options.out / OUTPUT_BAG) as bag, tqdm(
            total=n_frames, unit='frame', desc='sap_replay', file=sys.stderr,
            disable=options.quiet) as progress:
        for step in step_methods(frames, gt_source, methods, [r.scores for r in runs],
                                 n_frames, semantic):
            frame, gt = step.frame, step.gt
            mismatches += (gt is not None and gt.stamp_ns is not None
                           and gt.stamp_ns != frame.header_stamp_ns)
            first = step.outputs[0]
            bag.write_labels(MASKS_TOPIC, first.labels, frame.header_stamp_ns, frame.frame_id,
                             log_time_ns=frame.timestamp_ns)
            bag.write_objects(OBJECTS_TOPIC, first.objects, frame.header_stamp_ns,
                              frame.frame_id, embeddings=embeddings,
                              log_time_ns=frame.timestamp_ns)
            if step.index % every == 0:
                sample = OverlaySample(step.index, frame.header_stamp_ns, shrink_rgb(frame.rgb))
                if gt is not None:
                    sample.gt = _shrink_labels(gt.labels)
                for run, out in zip(runs, step.outputs):
                    sample.labels[run.key] = _shrink_labels(out.labels)
                samples.append(sample)
            stamps.append(frame.header_stamp_ns)
            progress.update(1)
            if runs[0].scores.latencies_ms:
                progress.set_postfix_str(f'{runs[0].key} '
                                         f'{runs[0].scores.latencies_ms[-1]:.0f} ms/frame')
    return samples, stamps, int(mismatches)


def _shrink_labels(labels: np.ndarray) -> np.ndarray:
    if labels.shape[1] <= OVERLAY_WIDTH_PX:
        return np.array(labels, dtype=np.uint16)
    return cv2.resize(np.asarray(labels, dtype=np.uint16),
                      (OVERLAY_WIDTH_PX, OVERLAY_WIDTH_PX // 2), interpolation=cv2.INTER_NEAREST)


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``sap_replay``."""
    parser = argparse.ArgumentParser(
        prog='sap_replay',
        description='Replay a rosbag2 (mcap or sqlite3) through the sap_ros pipeline offline, '
                    'with baselines on the same frames, and evaluate it against ground truth '
                    '(360VOS-style J&F on the sphere, ID switches, seam and pole scores, '
                    f'latency). Writes OUT/{OUTPUT_BAG} ({MASKS_TOPIC} mono16, {OBJECTS_TOPIC} '
                    'PointCloud2, input header stamps), OUT/report.json, OUT/report.md, '
                    'OUT/overlays/ (with contact_sheet.png), OUT/j_over_time.png and '
                    'OUT/latency_hist.png.',
        epilog='example: sap_replay bag --image-topic /camera/image --gt-topic /gt/labels '
               '--out replay_out --checkpoint sam2.1_hiera_tiny.pt --baseline naive '
               '--baseline oracle. Exit status 2: unusable input or options (the message '
               'lists the topics of the bag when a topic is wrong).')
    parser.add_argument('bag', metavar='BAG', type=Path, help='input rosbag2 directory')
    parser.add_argument('--image-topic', required=True,
                        help='ERP camera topic (sensor_msgs/Image or CompressedImage)')
    parser.add_argument('--out', required=True, type=Path, help='output directory')
    gt = parser.add_argument_group('ground truth (optional; needed for scores and baselines)')
    gt.add_argument('--gt-topic', help='label topic in the bag (mono16 or mono8 Image), '
                    'one message per camera frame, matched in order')
    gt.add_argument('--gt-dir', type=Path, help='folder of single-channel label PNGs, one per '
                    'camera frame, matched in order of sorted file names')
    add_label_value_arguments(gt)
    add_semantic_arguments(parser)
    runs = add_pipeline_arguments(parser)
    runs.add_argument('--max-frames', type=int, metavar='N',
                      help='replay only the first N frames')
    parser.add_argument('--force', action='store_true',
                        help='replace the output files of an earlier run in --out')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def _print_summary(files: ReportFiles) -> None:
    import json
    report = json.loads(files.json.read_text())
    blocks = (([] if report['ours_skipped'] else [('ours', report)])
              + list(report['variants'].items()) + list(report['baselines'].items()))
    for name, block in blocks:
        scores = ', '.join(f'{key} {block[key]:.3f}' if isinstance(block[key], float)
                           else f'{key} {block[key]}'
                           for key in ('j_and_f', 'j', 'f', 'id_switches', 'latency_ms_mean',
                                       'semantic_miou', 'class_accuracy', 'class_switches')
                           if key not in SEMANTIC_KEYS or block.get(key) is not None)
        print(f'{name:>8}: {scores}')
    print(f"wrote {report['output']['bag']}, {files.json}, {files.markdown}, "
          f'{len(files.overlays)} overlays')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``sap_replay`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f'--max-frames must be >= 1, got {args.max_frames}')
    try:
        config = build_config(args.params, args.overrides, args.checkpoint, args.random_weights)
        options = ReplayOptions(
            bag=args.bag, image_topic=args.image_topic, out=args.out, config=config,
            gt_topic=args.gt_topic, gt_dir=args.gt_dir, gt_background=args.gt_background,
            gt_ignore=args.gt_ignore,
            baselines=tuple(dict.fromkeys(MethodName(b) for b in args.baselines)),
            variants=tuple(parse_variant(v) for v in args.variants),
            run_ours=not args.skip_ours, max_frames=args.max_frames, quiet=args.quiet,
            force=args.force, gt_semantic_topic=args.gt_semantic_topic,
            gt_semantic_dir=args.gt_semantic_dir, gt_class_map=args.gt_class_map,
            class_names=args.class_names, semantic_classes=args.semantic_classes)
        files = run_replay(options)
    except SapError as err:
        print(f'sap_replay: error: {err}', file=sys.stderr)
        return EXIT_USAGE
    _print_summary(files)
    return 0


if __name__ == '__main__':
    sys.exit(main())
