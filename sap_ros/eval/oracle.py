"""Geometric oracle: a segmenter stand-in that cuts a ground-truth label map into the patches.

Used only by tests, benchmarks and evaluation, to measure everything that is not the network:
projection, ordering, association, fusion, seam, poles and ids. Two properties keep it honest:

* every patch names its segments with *different random local ids*, so the pipeline must rebuild
  one consistent ERP label map by association (it cannot read the ground-truth ids);
* masks pass through the resolution SAM2's decoder really produces: logits at ``image_size / 4``
  (here: area-averaged one-hot masks) upsampled with the same interpolation for our patches and
  for the naive whole-ERP upper bound (bilinear as SAM2 does, or bicubic as blend fusion
  samples), so the comparison between the two is fair.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from sap_ros.sphere.fusion import FusionMode, LabelCanvas, associate_patch_labels
from sap_ros.sphere.geometry import validate_erp_shape
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches

DECODER_STRIDE = 4  # SAM2's mask decoder outputs logits at a quarter of its input size
ORACLE_LOGIT_CLIP = 1.0  # the oracle's logits (soft-mask differences) lie in [-1, 1]


def through_decoder_resolution(labels: np.ndarray, out_hw: Optional[tuple] = None,
                               low_res_hw: Optional[tuple] = None,
                               interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Labels -> what a perfect decoder at low resolution gives back, upsampled.

    Each value present (0 included) becomes a soft mask at ``low_res_hw`` (default: a quarter of
    the input size, area-averaged), is upsampled to ``out_hw`` (default: the input size) with
    ``interpolation`` (bilinear as SAM2 does, or ``cv2.INTER_CUBIC`` as blend fusion samples),
    and each output pixel takes the value with the highest soft score.

    >>> lab = np.zeros((16, 16), np.uint16); lab[4:12, 4:12] = 3
    >>> out = through_decoder_resolution(lab)
    >>> int(out[8, 8]), int(out[0, 0])
    (3, 0)
    """
    h, w = labels.shape
    out_h, out_w = (h, w) if out_hw is None else out_hw
    low_h, low_w = ((max(1, h // DECODER_STRIDE), max(1, w // DECODER_STRIDE))
                    if low_res_hw is None else low_res_hw)
    values = np.unique(labels)
    if len(values) == 1:
        return np.full((out_h, out_w), values[0], dtype=labels.dtype)
    best = np.full((out_h, out_w), -1.0, dtype=np.float32)
    out = np.zeros((out_h, out_w), dtype=labels.dtype)
    for value in values:
        low = cv2.resize((labels == value).astype(np.float32), (low_w, low_h),
                         interpolation=cv2.INTER_AREA)
        up = cv2.resize(low, (out_w, out_h), interpolation=interpolation)
        win = up > best
        best[win] = up[win]
        out[win] = value
    return out


@dataclass
class OraclePatch:
    """The oracle's output for one patch, at the decoder's resolution.

    Attributes:
        local_ids: ``(K,)`` uint16 random local ids of the segments in this patch.
        logits: ``(K, h, w)`` float32; > 0 where that segment is the most likely value (its
            soft score minus the best competitor's, "no object" included).
        labels: ``(h, w)`` uint16 hard local labels (0 = no object).
        gt_values: ``(K,)`` the ground-truth value of each segment (for the segmenter stand-in
            only: the pipeline never sees it).

    """

    local_ids: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    gt_values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _soft_logits(values: np.ndarray, soft: np.ndarray) -> np.ndarray:
    order = np.sort(soft, axis=0)
    top1, top2 = order[-1], order[-2] if len(order) > 1 else np.zeros_like(order[-1])
    return soft - np.where(soft >= top1, top2, top1)


class GeometricOracle:
    """Per-patch masks cut from a ground-truth ERP label map, with random local ids per patch.

    Args:
        layout: the patch layout.
        background: ground-truth value meaning "no object" (kept as 0 in the patches), or
            ``None`` when every value is a segment (dense annotation).
        seed: seed of the local-id shuffling (deterministic).
        ignore: ground-truth value meaning "unknown" (e.g. 255 on lossy boundaries), or
            ``None``: such pixels are neither a segment nor background; the segments around
            them compete for them as if the value were absent (:meth:`patch_outputs`).

    """

    def __init__(self, layout: PatchLayout, background: Optional[int] = 0, seed: int = 0,
                 ignore: Optional[int] = None) -> None:
        """Store the layout and seed the local-id generator."""
        self.layout = layout
        self.background = background
        self.ignore = ignore
        self._rng = np.random.default_rng(seed)

    def patch_outputs(self, gt_erp: np.ndarray, size_px: Optional[int] = None,
                      views: Optional[Sequence[int]] = None) -> List[OraclePatch]:
        """Cut ``gt_erp`` into the (listed) views, as the decoder would see them.

        Nearest sampling at ``size_px``, then soft masks at a quarter of that (what SAM2's
        decoder outputs), random local ids.
        """
        validate_erp_shape(gt_erp.shape)
        index = list(range(len(self.layout))) if views is None else list(views)
        patches = extract_patches(self.layout, gt_erp.astype(np.int32), size_px, views=index,
                                  interpolation=cv2.INTER_NEAREST)
        size = patches.shape[1]
        low = max(1, size // DECODER_STRIDE)
        out = []
        for patch in patches:
            values = np.unique(patch)
            if self.ignore is not None:
                values = values[values != self.ignore]  # unknown: no mask, no "no object" vote
            if not len(values):
                out.append(OraclePatch(np.zeros(0, np.uint16), np.zeros((0, low, low), np.float32),
                                       np.zeros((low, low), np.uint16), values))
                continue
            soft = np.stack([cv2.resize((patch == value).astype(np.float32), (low, low),
                                        interpolation=cv2.INTER_AREA) for value in values])
            logits = _soft_logits(values, soft)
            is_object = (np.ones(len(values), bool) if self.background is None
                         else values != self.background)
            local = self._rng.permutation(np.arange(1, int(is_object.sum()) + 1)).astype(np.uint16)
            obj_logits = logits[is_object]
            labels = np.zeros((low, low), dtype=np.uint16)
            if len(local):
                best = np.argmax(obj_logits, axis=0)
                inside = np.take_along_axis(obj_logits, best[None], 0)[0] > 0
                labels[inside] = local[best[inside]]
            out.append(OraclePatch(local, np.ascontiguousarray(obj_logits), labels,
                                   values[is_object]))
        return out


def association_grid(layout: PatchLayout, gt_hw: Tuple[int, int],
                     size_px: Optional[int] = None) -> Tuple[int, int]:
    """The sphere grid the oracle associates segments on: about one cell per decoder pixel.

    A decoder pixel at a patch centre spans ``fov / (size / 4)`` degrees; a coarser grid merges
    small segments into a cell or two, their IoU between patches becomes noise and one object
    gets two ids (seen at 4096 px with 1024 px patches on a 512 x 256 grid). At least 512 x 256,
    at most the ground truth's size.

    >>> association_grid(PatchLayout.build(90.0, 1024), (2048, 4096))
    (512, 1024)
    """
    size = layout.size_px if size_px is None else int(size_px)
    width = 360.0 * (size / DECODER_STRIDE) / layout.fov_deg
    width = min(max(512, 2 * int(math.ceil(width / 2.0))), int(gt_hw[1]) - int(gt_hw[1]) % 2)
    return width // 2, width


def oracle_round_trip(layout: PatchLayout, gt_erp: np.ndarray, out_hw: Tuple[int, int],
                      background: Optional[int] = 0, seed: int = 0,
                      size_px: Optional[int] = None,
                      assoc_hw: Optional[Tuple[int, int]] = None,
                      mode: Union[FusionMode, str] = FusionMode.LEAST_DISTORTION) -> np.ndarray:
    """Ground truth -> oracle patches (local ids) -> association -> fused ``out_hw`` labels.

    Everything but the network: ids are rebuilt by association on the sphere (on ``assoc_hw``,
    default :func:`association_grid`), masks are fused from decoder-resolution logits with the
    fusion ``mode`` (every view is painted, those without objects too: in blend mode they vote
    "no object"). The oracle's logits lie in [-1, 1] (:attr:`OraclePatch.logits`), so blend mode
    clips them at 1.
    """
    if assoc_hw is None:
        assoc_hw = association_grid(layout, gt_erp.shape[:2], size_px)
    outputs = GeometricOracle(layout, background, seed).patch_outputs(gt_erp, size_px)
    local = np.stack([o.labels for o in outputs])
    global_labels, _ = associate_patch_labels(layout, local, assoc_hw)
    canvas = LabelCanvas(layout, out_hw, mode, logit_clip=ORACLE_LOGIT_CLIP)
    for i, out in enumerate(outputs):
        ids = np.zeros(0, dtype=np.uint16)
        if len(out.local_ids):
            lut = np.zeros(int(out.local_ids.max()) + 1, dtype=np.uint16)
            lut[local[i].reshape(-1)] = global_labels[i].reshape(-1)
            ids = lut[out.local_ids]
        keep = ids != 0  # a segment that wins no low-res pixel has no id and no area
        canvas.paint_logits(i, out.logits[keep], ids[keep])
    return canvas.labels.copy()


def naive_upper_bound(gt_erp: np.ndarray, square_px: int = 1024,
                      background: Optional[int] = 0,
                      interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Best possible labels from SAM2 run on the whole ERP squeezed to ``square_px`` squared.

    SAM2 resizes its input to ``square_px`` x ``square_px`` and decodes at a quarter of that;
    the result is upsampled back to the ERP size with ``interpolation`` (give it the one the
    compared fusion samples with). Ground-truth ids are kept (perfect identity), so only
    resolution and distortion losses remain.
    """
    validate_erp_shape(gt_erp.shape)
    low = square_px // DECODER_STRIDE
    out = through_decoder_resolution(gt_erp, out_hw=gt_erp.shape[:2], low_res_hw=(low, low),
                                     interpolation=interpolation)
    if background is not None:
        out = np.where(out == background, 0, out).astype(gt_erp.dtype)
    return out
