"""360VOS-style evaluation of ERP label maps: J, boundary F and clip-level tracking metrics.

Every score weights each pixel by its area on the sphere (``cos(lat)``, ARCHITECTURE §3), so an
object at the pole counts for what it covers on the sphere, not for its stretched ERP pixels.

* ``j_score``: weighted IoU of two masks.
* ``f_score``: boundary F-measure; tolerance ``tol_frac`` (0.008) x the image diagonal in pixels;
  boundary pixels weighted by ``cos(lat)``. The seam and the poles are not borders: a boundary
  at column 0 matches one at column W-1, and an object crossing the seam has no boundary there.
* ``ClipEvaluator``: a whole clip, frame by frame (``add_frame``), then ``result()``.

Clip conventions (``ClipEvaluator``):

* Predicted value 0 is "no object". Ground-truth value ``gt_background`` (0 by default) is "no
  object"; ``gt_background=None`` makes every value an object (dense annotation such as
  Leader360V, where 0 is a real segment). ``gt_ignore`` pixels (255 by default) are removed from
  everything: areas, overlaps, counted boundary pixels, seam and pole statistics.
* A prediction is resized to the ground-truth size (nearest neighbour); scores are computed at
  the ground-truth resolution (360VOS evaluates at 1920x960).
* Matching: predicted ids are assigned to ground-truth objects once per clip (Hungarian,
  maximising the mean J over the clip), so a prediction that swaps identities mid-clip keeps the
  wrong id for part of the clip and loses J there. A ground-truth object may stay unmatched; it
  is then scored against an empty prediction.
* Frames of an object: from the first frame where it is annotated to the end of the clip.
  Frames before it appears are skipped (no tracker can know it yet). A later frame where the
  object is absent (occluded, gone) scores J = F = 1 when its matched prediction is absent too,
  else 0, as in DAVIS/360VOS: a track kept alive on nothing costs.
* ``j`` / ``f``: mean over ground-truth objects of the per-object mean over its frames;
  ``j_and_f`` their mean. None when the clip has no ground-truth object.
* ``j_poles``: the same J restricted to pixels with ``|lat| > 60`` deg, per object over the
  frames where it has pixels there (absent frames skipped); None when no object reaches a pole.
* ``id_switches``: per ground-truth object, the frames where its best-overlapping predicted id
  (largest weighted overlap, if any) differs from the previous best one; summed over objects.
  Frames where nothing overlaps it neither count nor reset the previous id.
* ``fragmentation``: mean over (object, frame where present) of the number of predicted ids
  that cover more than 10 % of the object's area, minus 1, clipped at 0 (0 = never split).
* ``seam_consistency``: over (object, frame) where the ground-truth object touches both column 0
  and column W-1, the share where the majority predicted id inside it on column 0 equals the one
  on column W-1 and is an object (not 0). None when no object touches both borders.
* ``latency_ms_mean`` / ``latency_ms_p95``: over the latencies given to ``add_frame`` (p95 with
  linear interpolation); None without any.

The boundary F of the matched pairs is computed in ``result()``, when the matching is known;
until then each frame is kept zlib-compressed (label maps shrink to a few percent).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import math
from typing import Dict, List, Optional, Sequence, Tuple
import zlib

import numpy as np

from sap_ros.errors import InvalidInputError
from sap_ros.eval.matching import (
    ErpWindow,
    boundary_tolerance_px,
    check_label_map,
    compact_index,
    erp_boundary_f,
    erp_pixel_weights,
    label_extents,
    match_objects,
    overlap_matrix,
    present_ids,
    weighted_label_areas,
    window_boundary_f,
)
from sap_ros.sphere.geometry import erp_pixel_to_lonlat, erp_row_weights, validate_erp_shape

Array = np.ndarray

POLE_LAT_DEG = 60.0
FRAGMENT_MIN_SHARE = 0.1


def _check_masks(pred_mask: Array, gt_mask: Array, ignore: Optional[Array]
                 ) -> Tuple[Array, Array, Array]:
    """Validate two ERP masks (and ``ignore``); return them as bool plus the valid-pixel mask."""
    pred, gt = np.asarray(pred_mask), np.asarray(gt_mask)
    validate_erp_shape(gt.shape)
    if pred.shape != gt.shape or gt.ndim != 2:
        raise InvalidInputError(f'masks must be (H, W) of the same shape, got pred {pred.shape} '
                                f'and gt {gt.shape}')
    valid = np.ones(gt.shape, dtype=bool)
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise InvalidInputError(f'ignore mask must have shape {gt.shape}, got {ignore.shape}')
        valid = ~ignore
    return pred.astype(bool), gt.astype(bool), valid


def j_score(pred_mask: Array, gt_mask: Array, ignore: Optional[Array] = None) -> float:
    """Sphere-weighted IoU of two ``(H, W)`` ERP masks; 1.0 when both are empty.

    Pixels where ``ignore`` is True are left out of both masks.

    >>> gt = np.zeros((4, 8), bool); gt[1:3, 2:6] = True
    >>> empty = np.zeros_like(gt)
    >>> j_score(gt, gt), j_score(empty, gt), j_score(empty, empty)
    (1.0, 0.0, 1.0)
    """
    pred, gt, valid = _check_masks(pred_mask, gt_mask, ignore)
    weights = np.broadcast_to(erp_row_weights(gt.shape[0])[:, None], gt.shape)
    union = float(np.sum(weights, where=(pred | gt) & valid))
    if union == 0.0:
        return 1.0
    return float(np.sum(weights, where=pred & gt & valid)) / union


def f_score(pred_mask: Array, gt_mask: Array, ignore: Optional[Array] = None,
            tol_frac: float = 0.008) -> float:
    """Sphere-weighted boundary F-measure of two ``(H, W)`` ERP masks (seam- and pole-aware).

    A boundary pixel matches when a boundary pixel of the other mask lies within
    ``tol_frac x hypot(H, W)`` pixels (distances wrap across the seam). Boundary pixels on
    ``ignore`` are not counted, but still serve as matches. 1.0 when neither mask has a
    boundary (both empty), 0.0 when only one has.
    """
    pred, gt, valid = _check_masks(pred_mask, gt_mask, ignore)
    union = pred | gt
    tol_px = boundary_tolerance_px(gt.shape[0], gt.shape[1], tol_frac)
    return erp_boundary_f(pred, gt, valid, union.any(axis=1), union.any(axis=0), tol_px)


def resize_nearest(labels: Array, shape: Tuple[int, int]) -> Array:
    """Resize a label map to ``shape`` (H, W) by nearest neighbour on pixel centres."""
    if labels.shape == tuple(shape):
        return labels
    rows = ((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(np.int64)
    cols = ((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(np.int64)
    return labels[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class ObjectScore:
    """Scores of one ground-truth object over a clip; ``pred_id`` None when unmatched."""

    gt_id: int
    pred_id: Optional[int]
    j: float
    f: float
    frames: int


@dataclass(frozen=True)
class ClipMetrics:
    """Metrics of one clip (see the module docstring for every definition)."""

    frames: int
    j: Optional[float]
    f: Optional[float]
    j_and_f: Optional[float]
    j_poles: Optional[float]
    id_switches: int
    fragmentation: Optional[float]
    seam_consistency: Optional[float]
    latency_ms_mean: Optional[float]
    latency_ms_p95: Optional[float]
    gt_objects: int
    pred_objects: int
    objects: Tuple[ObjectScore, ...] = ()

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (``objects`` as a list of dicts; undefined values are None)."""
        out = asdict(self)
        out['objects'] = [asdict(obj) for obj in self.objects]
        return out



