"""A stand-in for the few torchvision pieces upstream's automatic mask generator imports.

``sam2.automatic_mask_generator`` imports ``torchvision.ops.boxes.batched_nms`` and ``box_area``;
``sam2.utils.transforms`` (``SAM2ImagePredictor``) imports ``torchvision.transforms.Normalize``,
``Resize`` and ``ToTensor`` and scripts ``Sequential(Resize, Normalize)`` with ``torch.jit``.
torchvision's wheels are CUDA-linked and cannot be installed everywhere we develop, so
``sap_bench parity`` (its ``discovery`` scenario) installs this module into ``sys.modules`` **only
when ``import torchvision`` fails**. Evaluation code only: the runtime never imports torchvision
or this module.

It implements torchvision's documented semantics in plain torch, independently of the engine's
own box NMS (:func:`sap_ros.engine.discovery_filter.box_nms`), as simple loops:

* ``batched_nms``: greedy NMS per category, scores ordered by ``scores.sort(descending=True)``
  (the call of torchvision's CPU kernel), IoU of float32 boxes in float32 against the threshold
  as a double, suppress when strictly greater; kept indices by decreasing score (in the greedy
  loop's order for one category, as torchvision's single ``nms`` call);
* ``box_area``: ``(x2 - x1) * (y2 - y1)``;
* ``ToTensor``: HWC uint8 -> CHW float32 in [0, 1];
* ``Resize``: bilinear with antialias on a tensor, the input itself when the size already
  matches (torchvision returns it unchanged then); the parity feeds patches at exactly
  ``image_size``, so it is the identity there;
* ``Normalize``: ``(x - mean) / std`` per channel.
"""
from __future__ import annotations

import sys
import types
from typing import List, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``(N, 4)`` ``x1, y1, x2, y2`` boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _nms_one_category(boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> List[int]:
    order = scores.sort(0, descending=True).indices.tolist()
    b = boxes.detach().cpu().float().numpy()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    removed = set()
    kept: List[int] = []
    for pos, i in enumerate(order):
        if i in removed:
            continue
        kept.append(i)
        for j in order[pos + 1:]:
            if j in removed:
                continue
            w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = np.float32(w * h)
            with np.errstate(invalid='ignore', divide='ignore'):
                iou = np.float32(inter / np.float32(area[i] + area[j] - inter))
            if float(iou) > thresh:
                removed.add(j)
    return kept


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """Greedy NMS within each category of ``idxs``; kept indices by decreasing score.

    One category (the generator's case): the order the greedy loop keeps them in, as
    torchvision's single ``nms`` call returns them.
    """
    kept: List[int] = []
    categories = torch.unique(idxs).tolist()
    for category in categories:
        members = torch.nonzero(idxs == category).flatten()
        local = _nms_one_category(boxes[members], scores[members], float(iou_threshold))
        kept.extend(members[local].tolist())
    keep = torch.as_tensor(kept, dtype=torch.long, device=boxes.device)
    if len(categories) < 2:
        return keep
    return keep[scores[keep].sort(descending=True).indices]


class ToTensor:
    """HWC uint8 image -> CHW float32 tensor in [0, 1]."""

    def __call__(self, pic: np.ndarray) -> torch.Tensor:
        """Convert one image."""
        array = np.asarray(pic)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float() / 255.0


class Resize(nn.Module):
    """Bilinear resize of a CHW / NCHW tensor to ``size`` (antialiased, as torchvision)."""

    def __init__(self, size: Sequence[int]) -> None:
        """``size``: ``(height, width)``."""
        super().__init__()
        self.size: List[int] = [int(size[0]), int(size[1])]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Resize ``img`` (unchanged when it already has the size)."""
        if img.shape[-2] == self.size[0] and img.shape[-1] == self.size[1]:
            return img
        batched = img.dim() == 4
        x = img if batched else img.unsqueeze(0)
        x = F.interpolate(x, size=self.size, mode='bilinear', align_corners=False,
                          antialias=True)
        return x if batched else x.squeeze(0)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Per-channel ``mean`` and ``std``."""
        super().__init__()
        self.mean: List[float] = [float(m) for m in mean]
        self.std: List[float] = [float(s) for s in std]

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        """Normalise ``tensor`` (channels first)."""
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device)
        return (tensor - mean[:, None, None]) / std[:, None, None]


def install() -> bool:
    """Put the stand-in into ``sys.modules`` if ``import torchvision`` fails; True if installed."""
    try:
        import torchvision  # noqa: F401
        return False
    except ImportError:
        pass
    root = types.ModuleType('torchvision')
    ops = types.ModuleType('torchvision.ops')
    boxes = types.ModuleType('torchvision.ops.boxes')
    transforms = types.ModuleType('torchvision.transforms')
    boxes.batched_nms = batched_nms  # type: ignore[attr-defined]
    boxes.box_area = box_area  # type: ignore[attr-defined]
    ops.boxes = boxes  # type: ignore[attr-defined]
    ops.batched_nms = batched_nms  # type: ignore[attr-defined]
    ops.box_area = box_area  # type: ignore[attr-defined]
    for cls in (ToTensor, Resize, Normalize):
        setattr(transforms, cls.__name__, cls)
    root.ops = ops  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    root.__doc__ = f'sap_ros stand-in ({__name__}): not torchvision'
    sys.modules.update({'torchvision': root, 'torchvision.ops': ops,
                        'torchvision.ops.boxes': boxes, 'torchvision.transforms': transforms})
    return True
