"""Discovery in one patch, as upstream's ``SAM2AutomaticMaskGenerator`` runs on one image.

ARCHITECTURE §5 (Discovery). Upstream (sam2 1.1.0, ``crop_n_layers=0``) prompts a grid of
``points_per_side**2`` points (cell centres, ``build_point_grid`` scaled by the image's width and
height), ``points_per_batch`` at a time, each point alone with multimask output, and filters
*each* of the three masks of every point on its own: predicted IoU ``> pred_iou_thresh`` (no
filter at 0), logits upsampled to the image (bilinear, ``align_corners=False``) and there
stability ``>= stability_score_thresh`` (no filter at 0; the masks at ``mask_threshold`` +- the
offset), boxes of the thresholded masks (inclusive pixel coordinates, ``batched_mask_to_box``) and
greedy box NMS over the whole image with the predicted IoU as score (torchvision's
``batched_nms``: suppress IoU ``>`` the threshold). This module does the same per patch:

* :func:`resolve_points_per_side`, :func:`grid_points`, :func:`free_points` - the grid, at
  upstream's density per model input pixel, restricted to points no tracked object covers;
* :func:`~sap_ros.engine.discovery_boxes.masks_to_boxes`,
  :func:`~sap_ros.engine.discovery_boxes.box_nms` - boxes and NMS with torchvision's conventions;
* :class:`CandidateFilter` (from ``discovery.*``) and :func:`search_patch` - the filter, batch by
  batch with bounded memory: masks that fail the predicted IoU are dropped before they are
  upsampled where that is cheaper (the host; the result is the same), upsampling runs in chunks;
  NumPy candidates keep only the survivors' decoder logits until the NMS;
* :func:`search_points` - the above around a segmenter's ``discover``: device candidates are read
  once per patch (every batch's few numbers per mask, kept on the device until the last batch);
  the kept points are then decoded again for their masks (:func:`_search_deferred`);
* :func:`propose_new_masks` - the grid's free points through :func:`search_points`.

Departures are options of :class:`CandidateFilter` whose defaults are upstream's values or off
(``discovery.multimask``, ``decide_at``, ``nms``, ``min_area_fraction``,
``max_covered_fraction``; README "How sap_ros drives SAM2"). Device tensors stay on their device:
one small read per patch (per batch with ``discovery.nms: mask``, which needs every mask), the
masks never.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import itertools
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from sap_ros.config import DiscoveryConfig
from sap_ros.engine.discovery import stability_score, suppress_duplicates
from sap_ros.engine.discovery_boxes import box_nms, masks_to_boxes
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.torch_device import to_device

ArrayLike = Union[np.ndarray, torch.Tensor]
#: ``indices -> Candidates``: the points of those indices decoded again (one call).
Redecode = Callable[[np.ndarray], Any]

#: SAM2AutomaticMaskGenerator's grid (32 per side) over SAM2's standard input (1024 px).
UPSTREAM_POINTS_PER_SIDE = 32
UPSTREAM_INPUT_PX = 1024
#: Upsampled float32 logits held at once, per device type: bounds the memory of one chunk
#: (64 MiB on the host; 1 GiB on a GPU, where one chunk per mask-decoder batch at 1024 px keeps
#: the kernel launches per batch few: ``sap_bench`` discovery_cost ``--chunk-mib`` measures it).
CHUNK_VALUES = {'cpu': 1 << 24, 'cuda': 1 << 28}
# Columns of the per-mask statistics read back (the deferred search adds point and mask index).
_OK, _IOU, _STAB, _BOX, _AREA, _POINT, _MASK = 0, 1, 2, slice(3, 7), 7, 8, 9


def resolve_points_per_side(points_per_side: int, image_size: int) -> int:
    """``discovery.points_per_side``, 0 meaning upstream's density per model input pixel.

    >>> resolve_points_per_side(0, 1024), resolve_points_per_side(0, 256), \
