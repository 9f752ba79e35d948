"""``sap_train classify``: train the runtime's ``sam2_head`` on an export's sightings.

SAM2 stays frozen: the sightings' features are computed once
(:mod:`sap_ros.train.class_features`) and a :class:`~sap_ros.engine.class_head.Sam2Head` (linear,
or one hidden layer) learns their classes with cross-entropy (optionally class-balanced:
each class weighted by the inverse of its share of the training sightings) and AdamW, on
:func:`~sap_ros.engine.class_head.head_inputs` as the runtime builds them. The run folder gets:

* ``head.pt``: the head file (``classifier.kind: sam2_head``, ``classifier.head: head.pt``);
* ``baseline_head.pt``: a head that always answers the training set's majority class (the
  baseline, for the same ``sap_replay`` run with it in place of ``head.pt``);
* ``metrics.json`` (losses per epoch, held-out scores), ``confusion.csv`` / ``.json`` /
  ``.png`` (held-out sightings, rows: true class, columns: predicted).

Held-out scores (:mod:`sap_ros.train.class_eval`): object-level class accuracy of the
per-sighting argmax, of the class fused per object track with the runtime's
:class:`~sap_ros.engine.class_fusion.ClassFusion`, and of the majority-class baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sap_ros.engine.class_head import Sam2Head, head_inputs
from sap_ros.errors import SapError
from sap_ros.eval.semantic_gt import ClassMap
from sap_ros.train.class_features import SightingSet
from sap_ros.train.classes import VideoClasses, load_classes, mapped_classes
from sap_ros.train.data import load_meta


@dataclass(frozen=True)
class HeadSpec:
    """How the head is trained."""

    hidden: int = 0            # 0: linear
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-2
    weight_decay: float = 1e-4
    balanced: bool = False     # class-balanced cross-entropy
    seed: int = 0
    standardize: bool = True   # train on z-scored inputs, folded into the first layer

    def check(self) -> None:
        """Reject settings that cannot train, naming the option."""
        if self.hidden < 0 or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise SapError('--hidden must be >= 0, --epochs and --batch-size >= 1, --lr > 0')


def export_classes(root: Path, class_map: Optional[ClassMap]
                   ) -> Tuple[Tuple[str, ...], VideoClasses]:
    """The class names and per-video object classes of an export (``classes.json`` or a map)."""
    if class_map is None:
        return load_classes(root)
    _, records = load_meta(root)
    return class_map.class_names, mapped_classes(class_map, {r.name: r.object_ids
                                                             for r in records})


def head_classes(export_names: Sequence[str], wanted: Optional[str]) -> Tuple[str, ...]:
    """The head's class list: ``--classes a,b`` (each one of the export's), or all of them."""
    if wanted is None:
        return tuple(export_names)
    names = tuple(n.strip() for n in wanted.split(',') if n.strip())
    unknown = [n for n in names if n not in export_names]
    if not names or unknown or len(set(names)) != len(names):
        problem = f'unknown class {unknown[0]!r}' if unknown else 'needs distinct names'
        raise SapError(f"--classes {wanted!r}: {problem} (the export's classes: "
                       f'{", ".join(export_names)})')
    return names


def sighting_targets(sightings: SightingSet, classes: VideoClasses,
                     export_names: Sequence[str], names: Sequence[str]) -> torch.Tensor:
    """``(M,)`` head class index (0-based) of every sighting; -1: no class or not in ``names``."""
    index = {export_names.index(n) + 1: k for k, n in enumerate(names)}
    out = []
    for v, o in zip(sightings.video.tolist(), sightings.obj.tolist()):
        cls = classes.get(sightings.videos[v], {}).get(o, 0)
        out.append(index.get(cls, -1))
    return torch.tensor(out, dtype=torch.long)


def inputs_of(sightings: SightingSet) -> torch.Tensor:
    """The head's inputs, as the runtime builds them."""
    return head_inputs(sightings.features, sightings.pointers)


