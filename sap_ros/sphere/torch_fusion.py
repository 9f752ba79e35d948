"""Patch logits -> ERP label map on the model's device: :class:`LabelCanvas` as torch operations.

Same rules, same tables: the per-view pixel lists of
:class:`~sap_ros.sphere.sampler.PatchToErpTables` (uploaded once per device, cached in the layout
like the host tables) and the blend weights of :func:`~sap_ros.sphere.fusion.blend_weights`. Every
paint is gathers, ``torch.where`` and ``index_add_``: nothing reads a device value on the host,
so a frame of paints queues without a synchronisation.

Differences from the host canvas, by design:

* Object ids come as host integers (the engine knows which objects it decoded), so the blend
  evidence slot of an id is a host decision; logits stay on the device.
* Blend evidence is dense, ``(objects, H * W)`` float32 (the host canvas keeps sparse chunks,
  which would need a host-side ``nonzero``): 8 MB per object at 2048 x 1024.
* Labels are int32 on the device (torch has no uint16 arithmetic); :func:`labels_to_host`
  returns the uint16 map.
* Sampling: ``grid_sample`` with float coordinates, cv2 with 1/32-pixel fixed point; the maps
  agree on >= 99.9 % of pixels (``test_torch_fusion.py``), the rest are boundary pixels whose
  logit is ~0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as torch_f

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.fusion import (
    DEFAULT_LOGIT_CLIP,
    FusionMode,
    blend_weights,
    checked_fusion_settings,
)
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import patch_to_erp_tables
from sap_ros.sphere.torch_device import canonical_device, to_device

Device = Union[str, torch.device]
_MIN_EVIDENCE_ROWS = 8  # blend: evidence rows kept whatever the last frame used
_KEEP_FRACTION = 1e-6  # blend: evidence below clip * this is dropped (as the host canvas does)


@dataclass(frozen=True)
class DeviceFusionTables:
    """Per view, on one device, the fusion tables.

    ERP pixels (int64), ``grid_sample`` grid ``(1, 1, M, 2)`` of their patch positions
    (``2 * patch_uv - 1``: valid at any logit resolution), angle to the axis (float32) and blend
    weight (float32).
    """

    erp_hw: Tuple[int, int]
    erp_index: Tuple[torch.Tensor, ...]
    grid: Tuple[torch.Tensor, ...]
    angle_deg: Tuple[torch.Tensor, ...]
    blend_weight: Tuple[torch.Tensor, ...]


def device_fusion_tables(layout: PatchLayout, erp_hw: Tuple[int, int],
                         device: Device) -> DeviceFusionTables:
    """The host :func:`patch_to_erp_tables` uploaded to ``device`` once (cached in the layout)."""
    hw = (int(erp_hw[0]), int(erp_hw[1]))
    target = canonical_device(device)

    def build() -> DeviceFusionTables:
        host = patch_to_erp_tables(layout, hw)
        up = [torch.from_numpy(np.array(a)).to(target) for a in (
            [np.asarray(e, dtype=np.int64) for e in host.erp_index]
            + [2.0 * np.asarray(p, dtype=np.float32) - 1.0 for p in host.patch_uv]
            + list(host.angle_deg)
            + [blend_weights(host, i) for i in range(len(layout))])]
        n = len(layout)
        return DeviceFusionTables(hw, tuple(up[:n]),
                                  tuple(g.reshape(1, 1, -1, 2) for g in up[n:2 * n]),
                                  tuple(up[2 * n:3 * n]), tuple(up[3 * n:]))

    return layout.cached(('patch_to_erp_torch', hw, str(target)), build)


def _nearest_index(layout: PatchLayout, erp_hw: Tuple[int, int], size_px: int,
                   device: torch.device) -> Tuple[torch.Tensor, ...]:
    """Per view, the flat patch pixel nearest each of its ERP pixels (``nearest_index``)."""
    hw = (int(erp_hw[0]), int(erp_hw[1]))

    def build() -> Tuple[torch.Tensor, ...]:
        host = patch_to_erp_tables(layout, hw)
        return tuple(torch.from_numpy(host.nearest_index(i, size_px).astype(np.int64)).to(device)
                     for i in range(len(layout)))

    return layout.cached(('patch_to_erp_nearest_torch', hw, int(size_px),
                          str(canonical_device(device))), build)


def sample_logits(tables: DeviceFusionTables, view_index: int,
                  logits: torch.Tensor) -> torch.Tensor:
    """``(K, h, w)`` logits sampled bilinearly at a view's ERP pixels -> ``(K, M)`` float32.

    Edges replicated, pixel centres as :func:`~sap_ros.sphere.fusion.sample_bilinear`.
    """
    return torch_f.grid_sample(logits.float().unsqueeze(0), tables.grid[view_index],
                               mode='bilinear', padding_mode='border',
                               align_corners=False)[0, :, 0]


def _first_max(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Index and value of the first maximum along dim 0 of ``(K, M)`` (as ``np.argmax``).

    A running comparison over the K rows: ``argmax`` over the leading (strided) dimension is
    ~25x slower on the CPU, and K (objects in a view) is small.
    """
    best_score = scores[0]
    best = torch.zeros(scores.shape[1:], dtype=torch.long, device=scores.device)
    for k in range(1, scores.shape[0]):
        better = scores[k] > best_score
        best = torch.where(better, k, best)
        best_score = torch.where(better, scores[k], best_score)
    return best, best_score


