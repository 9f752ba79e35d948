"""Held-out class accuracy of a head, per sighting and fused over each object's track.

An *object track* is one object of one exported video (palette index): its sightings are the
patches where it is visible, in the video's path order. Three object-level accuracies, each the
share of object tracks (every track counts once) given the right class:

* ``sighting_argmax``: the per-sighting argmax, averaged over each track's sightings (what a
  per-view classifier gets for an object on one of its views);
* ``fused``: the class the runtime publishes at the end of the track: every sighting added to
  :class:`~sap_ros.engine.class_fusion.ClassFusion` with its weight (score x distortion), the
  published class decided once per panorama with ``classifier.switch_margin``, as the node does;
* ``majority``: the baseline, the training objects' most frequent class for every object.

``class_switches``: changes of a track's published class between panoramas (videos of several
chained frames only).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from sap_ros.engine.class_fusion import ClassFusion
from sap_ros.train.class_features import SightingSet

Track = Tuple[int, int]  # (video index, palette index)


def track_targets(sightings: SightingSet, targets: torch.Tensor) -> Dict[Track, int]:
    """Object track -> its class (0-based), for the tracks with a class of the head."""
    out: Dict[Track, int] = {}
    for v, o, y in zip(sightings.video.tolist(), sightings.obj.tolist(), targets.tolist()):
        if y >= 0:
            out[(v, o)] = y
    return out


def majority_of_tracks(tracks: Dict[Track, int], n_classes: int) -> int:
    """The most frequent class among object tracks (0-based; lowest on ties)."""
    counts = np.bincount(np.array(list(tracks.values()), np.int64), minlength=n_classes)
    return int(np.argmax(counts))


def fused_classes(sightings: SightingSet, probabilities: torch.Tensor,
                  switch_margin: float) -> Tuple[Dict[Track, int], int]:
    """Each track's published class (0-based, -1: none) at its end, and the class switches."""
    n_classes = int(probabilities.shape[1])
    final: Dict[Track, int] = {}
    switches = 0
    ppf = sightings.patches_per_frame
    for v in range(len(sightings.videos)):
        rows = torch.nonzero(sightings.video == v)[:, 0]
        if not len(rows):
            continue
        order = rows[torch.argsort(sightings.patch[rows], stable=True)]
        fusion = ClassFusion(n_classes, switch_margin, 'cpu')
        patches = sightings.patch[order].tolist()
        last: Dict[int, int] = {}
        frames = sorted({p // ppf for p in patches})
        for frame in frames:
            mine = order[torch.tensor([p // ppf == frame for p in patches])]
            for patch in sorted(set(sightings.patch[mine].tolist())):
                here = mine[sightings.patch[mine] == patch]
                fusion.add([int(o) for o in sightings.obj[here]], probabilities[here],
                           sightings.weights[here])
            ids = sorted(set(sightings.obj[order].tolist()))
            published = fusion.on_host(np.zeros((1, 1), np.uint16), ids).by_id
            for o, (class_id, _) in published.items():
                if class_id and o in last and last[o] != class_id:
                    switches += 1
                if class_id:
                    last[o] = class_id
        for o in set(sightings.obj[order].tolist()):
            final[(v, int(o))] = last.get(int(o), 0) - 1
    return final, switches


def object_accuracies(sightings: SightingSet, targets: torch.Tensor,
                      probabilities: torch.Tensor, majority: int,
                      switch_margin: float) -> Dict[str, Any]:
    """The three object-level accuracies side by side (module docstring) and the counts."""
    tracks = track_targets(sightings, targets)
    if not tracks:
        return {'objects': 0, 'sightings': 0, 'sighting_argmax': None, 'fused': None,
                'majority': None, 'class_switches': 0, 'sighting_accuracy': None}
    argmax = probabilities.argmax(dim=1)
    per_track: Dict[Track, List[bool]] = {}
    for v, o, y, p in zip(sightings.video.tolist(), sightings.obj.tolist(), targets.tolist(),
                          argmax.tolist()):
        if y >= 0:
            per_track.setdefault((v, o), []).append(p == y)
    fused, switches = fused_classes(sightings, probabilities, switch_margin)
    keys = sorted(tracks)
    known = targets >= 0
    return {
        'objects': len(keys), 'sightings': int(known.sum()),
        'sighting_argmax': float(np.mean([np.mean(per_track[k]) for k in keys])),
        'fused': float(np.mean([fused.get(k, -1) == tracks[k] for k in keys])),
        'majority': float(np.mean([tracks[k] == majority for k in keys])),
        'class_switches': switches,
        'sighting_accuracy': float((argmax[known] == targets[known]).float().mean())}


def fused_confusion(sightings: SightingSet, targets: torch.Tensor,
                    probabilities: torch.Tensor, switch_margin: float
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """``(true, fused)`` 0-based classes of the tracks with a class (fused -1: none)."""
    tracks = track_targets(sightings, targets)
    fused, _ = fused_classes(sightings, probabilities, switch_margin)
    keys = sorted(tracks)
    return (np.array([tracks[k] for k in keys], np.int64),
            np.array([fused.get(k, -1) for k in keys], np.int64))


def side_by_side(scores: Dict[str, Any], names: Sequence[str], where: str) -> str:
    """The three accuracies as a short table for the terminal."""
    if not scores['objects']:
        return f'{where}: no object with a class of the head'
    return (f'{where}: {scores["objects"]} objects, {scores["sightings"]} sightings\n'
            f'  object class accuracy, per-sighting argmax : {scores["sighting_argmax"]:.3f}\n'
            f'  object class accuracy, fused along track   : {scores["fused"]:.3f} '
            f'({scores["class_switches"]} class switches)\n'
            f'  majority-class baseline                    : {scores["majority"]:.3f}')
