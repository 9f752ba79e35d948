"""Object discovery ("segment any"): mask quality, mask NMS and merging on the sphere.

ARCHITECTURE §5 (Discovery). The per-patch step, upstream's automatic mask generator on one
patch, is :mod:`sap_ros.engine.discovery_filter`; this module holds the mask measures it and the
sphere-level steps use:

* :func:`stability_score` - upstream's stability score (IoU of the mask at two cut-offs);
* :func:`mask_iou_matrix`, :func:`suppress_duplicates` - mask-IoU non-maximum suppression (the
  ``discovery.nms: mask`` option);
* :func:`merge_pairs`, :func:`merge_pairs_from_labels`, :func:`resolve_merges` - objects that turn
  out to be the same on the sphere, compared with spherical-area (``cos lat``) weights.

Mask functions accept NumPy arrays or torch tensors (any device); per-candidate results
(indices) are NumPy. Counting is exact: masks are counted in float32 with autocast disabled, which
is exact up to 2**24 pixels per mask.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Tuple, Union

import numpy as np
import torch

from sap_ros.errors import InvalidInputError

ArrayLike = Union[np.ndarray, torch.Tensor]

# Label maps are uint16: a pair of ids packs into one integer key as (low << 16) | high.


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
