"""The report of a ``sap_eval`` run: per clip and overall figures, object sizes, workers.

Aggregation over the clips (for every method label; clips without ground truth count only for
frames and latency):

* ``j``, ``f``: **object-weighted**: the mean, over every ground-truth object of every clip, of
  that object's J (F) over its frames (``report.json`` clip blocks list them under ``objects``),
  as DAVIS and 360VOS average over objects. ``j_and_f = (j + f) / 2``.
* ``j_and_f_clip_mean``: the plain mean of the clips' ``j_and_f`` (each clip counts once).
* ``id_switches``: the sum over clips; ``frames``, ``gt_objects``, ``pred_objects``: sums.
* ``j_poles``, ``fragmentation``, ``seam_consistency``: **frame-weighted**: the clips' values
  weighted by their frame counts, over the clips where the value is defined.
* ``semantic_miou`` (only where some clip had semantic ground truth and the method published
  class maps): the plain mean of the clips' mIoU (each clip counts once, its IoUs accumulated
  over its frames); ``semantic_class_iou``: per class, the mean over the clips where it has an
  IoU; ``class_switches``: the sum over clips; ``semantic_clips``: how many clips were scored;
  ``class_accuracy``: pooled over the clips' scored tracks (every track counts once).
* ``latency_ms_mean`` / ``latency_ms_p95``: over every frame of every clip (p95 with linear
  interpolation); ``frames_per_s`` = 1000 / ``latency_ms_mean`` (one method alone).
* ``by_size``: objects binned by their size on the sphere, the mean over the frames where the
  object is present of the share of the sphere's solid angle it covers (0..1; ``size_bins``
  gives the edges); per bin the object-weighted ``j``, ``f``, ``j_and_f`` and the object count.
* ``run``: ``elapsed_s`` the whole command (Ray start included), ``pool_s`` from starting the
  workers to the last clip of this run.
* ``workers``: per worker (of this run, reused clips excluded), clips, frames, busy seconds (the
  sum of its clips' wall times, every method included) and ``frames_per_s`` = frames / busy.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sap_ros.eval.dataset_clips import ClipFailure, ClipResult, EvalSpec
from sap_ros.eval.replay_methods import DESCRIPTIONS
from sap_ros.eval.replay_timeline import latency_stats

#: How the overall figures are computed (the module docstring without its title).
AGGREGATION = (__doc__ or '').split('\n\n', 1)[-1].strip()
#: Default edges of the object-size bins, as fractions of the sphere's solid angle (4 pi sr).
DEFAULT_SIZE_EDGES = (0.005, 0.05)
FRAME_WEIGHTED = ('j_poles', 'fragmentation', 'seam_consistency')
OVERALL_KEYS = ('clips', 'frames', 'gt_objects', 'j', 'f', 'j_and_f', 'j_and_f_clip_mean',
                'id_switches') + FRAME_WEIGHTED + ('latency_ms_mean', 'latency_ms_p95',
                                                   'frames_per_s')


def size_bins(edges: Sequence[float]) -> List[Dict[str, Any]]:
    """Bins from sorted edges (fractions of the sphere): names, lower and upper bounds.

    >>> [b['name'] for b in size_bins((0.005, 0.05))]
    ['small', 'medium', 'large']
    """
    bounds = [0.0, *edges, 1.0]
    names = (['small', 'medium', 'large'] if len(edges) == 2
             else [f'bin{k}' for k in range(len(bounds) - 1)])
    return [{'name': names[k], 'min_fraction': bounds[k], 'max_fraction': bounds[k + 1]}
            for k in range(len(bounds) - 1)]


def _mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


def _jf(j_values: Sequence[float], f_values: Sequence[float]) -> Dict[str, Optional[float]]:
    j, f = _mean(j_values), _mean(f_values)
    return {'j': j, 'f': f, 'j_and_f': None if j is None or f is None else (j + f) / 2.0}


def aggregate(results: Sequence[ClipResult], label: str,
              edges: Sequence[float] = DEFAULT_SIZE_EDGES) -> Dict[str, Any]:
    """The overall block of one method label (definitions in the module docstring)."""
    pairs = [(r, r.blocks[label]) for r in results if label in r.blocks]
    scored = [(r, b) for r, b in pairs if b.get('j') is not None or b.get('objects')]
    objects: List[Tuple[ClipResult, dict]] = [(r, o) for r, b in scored for o in b['objects']]
    out: Dict[str, Any] = {'clips': len(pairs), 'frames': sum(b['frames'] for _, b in pairs),
                           'gt_objects': len(objects),
                           'pred_objects': sum(b.get('pred_objects') or 0 for _, b in scored)}
    out.update(_jf([o['j'] for _, o in objects], [o['f'] for _, o in objects]))
    out['j_and_f_clip_mean'] = _mean([b['j_and_f'] for _, b in scored
                                      if b['j_and_f'] is not None])
    out['id_switches'] = sum(b['id_switches'] for _, b in scored) if scored else None
    for key in FRAME_WEIGHTED:
        defined = [(b[key], b['frames']) for _, b in scored if b.get(key) is not None]
        weight = sum(n for _, n in defined)
        out[key] = sum(v * n for v, n in defined) / weight if weight else None
    out.update(latency_stats([x for r, _ in pairs for x in r.latencies_ms.get(label, [])]))
    mean_ms = out['latency_ms_mean']
    out['frames_per_s'] = 1000.0 / mean_ms if mean_ms else None
    bins = size_bins(edges)
    by_size: Dict[str, Dict[str, Any]] = {b['name']: {'j': [], 'f': []} for b in bins}
    for r, o in objects:
        size = r.object_sizes.get(str(o['gt_id']), 0.0)
        name = bins[int(np.searchsorted(np.asarray(edges), size, side='right'))]['name']
        by_size[name]['j'].append(o['j'])
        by_size[name]['f'].append(o['f'])
    out['by_size'] = {name: {'objects': len(v['j']), **_jf(v['j'], v['f'])}
                      for name, v in by_size.items()}
    out.update(_semantic([b['semantic'] for _, b in pairs if b.get('semantic')]))
    return out


def _semantic(blocks: Sequence[dict]) -> Dict[str, Any]:
    """The overall semantic figures of one method (none when no clip was scored)."""
    if not blocks:
        return {}
    classes = dict.fromkeys(c for b in blocks for c in b['class_iou'])
    scored = [(b['class_accuracy'], b['tracks_scored']) for b in blocks
              if b.get('class_accuracy') is not None and b.get('tracks_scored')]
    tracks = sum(n for _, n in scored)
    return {'semantic_clips': len(blocks),
            'class_accuracy': sum(a * n for a, n in scored) / tracks if tracks else None,
            'semantic_miou': _mean([b['miou'] for b in blocks if b['miou'] is not None]),
            'class_switches': sum(b['class_switches'] for b in blocks),
            'semantic_class_iou': {c: _mean([b['class_iou'][c] for b in blocks
                                             if b['class_iou'].get(c) is not None])
                                   for c in classes}}


def worker_table(results: Sequence[ClipResult]) -> Dict[str, Dict[str, Any]]:
    """Clips, frames, busy seconds and frames per second of every worker."""
    table: Dict[str, Dict[str, Any]] = {}
    for r in results:
        row = table.setdefault(r.worker, {'clips': 0, 'frames': 0, 'busy_s': 0.0})
        row['clips'] += 1
        row['frames'] += r.frames
        row['busy_s'] += r.wall_s
    for row in table.values():
        row['frames_per_s'] = row['frames'] / row['busy_s'] if row['busy_s'] > 0 else None
    return dict(sorted(table.items()))


def _clip_entry(result: ClipResult, reused: bool) -> Dict[str, Any]:
    entry = result.to_dict()
    entry['methods'] = entry.pop('blocks')
    entry.update(status='ok', reused=reused)
    return entry


def report_dict(dataset: Path, spec: EvalSpec, fresh: Sequence[ClipResult],
                reused: Sequence[ClipResult], failures: Sequence[ClipFailure],
                retries: Sequence[Dict[str, Any]], run: Dict[str, Any],
                edges: Sequence[float] = DEFAULT_SIZE_EDGES) -> Dict[str, Any]:
    """The content of report.json."""
    results = sorted([*fresh, *reused], key=lambda r: r.clip)
    reused_names = {r.clip for r in reused}
    clips = [_clip_entry(r, r.clip in reused_names) for r in results]
    clips += [dict(f.__dict__, status='failed') for f in failures]
    labels = [m.label for m in spec.methods]
    return {
        'tool': 'sap_eval', 'dataset': str(dataset), 'spec_digest': spec.digest(),
        'spec': spec.to_dict(),
        'methods': {m.label: {'method': m.method.value, 'overrides': dict(m.overrides),
                              'what': DESCRIPTIONS[m.method]} for m in spec.methods},
        'overall': {label: aggregate(results, label, edges) for label in labels},
        'size_bins': size_bins(edges), 'aggregation': AGGREGATION,
        'clips': sorted(clips, key=lambda c: c['clip']),
        'failures': [dict(f.__dict__) for f in failures], 'retries': list(retries),
        'workers': worker_table(fresh), 'run': run}


def _fmt(value: Any) -> str:
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


def markdown(report: Dict[str, Any]) -> str:
    """report.md from the content of report.json."""
    labels = list(report['methods'])
    run = report['run']
    lines = ['# sap_eval report', '',
             f"- dataset: `{report['dataset']}`; configuration digest `{report['spec_digest']}`",
             f"- clips: {run['evaluated']} evaluated now, {run['reused']} reused from earlier "
             f"runs, {run['failed']} failed; {run['workers']} workers; "
             f"{run['elapsed_s']:.1f} s in all, {run['pool_s']:.1f} s with the workers",
             '- methods: ' + '; '.join(
                 f"`{label}` = {m['method']}" + ''.join(f', {k}={v}'
                                                       for k, v in m['overrides'].items())
                 for label, m in report['methods'].items()), '',
             '## Overall', '', '| metric | ' + ' | '.join(labels) + ' |',
             '|---|' + '---:|' * len(labels)]
    for key in OVERALL_KEYS:
        lines.append(f'| {key} | ' + ' | '.join(_fmt(report['overall'][m][key])
                                                for m in labels) + ' |')
    semantic = [m for m in labels if 'semantic_miou' in report['overall'][m]]
    if semantic:
        lines += ['', '## Semantic classes (methods that publish class maps)', '',
                  '| metric | ' + ' | '.join(semantic) + ' |', '|---|' + '---:|' * len(semantic)]
        for key in ('semantic_clips', 'semantic_miou', 'class_accuracy', 'class_switches'):
            lines.append(f'| {key} | ' + ' | '.join(_fmt(report['overall'][m][key])
                                                    for m in semantic) + ' |')
        for cls in report['overall'][semantic[0]]['semantic_class_iou']:
            lines.append(f'| IoU {cls} | ' + ' | '.join(
                _fmt(report['overall'][m]['semantic_class_iou'].get(cls)) for m in semantic)
                + ' |')
    lines += ['', '## J&F by object size on the sphere (objects)', '',
              '| size (share of the sphere) | ' + ' | '.join(labels) + ' |',
              '|---|' + '---:|' * len(labels)]
    for b in report['size_bins']:
        cells = [report['overall'][m]['by_size'][b['name']] for m in labels]
        lines.append(f"| {b['name']} ({b['min_fraction']:.2%} to {b['max_fraction']:.2%}) | "
                     + ' | '.join(f"{_fmt(c['j_and_f'])} ({c['objects']})" for c in cells)
                     + ' |')
    lines += ['', '## Clips (J&F / ID switches per method)', '',
              '| clip | status | frames | ' + ' | '.join(labels) + ' |',
              '|---|---|---:|' + '---:|' * len(labels)]
    for clip in report['clips']:
        if clip['status'] != 'ok':
            lines.append(f"| {clip['clip']} | failed | | " + ' | '.join('' for _ in labels)
                         + ' |')
            continue
        cells = [clip['methods'][m] for m in labels]
        status = 'ok (reused)' if clip['reused'] else f"ok ({clip['worker']})"
        lines.append(f"| {clip['clip']} | {status} | {clip['frames']} | " + ' | '.join(
            f"{_fmt(c['j_and_f'])} / {_fmt(c['id_switches'])}" for c in cells) + ' |')
    if report['failures']:
        lines += ['', '## Failed clips', '']
        lines += [f"- `{f['clip']}` ({f['kind']}): {f['error']}" for f in report['failures']]
    if report['retries']:
        lines += ['', '## Retries (a worker died while evaluating the clip)', '']
        for r in report['retries']:
            steps = '; '.join(f"attempt {a['attempt']} on {a['worker']} (pid {a['pid']}, "
                              f"{a['node']}): {a['outcome']}" for a in r['attempts'])
            lines.append(f"- `{r['clip']}`: {steps}")
    lines += ['', '## Workers', '', '| worker | clips | frames | busy s | frames/s |',
              '|---|---:|---:|---:|---:|']
    for name, row in report['workers'].items():
        lines.append(f"| {name} | {row['clips']} | {row['frames']} | {row['busy_s']:.1f} | "
                     f"{_fmt(row['frames_per_s'])} |")
    lines += ['', '## How the figures are aggregated', '', report['aggregation'].strip(), '']
    return '\n'.join(lines)


def write_dataset_report(out: Path, report: Dict[str, Any]) -> Tuple[Path, Path]:
    """Write ``out/report.json`` and ``out/report.md``; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / 'report.json', out / 'report.md'
    json_path.write_text(json.dumps(report, indent=2) + '\n')
    md_path.write_text(markdown(report))
    return json_path, md_path
