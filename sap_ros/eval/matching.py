"""Sphere-weighted matching primitives behind the evaluation metrics (pure NumPy/SciPy/cv2).

Three things are matched here, on ERP label maps whose pixels are weighted by their area on the
sphere (``cos(lat)``, ARCHITECTURE §3):

* regions: weighted areas and overlap matrices of many labels at once (one ``bincount`` each);
* boundaries: the 360VOS boundary F-measure on a window around two masks. The window wraps
  around the 0/360 deg seam and folds over the poles (row ``-1`` is row ``0`` half a turn away),
  so neither the seam nor the top/bottom image border is ever a boundary, and distances are
  measured across them;
* objects: a Hungarian assignment of predicted ids to ground-truth ids in which an object may
  also stay unmatched.

``sap_ros.eval.metrics`` builds the public scores on top of these.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import erp_row_weights

Array = np.ndarray


def check_label_map(labels: Array, name: str) -> Array:
    """Return ``labels`` as a 2-D array of non-negative integers, or raise InvalidInputError."""
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidInputError(f'{name} must be a non-empty (H, W) label map, got shape '
                                f'{arr.shape}')
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f'{name} must hold integers, got dtype {arr.dtype}')
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise InvalidInputError(f'{name} must be non-negative, got minimum {int(arr.min())}')
    return arr


def erp_pixel_weights(height: int, width: int, ignore: Optional[Array] = None) -> Array:
    """Per-pixel sphere area weight ``cos(lat)``, ``(H, W)`` float64, 0 where ``ignore``."""
    weights = np.repeat(erp_row_weights(height)[:, None], width, axis=1)
    if ignore is not None:
        weights[np.asarray(ignore, dtype=bool)] = 0.0
    return weights


def weighted_label_areas(labels: Array, weights: Array) -> Array:
    """Weighted area of every label value: ``areas[k] = sum(weights[labels == k])``.

    One ``bincount`` over the image, so the cost does not grow with the number of labels.

    >>> weighted_label_areas(np.array([[0, 2], [2, 2]]), np.array([[1.0, 1.0], [0.5, 0.5]]))
    array([1., 0., 2.])
    """
    return np.bincount(np.asarray(labels).ravel(), weights=np.asarray(weights).ravel())


def present_ids(areas: Array, exclude: Sequence[Optional[int]] = ()) -> Array:
    """Label values with a positive area, minus ``exclude`` (e.g. background, ignore)."""
    ids = np.flatnonzero(areas > 0)
    drop = [int(x) for x in exclude if x is not None]
    return ids[~np.isin(ids, drop)] if drop else ids


def compact_index(labels: Array, ids: Array) -> Array:
    """Map ``labels`` to ``0..len(ids)-1`` by position in ``ids``; every other value -> len(ids).

    >>> compact_index(np.array([[5, 0], [9, 5]]), np.array([5, 9])).tolist()
    [[0, 2], [1, 0]]
    """
    labels = np.asarray(labels)
    ids = np.asarray(ids, dtype=np.int64)
    top = int(labels.max()) if labels.size else 0
    if ids.size:
        top = max(top, int(ids.max()))
    lut = np.full(top + 1, len(ids), dtype=np.int32)
    lut[ids] = np.arange(len(ids), dtype=np.int32)
    return lut[labels]


def overlap_matrix(gt_index: Array, pred_index: Array, weights: Array, n_gt: int,
                   n_pred: int) -> Array:
    """Weighted overlap of compact indices: ``(n_gt + 1, n_pred + 1)``; last row/col = the rest.

    >>> overlap_matrix(np.array([0, 0, 1]), np.array([1, 0, 1]), np.ones(3), 1, 1)
    array([[1., 1.],
           [0., 1.]])
    """
    joint = np.asarray(gt_index, dtype=np.intp).ravel() * (n_pred + 1)
    joint += np.asarray(pred_index).ravel()
    counts = np.bincount(joint, weights=np.asarray(weights).ravel(),
                         minlength=(n_gt + 1) * (n_pred + 1))
    return counts.reshape(n_gt + 1, n_pred + 1)


def label_extents(labels: Array, ids: Sequence[int]) -> Tuple[Array, Array]:
    """Rows and columns occupied by each label value in ``ids``: bool ``(n, H)``, ``(n, W)``.

    >>> rows, cols = label_extents(np.array([[0, 7], [0, 0]]), [7])
    >>> rows.tolist(), cols.tolist()
    ([[True, False]], [[False, True]])
    """
    height, width = labels.shape
    rows = np.zeros((len(ids), height), dtype=bool)
    cols = np.zeros((len(ids), width), dtype=bool)
    for k, value in enumerate(ids):  # ~2 ms per label at 2048 x 1024; faster than one bincount
        mask = labels == value
        rows[k], cols[k] = mask.any(axis=1), mask.any(axis=0)
    return rows, cols


def boundary_tolerance_px(height: int, width: int, tol_frac: float) -> float:
    """360VOS boundary tolerance: ``tol_frac`` x the image diagonal, in pixels.

    >>> round(boundary_tolerance_px(960, 1920, 0.008), 3)
    17.173
    """
    return float(tol_frac) * math.hypot(height, width)


def _circular_arc(occupied: Array) -> Tuple[int, int]:
    """Shortest circular run ``(start, length)`` of columns that holds every occupied column."""
    width = occupied.shape[0]
    cols = np.flatnonzero(occupied)
    gaps = (np.roll(cols, -1) - cols) % width - 1  # empty columns after each occupied one
    if cols.size == 1:
        gaps = np.array([width - 1])
    widest = int(np.argmax(gaps))
    start = int(cols[(widest + 1) % cols.size])
    return start, width - int(gaps[widest])


@dataclass(frozen=True)
class ErpWindow:
    """A sub-image of an ERP frame that wraps around the seam and folds over the poles.

    Window row ``i`` shows source row ``rows[i]``; window column ``j`` shows source column
    ``cols[j] % W``, or ``(cols[j] + W / 2) % W`` on a ``folded`` row (one beyond a pole: row
    ``-1`` is row ``0`` seen half a turn away). The core (``core_rows`` x ``core_cols``) holds
    every source pixel of the region of interest exactly once; the pad around it only gives
    neighbours and distance context.
    """

    rows: Array
    folded: Array
    cols: Array
    core_rows: Array
    core_cols: Array

    @classmethod
    def around(cls, row_occupied: Array, col_occupied: Array, pad_px: int
               ) -> Optional['ErpWindow']:
        """Window around the occupied rows/columns plus ``pad_px``; None when nothing is."""
        height, width = row_occupied.shape[0], col_occupied.shape[0]
        occ_rows = np.flatnonzero(row_occupied)
        if occ_rows.size == 0 or not np.any(col_occupied):
            return None
        r0, r1 = int(occ_rows[0]), int(occ_rows[-1])
        start, length = _circular_arc(col_occupied)
        if length + 2 * pad_px >= width:  # the whole ring, wrapped on both sides
            start, length = 0, width
        win_rows = np.arange(r0 - pad_px, r1 + pad_px + 1)
        win_cols = np.arange(start - pad_px, start + length + pad_px)
        src_rows = np.where(win_rows < 0, -win_rows - 1,
                            np.where(win_rows >= height, 2 * height - 1 - win_rows, win_rows))
        return cls(np.clip(src_rows, 0, height - 1), (win_rows < 0) | (win_rows >= height),
                   win_cols, (win_rows >= r0) & (win_rows <= r1),
                   (win_cols >= start) & (win_cols < start + length))

    @property
    def counted(self) -> Array:
        """Core pixels, ``(R, C)`` bool."""
        return self.core_rows[:, None] & self.core_cols[None, :]

    def take(self, image: Array) -> Array:
        """The window's pixels of a full ``(H, W)`` image, ``(R, C)``."""
        rows = image[self.rows]
        out = np.take(rows, self.cols, axis=1, mode='wrap')
        if self.folded.any():
            out[self.folded] = np.take(rows[self.folded], self.cols + image.shape[1] // 2,
                                       axis=1, mode='wrap')
        return out