class TorchLabelCanvas:
    """An ERP label map painted patch by patch on a torch device (see :class:`LabelCanvas`).

    Args:
        layout: the patch layout.
        erp_hw: (H, W) of the canvas.
        mode: ``least_distortion`` (default) or ``blend``.
        logit_clip: blend mode: logits are clipped to ``[-logit_clip, logit_clip]``.
        device: where the canvas and its tables live.

    """

    def __init__(self, layout: PatchLayout, erp_hw: Tuple[int, int],
                 mode: Union[FusionMode, str] = FusionMode.LEAST_DISTORTION,
                 logit_clip: float = DEFAULT_LOGIT_CLIP, device: Device = 'cpu') -> None:
        """Fetch (or build and upload) the tables; start empty."""
        self.mode, self.logit_clip = checked_fusion_settings(mode, logit_clip)
        self.layout = layout
        self.erp_hw = (int(erp_hw[0]), int(erp_hw[1]))
        self.device = canonical_device(device)
        self.tables = device_fusion_tables(layout, self.erp_hw, self.device)
        n_pix = self.erp_hw[0] * self.erp_hw[1]
        self._labels = torch.zeros(n_pix, dtype=torch.int32, device=self.device)
        blend = self.mode is FusionMode.BLEND
        self._angle = torch.full((0 if blend else n_pix,), float('inf'), device=self.device)
        self._weight = torch.zeros(n_pix if blend else 0, device=self.device)
        # blend: one dense row of weight x (clipped logit + clip) per object id.
        self._evidence = torch.zeros((0, n_pix), device=self.device)
        self._slot_of: Dict[int, int] = {}
        self._stale = False

    def clear(self) -> None:
        """Forget everything painted.

        Blend: the evidence rows are kept for reuse, down to twice the rows the cleared frame
        used (a frame with many objects does not hold its rows for ever).
        """
        self._labels.zero_()
        if self.mode is FusionMode.BLEND:
            self._weight.zero_()
            keep = 2 * len(self._slot_of)
            if self._evidence.shape[0] > max(keep, _MIN_EVIDENCE_ROWS):
                self._evidence = torch.zeros((keep, self._evidence.shape[1]), device=self.device)
            self._evidence.zero_()
            self._slot_of.clear()
            self._stale = False
        else:
            self._angle.fill_(float('inf'))

    @property
    def object_ids(self) -> List[int]:
        """Blend mode: the ids holding evidence, ascending (least distortion: empty)."""
        return sorted(self._slot_of)

    # ------------------------------------------------------------------ painting
    def _paint_values(self, view_index: int, lab: torch.Tensor) -> None:
        idx = self.tables.erp_index[view_index]
        angle = self.tables.angle_deg[view_index]
        better = (lab != 0) & (angle < self._angle[idx])
        self._labels[idx] = torch.where(better, lab, self._labels[idx])
        self._angle[idx] = torch.where(better, angle, self._angle[idx])

    def _slots(self, ids: Sequence[int]) -> torch.Tensor:
        """Evidence rows of ``ids`` (host ints), growing the evidence when an id is new."""
        for object_id in ids:
            if object_id not in self._slot_of:
                self._slot_of[object_id] = len(self._slot_of)
        if len(self._slot_of) > self._evidence.shape[0]:
            grown = torch.zeros((max(len(self._slot_of), 2 * self._evidence.shape[0]),
                                 self._evidence.shape[1]), device=self.device)
            grown[:self._evidence.shape[0]] = self._evidence
            self._evidence = grown
        return to_device([self._slot_of[i] for i in ids], self.device, torch.long)

    def paint_logits(self, view_index: int, logits: torch.Tensor, ids: Sequence[int]) -> None:
        """Paint per-object low-res logits ``(K, h, w)`` (device tensor) with host ``ids`` (K,).

        The rules of :meth:`LabelCanvas.paint_logits`: bilinear samples and the least-distortion
        rule, or bicubic clipped evidence and the view's weight (blend; a view with no object
        still votes "no object" wherever it sees).
        """
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        if logits.ndim != 3 or logits.shape[0] != len(ids):
            raise InvalidInputError(f'logits must be (K, h, w) with K = {len(ids)} ids, '
                                    f'got shape {tuple(logits.shape)}')
        if any(not 0 < i <= 65535 for i in ids):
            raise InvalidInputError(f'object ids must be in [1, 65535], got {ids}')
        grid = self.tables.grid[view_index]
        if self.mode is FusionMode.BLEND:
            erp_index = self.tables.erp_index[view_index]
            weights = self.tables.blend_weight[view_index]
            self._weight.index_add_(0, erp_index, weights)
            self._stale = True
            if not ids:
                return
            clip = self.logit_clip
            clipped = logits.float().clamp(-clip, clip).unsqueeze(0)
            score = torch_f.grid_sample(clipped, grid, mode='bicubic', padding_mode='border',
                                        align_corners=False)[0, :, 0]
            value = score.clamp(-clip, clip) + clip
            value = torch.where(value > clip * _KEEP_FRACTION, value * weights, 0.0)
            self._add_evidence(self._slots(ids), erp_index, value)
            return
        if not ids:
            return
        scores = sample_logits(self.tables, view_index, logits)
        best, best_score = _first_max(scores)
        inside = best_score > 0
        id_table = to_device(ids, self.device, torch.int32)
        self._paint_values(view_index, torch.where(inside, id_table[best], 0))

    def paint(self, view_index: int, patch_labels: torch.Tensor, ids: Sequence[int] = ()) -> None:
        """Paint one patch's ``(S, S)`` integer labels (0 = none) at the nearest patch pixel.

        Blend mode needs the ``ids`` that may occur in the patch (host ints; others are
        ignored); a label votes ``+logit_clip`` for its object where it is.
        """
        size = patch_labels.shape[0]
        if patch_labels.ndim != 2 or patch_labels.shape[1] != size:
            raise InvalidInputError(f'patch labels must be square, got shape '
                                    f'{tuple(patch_labels.shape)}')
        index = _nearest_index(self.layout, self.erp_hw, size, self.device)[view_index]
        lab = patch_labels.reshape(-1)[index].to(torch.int32)
        if self.mode is FusionMode.LEAST_DISTORTION:
            self._paint_values(view_index, lab)
            return
        erp_index = self.tables.erp_index[view_index]
        weights = self.tables.blend_weight[view_index]
        self._weight.index_add_(0, erp_index, weights)
        self._stale = True
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1) if i != 0]
        if not ids:
            return
        id_table = to_device(ids, self.device, torch.int32)
        value = (lab[None, :] == id_table[:, None]) * (weights * (2.0 * self.logit_clip))
        self._add_evidence(self._slots(ids), erp_index, value)

    def _add_evidence(self, slots: torch.Tensor, erp_index: torch.Tensor,
                      value: torch.Tensor) -> None:
        """``evidence[slots[k], erp_index] += value[k]`` (one ``index_add_``, no sync)."""
        flat = (slots[:, None] * self._evidence.shape[1] + erp_index[None, :]).reshape(-1)
        self._evidence.view(-1).index_add_(0, flat, value.reshape(-1))

    # ------------------------------------------------------------------ editing
    def relabel(self, mapping: np.ndarray) -> None:
        """Apply a host lookup table ``new = mapping[old]`` (length > max label).

        In blend mode objects mapped to one id pool their evidence; mapped to 0, they are erased.
        """
        mapping = np.asarray(mapping, dtype=np.int64)
        if self.mode is FusionMode.BLEND:
            old = dict(self._slot_of)
            rows = self._evidence
            self._slot_of = {}
            pooled = torch.zeros_like(rows)
            for object_id, slot in sorted(old.items()):
                new = int(mapping[object_id])
                if new:
                    target = self._slot_of.setdefault(new, len(self._slot_of))
                    pooled[target] += rows[slot]
            self._evidence = pooled
            self._stale = True
            return
        table = to_device(mapping, self.device, torch.int32)
        self._labels = table[self._labels.long()]
        self._angle.masked_fill_(self._labels == 0, float('inf'))

    def _compact(self) -> None:
        """Blend: renumber the evidence rows after an erase (rows follow ``_slot_of``)."""
        order = sorted(self._slot_of.items(), key=lambda item: item[1])
        keep = to_device([slot for _, slot in order], self.device, torch.long)
        rows = torch.zeros_like(self._evidence)
        rows[:len(order)] = self._evidence[keep]
        self._evidence = rows
        self._slot_of = {object_id: k for k, (object_id, _) in enumerate(order)}
        self._stale = True

    # ------------------------------------------------------------------ reading
    def _resolve(self) -> None:
        """Blend: per pixel the object with the highest mean vote > 0 (ties: lower id)."""
        ids = self.object_ids
        if not ids:
            self._labels.zero_()
            self._stale = False
            return
        rows = self._evidence[to_device([self._slot_of[i] for i in ids], self.device,
                                        torch.long)]
        score = rows / self._weight.clamp_min(1e-30) - self.logit_clip
        best, best_score = _first_max(score)  # first maximum: the lowest id
        win = best_score > 0
        self._labels = torch.where(win, to_device(ids, self.device, torch.int32)[best], 0)
        self._stale = False

    @property
    def labels(self) -> torch.Tensor:
        """The painted ``(H, W)`` int32 label map on the device (a view; clone to keep it)."""
        if self._stale:
            self._resolve()
        return self._labels.reshape(self.erp_hw)