resolve_points_per_side(12, 256)
    (32, 8, 12)

    """
    if points_per_side < 0 or image_size < 1:
        raise InvalidInputError(f'points_per_side must be >= 0 and image_size >= 1, got '
                                f'{points_per_side}, {image_size}')
    if points_per_side:
        return int(points_per_side)
    return max(1, round(UPSTREAM_POINTS_PER_SIDE * image_size / UPSTREAM_INPUT_PX))


def grid_points(patch_px: int, points_per_side: int) -> np.ndarray:
    """Upstream's point grid on a square patch, ``(n*n, 2)`` float64 ``(x, y)`` patch pixels.

    Cell centres ``(i + 0.5) / n`` of the patch's side (``linspace(1/2n, 1 - 1/2n, n)`` as
    ``build_point_grid``), scaled by the patch size as ``_process_crop`` does; rows top to
    bottom, ``x`` fastest. The coordinates are upstream's: SAM2's prompt encoder reads ``x`` as
    the pixel whose centre is at ``x + 0.5``.

    >>> grid_points(8, 2)
    array([[2., 2.],
           [6., 2.],
           [2., 6.],
           [6., 6.]])

    """
    if patch_px < 1 or points_per_side < 1:
        raise InvalidInputError(f'grid needs patch_px >= 1 and points_per_side >= 1, got '
                                f'{patch_px}, {points_per_side}')
    n = int(points_per_side)
    side = np.linspace(0.5 / n, 1.0 - 0.5 / n, n)
    xs, ys = np.meshgrid(side, side, indexing='xy')
    return np.stack([xs.ravel(), ys.ravel()], axis=-1) * float(patch_px)


def free_points(points: np.ndarray, covered: ArrayLike, patch_px: int) -> np.ndarray:
    """Flags of the points (patch pixels) on which ``covered`` (square, any size) is False.

    A point ``x`` lies at ``x + 0.5`` (SAM2's convention), i.e. in pixel
    ``floor((x + 0.5) * side / patch_px)`` of the ``covered`` grid. A device ``covered`` is read
    once (the flags of the points).
    """
    side = int(covered.shape[0])
    idx = np.clip(np.floor((np.asarray(points) + 0.5) * side / patch_px), 0, side - 1)
    rows, cols = idx[:, 1].astype(np.intp), idx[:, 0].astype(np.intp)
    if isinstance(covered, torch.Tensor):
        flat = to_device(rows * side + cols, covered.device, torch.long)
        return (covered.reshape(-1)[flat] == 0).numpy(force=True)
    return ~np.asarray(covered, dtype=bool)[rows, cols]


@dataclass(frozen=True)
class CandidateFilter:
    """What a patch's masks must pass (defaults: upstream's generator).

    Attributes:
        pred_iou_thresh: predicted IoU strictly above (0: no filter).
        stability_thresh: stability at least (0: no filter).
        nms_iou: IoU above which the lower-scoring candidate is suppressed.
        max_keep: most candidates returned per patch, best predicted IoU first (0: all).
        multimask: ``all`` three masks per point, or the ``best`` (highest predicted IoU).
        decide_at: ``patch`` (logits upsampled to the patch) or ``decoder`` (1/4 resolution).
        nms: ``box`` (upstream) or ``mask`` (mask IoU at the decoder resolution).
        min_area_fraction: drop masks below this fraction of the decision grid (0: off).
        max_covered_fraction: drop masks with more of their pixels covered (1: off).
        stability_offset: logit offset of the stability score (upstream: 1).
        mask_threshold: logit above which a pixel is inside (upstream: 0).

    """

    pred_iou_thresh: float = 0.8
    stability_thresh: float = 0.95
    nms_iou: float = 0.7
    max_keep: int = 0
    multimask: str = 'all'
    decide_at: str = 'patch'
    nms: str = 'box'
    min_area_fraction: float = 0.0
    max_covered_fraction: float = 1.0
    stability_offset: float = 1.0
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        """Reject values no option allows."""
        if self.max_keep < 0:
            raise InvalidInputError(f'max_keep must be >= 0, got {self.max_keep}')
        for name, value, allowed in (('multimask', self.multimask, ('all', 'best')),
                                     ('decide_at', self.decide_at, ('patch', 'decoder')),
                                     ('nms', self.nms, ('box', 'mask'))):
            if value not in allowed:
                raise InvalidInputError(f'{name} must be one of {allowed}, got {value!r}')

    @classmethod
    def from_config(cls, cfg: DiscoveryConfig) -> 'CandidateFilter':
        """Thresholds and options from ``discovery.*``; ``max_keep`` = ``max_new_per_frame``."""
        return cls(pred_iou_thresh=cfg.pred_iou_thresh, stability_thresh=cfg.stability_thresh,
                   nms_iou=cfg.nms_iou, max_keep=cfg.max_new_per_frame,
                   multimask=cfg.multimask, decide_at=cfg.decide_at, nms=cfg.nms,
                   min_area_fraction=cfg.min_area_fraction,
                   max_covered_fraction=cfg.max_covered_fraction)


@dataclass
class PatchCandidates:
    """The candidates of one patch after the filter and NMS, best predicted IoU first.

    Attributes:
        masks: ``(K, S, S)`` bool at the decision resolution, of the segmenter's kind.
        iou: ``(K,)`` predicted IoU; ``stability``: ``(K,)``; ``boxes``: ``(K, 4)`` inclusive.
        decoded: masks the decoder produced (points x masks per point).
        passed: masks that passed the thresholds (before NMS).
        batches: mask-decoder calls.

    """

    masks: Any
    iou: np.ndarray
    stability: np.ndarray
    boxes: np.ndarray
    decoded: int = 0
    passed: int = 0
    batches: int = 0
    area: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _decision_logits(low: torch.Tensor, side: int) -> torch.Tensor:
    """``(K, h, w)`` decoder logits -> float32 at ``side`` (SAM2ImagePredictor's upsampling)."""
    low = low.float()
    if tuple(low.shape[-2:]) == (side, side):
        return low
    return F.interpolate(low[:, None], size=(side, side), mode='bilinear',
                         align_corners=False)[:, 0]


def _stats(low: torch.Tensor, iou: torch.Tensor, filt: CandidateFilter, side: int,
           covered: Optional[torch.Tensor]) -> torch.Tensor:
    """Per mask ``ok, iou, stability, x0, y0, x1, y1, area`` (float32, on the logits' device)."""
    rows: List[torch.Tensor] = []
    chunk = max(1, CHUNK_VALUES.get(low.device.type, CHUNK_VALUES['cpu']) // (side * side))
    with torch.autocast(device_type=low.device.type, enabled=False):
        for start in range(0, low.shape[0], chunk):
            logits = _decision_logits(low[start:start + chunk], side)
            stab = torch.as_tensor(stability_score(logits, filt.mask_threshold,
                                                   filt.stability_offset))
            masks = logits > filt.mask_threshold
            area = masks.flatten(1).sum(dim=1).float()
            cover = (masks & covered).flatten(1).sum(dim=1).float() if covered is not None \
                else torch.zeros_like(area)
            cand_iou = iou[start:start + chunk].float()
            ok = torch.ones_like(area, dtype=torch.bool)
            if filt.pred_iou_thresh > 0:
                ok &= cand_iou > filt.pred_iou_thresh
            if filt.stability_thresh > 0:
                ok &= stab >= filt.stability_thresh
            if filt.min_area_fraction > 0:
                ok &= area >= filt.min_area_fraction * side * side
            if covered is not None:
                ok &= cover <= filt.max_covered_fraction * area
            rows.append(torch.cat([ok.float()[:, None], cand_iou[:, None], stab[:, None],
                                   masks_to_boxes(masks), area[:, None]], dim=1))
    return torch.cat(rows) if rows else low.new_zeros((0, 8))


def _as_tensor(values: ArrayLike) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))


