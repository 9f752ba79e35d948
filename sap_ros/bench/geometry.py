"""``sap_bench geometry``: everything but the network, measured side by side in one run.

* Layout: number of patches, sphere coverage, overlap of consecutive patches along the path.
* Extraction: all patches of one ERP frame through our cached cv2 tables
  (:func:`~sap_ros.sphere.sampler.extract_patches`) against py360convert's ``e2p`` on the same
  views (same yaw / pitch conventions: checked by correlating the patches), and fusion of all patch
  label maps into one ERP label map at half the ERP size (``output.scale`` 0.5).
* Quality with a perfect segmenter: the geometric oracle (:mod:`sap_ros.eval.oracle`) on
  synthetic frames with exact labels, against the best the naive baseline (SAM2 on the whole ERP
  squeezed to 1024 x 1024) could do; optionally on a real mask crossing the 0/360 seam. Both are
  fused at the ground truth's own size (a smaller map scaled back up by nearest neighbour would
  cost small objects more than the method does: 0.96 instead of 0.99 at 4096 px), with the
  ``--fusion`` rule; the naive baseline upsamples its logits with the same interpolation.

Each synthetic frame is scored on its own (the oracle rebuilds ids by association in every
frame; identity across frames is the tracker's job), with the 360VOS conventions of
:class:`~sap_ros.eval.metrics.ClipEvaluator`; reported values are means over frames.
Timings are medians over ``--repeats`` runs after one warm-up run (tables built, caches warm).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from importlib import metadata
import math
import os
from pathlib import Path
import platform
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np

from sap_ros.bench.common import (
    Progress,
    existing_file,
    keys_help,
    median_ms,
    result_keys_of,
    run_and_report,
)
from sap_ros.bench.common import result_field as _key
from sap_ros.bench.py360 import MIN_CORRELATION, compare_py360convert
from sap_ros.errors import ErpShapeError, InvalidInputError
from sap_ros.eval.metrics import ClipEvaluator, ClipMetrics
from sap_ros.eval.oracle import naive_upper_bound, oracle_round_trip
from sap_ros.sphere.fusion import FusionMode, fuse_labels
from sap_ros.sphere.geometry import erp_pixel_solid_angle_sr, validate_erp_shape
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches
from sap_ros.synth.scene import MAX_WIDTH_PX, SceneSpec, SynthScene

NAIVE_SQUARE_PX = 1024      # SAM2's input side: the naive baseline squeezes the whole ERP to it
MIN_ERP_WIDTH_PX = 64





@dataclass(frozen=True)
class MachineInfo:
    """Where the timings were taken."""

    cpu_count: Optional[int]
    cv2_threads: int
    python: str
    platform: str
    numpy: str
    cv2: str
    torch: Optional[str]
    py360convert: Optional[str]

    @classmethod
    def current(cls) -> 'MachineInfo':
        """Describe this machine and the library versions in use."""
        def version(name: str) -> Optional[str]:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                return None
        return cls(os.cpu_count(), cv2.getNumThreads(), platform.python_version(),
                   platform.platform(), np.__version__, cv2.__version__, version('torch'),
                   version('py360convert'))


@dataclass(frozen=True)
class GeometryBenchResult:
    """Every number of one run; field order = JSON order; each field's help is in ``--help``."""

    erp_width: int = _key('ERP width of the synthetic frames (height = width / 2), px')
    patch_size: int = _key('patch side, px')
    fov_deg: float = _key('field of view of each patch, deg')
    frames: int = _key('synthetic frames scored')
    seed: int = _key('scene seed (the oracle shuffles local ids with seed + frame)')
    repeats: int = _key('timing repeats (each *_ms is their median)')
    patches: int = _key('number of patches (views) in the layout')
    coverage: float = _key('fraction of the sphere (area-weighted) inside at least one patch')
    min_pair_overlap: float = _key('smallest overlap of two consecutive patches along the path, '
                                   'fraction of patch area (solid angle)')
    mean_pair_overlap: float = _key('mean of the same over the path')
    extract_ms: float = _key('all patches from one RGB ERP frame, our cached cv2 tables')
    py360convert_ms: Optional[float] = _key(
        "the same views with py360convert's e2p after a warm-up pass (its sampler LRU "
        'holds 8 views: with more patches e2p rebuilds its tables on every call)')
    speedup_vs_py360convert: Optional[float] = _key('py360convert_ms / extract_ms')
    py360convert_cached_ms: Optional[float] = _key(
        "py360convert's samplers built beforehand and kept for every view (its best case: "
        'sampling only)')
    speedup_vs_py360convert_cached: Optional[float] = _key('py360convert_cached_ms / extract_ms')
    py360convert_centre_corr: Optional[float] = _key(
        'correlation (grey levels) of the forward patch from py360convert and from us; '
        f'> {MIN_CORRELATION} = same conventions')
    py360convert_min_corr: Optional[float] = _key('the smallest such correlation over all views')
    fuse_width: int = _key('width of the fused ERP label map (half the ERP width), px')
    fuse_ms: float = _key('fusing all patch label maps (global ids) into one ERP label map')
    objects: float = _key('ground-truth objects per synthetic frame (mean)')
    fusion: str = _key('fusion rule of the oracle pipeline (--fusion): blend or '
                       'least_distortion')
    oracle_j: Optional[float] = _key(
        'J (sphere-area-weighted IoU, Hungarian-matched ids, mean over objects) of the oracle '
        'pipeline: ground truth cut into patches with random local ids, at the decoder '
        'resolution, ids rebuilt by association, fused at the ERP size')
    oracle_j_poles: Optional[float] = _key('the same J on pixels with |lat| > 60 deg only, over '
                                           'objects that reach there')
    oracle_j_small: Optional[float] = _key('oracle J over the smallest third of objects of each '
                                           'frame (by solid angle, rounded up)')
    naive_j: Optional[float] = _key(
        f'upper bound of the naive baseline: the whole ERP squeezed to {NAIVE_SQUARE_PX}x'
        f'{NAIVE_SQUARE_PX}, decoded at a quarter of that, back to the ERP size (bicubic with '
        'blend fusion, bilinear with least_distortion), perfect ids')
    naive_j_poles: Optional[float] = _key('naive J on pixels with |lat| > 60 deg')
    naive_j_small: Optional[float] = _key('naive J over the smallest third of objects')
    seam_mask: Optional[str] = _key('--seam-mask path (null without it)')
    seam_mask_j: Optional[float] = _key('J of the oracle pipeline on the seam mask (resized to '
                                        'the ERP width, fused at that size) against that mask')
    seam_mask_ids: Optional[int] = _key('distinct object ids the fused map has inside the seam '
                                        'mask (1 = one object across the 0/360 seam)')
    machine: MachineInfo = _key('cpu_count, cv2_threads, python, platform and the versions of '
                                'numpy, cv2, torch, py360convert')
    elapsed_s: float = _key('wall time of the whole run, s')

    def to_dict(self) -> dict:
        """JSON-ready dict (``machine`` nested)."""
        return asdict(self)