def fuse_labels_torch(layout: PatchLayout, patch_labels: torch.Tensor, erp_hw: Tuple[int, int],
                      mode: Union[FusionMode, str] = FusionMode.LEAST_DISTORTION,
                      ids: Sequence[int] = ()) -> torch.Tensor:
    """:func:`~sap_ros.sphere.fusion.fuse_labels` on the device of ``patch_labels`` ``(N, S, S)``.

    Blend mode needs the ``ids`` present (host ints): without them it reads them with
    ``torch.unique`` (one host synchronisation).
    """
    if patch_labels.ndim != 3 or patch_labels.shape[0] != len(layout):
        raise InvalidInputError(f'expected ({len(layout)}, S, S) patch labels, '
                                f'got shape {tuple(patch_labels.shape)}')
    canvas = TorchLabelCanvas(layout, erp_hw, mode, device=patch_labels.device)
    if canvas.mode is FusionMode.BLEND and not len(ids):
        ids = [i for i in torch.unique(patch_labels).tolist() if i]
    for i in range(len(layout)):
        canvas.paint(i, patch_labels[i], ids)
    return canvas.labels.clone()


def labels_to_host(labels: torch.Tensor) -> np.ndarray:
    """A device ``(H, W)`` int label map as a host uint16 array (one copy)."""
    return labels.to(torch.int32).cpu().numpy().astype(np.uint16)
