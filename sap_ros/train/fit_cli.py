"""``sap_train fit`` and ``sap_train eval``: arguments and what runs them."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

from sap_ros.errors import SapError
from sap_ros.train import NANO_CONFIG
from sap_ros.train.evaluate import EvalSpec


def _key_values(items: List[str], option: str) -> Tuple[Tuple[str, Any], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition('=')
        if not sep:
            raise SapError(f'{option} {item!r}: expected key=value')
        pairs.append((key, yaml.safe_load(value)))
    return tuple(pairs)


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument('--model-config', default=str(NANO_CONFIG),
                   help='model.config name (sam2.1_hiera_t ...) or a SAM2 model .yaml; '
                        'default: the nano yaml shipped for tests and CPU experiments')
    p.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    p.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    p.add_argument('--eval-patches', type=int, default=64,
                   help='held-out patches scored with one click (default 64)')
    p.add_argument('--eval-windows', type=int, default=16,
                   help='held-out windows scored by propagation (default 16)')


def add_fit(sub: argparse._SubParsersAction) -> None:
    """The ``fit`` sub-command."""
    p = sub.add_parser('fit', help="train SAM2 on patch videos (upstream's SAM2Train + loss)",
                       description='Train along the trajectory. A run started again with the '
                                   'same --out continues from its last checkpoint.')
    p.add_argument('--data', required=True, help='a sap_train data export (training)')
    p.add_argument('--val', help='a sap_train data export of held-out scenes (evaluations)')
    p.add_argument('--out', required=True, help='run folder: checkpoint.pt, model.pt, '
                   'metrics.jsonl, curves.png')
    _add_model(p)
    p.add_argument('--init', help='weights to start from (e.g. the official checkpoint of '
                   '--model-config); default: random init')
    p.add_argument('--train', default='default',
                   help="comma-separated module prefixes to train; 'default' (SAP: all but "
                        "the image encoder) or 'all' (from scratch)")
    p.add_argument('--steps', type=int, default=200)
    p.add_argument('--minutes', type=float, help='stop after this long (with a checkpoint)')
    p.add_argument('--batch-size', type=int, default=1, help='videos per step, all workers '
                   'together (kept when --workers changes)')
    p.add_argument('--num-frames', type=int, default=4, help='patches per training window')
    p.add_argument('--max-objects', type=int, default=3, help='objects per window (upstream 3)')
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--weight-decay', type=float, default=0.1)
    p.add_argument('--warmup', type=int, default=0, help='linear warm-up steps')
    p.add_argument('--clip', type=float, help="gradient max norm (default: upstream's 0.1)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--prompt', action='append', default=[], metavar='KEY=VALUE',
                   help="override one of upstream's fine-tune prompt-sampling settings, e.g. "
                        'prob_to_use_pt_input_for_train=1.0 (repeatable)')
    p.add_argument('--model-set', action='append', default=[], metavar='KEY=VALUE',
                   help='override a model yaml value, e.g. memory_attention.layer.dropout=0.0')
    p.add_argument('--loss-weights', choices=('uniform', 'distortion'), default='uniform',
                   help='distortion: weight patch pixels by their solid angle (PanoSAM2 idea, '
                        'unmeasured with real weights)')
    p.add_argument('--checkpoint-every', type=int, default=50)
    p.add_argument('--eval-every', type=int, default=0, help='held-out evaluation every N '
                   'steps (0: before and after only)')
    p.add_argument('--workers', type=int, default=0,
                   help='0: train in this process; N >= 1: N Ray Train workers (DDP)')
    p.add_argument('--gpus-per-worker', type=float, default=0.0)
    p.add_argument('--address', help='Ray cluster address (ray://host:port); default: local')


def add_eval(sub: argparse._SubParsersAction) -> None:
    """The ``eval`` sub-command."""
    p = sub.add_parser('eval', help='held-out patch IoU of checkpoints (one click, propagation)')
    p.add_argument('--data', required=True, help='a sap_train data export of held-out scenes')
    p.add_argument('--checkpoint', action='append', default=[],
                   help='a trained file (repeatable); none: the random init of --seed')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--num-frames', type=int, default=4, help='patches per propagation window')
    _add_model(p)


def fit_config(args: argparse.Namespace) -> Any:
    """The :class:`FitConfig` of parsed ``fit`` arguments."""
    from sap_ros.train.fit import FitConfig
    return FitConfig(
        data=args.data, out=args.out, val=args.val, model_config=args.model_config,
        init=args.init, train=tuple(t for t in args.train.split(',') if t),
        steps=args.steps, batch_size=args.batch_size, num_frames=args.num_frames,
        max_objects=args.max_objects, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup, clip=args.clip, seed=args.seed, threads=args.threads,
        device=args.device, prompts=_key_values(args.prompt, '--prompt'),
        model_set=tuple(args.model_set), loss_weights=args.loss_weights,
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
        eval=EvalSpec(patches=args.eval_patches, windows=args.eval_windows,
                      num_frames=args.num_frames), minutes=args.minutes)


def run_fit(args: argparse.Namespace) -> int:
    """Train locally or on Ray Train; write the curves; print where the weights are."""
    from sap_ros.train.fit import METRICS, WEIGHTS, run
    from sap_ros.train.plots import plot
    cfg = fit_config(args)
    if args.workers >= 1 or args.address:
        from sap_ros.train.ray_fit import run_on_ray
        result = run_on_ray(cfg, max(1, args.workers), args.gpus_per_worker, args.address)
    else:
        result = run(cfg)
    out = Path(cfg.out)
    if (out / METRICS).is_file():
        plot(out / METRICS, out / 'curves.png')
    for step, scores in sorted(result.get('eval', {}).items()):
        print(f'step {step}: held-out one-click best-of-3 IoU '
              f'{scores["one_click_best_of_3"]:.3f}, propagation IoU {scores["propagation"]:.3f}'
              f' (object presence right on {scores["presence"]:.0%} of the later patches)')
    if result['steps'] < cfg.steps:
        print(f'stopped at step {result["steps"]} of {cfg.steps}: run again with the same '
              f'--out to continue')
    if (out / WEIGHTS).is_file():
        print(f'weights: {out / WEIGHTS} (model.config:={cfg.model_config} '
              f'model.checkpoint:={out / WEIGHTS})')
    return 0


def run_eval(args: argparse.Namespace) -> Dict[str, Any]:
    """Held-out scores of every ``--checkpoint`` (or of the random init)."""
    import torch

    from sap_ros.engine.sam2_checkpoint import read_state_dict
    from sap_ros.sphere.torch_device import resolve_device
    from sap_ros.train.evaluate import evaluate
    from sap_ros.train.model import build_train_model
    from sap_ros.train.videos import PatchVideos
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    videos = PatchVideos(Path(args.data))
    spec = EvalSpec(patches=args.eval_patches, windows=args.eval_windows,
                    num_frames=args.num_frames)
    results: Dict[str, Any] = {}
    for name in args.checkpoint or [None]:
        model = build_train_model(args.model_config, videos.spec.size_px, args.seed)
        if name is not None:
            model.load_state_dict(read_state_dict(Path(name)), strict=True)
        label = name or f'random init (seed {args.seed})'
        results[label] = evaluate(model.to(device), videos, spec, device)
    return results