def result_keys() -> List[Tuple[str, str]]:
    """``(key, explanation)`` of every JSON key, in order."""
    return result_keys_of(GeometryBenchResult)


# ---------------------------------------------------------------------------- measurements
def _frame_metrics(pred: np.ndarray, gt: np.ndarray) -> ClipMetrics:
    evaluator = ClipEvaluator(gt_background=0, gt_ignore=None)
    evaluator.add_frame(pred, gt)
    return evaluator.result()


def smallest_third(gt: np.ndarray) -> np.ndarray:
    """Ids of the smallest third (rounded up) of the objects (> 0) of ``gt``, by solid angle.

    >>> gt = np.zeros((8, 16), np.uint16); gt[3:5, 0:8] = 1; gt[3, 9] = 2; gt[4, 12:14] = 3
    >>> smallest_third(gt).tolist()
    [2]
    """
    height, width = gt.shape
    pixel_sr = np.repeat(erp_pixel_solid_angle_sr(width, height), width)
    area = np.bincount(gt.ravel().astype(np.int64), weights=pixel_sr)
    ids = np.flatnonzero(area)
    ids = ids[ids != 0]
    keep = math.ceil(len(ids) / 3)
    return ids[np.argsort(area[ids], kind='stable')[:keep]]


@dataclass
class _Scores:
    """J values collected over frames for one method."""

    j: List[float] = field(default_factory=list)
    j_poles: List[float] = field(default_factory=list)
    j_small: List[float] = field(default_factory=list)

    def add(self, metrics: ClipMetrics, small_ids: np.ndarray) -> None:
        if metrics.j is not None:
            self.j.append(metrics.j)
        if metrics.j_poles is not None:
            self.j_poles.append(metrics.j_poles)
        small_set = set(small_ids.tolist())
        small = [o.j for o in metrics.objects if o.gt_id in small_set]
        if small:
            self.j_small.append(float(np.mean(small)))

    @staticmethod
    def mean(values: List[float]) -> Optional[float]:
        return float(np.mean(values)) if values else None


