"""Object discovery ("segment any"): grid prompts, candidate filtering, duplicate suppression.

ARCHITECTURE §5 (Discovery). In the part of a patch that no tracked object covers, the engine
prompts SAM2 with a grid of points, scores the masks it gets back, and keeps the good, new,
distinct ones. This module holds the pure parts of that step:

* :func:`grid_points` - the point prompts, optionally restricted to uncovered pixels;
* :func:`stability_score`, :func:`mask_iou_matrix`, :func:`suppress_duplicates` - SAM-style mask
  quality and our own mask-IoU non-maximum suppression (torchvision's compiled ops are not
  available everywhere);
* :class:`CandidateFilter` and :func:`filter_candidates` - thresholds from ``discovery.*``;
* :func:`propose_new_masks` - the two above around a segmenter's ``discover`` call;
* :func:`merge_pairs`, :func:`merge_pairs_from_labels`, :func:`resolve_merges` - objects that turn
  out to be the same on the sphere, compared with spherical-area (``cos lat``) weights.

Mask functions accept NumPy arrays or torch tensors (any device); per-candidate results
(indices) are NumPy. Counting is exact: masks are counted in float32 with autocast disabled, which
is exact up to 2**24 pixels per mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from sap_ros.config import DiscoveryConfig
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.torch_device import to_device

ArrayLike = Union[np.ndarray, torch.Tensor]

# Label maps are uint16: a pair of ids packs into one integer key as (low << 16) | high.


def grid_points(size_px: int, points_per_side: int,
                uncovered: Optional[np.ndarray] = None) -> np.ndarray:
    """Regular grid of point prompts over a square patch, ``(P, 2)`` float64 ``(u, v)`` pixels.

    Point ``(i, j)`` lies on the pixel containing the centre of grid cell ``(i, j)``; coordinates
    follow :class:`~sap_ros.sphere.geometry.PatchView` (0 at the first pixel's centre, so they are
    pixel indices and can index ``uncovered``). SAM2 measures point prompts from the image's top
    left corner: add 0.5 before passing them on. Rows are visited top to bottom, left to right.

    Args:
        size_px: patch side in pixels (>= 1).
        points_per_side: grid points along each side (>= 1); capped at ``size_px``.
        uncovered: optional ``(size_px, size_px)`` bool, True where no tracked object covers the
            pixel; only points on such pixels are returned.

    >>> grid_points(8, 2)
    array([[2., 2.],
           [6., 2.],
           [2., 6.],
           [6., 6.]])

    """
    if size_px < 1 or points_per_side < 1:
        raise InvalidInputError(
            f'grid needs size_px >= 1 and points_per_side >= 1, got {size_px}, {points_per_side}')
    n = min(int(points_per_side), int(size_px))
    idx = np.floor((np.arange(n) + 0.5) * size_px / n)
    v, u = np.meshgrid(idx, idx, indexing='ij')
    points = np.stack([u.ravel(), v.ravel()], axis=-1)
    if uncovered is None:
        return points
    uncovered = np.asarray(uncovered, dtype=bool)
    if uncovered.shape != (size_px, size_px):
        raise InvalidInputError(
            f'uncovered must be ({size_px}, {size_px}) bool, got shape {uncovered.shape}')
    keep = uncovered[points[:, 1].astype(np.intp), points[:, 0].astype(np.intp)]
    return points[keep]


def stability_score(logits: ArrayLike, threshold: float = 0.0, offset: float = 1.0) -> ArrayLike:
    """IoU between the masks at ``threshold + offset`` and ``threshold - offset`` (SAM-style).

    A crisp mask keeps its shape when the cut-off moves, so its score is near 1; a blurry one
    grows and shrinks, so its score drops. Empty masks score 0.

    Args:
        logits: ``(..., H, W)`` mask logits, NumPy array or torch tensor.
        threshold: logit cut-off of the mask (0 = probability 0.5).
        offset: how far the cut-off moves either way (>= 0).

    Returns:
        ``(...)`` scores in [0, 1] of the input's kind (float64 NumPy or float32 tensor on the
        input's device).

    """
    if offset < 0:
        raise InvalidInputError(f'stability offset must be >= 0, got {offset}')
    if logits.ndim < 2:
        raise InvalidInputError(f'logits must be (..., H, W), got shape {tuple(logits.shape)}')
    hi, lo = threshold + offset, threshold - offset
    if isinstance(logits, torch.Tensor):
        inter = (logits > hi).flatten(-2).sum(-1).float()
        union = (logits > lo).flatten(-2).sum(-1).float()
        return inter / union.clamp(min=1.0)  # inter <= union, so an empty union gives 0
    logits = np.asarray(logits)
    flat = logits.reshape(*logits.shape[:-2], logits.shape[-2] * logits.shape[-1])
    inter = np.count_nonzero(flat > hi, axis=-1).astype(np.float64)
    union = np.count_nonzero(flat > lo, axis=-1).astype(np.float64)
    return inter / np.maximum(union, 1.0)


def _flat_counts(masks: ArrayLike) -> ArrayLike:
    """``(P, H, W)`` masks -> ``(P, H*W)`` float32 0/1 of the same kind."""
    if masks.ndim != 3:
        raise InvalidInputError(f'masks must be (P, H, W), got shape {tuple(masks.shape)}')
    n, height, width = masks.shape
    if isinstance(masks, torch.Tensor):
        return (masks.reshape(n, height * width) != 0).float()
    return (np.asarray(masks).reshape(n, height * width) != 0).astype(np.float32)


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _count(values: ArrayLike) -> int:
    """Elements of an array or tensor (its shape only: nothing is read)."""
    return int(np.prod(tuple(np.shape(values))))


def _take(masks: ArrayLike, idx: np.ndarray) -> ArrayLike:
    if isinstance(masks, torch.Tensor):
        return masks[torch.as_tensor(idx, dtype=torch.long, device=masks.device)]
    return masks[idx]


def mask_iou_matrix(masks: ArrayLike) -> ArrayLike:
    """Pairwise IoU of ``(P, H, W)`` masks (nonzero = inside), ``(P, P)``.

    One matrix product, no loop over pairs. Returns float64 NumPy for NumPy input, float32 on the
    input's device for a tensor. An empty mask has IoU 0 with everything, itself included.

    >>> m = np.zeros((2, 2, 2), bool); m[0, 0] = True; m[1, :, 0] = True
    >>> mask_iou_matrix(m)
    array([[1.        , 0.33333333],
           [0.33333333, 1.        ]])

    """
    flat = _flat_counts(masks)
    if isinstance(flat, torch.Tensor):
        # Counts must stay exact: no bf16/fp16 matmul under the engine's autocast.
        with torch.autocast(device_type=flat.device.type, enabled=False):
            inter = flat @ flat.T
        area = flat.sum(dim=1)
        union = area[:, None] + area[None, :] - inter
        return inter / union.clamp(min=1.0)
    inter_np = (flat @ flat.T).astype(np.float64)
    area_np = np.diagonal(inter_np)
    return inter_np / np.maximum(area_np[:, None] + area_np[None, :] - inter_np, 1.0)


def suppress_duplicates(masks: ArrayLike, scores: ArrayLike, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression by mask IoU; indices kept, best score first.

    A mask is dropped when its IoU with an already kept (better scoring) mask is strictly above
    ``iou_threshold``. Equal scores keep the lower index first.

    Args:
        masks: ``(P, H, W)`` masks, NumPy or torch.
        scores: ``(P,)`` scores, higher is better.
        iou_threshold: IoU above which the weaker of two masks is suppressed.

    Returns:
        ``(K,)`` int64 indices into ``masks``.

    """
    scores_np = _to_numpy(scores).astype(np.float64).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != scores_np.shape[0]:
        raise InvalidInputError(f'need (P, H, W) masks and (P,) scores, got shapes '
                                f'{tuple(masks.shape)} and {tuple(scores_np.shape)}')
    if scores_np.size == 0:
        return np.zeros(0, dtype=np.int64)
    iou = _to_numpy(mask_iou_matrix(masks))
    order = np.argsort(-scores_np, kind='stable')
    suppressed = np.zeros(scores_np.shape[0], dtype=bool)
    keep: List[int] = []
    for i in order:  # loop over candidates; each step is a vector op over all of them
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class CandidateFilter:
    """Thresholds that a discovered mask must pass to become a new object.

    Attributes:
        pred_iou_thresh: minimum SAM2 predicted IoU.
        stability_thresh: minimum :func:`stability_score`.
        min_area_fraction: minimum mask area as a fraction of the patch (``H * W``).
        nms_iou: mask IoU above which the lower-scoring of two candidates is suppressed.
        max_keep: most candidates kept (best predicted IoU first).
        max_covered_fraction: a candidate with more than this fraction of its pixels already
            covered by tracked objects is a known object and is dropped.

    """

    pred_iou_thresh: float
    stability_thresh: float
    min_area_fraction: float
    nms_iou: float
    max_keep: int
    max_covered_fraction: float = 0.5

    def __post_init__(self) -> None:
        """Reject a negative ``max_keep``."""
        if self.max_keep < 0:
            raise InvalidInputError(f'max_keep must be >= 0, got {self.max_keep}')

    @classmethod
    def from_config(cls, cfg: DiscoveryConfig) -> 'CandidateFilter':
        """Thresholds from ``discovery.*``.

        ``max_keep`` is ``discovery.max_new_per_frame``: no single patch can usefully offer more
        than the whole frame may create.
        """
        return cls(pred_iou_thresh=cfg.pred_iou_thresh, stability_thresh=cfg.stability_thresh,
                   min_area_fraction=cfg.min_area_fraction, nms_iou=cfg.nms_iou,
                   max_keep=cfg.max_new_per_frame)