def search_patch(batches: Iterable[Any], patch_px: int, filt: CandidateFilter,
                 covered: Optional[ArrayLike] = None,
                 redecode: Optional[Redecode] = None) -> PatchCandidates:
    """Filter a patch's discovery batches as upstream's generator; see the module docstring.

    Args:
        batches: :class:`~sap_ros.engine.segmenter.Candidates` (``logits (B, M, h, w)``,
            ``iou (B, M)``), NumPy or tensors, one per mask-decoder call, points in order.
        patch_px: side of the patch the points were placed on (the decision resolution with
            ``decide_at='patch'``).
        filt: the thresholds and options.
        covered: optional square bool map of pixels on tracked objects (any size), used only by
            ``max_covered_fraction`` < 1.
        redecode: ``indices -> Candidates`` of those points (same order, all masks per point).
            Given, tensor candidates and box NMS take :func:`_search_deferred` (one read per
            patch); otherwise every batch is read and its survivors' logits are kept.

    """
    it = iter(batches)
    first = next(it, None)
    if first is None:
        return _empty(patch_px, None, True, 0)
    batches = itertools.chain([first], it)
    if redecode is not None and isinstance(first.logits, torch.Tensor) and filt.nms == 'box':
        return _search_deferred(batches, patch_px, filt, covered, redecode)
    kept_low: List[torch.Tensor] = []
    kept_rows: List[np.ndarray] = []
    decoded = n_batches = 0
    host_kind = True
    device: Optional[torch.device] = None
    cover_map: Optional[torch.Tensor] = None
    side = int(patch_px)
    for cand in batches:
        n_batches += 1
        logits, iou = _checked(cand)
        host_kind = host_kind and not isinstance(cand.logits, torch.Tensor)
        if logits.shape[0] == 0:
            continue
        if filt.decide_at == 'decoder':
            side = int(logits.shape[-1])
        low, scores, _ = _batch_masks(logits, iou, filt)
        decoded += int(low.shape[0])
        device = low.device
        pre = _host_pre_filter(scores, filt)
        if pre is not None:
            low, scores = low[pre], scores[pre]
            if low.shape[0] == 0:
                continue
        if covered is not None and filt.max_covered_fraction < 1.0 and cover_map is None:
            cover_map = _resize_nearest(_on(covered, low.device) != 0, side)
        stats = _stats(low, scores, filt, side, cover_map).numpy(force=True)  # one read
        ok = np.flatnonzero(stats[:, _OK] > 0)
        if ok.size:
            kept_low.append(low[torch.as_tensor(ok, device=low.device)])
            kept_rows.append(stats[ok])
    rows_np = np.concatenate(kept_rows) if kept_rows else np.zeros((0, 8), np.float32)
    if rows_np.shape[0] == 0:
        return _empty(side, device, host_kind, n_batches, decoded)
    low_all = torch.cat(kept_low)
    if filt.nms == 'box':
        keep = box_nms(rows_np[:, _BOX], rows_np[:, _IOU], filt.nms_iou)
    else:
        keep = suppress_duplicates(low_all > filt.mask_threshold, rows_np[:, _IOU], filt.nms_iou)
    if filt.max_keep:
        keep = keep[:filt.max_keep]
    chosen = low_all[torch.as_tensor(keep, device=low_all.device)]
    with torch.autocast(device_type=chosen.device.type, enabled=False):
        masks = _decision_logits(chosen, side) > filt.mask_threshold
    rows_kept = rows_np[keep].astype(np.float64)
    return PatchCandidates(masks.numpy() if host_kind else masks, rows_kept[:, _IOU],
                           rows_kept[:, _STAB], rows_kept[:, _BOX], decoded,
                           int(rows_np.shape[0]), n_batches, rows_kept[:, _AREA])