# ---------------------------------------------------------------------------- the run
def load_seam_mask(path: Path, erp_width: int) -> np.ndarray:
    """A {0, 255} 2:1 mask image -> ``(W/2, W)`` uint16 labels (1 where > 127), W = erp_width.

    Resized to ``erp_width`` (area-averaged when shrinking, bilinear when growing) before the
    threshold. ``InvalidInputError`` naming ``path`` when it is unreadable, not 2:1 or empty.
    """
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise InvalidInputError(f'cannot read the seam mask {path}: not an image cv2 can decode')
    try:
        validate_erp_shape(mask.shape)
    except ErpShapeError as err:
        raise InvalidInputError(f'seam mask {path}: {err}') from err
    height = erp_width // 2
    if mask.shape != (height, erp_width):
        shrink = erp_width < mask.shape[1]
        mask = cv2.resize(mask, (erp_width, height),
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    labels = (mask > 127).astype(np.uint16)
    if not labels.any():
        raise InvalidInputError(f'seam mask {path} has no pixel > 127 at width {erp_width}')
    return labels




def run_geometry_bench(args: argparse.Namespace, progress: Progress) -> GeometryBenchResult:
    """Run every measurement for the parsed ``sap_bench geometry`` arguments."""
    width, height = args.erp_width, args.erp_width // 2
    out_hw = (height // 2, width // 2)  # fusion timing: the node's default output.scale 0.5
    fusion = FusionMode(args.fusion)
    naive_interpolation = cv2.INTER_CUBIC if fusion is FusionMode.BLEND else cv2.INTER_LINEAR
    seam_labels = None if args.seam_mask is None else load_seam_mask(args.seam_mask, width)

    progress(f'layout: fov {args.fov_deg} deg, patches of {args.patch_size} px')
    layout = PatchLayout.build(args.fov_deg, args.patch_size)
    overlaps = layout.path_overlaps()
    coverage = layout.coverage()

    scene = SynthScene(SceneSpec(seed=args.seed))
    poses = scene.trajectory(args.frames)
    progress(f'rendering frame 1/{args.frames} at {width}x{height}')
    rgb, gt = scene.render(poses[0], width)

    progress(f'extracting {len(layout)} patches (ours, {args.repeats} repeats)')
    extract_ms, ours = median_ms(lambda: extract_patches(layout, rgb), args.repeats)
    progress("the same with py360convert's e2p")
    py360 = compare_py360convert(layout, rgb, ours, args.repeats)
    if py360 is None:
        progress('py360convert is not installed: comparison skipped')

    progress(f'fusing {len(layout)} label maps at {out_hw[1]}x{out_hw[0]}')
    patch_labels = extract_patches(layout, gt, interpolation=cv2.INTER_NEAREST)
    fuse_ms, _ = median_ms(lambda: fuse_labels(layout, patch_labels, out_hw), args.repeats)

    oracle, naive = _Scores(), _Scores()
    n_objects = []
    for k, pose in enumerate(poses):
        if k > 0:
            progress(f'rendering frame {k + 1}/{args.frames}')
            _, gt = scene.render(pose, width)
        progress(f'oracle and naive baseline on frame {k + 1}/{args.frames}')
        small = smallest_third(gt)
        n_objects.append(int(np.count_nonzero(np.unique(gt))))
        pred = oracle_round_trip(layout, gt, (height, width), background=0, seed=args.seed + k,
                                 mode=fusion)
        oracle.add(_frame_metrics(pred, gt), small)
        naive_pred = naive_upper_bound(gt, NAIVE_SQUARE_PX, background=0,
                                       interpolation=naive_interpolation)
        naive.add(_frame_metrics(naive_pred, gt), small)

    seam_j, seam_ids = None, None
    if seam_labels is not None:
        progress(f'oracle on the seam mask {args.seam_mask}')
        pred = oracle_round_trip(layout, seam_labels, (height, width), background=0,
                                 seed=args.seed, mode=fusion)
        seam_j = _frame_metrics(pred, seam_labels).j
        seam_ids = int(np.count_nonzero(np.unique(pred[seam_labels > 0])))

    def ratio(num: Optional[float]) -> Optional[float]:
        return None if num is None else num / extract_ms

    return GeometryBenchResult(
        erp_width=width, patch_size=args.patch_size, fov_deg=args.fov_deg, frames=args.frames,
        seed=args.seed, repeats=args.repeats, patches=len(layout), coverage=coverage,
        min_pair_overlap=float(overlaps.min()), mean_pair_overlap=float(overlaps.mean()),
        extract_ms=extract_ms,
        py360convert_ms=None if py360 is None else py360.e2p_ms,
        speedup_vs_py360convert=None if py360 is None else ratio(py360.e2p_ms),
        py360convert_cached_ms=None if py360 is None else py360.cached_ms,
        speedup_vs_py360convert_cached=None if py360 is None else ratio(py360.cached_ms),
        py360convert_centre_corr=None if py360 is None else py360.centre_corr,
        py360convert_min_corr=None if py360 is None else py360.min_corr,
        fuse_width=out_hw[1], fuse_ms=fuse_ms, objects=float(np.mean(n_objects)),
        fusion=fusion.value,
        oracle_j=oracle.mean(oracle.j), oracle_j_poles=oracle.mean(oracle.j_poles),
        oracle_j_small=oracle.mean(oracle.j_small),
        naive_j=naive.mean(naive.j), naive_j_poles=naive.mean(naive.j_poles),
        naive_j_small=naive.mean(naive.j_small),
        seam_mask=None if args.seam_mask is None else str(args.seam_mask),
        seam_mask_j=seam_j, seam_mask_ids=seam_ids,
        machine=MachineInfo.current(), elapsed_s=progress.elapsed_s())


def format_table(result: GeometryBenchResult) -> str:
    """The human-readable report printed at the end of a run."""
    def num(value: object, digits: int = 3) -> str:
        if value is None:
            return 'n/a'
        if isinstance(value, float):
            return f'{value:.{digits}f}'
        return str(value)

    r = result
    m = r.machine
    lines = [
        f'sap_bench geometry: ERP {r.erp_width}x{r.erp_width // 2}, {r.patches} patches of '
        f'{r.patch_size} px, FOV {r.fov_deg:g} deg ({m.cpu_count} CPUs, cv2 {m.cv2}, '
        f'torch {m.torch})',
        f'  layout       coverage {num(r.coverage, 4)}   consecutive overlap min '
        f'{num(r.min_pair_overlap)} / mean {num(r.mean_pair_overlap)}',
        f'  extraction   ours {num(r.extract_ms, 1)} ms   py360convert e2p '
        f'{num(r.py360convert_ms, 1)} ms (x{num(r.speedup_vs_py360convert, 1)})   '
        f'py360convert, samplers kept {num(r.py360convert_cached_ms, 1)} ms '
        f'(x{num(r.speedup_vs_py360convert_cached, 1)})',
    ]
    if r.py360convert_centre_corr is not None and r.py360convert_min_corr is not None:
        same = (r.py360convert_centre_corr > MIN_CORRELATION
                and r.py360convert_min_corr > MIN_CORRELATION)
        lines.append(f'  check        py360convert vs ours: centre patch corr '
                     f'{num(r.py360convert_centre_corr)}, min over views '
                     f'{num(r.py360convert_min_corr)} '
                     f'({"same conventions" if same else "MISMATCH"})')
    lines += [
        f'  fusion       {r.patches} label maps -> {r.fuse_width}x{r.fuse_width // 2}: '
        f'{num(r.fuse_ms, 1)} ms',
        f'  J ({r.frames} frames, {num(r.objects, 1)} objects, {r.fusion} fusion at '
        f'{r.erp_width}x{r.erp_width // 2})   all     poles   small third',
        f'    oracle                      {num(r.oracle_j)}   {num(r.oracle_j_poles)}   '
        f'{num(r.oracle_j_small)}',
        f'    naive {NAIVE_SQUARE_PX}^2 upper bound     {num(r.naive_j)}   '
        f'{num(r.naive_j_poles)}   {num(r.naive_j_small)}',
    ]
    if r.seam_mask is not None:
        lines.append(f'  seam mask    J {num(r.seam_mask_j)}, {r.seam_mask_ids} id(s) inside '
                     f'the mask ({r.seam_mask})')
    lines.append(f'  elapsed      {r.elapsed_s:.1f} s')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------- command line
def _erp_width(text: str) -> int:
    value = int(text)
    if value % 2 or not MIN_ERP_WIDTH_PX <= value <= MAX_WIDTH_PX:
        raise argparse.ArgumentTypeError(
            f'must be an even number in [{MIN_ERP_WIDTH_PX}, {MAX_WIDTH_PX}], got {value}')
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be >= {minimum}, got {value}')
        return value
    return parse


def _fov(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 180.0:
        raise argparse.ArgumentTypeError(f'must be in (0, 180) degrees, got {value}')
    return value




def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sap_bench geometry``; the help lists every key of the JSON report."""
    keys = keys_help(GeometryBenchResult)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        'Measure the geometry of the pipeline without the network: layout coverage and '
        'overlap, patch\nextraction against py360convert, fusion, and J of the geometric '
        'oracle against the naive\nbaseline on synthetic frames (and on a real seam-crossing '
        'mask). Timings are medians after a\nwarm-up; ratios are measured in the same run. '
        'Each synthetic frame is scored on its own\n(ids are rebuilt by association in every '
        'frame); J values are means over frames.')
    parser.epilog = (f'JSON keys (--json) and table rows:\n{keys}\n\nexample: sap_bench geometry '
                     '--seam-mask ../shared/data/360vot/0117_000211_0.png --json geom.json')
    parser.add_argument('--erp-width', type=_erp_width, default=4096,
                        help='ERP width of the synthetic frames, px (default: %(default)s)')
    parser.add_argument('--patch-size', type=_at_least(16), default=1024,
                        help='patch side, px (default: %(default)s)')
    parser.add_argument('--fov-deg', type=_fov, default=90.0,
                        help='field of view of each patch, deg (default: %(default)s)')
    parser.add_argument('--frames', type=_at_least(1), default=2,
                        help='synthetic frames scored by the oracle (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='scene seed (default: %(default)s)')
    parser.add_argument('--fusion', choices=[m.value for m in FusionMode],
                        default=FusionMode.BLEND.value,
                        help='fusion rule of the oracle pipeline (default: %(default)s)')
    parser.add_argument('--repeats', type=_at_least(1), default=3,
                        help='timing repeats; the median is reported (default: %(default)s)')
    parser.add_argument('--seam-mask', type=existing_file, metavar='PATH',
                        help='8-bit 2:1 mask {0,255} of one object (e.g. crossing the 0/360 seam) '
                             'to run through the oracle pipeline')
    parser.add_argument('--json', type=Path, metavar='PATH', help='write the report as JSON')
    parser.add_argument('--quiet', action='store_true', help='no progress lines on stderr')


def run(args: argparse.Namespace) -> int:
    """Layout, extraction vs py360convert, fusion and oracle J vs the naive baseline."""
    return run_and_report('geometry', args, run_geometry_bench, format_table)
