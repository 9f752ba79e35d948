"""The files of a ``sap_replay`` run: report.json, report.md, overlays, contact sheet, plots.

* ``report.json``: our metrics at the top level (keys of
  :data:`~sap_ros.eval.replay_timeline.METRIC_KEYS`, plus per-object scores), ``baselines``
  with one block of the same keys per baseline, and ``bag``, ``ground_truth``, ``model``,
  ``config``, ``output``, ``timeline`` (per-frame stamps, J and latency) and ``notes``.
* ``report.md``: one table, ours and every baseline side by side, with the notes (random
  weights, what the naive upper bound is) and links to the images.
* ``overlays/frame_NNNNN.png``: every sampled frame, one row per method and one for the ground
  truth; ``overlays/contact_sheet.png``: all sampled frames, one row each, methods side by side.
* ``j_over_time.png``, ``latency_hist.png``: matplotlib (Agg) plots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from sap_ros.eval.replay_methods import DESCRIPTIONS, MethodName, Variant
from sap_ros.eval.replay_timeline import METRIC_KEYS, SEMANTIC_KEYS, MethodScores
from sap_ros.io.overlay import overlay_rgb

MAX_OVERLAYS = 12
OVERLAY_WIDTH_PX = 768
SHEET_THUMB_WIDTH_PX = 320
CAPTION_PX = 22

NAIVE_NOTE = ('`naive` is an UPPER BOUND of SAM2 run on the whole ERP resized to '
              'image_size x image_size: the ground truth passed through that resolution '
              '(decoder logits at a quarter of it) with perfect identities. It is not a model '
              'run; a real naive run can only score lower.')
ORACLE_NOTE = ('`oracle` is our pipeline with the geometric oracle in place of SAM2 '
               '(ground-truth masks cut into each patch at decoder resolution, random local '
               'ids): it measures everything but the network.')
VARIANT_NOTE = ('Variants (`--variant`) are our pipeline with the listed parameters changed, on '
                'the same frames; options that change what SAM2 receives are unmeasured with '
                'real weights until you run them with a checkpoint.')
NO_CLASSES_NOTE = ('Semantic ground truth was given, but no method published class maps '
                   '(classifier.kind none; the oracle classifies only where the pipeline has the '
                   'classifier seam): no semantic scores.')
SEMANTIC_NOTE = ('semantic_miou: sphere-weighted IoU per class over the whole clip, averaged '
                 'over the scored classes present in ground truth or prediction; '
                 'class_accuracy: share of the predicted tracks on a scored class whose last '
                 'published class is the ground-truth class under most of their pixels; '
                 "class_switches: changes of a track's published class (0 skipped), summed over "
                 'tracks.')
RANDOM_NOTE = ('**WARNING: SAM2 ran with RANDOM WEIGHTS** (no checkpoint, '
               'model.allow_random_weights=true). The masks of `ours`/`raster` are meaningless: '
               'this run tests the plumbing and the speed, not segmentation quality.')


@dataclass(frozen=True)
class ReplayInfo:
    """What was replayed and how (everything of the report that is not a score)."""

    bag: str
    image_topic: str
    image_type: str
    bag_frames: int
    frames: int
    gt_source: Optional[str]
    gt_background: Optional[int]
    gt_ignore: Optional[int]
    gt_stamp_mismatches: int
    config: Dict[str, Any]
    model: str
    random_weights: bool
    output_bag: Optional[str]
    output_method: Optional[str]
    elapsed_s: float
    stamps_ns: Tuple[int, ...] = ()
    title: str = 'sap_replay report'
    semantic_source: Optional[str] = None
    class_names: Tuple[str, ...] = ()


@dataclass
class MethodRun:
    """One method's name, what it ran on, and its scores."""

    name: MethodName
    description: str
    scores: MethodScores
    variant: Optional[Variant] = None

    @property
    def key(self) -> str:
        """Its column in the report: the method name, or the variant's name."""
        return self.variant.name if self.variant is not None else self.name.value


