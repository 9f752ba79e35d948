"""Boxes of masks and greedy box NMS with torchvision's conventions, for discovery.

ARCHITECTURE §5 (Discovery). Upstream's automatic mask generator takes the boxes of its masks
(``batched_mask_to_box``) and suppresses duplicates with torchvision's ``batched_nms``; the
runtime never imports torchvision, so these are our own code with the same conventions
(:mod:`sap_ros.engine.discovery_filter` uses them per patch).
"""
from __future__ import annotations

from typing import List, Union

import numpy as np
import torch

from sap_ros.errors import InvalidInputError

ArrayLike = Union[np.ndarray, torch.Tensor]


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``(K, H, W)`` bool masks -> ``(K, 4)`` float32 ``x0, y0, x1, y1`` (inclusive pixels).

    The convention of upstream's ``batched_mask_to_box``: the first and last row and column
    holding the mask, so a one-pixel mask has a zero-area box; an empty mask gets ``0, 0, 0, 0``.
    """
    if masks.dim() != 3:
        raise InvalidInputError(f'masks must be (K, H, W), got shape {tuple(masks.shape)}')
    _, height, width = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    top = torch.where(rows, ys, height).amin(dim=1)
    bottom = torch.where(rows, ys, -1).amax(dim=1)
    left = torch.where(cols, xs, width).amin(dim=1)
    right = torch.where(cols, xs, -1).amax(dim=1)
    boxes = torch.stack([left, top, right, bottom], dim=1)
    return (boxes * rows.any(dim=1, keepdim=True)).float()


def box_nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float) -> np.ndarray:
    """Greedy box NMS as torchvision's CPU ``nms``; kept indices, best score first.

    Scores are ordered by ``torch.sort(descending=True)`` on float32 (torchvision's own call, so
    ties resolve as there); box area ``(x1 - x0) * (y1 - y0)``, IoU computed in float32 and
    compared as a double with ``iou_threshold``: a box is suppressed when its IoU with a kept one
    is strictly above it (an IoU of exactly 0.6 rounds to 0.6000000238 in float32 and is above
    0.6, as in torchvision; two zero-area boxes have IoU NaN: never suppressed).
    """
    b, s = _host_float32(boxes).reshape(-1, 4), _host_float32(scores).reshape(-1)
    if b.shape[0] != s.shape[0]:
        raise InvalidInputError(f'need (K, 4) boxes and (K,) scores, got {tuple(b.shape)} and '
                                f'{tuple(s.shape)}')
    # torch.sort's order (not a stable one) written straight into a NumPy array: host numbers
    # stay host numbers (no tensor read for the engine's read counters to see).
    order = np.empty(s.shape[0], dtype=np.int64)
    torch.sort(torch.from_numpy(s), dim=0, descending=True,
               out=(torch.empty(s.shape[0]), torch.from_numpy(order)))
    x0, y0, x1, y1 = b.T
    area = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(b.shape[0], dtype=bool)
    keep: List[int] = []
    with np.errstate(invalid='ignore', divide='ignore'):
        for i in order.tolist():  # each step is one vector operation over all boxes
            if suppressed[i]:
                continue
            keep.append(i)
            w = np.maximum(np.minimum(x1[i], x1) - np.maximum(x0[i], x0), np.float32(0))
            h = np.maximum(np.minimum(y1[i], y1) - np.maximum(y0[i], y0), np.float32(0))
            inter = w * h
            iou = inter / (area[i] + area - inter)
            suppressed |= iou.astype(np.float64) > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def _host_float32(values: ArrayLike) -> np.ndarray:
    """Contiguous float32 NumPy (a tensor is read back: pass host numbers to avoid it)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to('cpu', torch.float32).numpy()
    return np.ascontiguousarray(values, dtype=np.float32)