def _empty(side: int, device: Optional[torch.device], host_kind: bool, batches: int,
           decoded: int = 0) -> PatchCandidates:
    """No candidate: ``(0, side, side)`` masks of the segmenter's kind."""
    masks: Any = (np.zeros((0, side, side), bool) if host_kind or device is None
                  else torch.zeros((0, side, side), dtype=torch.bool, device=device))
    return PatchCandidates(masks, np.zeros(0), np.zeros(0), np.zeros((0, 4)), decoded, 0,
                           batches)


def _search_deferred(batches: Iterable[Any], patch_px: int, filt: CandidateFilter,
                     covered: Optional[ArrayLike], redecode: Redecode) -> PatchCandidates:
    """:func:`search_patch` with one device read per patch (device candidates, box NMS).

    Each batch's per-mask numbers (and which point and mask they belong to) stay on the device
    and its logits are dropped; after the last batch the numbers are read in one copy, the NMS
    runs on the host and the kept points are decoded again (one more mask-decoder call) for
    their masks. Keeping every batch's logits instead would hold up to 805 MB at 1024 px
    (1024 points x 3 x 256 x 256 float32). A point's decoding does not depend on the other
    points of its batch, so the masks are the first decoding's up to float noise; the returned
    numbers (predicted IoU, stability, box, area) are the first decoding's.
    """
    stats: List[torch.Tensor] = []
    decoded = n_batches = first_point = 0
    device: Optional[torch.device] = None
    cover_map: Optional[torch.Tensor] = None
    side = int(patch_px)
    for cand in batches:
        n_batches += 1
        logits, iou = _checked(cand)
        n_points = int(logits.shape[0])
        if n_points == 0:
            continue
        device = logits.device
        if filt.decide_at == 'decoder':
            side = int(logits.shape[-1])
        points = torch.arange(first_point, first_point + n_points, device=device)
        first_point += n_points
        low, scores, which = _batch_masks(logits, iou, filt)
        decoded += int(low.shape[0])
        where = torch.stack([points[:, None].expand_as(which).flatten(), which.flatten()], 1)
        pre = _host_pre_filter(scores, filt)
        if pre is not None:
            low, scores, where = low[pre], scores[pre], where[pre]
        if covered is not None and filt.max_covered_fraction < 1.0 and cover_map is None:
            cover_map = _resize_nearest(_on(covered, device) != 0, side)
        stats.append(torch.cat([_stats(low, scores, filt, side, cover_map), where.float()], 1))
    if device is None:
        return _empty(side, None, False, n_batches)
    table = torch.cat(stats).numpy(force=True)  # the patch's one read
    rows_np = table[table[:, _OK] > 0]
    if rows_np.shape[0] == 0:
        return _empty(side, device, False, n_batches, decoded)
    keep = box_nms(rows_np[:, _BOX], rows_np[:, _IOU], filt.nms_iou)
    if filt.max_keep:
        keep = keep[:filt.max_keep]
    point_of, mask_of = rows_np[keep, _POINT].astype(np.int64), rows_np[keep, _MASK]
    points_needed, slot = np.unique(point_of, return_inverse=True)
    again = redecode(points_needed)
    chosen = _as_tensor(again.logits)[to_device(slot, device, torch.long),
                                      to_device(mask_of, device, torch.long)]
    with torch.autocast(device_type=device.type, enabled=False):
        masks = _decision_logits(chosen, side) > filt.mask_threshold
    rows_kept = rows_np[keep].astype(np.float64)
    return PatchCandidates(masks, rows_kept[:, _IOU], rows_kept[:, _STAB], rows_kept[:, _BOX],
                           decoded, int(rows_np.shape[0]), n_batches, rows_kept[:, _AREA])