def latency_stats(latencies_ms: Sequence[float]) -> Dict[str, Optional[float]]:
    """``latency_ms_mean`` and ``latency_ms_p95`` (linear interpolation); None when empty.

    >>> latency_stats([10.0, 20.0, 30.0])
    {'latency_ms_mean': 20.0, 'latency_ms_p95': 29.0}
    """
    if not latencies_ms:
        return {'latency_ms_mean': None, 'latency_ms_p95': None}
    lat = np.asarray(latencies_ms, dtype=np.float64)
    return {'latency_ms_mean': float(lat.mean()), 'latency_ms_p95': float(np.percentile(lat, 95))}

@dataclass(frozen=True)
class _Packed:
    """A label map kept zlib-compressed until ``result()``."""

    shape: Tuple[int, int]
    dtype: np.dtype
    blob: bytes

    @classmethod
    def pack(cls, labels: Array) -> '_Packed':
        """Compress a label map (fast zlib level 1)."""
        data = np.ascontiguousarray(labels)
        return cls(data.shape, data.dtype, zlib.compress(data.tobytes(), 1))

    def unpack(self) -> Array:
        """The label map back, read-only."""
        return np.frombuffer(zlib.decompress(self.blob), dtype=self.dtype).reshape(self.shape)


@dataclass(frozen=True)
class _FrameStats:
    """Everything ``result()`` needs from one frame (ids sorted; areas sphere-weighted)."""

    gt_ids: Array
    pred_ids: Array
    gt_areas: Array
    pred_areas: Array
    inter: Array
    pole_gt_areas: Array
    pole_pred_areas: Array
    pole_inter: Array
    seam_objects: int
    seam_consistent: int
    gt: _Packed
    pred: _Packed


