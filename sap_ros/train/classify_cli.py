"""``sap_train classify``: arguments, the run, and what it writes (see ``train.classify``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import Any, Dict

import torch
from tqdm import tqdm

from sap_ros.config import PipelineConfig
from sap_ros.engine.class_head import save_head
from sap_ros.errors import SapError
from sap_ros.eval.semantic_gt import ClassMap
from sap_ros.train import NANO_CONFIG

HEAD = 'head.pt'
BASELINE = 'baseline_head.pt'
METRICS = 'metrics.json'


def add_classify(sub: argparse._SubParsersAction) -> None:
    """The ``classify`` sub-command."""
    p = sub.add_parser('classify', help="train the classifier head (classifier.kind "
                       "sam2_head) on SAM2's frozen features of an export's objects",
                       description='Train a class head on the mask-pooled SAM2 features and '
                                   'object pointers of every exported object (SAM2 frozen, '
                                   'features cached in --out).')
    p.add_argument('--data', required=True, type=Path, help='a sap_train data export with '
                   'classes (classes.json) or with --class-map')
    p.add_argument('--val', type=Path, help='an export of held-out scenes (scores, confusion)')
    p.add_argument('--out', required=True, type=Path, help='run folder: head.pt, '
                   'baseline_head.pt, metrics.json, confusion.*, features*.pt (the cache)')
    p.add_argument('--model-config', default=str(NANO_CONFIG),
                   help='model.config of the node (sam2.1_hiera_t ... or a SAM2 model .yaml); '
                        'default: the nano yaml shipped for tests and CPU experiments')
    p.add_argument('--checkpoint', help='model.checkpoint of the node; default: random '
                   'weights of --model-seed (model.allow_random_weights)')
    p.add_argument('--model-seed', type=int, default=0, help='model.seed of random weights')
    p.add_argument('--class-map', type=Path, help='instance id -> class JSON for exports '
                   'without classes.json (as sap_replay --gt-class-map)')
    p.add_argument('--classes', help="comma-separated class names of the head (default: all "
                   "the export's, in its order, so ids match its semantic ground truth)")
    p.add_argument('--hidden', type=int, default=0, help='hidden layer width (0: linear)')
    p.add_argument('--epochs', type=int, default=100)
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--lr', type=float, default=1e-2)
    p.add_argument('--weight-decay', type=float, default=1e-4)
    p.add_argument('--balanced', action='store_true', help='class-balanced cross-entropy')
    p.add_argument('--no-standardize', dest='standardize', action='store_false',
                   help='train on the raw head inputs; default: on inputs z-scored with the '
                        "training sightings' mean and spread, folded into the head's first "
                        'layer on saving (the head file reads the same inputs either way)')
    p.add_argument('--switch-margin', type=float,
                   default=PipelineConfig().classifier.switch_margin,
                   help="classifier.switch_margin of the fusion scored (default: the node's)")
    p.add_argument('--seed', type=int, default=0, help='seed of the head and batches')
    p.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    p.add_argument('--device', default='cpu', help='device of SAM2 for the features')


def _features(args: argparse.Namespace, root: Path, name: str) -> Any:
    from sap_ros.train.class_features import load_or_extract, model_config
    from sap_ros.train.data import load_meta
    spec, records = load_meta(root)
    config = model_config(args.model_config, args.checkpoint, spec.size_px, args.model_seed,
                          args.device)
    with tqdm(total=len(records), unit='video', desc=f'features {root.name}',
              file=sys.stderr) as bar:
        return load_or_extract(root, args.out / name, config, on_video=lambda _: bar.update(1),
                               log=lambda m: print(m, file=sys.stderr))


def run_classify(args: argparse.Namespace) -> Dict[str, Any]:
    """Features, training, held-out scores; writes the run folder; returns the metrics."""
    from sap_ros.train import class_eval, classify
    from sap_ros.train.class_plots import write_confusion
    torch.set_num_threads(max(1, int(args.threads)))
    spec = classify.HeadSpec(args.hidden, args.epochs, args.batch_size, args.lr,
                             args.weight_decay, args.balanced, args.seed, args.standardize)
    spec.check()
    class_map = None if args.class_map is None else ClassMap.load(args.class_map)
    export_names, train_classes = classify.export_classes(args.data, class_map)
    names = classify.head_classes(export_names, args.classes)
    val_classes = None
    if args.val is not None:
        val_names, val_classes = classify.export_classes(args.val, class_map)
        if tuple(val_names) != tuple(export_names):
            raise SapError(f'--val names classes {list(val_names)}, --data {list(export_names)}')
    args.out.mkdir(parents=True, exist_ok=True)
    train = _features(args, args.data, 'features.pt')
    targets = classify.sighting_targets(train, train_classes, export_names, names)
    keep = targets >= 0
    inputs = classify.inputs_of(train)
    pointer_dim = int(train.pointers.shape[1])
    with tqdm(total=spec.epochs, unit='epoch', desc='head', file=sys.stderr) as bar:
        def on_epoch(_: int, loss: float) -> None:
            bar.set_postfix(loss=f'{loss:.3f}')
            bar.update(1)
        head, losses = classify.train_head(inputs[keep], targets[keep], len(names),
                                           pointer_dim, spec, on_epoch)
    tracks = class_eval.track_targets(train, targets)
    if not tracks:
        raise SapError('no training object has a class of the head')
    majority = class_eval.majority_of_tracks(tracks, len(names))
    save_head(args.out / HEAD, head, names)
    save_head(args.out / BASELINE, classify.baseline_head(
        int(train.features.shape[1]), pointer_dim, len(names), majority), names)
    metrics: Dict[str, Any] = {
        'class_names': list(names), 'losses': losses, 'majority_class': names[majority],
        'train': class_eval.object_accuracies(train, targets, classify.predict(head, inputs),
                                              majority, args.switch_margin),
        'skipped_sightings': int((~keep).sum()), 'head': str(args.out / HEAD)}
    scored, where = train, 'training data (no --val)'
    scored_targets = targets
    if args.val is not None and val_classes is not None:
        scored, where = _features(args, args.val, 'features_val.pt'), f'held out ({args.val})'
        scored_targets = classify.sighting_targets(scored, val_classes, export_names, names)
        metrics['val'] = class_eval.object_accuracies(
            scored, scored_targets, classify.predict(head, classify.inputs_of(scored)),
            majority, args.switch_margin)
    probabilities = classify.predict(head, classify.inputs_of(scored))
    known = scored_targets >= 0
    matrix = classify.confusion(scored_targets[known].numpy(),
                                probabilities.argmax(dim=1)[known].numpy(), len(names))
    true, fused = class_eval.fused_confusion(scored, scored_targets, probabilities,
                                             args.switch_margin)
    has = fused >= 0
    fused_matrix = classify.confusion(true[has], fused[has], len(names))
    metrics['confusion'] = {'scored_on': where, 'sightings': matrix.tolist(),
                            'fused_tracks': fused_matrix.tolist(),
                            'recall': classify.per_class(matrix, names)}
    write_confusion(args.out, matrix, fused_matrix, names, where)
    (args.out / METRICS).write_text(json.dumps(metrics, indent=1))
    scores = metrics.get('val', metrics['train'])
    print(class_eval.side_by_side(scores, names, where))
    print(f'loss {losses[0]:.3f} -> {losses[-1]:.3f}; head: {args.out / HEAD} '
          f'(classifier.kind:=sam2_head classifier.head:={args.out / HEAD}); baseline '
          f'({names[majority]} always): {args.out / BASELINE}')
    return metrics