def class_weights(targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over the training sightings); absent classes: 0."""
    counts = torch.bincount(targets, minlength=n_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * n_classes), 0.0)
    return weights


def train_head(inputs: torch.Tensor, targets: torch.Tensor, n_classes: int, pointer_dim: int,
               spec: HeadSpec, on_epoch: Optional[Callable[[int, float], None]] = None
               ) -> Tuple[Sam2Head, List[float]]:
    """Fit a head on ``(inputs, targets)``; returns it and the mean loss of every epoch."""
    spec.check()
    if not len(targets):
        raise SapError('no training sighting has a class of the head: check --classes and the '
                       "export's classes")
    torch.manual_seed(spec.seed)
    head = Sam2Head(int(inputs.shape[1]) - pointer_dim, pointer_dim, n_classes, spec.hidden)
    if spec.standardize:
        mean, scale = input_standardization(inputs)
        inputs = (inputs - mean) / scale
    optimiser = torch.optim.AdamW(head.parameters(), lr=spec.lr,
                                  weight_decay=spec.weight_decay)
    weight = class_weights(targets, n_classes) if spec.balanced else None
    generator = torch.Generator().manual_seed(spec.seed)
    losses = []
    head.train()
    for epoch in range(spec.epochs):
        order = torch.randperm(len(targets), generator=generator)
        total = 0.0
        for start in range(0, len(order), spec.batch_size):
            batch = order[start:start + spec.batch_size]
            loss = F.cross_entropy(head(inputs[batch]), targets[batch], weight=weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(order))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    if spec.standardize:
        fold_standardization(head, mean, scale)
    return head.eval(), losses


def input_standardization(inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-input mean and scale of the training inputs (the z-scoring the head trains on).

    The scale is the standard deviation, floored at 1 % of the median of the varying inputs'.
    An input that does not vary in training (spread <= 1e-6 of the largest; e.g. an object
    pointer a model gives alike for every object) gets an infinite scale: the head reads it as
    0 in training and its weights fold to 0, so a change of it at run time, which training
    never saw, cannot swing the logits.
    """
    mean = inputs.mean(dim=0)
    if len(inputs) < 2:
        return mean, torch.ones_like(mean)
    std = inputs.std(dim=0)
    varying = std > 1e-6 * float(std.max())
    if not bool(varying.any()):
        return mean, torch.ones_like(mean)
    floor = 0.01 * float(std[varying].median())
    return mean, torch.where(varying, std.clamp(min=floor), torch.full_like(std, float('inf')))


def fold_standardization(head: Sam2Head, mean: torch.Tensor, scale: torch.Tensor) -> None:
    """Fold ``(x - mean) / scale`` into the head's first linear layer, in place.

    ``W (x - m) / s + b = (W / s) x + (b - (W / s) m)``: the saved head reads the runtime's
    :func:`~sap_ros.engine.class_head.head_inputs` directly, so the head file and the node
    stay as they are.
    """
    first = next(m for m in head.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        first.weight.div_(scale[None, :])
        first.bias.sub_(first.weight @ mean)


def baseline_head(feature_dim: int, pointer_dim: int, n_classes: int, majority: int
                  ) -> Sam2Head:
    """A linear head whose answer is always class ``majority`` (0-based): the baseline."""
    head = Sam2Head(feature_dim, pointer_dim, n_classes)
    layer = head.layers
    assert isinstance(layer, torch.nn.Linear)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.bias[majority] = 10.0
    return head.eval()


def predict(head: Sam2Head, inputs: torch.Tensor) -> torch.Tensor:
    """``(M, K)`` softmax probabilities."""
    with torch.no_grad():
        return torch.softmax(head(inputs), dim=1)


def confusion(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K, K)`` counts, rows: true class, columns: predicted."""
    out = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(out, (true, predicted), 1)
    return out


def per_class(matrix: np.ndarray, names: Sequence[str]) -> Dict[str, Optional[float]]:
    """Recall of every class (None where the class has no example)."""
    totals = matrix.sum(axis=1)
    return {n: (float(matrix[k, k] / totals[k]) if totals[k] else None)
            for k, n in enumerate(names)}