def _iou(inter: Array, gt_areas: Array, pred_areas: Array) -> Array:
    """IoU matrix from an overlap matrix and the two area vectors (0 where the union is 0)."""
    union = gt_areas[:, None] + pred_areas[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class ClipEvaluator:
    """Accumulate one clip frame by frame, then compute its ``ClipMetrics``.

    Args:
        gt_background: ground-truth value meaning "no object"; None = every value is an object.
        gt_ignore: ground-truth value excluded from every statistic; None = no ignore value.
        tol_frac: boundary tolerance as a fraction of the image diagonal (360VOS: 0.008).

    """

    gt_background: Optional[int] = 0
    gt_ignore: Optional[int] = 255
    tol_frac: float = 0.008
    _frames: List[_FrameStats] = field(default_factory=list, init=False, repr=False)
    _latencies_ms: List[float] = field(default_factory=list, init=False, repr=False)

    def add_frame(self, pred_labels: Array, gt_labels: Array,
                  latency_ms: Optional[float] = None) -> None:
        """Add one frame: predicted and ground-truth ERP label maps (any 2:1 sizes)."""
        gt = check_label_map(gt_labels, 'gt_labels')
        pred = check_label_map(pred_labels, 'pred_labels')
        height, width = validate_erp_shape(gt.shape)
        validate_erp_shape(pred.shape)
        if self._frames and self._frames[0].gt.shape != gt.shape:
            raise InvalidInputError(f'ground truth changed size within the clip: '
                                    f'{self._frames[0].gt.shape} then {gt.shape}')
        pred = resize_nearest(pred, (height, width))
        ignore = None if self.gt_ignore is None else gt == self.gt_ignore
        weights = erp_pixel_weights(height, width, ignore)
        gt_ids = present_ids(weighted_label_areas(gt, weights),
                             (self.gt_background, self.gt_ignore))
        pred_ids = present_ids(weighted_label_areas(pred, weights), (0,))
        gt_index, pred_index = compact_index(gt, gt_ids), compact_index(pred, pred_ids)
        n_gt, n_pred = len(gt_ids), len(pred_ids)
        full = overlap_matrix(gt_index, pred_index, weights, n_gt, n_pred)
        _, lat = erp_pixel_to_lonlat(np.zeros(height), np.arange(height), width, height)
        pole_rows = np.flatnonzero(np.abs(lat) > POLE_LAT_DEG)
        pole = overlap_matrix(gt_index[pole_rows], pred_index[pole_rows], weights[pole_rows],
                              n_gt, n_pred)
        left, right = (overlap_matrix(gt_index[:, c], pred_index[:, c], weights[:, c], n_gt,
                                      n_pred)[:n_gt] for c in (0, width - 1))
        on_seam = (left.sum(axis=1) > 0) & (right.sum(axis=1) > 0)
        majority_left, majority_right = left.argmax(axis=1), right.argmax(axis=1)
        consistent = on_seam & (majority_left == majority_right) & (majority_left != n_pred)
        self._frames.append(_FrameStats(
            gt_ids=gt_ids, pred_ids=pred_ids,
            gt_areas=full[:n_gt].sum(axis=1), pred_areas=full[:, :n_pred].sum(axis=0),
            inter=full[:n_gt, :n_pred],
            pole_gt_areas=pole[:n_gt].sum(axis=1), pole_pred_areas=pole[:, :n_pred].sum(axis=0),
            pole_inter=pole[:n_gt, :n_pred],
            seam_objects=int(on_seam.sum()), seam_consistent=int(consistent.sum()),
            gt=_Packed.pack(gt), pred=_Packed.pack(pred)))
        if latency_ms is not None:
            self._latencies_ms.append(float(latency_ms))

    def result(self) -> ClipMetrics:
        """Match objects over the whole clip and compute every metric."""
        frames = self._frames
        if not frames:
            return ClipMetrics(0, None, None, None, None, 0, None, None, None, None, 0, 0)
        gt_all = np.unique(np.concatenate([s.gt_ids for s in frames] + [np.zeros(0, int)]))
        pred_all = np.unique(np.concatenate([s.pred_ids for s in frames] + [np.zeros(0, int)]))
        n_gt, n_pred = len(gt_all), len(pred_all)
        present_gt = np.zeros((len(frames), n_gt), dtype=bool)
        present_pred = np.zeros((len(frames), n_pred), dtype=bool)
        for t, stats in enumerate(frames):
            present_gt[t, np.searchsorted(gt_all, stats.gt_ids)] = True
            present_pred[t, np.searchsorted(pred_all, stats.pred_ids)] = True
        first = np.where(present_gt.any(axis=0), present_gt.argmax(axis=0), len(frames))
        evaluated = np.arange(len(frames))[:, None] >= first[None, :]  # (T, G)

        # Mean J of every (gt, pred) pair over the gt object's frames, and of "unmatched".
        sum_j = np.zeros((n_gt, n_pred))
        for t, stats in enumerate(frames):
            g, p = np.searchsorted(gt_all, stats.gt_ids), np.searchsorted(pred_all, stats.pred_ids)
            sum_j[np.ix_(g, p)] += _iou(stats.inter, stats.gt_areas, stats.pred_areas)
            absent = evaluated[t] & ~present_gt[t]
            sum_j[absent] += ~present_pred[t]
        n_eval = np.maximum(evaluated.sum(axis=0), 1)
        unmatched_j = (evaluated & ~present_gt).sum(axis=0) / n_eval
        mean_j = sum_j / n_eval[:, None]
        match = dict(match_objects(mean_j, unmatched_j))

        j_obj = np.array([mean_j[g, match[g]] if g in match else unmatched_j[g]
                          for g in range(n_gt)])
        f_obj = self._boundary_scores(gt_all, pred_all, match, present_gt, present_pred,
                                      evaluated) / n_eval
        objects = tuple(
            ObjectScore(int(gt_all[g]), int(pred_all[match[g]]) if g in match else None,
                        float(j_obj[g]), float(f_obj[g]), int(evaluated[:, g].sum()))
            for g in range(n_gt))
        j = float(j_obj.mean()) if n_gt else None
        f = float(f_obj.mean()) if n_gt else None
        seam_objects = sum(s.seam_objects for s in frames)
        return ClipMetrics(
            frames=len(frames), j=j, f=f,
            j_and_f=None if j is None or f is None else (j + f) / 2.0,
            j_poles=self._pole_j(gt_all, pred_all, match),
            id_switches=self._id_switches(pred_all),
            fragmentation=self._fragmentation(),
            seam_consistency=(sum(s.seam_consistent for s in frames) / seam_objects
                              if seam_objects else None),
            **latency_stats(self._latencies_ms),
            gt_objects=n_gt, pred_objects=n_pred, objects=objects)

    def _boundary_scores(self, gt_all: Array, pred_all: Array, match: Dict[int, int],
                         present_gt: Array, present_pred: Array, evaluated: Array) -> Array:
        """Per-object sum of F over its frames (1 both absent, 0 one absent, else measured)."""
        f_sum = np.zeros(len(gt_all))
        for t, stats in enumerate(self._frames):
            pairs = []
            for g in np.flatnonzero(evaluated[t]):
                p = match.get(int(g))
                pred_here = p is not None and bool(present_pred[t, p])
                if present_gt[t, g] and p is not None and pred_here:
                    pairs.append((int(g), int(p)))
                elif not present_gt[t, g] and not pred_here:
                    f_sum[g] += 1.0
            if pairs:
                scores = self._frame_boundary_f(
                    stats, [gt_all[g] for g, _ in pairs], [pred_all[p] for _, p in pairs])
                f_sum[[g for g, _ in pairs]] += scores
        return f_sum

    def _frame_boundary_f(self, stats: _FrameStats, gt_ids: Sequence[int],
                          pred_ids: Sequence[int]) -> List[float]:
        """Boundary F of each (gt id, pred id) pair in one frame, on windows around each pair."""
        gt, pred = stats.gt.unpack(), stats.pred.unpack()
        height, width = gt.shape
        gt_rows, gt_cols = label_extents(gt, gt_ids)
        pred_rows, pred_cols = label_extents(pred, pred_ids)
        tol_px = boundary_tolerance_px(height, width, self.tol_frac)
        pad_px = int(math.ceil(tol_px)) + 2
        row_weights = erp_row_weights(height)
        scores = []
        for k, (gt_id, pred_id) in enumerate(zip(gt_ids, pred_ids)):
            window = ErpWindow.around(gt_rows[k] | pred_rows[k], gt_cols[k] | pred_cols[k],
                                      pad_px)
            assert window is not None  # both masks are present in this frame
            gt_win = window.take(gt)
            counted = window.counted
            if self.gt_ignore is not None:
                counted = counted & (gt_win != self.gt_ignore)
            scores.append(window_boundary_f(window.take(pred) == pred_id, gt_win == gt_id,
                                            row_weights[window.rows][:, None], counted, tol_px))
        return scores

    def _pole_j(self, gt_all: Array, pred_all: Array, match: Dict[int, int]) -> Optional[float]:
        """J on ``|lat| > 60`` deg pixels: mean over objects there of the mean over frames."""
        sums, counts = np.zeros(len(gt_all)), np.zeros(len(gt_all))
        for stats in self._frames:
            for i, gt_id in enumerate(stats.gt_ids):
                if stats.pole_gt_areas[i] <= 0.0:
                    continue
                g = int(np.searchsorted(gt_all, gt_id))
                counts[g] += 1
                if g not in match:
                    continue
                k = np.flatnonzero(stats.pred_ids == pred_all[match[g]])
                if k.size:
                    sums[g] += _iou(stats.pole_inter[i:i + 1, k], stats.pole_gt_areas[i:i + 1],
                                    stats.pole_pred_areas[k])[0, 0]
        seen = counts > 0
        return float(np.mean(sums[seen] / counts[seen])) if seen.any() else None

    def _id_switches(self, pred_all: Array) -> int:
        """Changes of each object's best-overlapping predicted id between its covered frames."""
        previous: Dict[int, int] = {}
        switches = 0
        for stats in self._frames:
            if stats.inter.size == 0:
                continue
            best = stats.pred_ids[stats.inter.argmax(axis=1)]
            for gt_id, best_id, overlap in zip(stats.gt_ids, best, stats.inter.max(axis=1)):
                if overlap <= 0.0:
                    continue
                if int(gt_id) in previous and previous[int(gt_id)] != int(best_id):
                    switches += 1
                previous[int(gt_id)] = int(best_id)
        return switches

    def _fragmentation(self) -> Optional[float]:
        """Mean over (object, frame) of (predicted ids covering > 10 % of it) - 1, at least 0."""
        extra, instances = 0, 0
        for stats in self._frames:
            instances += len(stats.gt_ids)
            if stats.inter.size:
                pieces = (stats.inter > FRAGMENT_MIN_SHARE * stats.gt_areas[:, None]).sum(axis=1)
                extra += int(np.maximum(pieces - 1, 0).sum())
        return extra / instances if instances else None
