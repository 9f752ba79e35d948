"""Semantic scores of ERP class maps: sphere-weighted mIoU, per-class IoU and class switches.

Class ids are 1-based as everywhere in sap_ros (class id k names ``class_names[k - 1]``; 0 =
none). Conventions of :class:`SemanticEvaluator`:

* every pixel weighs its area on the sphere (``cos(lat)``), as J does, so a class smeared over
  the polar rows counts for what it covers on the sphere;
* a prediction is resized to the ground truth's size (nearest neighbour);
* the IoU of a class is accumulated over the whole clip: sphere-weighted intersection over
  union of its pixels in every frame (as semantic segmentation benchmarks sum over images).
  A class that neither the ground truth nor the prediction holds anywhere has no IoU (None) and
  stays out of the mean; one that only the prediction holds scores 0;
* ``scored`` classes: only they are scored; ground-truth pixels of the other classes count as 0
  ("no class"), so a prediction there is a false positive of the predicted class, and a
  prediction of an unscored class counts as 0 too. E.g. an object-only pipeline on
  ``sap_synth`` clips is scored on the object classes, not on floor, walls and ceiling.
  0 is never a class of the mean;
* ``ignore``: a per-frame mask of pixels left out of everything (e.g. unknown ground truth);
* ``class_switches``: per predicted track (object id), the frames where its published class id
  differs from the last non-zero one it published, summed over tracks; a 0 (no class yet) is
  skipped and does not reset it, as frames without overlap are for id switches.
* ``class_accuracy`` (object level; needs the method's instance label map): a predicted
  track's true class is the ground-truth class under most of its pixels over the clip
  (sphere-weighted, unscored classes as 0); among the tracks that published a class and whose
  true class is a scored one, the share whose last published class is it. Tracks mostly on
  no class (a segmentation error, not a classification one) are left out and counted
  (``tracks_off_class``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from sap_ros.engine.types import ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.eval.matching import compact_index, overlap_matrix
from sap_ros.eval.metrics import resize_nearest
from sap_ros.sphere.geometry import erp_row_weights, validate_erp_shape

Array = np.ndarray


@dataclass(frozen=True)
class SemanticMetrics:
    """Semantic scores of one clip (module docstring for the definitions).

    Attributes:
        frames: frames scored.
        miou: mean IoU over the scored classes that have one; None when none has.
        class_iou: class name -> IoU (None: the class is nowhere, in ground truth or prediction).
        class_switches: changes of a track's published class, summed over tracks.
        tracks: predicted tracks that published a class at least once.
        class_accuracy: object-level class accuracy of the tracks on a scored class; None
            without label maps or without such a track.
        tracks_scored: the tracks ``class_accuracy`` counts.
        tracks_off_class: tracks that published a class while mostly on no (scored) class.

    """

    frames: int
    miou: Optional[float]
    class_iou: Dict[str, Optional[float]]
    class_switches: int
    tracks: int
    class_accuracy: Optional[float] = None
    tracks_scored: int = 0
    tracks_off_class: int = 0

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {'frames': self.frames, 'miou': self.miou, 'class_iou': dict(self.class_iou),
                'class_switches': self.class_switches, 'tracks': self.tracks,
                'class_accuracy': self.class_accuracy, 'tracks_scored': self.tracks_scored,
                'tracks_off_class': self.tracks_off_class}


def _check_class_map(values: Array, name: str, n_classes: int,
                     ignore: Optional[Array] = None) -> Array:
    arr = np.asarray(values)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f'{name} must be an (H, W) integer class map, got {arr.shape} '
                                f'{arr.dtype}')
    validate_erp_shape(arr.shape)
    counted = arr if ignore is None or ignore.shape != arr.shape else arr[~ignore]
    if counted.size and (int(counted.min()) < 0 or int(counted.max()) > n_classes):
        bad = int(counted.max()) if int(counted.max()) > n_classes else int(counted.min())
        raise InvalidInputError(f'{name} holds class id {bad}, outside 0..{n_classes} (class '
                                f'ids are 1-based indices into the {n_classes} class names, '
                                '0 = none)')
    return arr


class SemanticEvaluator:
    """Accumulate a clip's class maps frame by frame, then :meth:`result`.

    Args:
        class_names: the ``K`` class names; class id k is ``class_names[k - 1]``.
        scored: the class ids scored (default: all ``1..K``); see the module docstring.

    """

    def __init__(self, class_names: Sequence[str], scored: Optional[Iterable[int]] = None
                 ) -> None:
        """Start an empty clip."""
        self.class_names = tuple(str(n) for n in class_names)
        if not self.class_names:
            raise InvalidInputError('semantic scores need at least one class name')
        k = len(self.class_names)
        ids = sorted(set(range(1, k + 1) if scored is None else (int(c) for c in scored)))
        if not ids or ids[0] < 1 or ids[-1] > k:
            raise InvalidInputError(f'scored class ids must be a non-empty subset of 1..{k}, '
                                    f'got {ids}')
        self.scored = tuple(ids)
        self._lut = np.zeros(k + 1, dtype=np.int64)
        self._lut[list(self.scored)] = self.scored
        self._confusion = np.zeros((k + 1, k + 1))  # [gt, pred], sphere-weighted areas
        self._frames = 0
        self._last_class: Dict[int, int] = {}
        self._switches = 0
        self._track_truth: Dict[int, Array] = {}  # track id -> weighted areas per true class

    def add_frame(self, pred: Array, gt: Array, objects: Sequence[ObjectRecord] = (),
                  ignore: Optional[Array] = None, labels: Optional[Array] = None) -> None:
        """One frame: predicted and ground-truth class maps, the published tracks, ignored pixels.

        ``pred`` may have any 2:1 size (resized to ``gt``'s); values must lie in ``0..K``
        (``ignore``d ground-truth pixels may hold anything). ``labels``: the method's instance
        label map of the frame (the records' ids; any 2:1 size), for ``class_accuracy``.
        """
        k = len(self.class_names)
        gt_arr = np.asarray(gt)
        if ignore is not None:
            ignore = np.asarray(ignore, dtype=bool)
            if ignore.shape != gt_arr.shape:
                raise InvalidInputError(f'ignore mask must have shape {gt_arr.shape}, got '
                                        f'{ignore.shape}')
        gt_arr = _check_class_map(gt_arr, 'ground-truth class map', k, ignore)
        pred_arr = resize_nearest(_check_class_map(pred, 'predicted class map', k),
                                  gt_arr.shape)
        height, width = gt_arr.shape
        weights = np.broadcast_to(erp_row_weights(height)[:, None], (height, width))
        g, p = gt_arr.astype(np.int64), pred_arr.astype(np.int64)
        if ignore is not None:
            keep = ~ignore
            g, p, weights = g[keep], p[keep], weights[keep]
        pair = self._lut[g] * (k + 1) + self._lut[p]
        self._confusion += np.bincount(pair.ravel(), weights=np.ravel(weights),
                                       minlength=(k + 1) ** 2).reshape(k + 1, k + 1)
        self._frames += 1
        self.add_tracks(objects)
        if labels is not None:
            self._add_track_truth(labels, gt_arr.shape, objects, g, weights,
                                  None if ignore is None else ~ignore)

    def _add_track_truth(self, labels: Array, shape: Tuple[int, int],
                         objects: Sequence[ObjectRecord], g: Array, weights: Array,
                         keep: Optional[Array]) -> None:
        """Accumulate the true classes under each classified track's pixels."""
        classified = [int(o.id) for o in objects if int(o.class_id) != 0]
        if not classified:
            return
        ids = resize_nearest(np.asarray(labels), shape)
        if keep is not None:
            ids = ids[keep]
        index = compact_index(ids, np.array(classified))  # len(classified): not classified
        seen = np.bincount(index.ravel(), minlength=len(classified) + 1)
        areas = overlap_matrix(index, self._lut[g], weights, len(classified),
                               len(self.class_names))  # (track, true class)
        for row, object_id in enumerate(classified):
            if seen[row]:
                self._track_truth[object_id] = self._track_truth.get(object_id, 0) + areas[row]

    def add_tracks(self, objects: Sequence[ObjectRecord]) -> None:
        """Count class switches of one frame's published objects (``add_frame`` calls it)."""
        for record in objects:
            class_id = int(record.class_id)
            if class_id == 0:
                continue
            last = self._last_class.get(int(record.id))
            if last is not None and last != class_id:
                self._switches += 1
            self._last_class[int(record.id)] = class_id

    def class_iou(self) -> List[Tuple[int, Optional[float]]]:
        """``(class id, IoU or None)`` of every scored class, so far."""
        out: List[Tuple[int, Optional[float]]] = []
        for c in self.scored:
            inter = self._confusion[c, c]
            union = self._confusion[c, :].sum() + self._confusion[:, c].sum() - inter
            out.append((c, float(inter / union) if union > 0 else None))
        return out

    def result(self) -> SemanticMetrics:
        """The clip's scores."""
        ious = self.class_iou()
        defined = [v for _, v in ious if v is not None]
        true = {t: int(np.argmax(a)) for t, a in self._track_truth.items()}
        scored = [t for t, c in true.items() if c != 0]
        right = sum(self._last_class.get(t) == true[t] for t in scored)
        return SemanticMetrics(
            frames=self._frames, miou=float(np.mean(defined)) if defined else None,
            class_iou={self.class_names[c - 1]: v for c, v in ious},
            class_switches=self._switches, tracks=len(self._last_class),
            class_accuracy=right / len(scored) if scored else None,
            tracks_scored=len(scored), tracks_off_class=len(true) - len(scored))


class ClassAligner:
    """Renumber a method's class ids into the ground truth's, by class name.

    A head trained on another class list (its own order, fewer or other classes) publishes ids
    into *its* list; scoring them as ground-truth ids would compare unrelated classes. A name the
    ground truth does not have maps to 0 (no class), like a prediction of an unscored class;
    :attr:`missing` lists such names. Same lists: the maps pass through unchanged.

    >>> a = ClassAligner(['door', 'wall'], ['wall', 'floor', 'door'])
    >>> a.map_ids(np.array([0, 1, 2])).tolist(), a.missing
    ([0, 3, 1], ())
    """

    def __init__(self, method_names: Sequence[str], gt_names: Sequence[str]) -> None:
        """Build the lookup table (method id -> ground-truth id)."""
        gt_index = {str(n): k + 1 for k, n in enumerate(gt_names)}
        method = [str(n) for n in method_names]
        self.identity = tuple(method) == tuple(str(n) for n in gt_names)
        self.missing = tuple(n for n in method if n not in gt_index)
        self._lut = np.array([0] + [gt_index.get(n, 0) for n in method], dtype=np.int64)

    def map_ids(self, ids: Array) -> Array:
        """Method class ids -> ground-truth ids (an id outside its list: InvalidInputError)."""
        arr = np.asarray(ids)
        if self.identity:
            return arr
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= len(self._lut)):
            raise InvalidInputError(f"class id {int(arr.max())} outside the method's "
                                    f'{len(self._lut) - 1} class names')
        return self._lut[arr.astype(np.int64)].astype(arr.dtype)

    def map_objects(self, objects: Sequence[ObjectRecord]) -> List[ObjectRecord]:
        """The records with their ``class_id`` renumbered."""
        if self.identity:
            return list(objects)
        return [replace(o, class_id=int(self.map_ids(np.array([int(o.class_id)]))[0]))
                for o in objects]


def semantic_scores(pred: Array, gt: Array, class_names: Sequence[str],
                    scored: Optional[Iterable[int]] = None,
                    ignore: Optional[Array] = None) -> SemanticMetrics:
    """Sphere-weighted mIoU and per-class IoU of one frame (a one-frame clip).

    >>> gt = np.zeros((4, 8), np.uint16); gt[:, 4:] = 1; gt[:, :4] = 2
    >>> semantic_scores(gt, gt, ['wall', 'floor']).miou
    1.0
    """
    evaluator = SemanticEvaluator(class_names, scored)
    evaluator.add_frame(pred, gt, ignore=ignore)
    return evaluator.result()