def _batch_masks(logits: torch.Tensor, iou: torch.Tensor, filt: CandidateFilter
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch's masks as the filter sees them, one row each.

    ``(K, h, w)`` logits, ``(K,)`` float32 predicted IoU and, per point, which of its outputs
    the rows are (``(P, M)``: all of them, or ``(P, 1)`` the best with ``multimask='best'``).
    """
    n_points, n_masks = int(logits.shape[0]), int(logits.shape[1])
    which = torch.arange(n_masks, device=logits.device).expand(n_points, n_masks)
    if filt.multimask == 'best':
        which = iou.float().argmax(dim=1, keepdim=True)
        logits = logits.gather(1, which[:, :, None, None].expand(-1, -1, *logits.shape[2:]))
        iou = iou.gather(1, which)
    return logits.flatten(0, 1), iou.flatten().float(), which


def _host_pre_filter(scores: torch.Tensor, filt: CandidateFilter) -> Optional[torch.Tensor]:
    """On the host, the rows whose predicted IoU passes; None on a device or with no threshold.

    Upstream filters the predicted IoU before stability: dropping those masks before they are
    upsampled changes nothing, and on the host the read is free.
    """
    if scores.device.type != 'cpu' or filt.pred_iou_thresh <= 0:
        return None
    return torch.nonzero(scores > filt.pred_iou_thresh).flatten()


def _checked(cand: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """A batch's ``(B, M, h, w)`` logits and ``(B, M)`` iou as tensors (clear error if not)."""
    logits, iou = _as_tensor(cand.logits), _as_tensor(cand.iou)
    if logits.dim() != 4 or tuple(iou.shape) != tuple(logits.shape[:2]):
        raise InvalidInputError(f'candidates need (B, M, h, w) logits and (B, M) iou, got '
                                f'{tuple(logits.shape)} and {tuple(iou.shape)}')
    return logits, iou


def _on(values: ArrayLike, device: torch.device) -> torch.Tensor:
    """``values`` as a tensor on ``device`` (uploaded if needed; never a copy back)."""
    tensor = _as_tensor(values)
    return tensor if tensor.device == device else tensor.to(device)


def _resize_nearest(mask: torch.Tensor, side: int) -> torch.Tensor:
    """A square bool map at ``side`` by nearest-pixel lookup (no interpolation)."""
    n = int(mask.shape[0])
    if n == side:
        return mask
    idx = (torch.arange(side, device=mask.device) * n) // side
    return mask[idx][:, idx]


def search_points(segmenter: Any, view_index: int, points: np.ndarray, patch_px: int,
                  filt: CandidateFilter, points_per_batch: int = 64,
                  covered: Optional[ArrayLike] = None) -> PatchCandidates:
    """:func:`search_patch` on ``segmenter.discover`` of ``points``, able to decode them again.

    Tensor candidates must answer the points in order, one row each (SAM2 does): the deferred
    search decodes the points it keeps again by their index. NumPy candidates may hold one row
    per segment instead (the geometric oracle); they take the per-batch search.
    """
    points = np.asarray(points, dtype=np.float64)

    def redecode(indices: np.ndarray) -> Any:
        parts = list(_one_row_per_point(
            segmenter.discover(view_index, points[indices], max(1, len(indices))), len(indices)))
        if len(parts) == 1:
            return parts[0]
        return type(parts[0])(torch.cat([_as_tensor(p.logits) for p in parts]),
                              torch.cat([_as_tensor(p.iou) for p in parts]))

    batches = _one_row_per_point(segmenter.discover(view_index, points, points_per_batch),
                                 len(points))
    return search_patch(batches, patch_px, filt, covered, redecode)


def _one_row_per_point(batches: Iterable[Any], n_points: int) -> Iterator[Any]:
    """The batches, checked at the end to hold one row per point when they are tensors."""
    rows, tensors = 0, False
    for cand in batches:
        rows += int(cand.logits.shape[0])
        tensors = tensors or isinstance(cand.logits, torch.Tensor)
        yield cand
    if tensors and rows != n_points:
        raise InvalidInputError(f'discover returned {rows} rows of tensor candidates for '
                                f'{n_points} points: tensor candidates answer one point each')


def propose_new_masks(segmenter: Any, view_index: int, covered: Optional[ArrayLike],
                      patch_px: int, points_per_side: int, filt: CandidateFilter,
                      points_per_batch: int = 64) -> List[ArrayLike]:
    """Masks worth a new object in the part of a patch that ``covered`` leaves free, best first.

    Upstream's grid on the patch (``patch_px``, the pixels the segmenter reads points in), the
    points on pixels that ``covered`` (a square bool map, NumPy or a device tensor; None: nothing
    covered, and no read) leaves free go to ``segmenter.discover`` in batches,
    :func:`search_points` filters what comes back. Empty masks (possible only with the
    thresholds at 0) cannot seed an object and are left out. The masks are at the decision
    resolution, of the segmenter's kind.
    """
    grid = grid_points(patch_px, points_per_side)
    points = grid if covered is None else grid[free_points(grid, covered, patch_px)]
    if len(points) == 0:
        return []
    found = search_points(segmenter, view_index, points, patch_px, filt, points_per_batch,
                          covered)
    return [found.masks[k] for k in range(len(found.iou)) if found.area[k] > 0]