@dataclass
class OverlaySample:
    """A sampled frame kept for the overlays (images already shrunk)."""

    index: int
    stamp_ns: int
    rgb: np.ndarray
    labels: Dict[str, np.ndarray] = field(default_factory=dict)  # by MethodRun.key
    gt: Optional[np.ndarray] = None


def sample_every(n_frames: int, max_samples: int = MAX_OVERLAYS) -> int:
    """Keep every k-th frame so that at most ``max_samples`` are kept.

    >>> sample_every(30), sample_every(5), sample_every(0)
    (3, 1, 1)
    """
    return max(1, math.ceil(n_frames / max_samples))


def shrink_rgb(rgb: np.ndarray, width_px: int = OVERLAY_WIDTH_PX) -> np.ndarray:
    """Resize an ERP image to at most ``width_px`` wide (area filter), 2:1 kept."""
    if rgb.shape[1] <= width_px:
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (width_px, width_px // 2), interpolation=cv2.INTER_AREA)


def gt_as_objects(gt: np.ndarray, background: Optional[int], ignore: Optional[int]) -> np.ndarray:
    """Ground truth -> label map where 0 = nothing to draw (dense ids shift by one)."""
    out = gt.astype(np.int64)
    dropped = np.zeros(gt.shape, dtype=bool) if ignore is None else gt == ignore
    if background is None:
        out += 1
    else:
        dropped |= gt == background
    out[dropped] = 0
    return out.astype(np.uint16)


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        return f'{value:.1f}' if key.startswith('latency') else f'{value:.3f}'
    return str(value)


def _label(run: MethodRun) -> str:
    return 'naive (upper bound)' if run.name == MethodName.NAIVE else run.key


def report_dict(info: ReplayInfo, runs: Sequence[MethodRun]) -> dict:
    """The content of report.json."""
    ours = next((r for r in runs if r.name == MethodName.OURS and r.variant is None), None)
    top: dict = ({key: None for key in METRIC_KEYS} if ours is None else ours.scores.block())
    top['title'] = info.title
    top['ours_skipped'] = ours is None
    top['variants'] = {r.key: {**r.scores.block(), 'overrides': dict(r.variant.overrides)}
                       for r in runs if r.variant is not None}
    top['baselines'] = {r.key: r.scores.block() for r in runs
                        if r.name != MethodName.OURS}
    top['methods'] = {r.key: {'what': DESCRIPTIONS[r.name] if r.variant is None else
                              f'{DESCRIPTIONS[r.name]}, variant {r.variant.describe()}',
                              'ran': r.description} for r in runs}
    top['bag'] = {'path': info.bag, 'image_topic': info.image_topic,
                  'image_type': info.image_type, 'messages': info.bag_frames,
                  'frames_replayed': info.frames}
    top['ground_truth'] = (None if info.gt_source is None else {
        'source': info.gt_source, 'background': info.gt_background, 'ignore': info.gt_ignore,
        'stamp_mismatches': info.gt_stamp_mismatches,
        'semantic': None if info.semantic_source is None else {
            'source': info.semantic_source, 'class_names': list(info.class_names)}})
    top['model'] = {'description': info.model, 'random_weights': info.random_weights}
    top['config'] = info.config
    top['output'] = {'bag': info.output_bag, 'method': info.output_method,
                     'elapsed_s': info.elapsed_s}
    top['timeline'] = {
        'stamps_ns': list(info.stamps_ns),
        'j': {r.key: r.scores.j_per_frame() for r in runs},
        'latency_ms': {r.key: r.scores.latencies_ms for r in runs},
        'objects': {r.key: r.scores.object_counts for r in runs}}
    notes = []
    if info.random_weights:
        notes.append(RANDOM_NOTE)
    if any(r.name == MethodName.NAIVE for r in runs):
        notes.append(NAIVE_NOTE)
    if any(r.name == MethodName.ORACLE for r in runs):
        notes.append(ORACLE_NOTE)
    if top['variants']:
        notes.append(VARIANT_NOTE)
    if info.gt_source is None and info.semantic_source is None:
        notes.append('No ground truth: only latency and object counts are reported.')
    if info.semantic_source is not None:
        scored = any(r.scores.block()['semantic'] is not None for r in runs)
        notes.append(SEMANTIC_NOTE if scored else NO_CLASSES_NOTE)
    top['notes'] = notes
    return top


def markdown(report: dict) -> str:
    """report.md from the content of report.json."""
    variants = report.get('variants', {})
    names = (([] if report['ours_skipped'] else ['ours']) + list(variants)
             + list(report['baselines']))
    blocks = {name: (report if name == 'ours' else variants.get(name)
                     or report['baselines'][name]) for name in names}
    heads = ['naive (upper bound)' if n == 'naive' else n for n in names]
    lines = [f"# {report.get('title', 'sap_replay report')}", '']
    bag, gt = report['bag'], report['ground_truth']
    lines += [f"- bag: `{bag['path']}`, topic `{bag['image_topic']}` ({bag['image_type']}), "
              f"{bag['frames_replayed']} of {bag['messages']} frames replayed",
              f"- ground truth: {gt['source'] if gt else 'none'}",
              f"- model: {report['model']['description']}",
              f"- output: `{report['output']['bag']}` ({report['output']['method']}), "
              f"{report['output']['elapsed_s']:.1f} s in all", '']
    for note in report['notes']:
        lines += [f'> {note}', '']
    if report['ours_skipped']:
        lines += ['> `ours` was not run (`--skip-ours`): baselines only.', '']
    lines += ['| metric | ' + ' | '.join(heads) + ' |',
              '|---|' + '---:|' * len(heads)]
    semantic = [n for n in names if blocks[n].get('semantic')]
    for key in METRIC_KEYS + ('objects_per_frame_mean',) + (SEMANTIC_KEYS if semantic else ()):
        lines.append(f'| {key} | ' + ' | '.join(_fmt(blocks[n].get(key), key) for n in names)
                     + ' |')
    if semantic:
        lines += ['', '| class IoU | ' + ' | '.join(semantic) + ' |',
                  '|---|' + '---:|' * len(semantic)]
        for cls in blocks[semantic[0]]['semantic']['class_iou']:
            lines.append(f'| {cls} | ' + ' | '.join(
                _fmt(blocks[n]['semantic']['class_iou'].get(cls), cls) for n in semantic) + ' |')
    lines += ['', 'J: sphere-weighted IoU; F: boundary F (tolerance 0.008 x diagonal); objects '
              'matched to ground truth once per clip (Hungarian on mean J); j_poles: J over '
              '|lat| > 60 deg; latency: wall time per frame (the first frame builds the '
              'sampling tables).', '',
              '![J over time](j_over_time.png) ![latency](latency_hist.png)', '',
              '![contact sheet](overlays/contact_sheet.png)', '']
    return '\n'.join(lines)


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((CAPTION_PX, image.shape[1], 3), 32, dtype=np.uint8)
    cv2.putText(bar, text, (6, CAPTION_PX - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([bar, image])


def _tiles(sample: OverlaySample, runs: Sequence[MethodRun], background: Optional[int],
           ignore: Optional[int], width_px: int) -> List[Tuple[str, np.ndarray]]:
    rgb = shrink_rgb(sample.rgb, width_px)
    size = (rgb.shape[1], rgb.shape[0])
    tiles = []
    for run in runs:
        if run.key in sample.labels:
            labels = cv2.resize(sample.labels[run.key], size, interpolation=cv2.INTER_NEAREST)
            tiles.append((_label(run), overlay_rgb(rgb, labels)))
    if sample.gt is not None:
        gt = cv2.resize(gt_as_objects(sample.gt, background, ignore), size,
                        interpolation=cv2.INTER_NEAREST)
        tiles.append(('ground truth', overlay_rgb(rgb, gt)))
    return tiles


def overlay_panel(sample: OverlaySample, runs: Sequence[MethodRun],
                  background: Optional[int] = 0, ignore: Optional[int] = 255,
                  width_px: int = OVERLAY_WIDTH_PX) -> np.ndarray:
    """One frame: a captioned row per method, then the ground truth; RGB uint8."""
    rows = [_caption(tile, f'frame {sample.index}  {name}')
            for name, tile in _tiles(sample, runs, background, ignore, width_px)]
    return np.vstack(rows)


def contact_sheet(samples: Sequence[OverlaySample], runs: Sequence[MethodRun],
                  background: Optional[int] = 0, ignore: Optional[int] = 255,
                  thumb_px: int = SHEET_THUMB_WIDTH_PX) -> np.ndarray:
    """All sampled frames, one row each, methods (and ground truth) side by side; RGB uint8."""
    rows = []
    for sample in samples:
        tiles = [_caption(tile, f'{sample.index}: {name}')
                 for name, tile in _tiles(sample, runs, background, ignore, thumb_px)]
        rows.append(np.hstack(tiles))
    width = max(row.shape[1] for row in rows)
    return np.vstack([np.pad(row, ((0, 2), (0, width - row.shape[1]), (0, 0)))
                      for row in rows])


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {path}')


def _plot_j(path: Path, report: dict) -> None:
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    curves = {name: js for name, js in report['timeline']['j'].items() if js}
    for name, js in curves.items():
        ax.plot(range(len(js)), [np.nan if j is None else j for j in js], marker='.',
                label='naive (upper bound)' if name == 'naive' else name)
    if curves:
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc='lower left')
    else:
        ax.text(0.5, 0.5, 'no ground truth: no J', ha='center', va='center',
                transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('frame')
    ax.set_ylabel('J (objects present, clip matching)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_latency(path: Path, report: dict) -> None:
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    series = {name: lat for name, lat in report['timeline']['latency_ms'].items() if lat}
    for name, lat in series.items():
        ax.hist(lat, bins=min(30, max(5, len(lat))), alpha=0.6, label=name)
    if series:
        ax.legend()
    else:
        ax.text(0.5, 0.5, 'no model run', ha='center', va='center', transform=ax.transAxes)
    ax.set_xlabel('latency per frame, ms')
    ax.set_ylabel('frames')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    json: Path
    markdown: Path
    overlays: Tuple[Path, ...]
    contact_sheet: Optional[Path]
    j_plot: Path
    latency_plot: Path


def write_report(out_dir: Path, info: ReplayInfo, runs: Sequence[MethodRun],
                 samples: Sequence[OverlaySample]) -> ReportFiles:
    """Write every report file under ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    overlay_dir = out_dir / 'overlays'
    overlay_dir.mkdir(parents=True, exist_ok=True)
    report = report_dict(info, runs)
    json_path = out_dir / 'report.json'
    json_path.write_text(json.dumps(report, indent=2) + '\n')
    md_path = out_dir / 'report.md'
    md_path.write_text(markdown(report))
    overlays = []
    for sample in samples:
        path = overlay_dir / f'frame_{sample.index:05d}.png'
        _write_png(path, overlay_panel(sample, runs, info.gt_background, info.gt_ignore))
        overlays.append(path)
    sheet = None
    if samples:
        sheet = overlay_dir / 'contact_sheet.png'
        _write_png(sheet, contact_sheet(samples, runs, info.gt_background, info.gt_ignore))
    j_plot, latency_plot = out_dir / 'j_over_time.png', out_dir / 'latency_hist.png'
    _plot_j(j_plot, report)
    _plot_latency(latency_plot, report)
    return ReportFiles(json_path, md_path, tuple(overlays), sheet, j_plot, latency_plot)