def filter_candidates(masks: ArrayLike, iou_pred: ArrayLike, stability: ArrayLike,
                      filt: CandidateFilter, covered: Optional[ArrayLike] = None) -> np.ndarray:
    """Indices of the candidate masks worth keeping, best predicted IoU first.

    A candidate is kept when its predicted IoU and stability reach their thresholds, it is not
    empty, its area is at least ``min_area_fraction * H * W``, at most ``max_covered_fraction`` of
    its pixels are in ``covered`` (otherwise it is an object already tracked), and no better
    candidate overlaps it by more than ``nms_iou``; then at most ``max_keep`` of them.

    Args:
        masks: ``(P, H, W)`` candidate masks (nonzero = inside), NumPy or torch.
        iou_pred: ``(P,)`` SAM2 predicted IoU per candidate.
        stability: ``(P,)`` stability score per candidate.
        filt: the thresholds.
        covered: optional ``(H, W)`` mask of pixels already covered by tracked objects.

    Returns:
        ``(K,)`` int64 indices into ``masks``, ``K <= filt.max_keep``.

    """
    flat = _flat_counts(masks)
    n, height, width = masks.shape
    if _count(iou_pred) != n or _count(stability) != n:
        raise InvalidInputError(f'need (P,) iou_pred and stability for {n} masks, got shapes '
                                f'{tuple(np.shape(iou_pred))} and {tuple(np.shape(stability))}')
    if covered is not None and tuple(covered.shape) != (height, width):
        raise InvalidInputError(
            f'covered must be ({height}, {width}), got shape {tuple(covered.shape)}')
    if isinstance(flat, torch.Tensor):
        # Per candidate: predicted IoU, stability, area, covered pixels, read in one copy.
        columns = [torch.as_tensor(iou_pred, device=flat.device).float().reshape(-1),
                   torch.as_tensor(stability, device=flat.device).float().reshape(-1),
                   flat.sum(1)]
        if covered is not None:
            cov = (torch.as_tensor(covered, device=flat.device) != 0).float().reshape(-1)
            with torch.autocast(device_type=flat.device.type, enabled=False):
                columns.append(flat @ cov)
        host = torch.stack(columns).numpy(force=True).astype(np.float64)
        iou_np, stab_np, area = host[0], host[1], host[2]
        covered_px = host[3] if covered is not None else None
    else:
        iou_np = np.asarray(iou_pred, dtype=np.float64).reshape(-1)
        stab_np = np.asarray(stability, dtype=np.float64).reshape(-1)
        area = flat.sum(1).astype(np.float64)
        covered_px = None
        if covered is not None:
            cov_np = (np.asarray(covered) != 0).astype(np.float32).reshape(-1)
            covered_px = (flat @ cov_np).astype(np.float64)
    ok = ((iou_np >= filt.pred_iou_thresh) & (stab_np >= filt.stability_thresh) & (area > 0)
          & (area >= filt.min_area_fraction * height * width))
    if covered_px is not None:
        ok &= covered_px <= filt.max_covered_fraction * area
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return idx.astype(np.int64)
    kept = idx[suppress_duplicates(_take(masks, idx), iou_np[idx], filt.nms_iou)]
    return kept[:filt.max_keep].astype(np.int64)