def inner_boundary(mask: Array) -> Array:
    """Mask pixels with a 4-neighbour outside the mask; the array edge counts as inside.

    >>> inner_boundary(np.pad(np.ones((3, 3), bool), 1)).astype(int)[1:4, 1:4]
    array([[1, 1, 1],
           [1, 0, 1],
           [1, 1, 1]])
    """
    interior = mask.copy()
    interior[1:, :] &= mask[:-1, :]
    interior[:-1, :] &= mask[1:, :]
    interior[:, 1:] &= mask[:, :-1]
    interior[:, :-1] &= mask[:, 1:]
    return mask & ~interior


def _distance_to(boundary: Array) -> Array:
    """Euclidean distance in pixels from every pixel to the nearest ``boundary`` pixel."""
    return cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2,
                                 cv2.DIST_MASK_PRECISE)


def window_boundary_f(pred: Array, gt: Array, weights: Array, counted: Array,
                      tol_px: float) -> float:
    """Boundary F-measure of two window masks, area-weighted over the ``counted`` pixels.

    Precision: weighted share of counted predicted boundary pixels within ``tol_px`` of a
    ground-truth boundary pixel; recall the other way round. Both boundaries empty -> 1.0,
    one empty -> 0.0.
    """
    gt_edge, pred_edge = inner_boundary(gt), inner_boundary(pred)
    weights = np.broadcast_to(weights, gt.shape)
    gt_mass = float(np.sum(weights, where=gt_edge & counted))
    pred_mass = float(np.sum(weights, where=pred_edge & counted))
    if gt_mass == 0.0 and pred_mass == 0.0:
        return 1.0
    if gt_mass == 0.0 or pred_mass == 0.0:
        return 0.0
    near_gt = _distance_to(gt_edge) <= tol_px
    near_pred = _distance_to(pred_edge) <= tol_px
    precision = float(np.sum(weights, where=pred_edge & counted & near_gt)) / pred_mass
    recall = float(np.sum(weights, where=gt_edge & counted & near_pred)) / gt_mass
    if precision + recall == 0.0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def erp_boundary_f(pred_mask: Array, gt_mask: Array, valid: Array, row_occupied: Array,
                   col_occupied: Array, tol_px: float) -> float:
    """Boundary F of two full ERP masks on a window around their union's extent.

    ``valid`` is False on ignored pixels (their boundary pixels are not counted, but still
    match); ``row_occupied``/``col_occupied`` cover the union of both masks.
    """
    height = pred_mask.shape[0]
    window = ErpWindow.around(row_occupied, col_occupied, int(math.ceil(tol_px)) + 2)
    if window is None:
        return 1.0
    weights = erp_row_weights(height)[window.rows][:, None]
    return window_boundary_f(window.take(pred_mask), window.take(gt_mask), weights,
                             window.counted & window.take(valid), tol_px)


def match_objects(score: Array, unmatched_score: Array) -> List[Tuple[int, int]]:
    """Assign columns to rows once (Hungarian), maximising the total score.

    ``score[r, c]`` is the score of row ``r`` when matched to column ``c``; a row may also stay
    unmatched and then scores ``unmatched_score[r]``. Returns the matched ``(row, col)`` pairs,
    sorted by row. A pair is only kept when it beats leaving the row unmatched.

    >>> match_objects(np.array([[0.2, 0.9], [0.8, 0.7]]), np.zeros(2))
    [(0, 1), (1, 0)]
    """
    score = np.asarray(score, dtype=np.float64)
    if score.size == 0:
        return []
    gain = score - np.asarray(unmatched_score, dtype=np.float64)[:, None]
    rows, cols = linear_sum_assignment(np.maximum(gain, 0.0), maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if gain[r, c] > 0.0]
