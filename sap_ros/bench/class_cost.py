"""What classes cost a frame: the engine with and without ``classifier.kind: sam2_head``.

``python -m sap_ros.bench.class_cost`` steps two copies of the same engine (same config, same
SAM2 weights, the same synthetic frames, alternating frame by frame) on a ``sap_synth`` scene:
one without a classifier, one with a :class:`~sap_ros.engine.class_head.Sam2Head` of
``--classes`` outputs (``--hidden`` units, random weights: the cost does not depend on them). It
prints, side by side, the frame time of both, their difference and ratio, the time spent in the
class stage itself (sightings pooled and classified per patch, the fused decision, the records
labelled; CUDA synchronised around each part, so its GPU work is inside), the sightings per
frame, and the host reads of one frame of each (:func:`~sap_ros.bench.probes.count_host_syncs`):
with the classes riding in the frame's one download the two should be equal.

SAM2 runs with random weights unless ``--checkpoint`` is given; discovery's thresholds are 0 by
default (``--set`` to change them) so that random weights find objects to classify. A benchmark:
it prints and asserts nothing.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
import json
from pathlib import Path
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from sap_ros.bench.probes import count_host_syncs
from sap_ros.config import PipelineConfig, parse_override
from sap_ros.engine.class_head import Sam2Head, Sam2HeadClassifier
from sap_ros.engine.class_stage import segmenter_dims
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.synth.scene import SceneSpec, SynthScene

#: What random weights need to find objects at all (overridable with --set).
DEFAULT_SETS = ('discovery.pred_iou_thresh=0', 'discovery.stability_thresh=0',
                'discovery.every_n_frames=1')


@dataclass(frozen=True)
class ClassCost:
    """Mean figures per timed frame (the first frame of each engine is a warm-up)."""

    device: str
    frame_path: str
    image_size: int
    erp_width: int
    frames: int
    classes: int
    hidden: int
    frame_ms_none: float
    frame_ms_head: float
    added_ms: float
    ratio: float
    class_stage_ms: float
    sightings_per_frame: float
    objects_per_frame: float
    host_reads_none: int
    host_reads_head: int
    same_labels: bool


class _StageTimer:
    """Wall time spent inside some methods of objects, CUDA synchronised around each call.

    ``syncing`` False leaves the CUDA waits out (while host reads are counted: the timer's own
    waits are not the engine's).
    """

    def __init__(self, device: torch.device) -> None:
        self.total_s = 0.0
        self.syncing = device.type == 'cuda'

    def wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.syncing:
                torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if self.syncing:
                    torch.cuda.synchronize()
                self.total_s += time.perf_counter() - start

        setattr(owner, name, timed)


def _head_classifier(plain: SapPipeline, classes: int, hidden: int) -> Sam2HeadClassifier:
    """A random head for the feature sizes of ``plain``'s SAM2, on its device."""
    dims = segmenter_dims(plain.segmenter)
    if dims is None:
        raise SystemExit('class_cost: this segmenter does not expose its feature sizes')
    head = Sam2Head(dims[0], dims[1], classes, hidden).to(plain.path_device)
    return Sam2HeadClassifier(head, [f'class{k}' for k in range(1, classes + 1)])


def measure(config: PipelineConfig, frames: Sequence[np.ndarray], classes: int = 20,
            hidden: int = 256, progress: Callable[[str], None] = lambda _: None) -> ClassCost:
    """Both engines on ``frames`` (the first one a warm-up), alternating; see the module doc."""
    plain = SapPipeline(config)
    classed = SapPipeline(config, classifier=_head_classifier(plain, classes, hidden))
    stage = classed.classes
    assert stage is not None
    device = torch.device(plain.path_device)
    timer = _StageTimer(device)
    for owner, name in ((stage, 'observe'), (stage, 'label'), (stage.fusion, 'decide'),
                        (stage.fusion, 'on_device'), (stage.fusion, 'on_host')):
        timer.wrap(owner, name)
    sightings: List[int] = []
    observe = stage.observe

    def counted(view: int, segmenter: Any, results: Sequence[Any], *rest: Any) -> Any:
        sightings[-1] += len(results)
        return observe(view, segmenter, results, *rest)

    stage.observe = counted  # type: ignore[method-assign,assignment]
    times: Dict[str, List[float]] = {'none': [], 'head': []}
    objects: List[int] = []
    same = True
    stage_s: List[float] = []
    for index, rgb in enumerate(frames):
        progress(f'frame {index + 1}/{len(frames)}')
        start = time.perf_counter()
        a = plain.step(rgb)
        mid = time.perf_counter()
        sightings.append(0)
        before = timer.total_s
        b = classed.step(rgb)
        end = time.perf_counter()
        same = same and bool(np.array_equal(a.labels, b.labels))
        if index == 0:
            sightings.pop()
            continue
        times['none'].append(mid - start)
        times['head'].append(end - mid)
        stage_s.append(timer.total_s - before)
        objects.append(len(b.objects))
    rgb = frames[-1]
    timer.syncing = False
    with count_host_syncs() as none_reads:
        plain.step(rgb)
    with count_host_syncs() as head_reads:
        classed.step(rgb)
    none_ms = 1000.0 * float(np.mean(times['none']))
    head_ms = 1000.0 * float(np.mean(times['head']))
    result = ClassCost(
        device=str(device), frame_path=plain.path_kind.value,
        image_size=config.model.image_size, erp_width=int(frames[0].shape[1]),
        frames=len(times['none']), classes=classes, hidden=hidden,
        frame_ms_none=none_ms, frame_ms_head=head_ms, added_ms=head_ms - none_ms,
        ratio=head_ms / none_ms, class_stage_ms=1000.0 * float(np.mean(stage_s)),
        sightings_per_frame=float(np.mean(sightings)), objects_per_frame=float(np.mean(objects)),
        host_reads_none=none_reads.count, host_reads_head=head_reads.count, same_labels=same)
    plain.close()
    classed.close()
    return result


def format_table(r: ClassCost) -> str:
    """The figures side by side, as printed."""
    return '\n'.join([
        f'class cost: {r.device}, frame path {r.frame_path}, SAM2 at {r.image_size} px, '
        f'ERP {r.erp_width} px, {r.frames} timed frames, head {r.classes} classes '
        f'(hidden {r.hidden})',
        f'  frame ms      none {r.frame_ms_none:.1f}   sam2_head {r.frame_ms_head:.1f}   '
        f'added {r.added_ms:+.1f}   ratio {r.ratio:.3f}',
        f'  class stage   {r.class_stage_ms:.1f} ms a frame ({r.sightings_per_frame:.0f} '
        f'sightings, {r.objects_per_frame:.0f} objects)',
        f'  host reads    none {r.host_reads_none}   sam2_head {r.host_reads_head} (one frame)',
        f'  label maps    {"identical" if r.same_labels else "DIFFER"} with and without classes',
    ])


def _config(sets: Sequence[str], checkpoint: Optional[str]) -> PipelineConfig:
    """The config of ``NAME=VALUE`` items over the defaults.

    Random weights unless a checkpoint is given. Not ``sap_ros.eval``'s ``build_config``:
    ``make bench-gpu`` installs no bag reader.
    """
    flat: Dict[str, Any] = dict(parse_override(item) for item in sets)
    if checkpoint is not None:
        flat['model.checkpoint'] = checkpoint
    else:
        flat['model.allow_random_weights'] = True
    return PipelineConfig.from_flat(flat)


def build_parser() -> argparse.ArgumentParser:
    """``--help`` explains every option."""
    p = argparse.ArgumentParser(prog='python -m sap_ros.bench.class_cost',
                                description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--frames', type=int, default=4, help='frames (the first is a warm-up)')
    p.add_argument('--erp-width', type=int, default=1024, help='ERP width of the scene')
    p.add_argument('--image-size', type=int, default=128, help='model.image_size')
    p.add_argument('--model-config', default=None, help="model.config (default: the node's)")
    p.add_argument('--checkpoint', default=None, help='SAM2 checkpoint (default: random '
                   'weights)')
    p.add_argument('--device', default='auto', help='model.device')
    p.add_argument('--classes', type=int, default=20, help='outputs of the head')
    p.add_argument('--hidden', type=int, default=256, help='hidden units of the head (0: '
                   'linear)')
    p.add_argument('--seed', type=int, default=0, help='sap_synth scene seed')
    p.add_argument('--threads', type=int, default=1, help='torch threads')
    p.add_argument('--set', dest='overrides', action='append', default=[],
                   metavar='NAME=VALUE', help='any node parameter (after '
                   + ', '.join(DEFAULT_SETS) + ')')
    p.add_argument('--json', type=Path, help='write the figures as JSON')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run and print; 0 on success."""
    args = build_parser().parse_args(argv)
    if args.frames < 2:
        raise SystemExit('class_cost: --frames must be >= 2 (the first is a warm-up)')
    sets = [*DEFAULT_SETS, f'model.image_size={args.image_size}', f'model.device={args.device}',
            *([f'model.config={args.model_config}'] if args.model_config else []),
            *args.overrides]
    config = _config(sets, args.checkpoint)
    scene = SynthScene(SceneSpec(seed=args.seed))
    frames = [scene.render(pose, args.erp_width)[0] for pose in scene.trajectory(args.frames)]
    torch.set_num_threads(args.threads)
    result = measure(config, frames, args.classes, args.hidden,
                     progress=lambda m: print(f'class_cost: {m}', file=sys.stderr))
    print(format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