def _merge_decisions(inter: np.ndarray, area_i: np.ndarray, area_j: np.ndarray,
                     iou_threshold: float, containment: float,
                     min_area_ratio: float) -> np.ndarray:
    """Vectorised merge rule over pairs (see :func:`merge_pairs`)."""
    union = area_i + area_j - inter
    iou = inter / np.maximum(union, 1e-300)
    small = np.minimum(area_i, area_j)
    large = np.maximum(area_i, area_j)
    contained = (inter >= containment * small) & (small >= min_area_ratio * large)
    return (inter > 0) & ((iou >= iou_threshold) | contained)


def _check_row_weights(row_weights: np.ndarray, height: int) -> np.ndarray:
    w = np.asarray(row_weights, dtype=np.float64).reshape(-1)
    if w.shape != (height,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InvalidInputError(f'row_weights must be ({height},) finite and >= 0, got shape '
                                f'{w.shape}')
    return w


def propose_new_masks(segmenter: Any, view_index: int, covered: ArrayLike, patch_px: int,
                      points_per_side: int, filt: CandidateFilter) -> List[ArrayLike]:
    """Masks worth a new object in the part of a patch that ``covered`` leaves free, best first.

    Grid points on the uncovered pixels of ``covered`` (a square bool mask at the decoder's
    resolution, NumPy or a device tensor) go to ``segmenter.discover`` in the patch's
    ``patch_px`` pixels; the candidates that pass :func:`filter_candidates` come back as bool
    masks at the decoder's resolution, of the segmenter's kind (device candidates stay on the
    device: only the grid's flags and the candidates' scores and overlaps are read back).
    """
    low = int(covered.shape[0])
    grid = grid_points(low, points_per_side)
    rows, cols = grid[:, 1].astype(np.intp), grid[:, 0].astype(np.intp)
    if isinstance(covered, torch.Tensor):
        flat_idx = to_device(rows * low + cols, covered.device, torch.long)
        free = (covered.reshape(-1)[flat_idx] == 0).numpy(force=True)
    else:
        free = ~np.asarray(covered, dtype=bool)[rows, cols]
    points_low = grid[free]
    if len(points_low) == 0:
        return []
    points = (points_low + 0.5) * (patch_px / low) - 0.5
    cands = segmenter.discover(view_index, points)
    if len(cands.logits) == 0:
        return []
    masks = cands.logits > 0
    if not isinstance(masks, torch.Tensor) and isinstance(covered, torch.Tensor):
        covered = covered.cpu().numpy()  # a host segmenter on the device frame path
    keep = filter_candidates(masks, cands.iou, cands.stability, filt, covered=covered)
    return [masks[int(k)] for k in keep]


def merge_pairs(masks_erp: Mapping[int, np.ndarray], row_weights: np.ndarray,
                iou_threshold: float, containment: float = 0.9,
                min_area_ratio: float = 0.25) -> List[Tuple[int, int]]:
    """Pairs ``(keep_id, drop_id)`` of objects that coincide on the sphere.

    Areas are weighted per row by ``row_weights`` (``erp_row_weights`` or
    ``erp_pixel_solid_angle_sr``: ratios are the same). Two objects are the same when

    * their weighted IoU is at least ``iou_threshold``, or
    * the smaller one lies at least ``containment`` inside the larger one *and* is at least
      ``min_area_ratio`` of its area: a fragment of the same object, seen from fewer patches.
      A small part inside a large object (a window in a wall) stays a separate object.

    Objects that do not overlap at all are never merged. The older object (smaller id) is kept.
    Use :func:`resolve_merges` to collapse chains.

    Args:
        masks_erp: object id -> ``(H, W)`` bool ERP mask, all on the same grid; may overlap.
        row_weights: ``(H,)`` area weight of each row.
        iou_threshold: e.g. ``discovery.merge_iou``.
        containment: fraction of the smaller object inside the larger one (> 1 disables it).
        min_area_ratio: smallest size of the contained object relative to the container.

    Returns:
        Sorted list of ``(keep_id, drop_id)`` with ``keep_id < drop_id``.

    """
    ids = sorted(int(i) for i in masks_erp)
    if len(ids) < 2:
        return []
    shapes = {np.shape(masks_erp[i]) for i in ids}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise InvalidInputError(f'ERP masks must be (H, W) on one grid, got shapes {shapes}')
    stack = np.stack([np.asarray(masks_erp[i]) != 0 for i in ids])
    w = _check_row_weights(row_weights, stack.shape[1])
    flat = stack.reshape(len(ids), -1).astype(np.float32)
    weighted = flat * np.repeat(w.astype(np.float32), stack.shape[2])[None, :]
    gram = (weighted @ flat.T).astype(np.float64)  # weighted intersections; diagonal = areas
    area = np.diagonal(gram)
    i, j = np.triu_indices(len(ids), k=1)
    merge = _merge_decisions(gram[i, j], area[i], area[j], iou_threshold, containment,
                             min_area_ratio)
    return [(ids[a], ids[b]) for a, b in zip(i[merge], j[merge])]


def resolve_merges(pairs: Iterable[Tuple[int, int]]) -> Dict[int, int]:
    """Collapse merge pairs into ``drop_id -> final keep_id``, the smallest id of each group.

    Merging is transitive: ``(1, 2)`` and ``(2, 3)`` send both 2 and 3 to 1.

    >>> resolve_merges([(2, 3), (1, 2), (5, 9)])
    {3: 1, 2: 1, 9: 5}

    """
    parent: Dict[int, int] = {}

    def root(x: int) -> int:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for keep_id, drop_id in pairs:
        ra, rb = root(int(keep_id)), root(int(drop_id))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: root(x) for x in parent}
