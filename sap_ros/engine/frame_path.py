"""The non-network part of a frame, on the host (NumPy / cv2) or on the model's device (torch).

Both classes answer the same calls in the order the engine makes them:

1. :meth:`sample` - the ERP frame -> every patch at ``size_px`` (``model.image_size``);
2. :meth:`begin_frame`, then per view along the path :meth:`paint` (the published canvas, and
   the low-res work grid when the view decoded an object) and :meth:`project_work` (the work grid
   so far, re-projected into a view: the engine's mask prompts and discovery's covered area;
   :meth:`may_cover` says, without reading the device, when that is certainly empty);
3. :meth:`finish` - the uint16 label map, the :class:`ObjectRecord` records and the extents that
   culling needs (``sphere.extents``).

:class:`TorchFramePath` keeps the frame, the logits and both canvases on the device; the only
device-to-host copy of a frame is the one in :meth:`TorchFramePath.finish`. Which one runs is
:func:`~sap_ros.sphere.torch_device.choose_frame_path`'s decision (:func:`make_frame_path`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import cv2
import numpy as np
import torch

from sap_ros.config import PipelineConfig
from sap_ros.engine.class_fusion import ClassFrame, ClassFusion, frame_classes
from sap_ros.engine.records import object_records
from sap_ros.engine.torch_records import (
    ObjectTable,
    download_frame,
    object_table_device,
    records_from_table,
)
from sap_ros.engine.types import ObjectRecord
from sap_ros.sphere.extents import object_extents, uncovered_fraction
from sap_ros.sphere.fusion import DEFAULT_LOGIT_CLIP, FusionMode, LabelCanvas, sample_bilinear
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches, patch_to_erp_tables
from sap_ros.sphere.torch_device import (
    FramePathKind,
    canonical_device,
    choose_frame_path,
    resolve_device,
    to_device,
)
from sap_ros.sphere.torch_fusion import TorchLabelCanvas, sample_logits
from sap_ros.sphere.torch_sampler import (
    nearest_index_host,
    sample_labels,
    sample_patches,
    upload_erp,
)

DEFAULT_WORK_HW = (128, 256)  # the engine's low-res work grid (pipeline.WORK_HW)
Extents = Dict[int, Tuple[np.ndarray, float]]
Logits = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class FrameOutput:
    """What a frame path hands back to the host at the end of a frame.

    Attributes:
        labels: ``(H, W)`` uint16 published label map.
        pointers: one record per id of ``finish(ids)`` present in ``labels``, sorted by id.
        extents: ``id -> (centroid (3,), radius_deg)`` on the work grid, ids present there.
        uncovered_fraction: share of the sphere (work grid, ``cos(lat)`` weighted) that no
            object covers.
        work_labels: ``(h, w)`` uint16 work grid (least-distortion labels at low resolution:
            the engine's merges and prompts).
        work_masks: id -> ``(h, w)`` bool on the work grid, the union over the views of where
            the object's logits are > 0 (what the engine merges duplicates with), for every
            id painted this frame.
        present: the ids of ``finish(ids)`` on the label map or on the work grid, sorted.
        on_map: the ids of ``finish(ids)`` on the label map, sorted.
        table: the downloaded object table (torch path; the records can be rebuilt from it with
            other per-id values, :func:`records_from_table`), None on the host path.
        classes: the published classes of ``finish(ids)`` and the semantic map (None without a
            class fusion).

    """

    labels: np.ndarray
    pointers: List[ObjectRecord]
    extents: Extents
    uncovered_fraction: float
    work_labels: np.ndarray
    work_masks: Dict[int, np.ndarray]
    present: List[int]
    on_map: List[int]
    table: Optional[ObjectTable] = None
    classes: Optional[ClassFrame] = None


@dataclass(frozen=True)
class PointerInfo:
    """Per-id values the records carry (see :func:`object_records`); all optional."""

    scores: Optional[Mapping[int, float]] = None
    ages: Optional[Mapping[int, int]] = None
    frames_since_seen: Optional[Mapping[int, int]] = None
    embeddings: Optional[Mapping[int, np.ndarray]] = None


class NumpyFramePath:
    """Host path: cv2 remap, :class:`LabelCanvas`, :func:`object_records`, ``object_extents``."""

    kind = FramePathKind.NUMPY

    def __init__(self, layout: PatchLayout, out_hw: Tuple[int, int],
                 work_hw: Tuple[int, int] = DEFAULT_WORK_HW,
                 fusion: Union[FusionMode, str] = FusionMode.LEAST_DISTORTION,
                 logit_clip: float = DEFAULT_LOGIT_CLIP) -> None:
        """Canvases for the published map (``out_hw``, ``fusion``) and the work grid."""
        self.layout = layout
        self.canvas = LabelCanvas(layout, out_hw, fusion, logit_clip)
        self.work = LabelCanvas(layout, work_hw, FusionMode.LEAST_DISTORTION, logit_clip)
        self._masks: Dict[int, np.ndarray] = {}

    def sample(self, erp: np.ndarray, size_px: int,
               views: Optional[Sequence[int]] = None) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 patches of ``views`` (default all; cv2, cached tables)."""
        return extract_patches(self.layout, erp, size_px, views=views)

    def begin_frame(self) -> None:
        """Empty both canvases and the masks."""
        self.canvas.clear()
        self.work.clear()
        self._masks = {}

    def paint(self, view: int, logits: Logits, ids: Sequence[int]) -> None:
        """One view's ``(K, h, w)`` logits of objects ``ids`` on both canvases."""
        ids_arr = np.asarray(ids, dtype=np.uint16)
        if isinstance(logits, torch.Tensor):
            logits = logits.detach().float().cpu().numpy()
        self.canvas.paint_logits(view, logits, ids_arr)
        if not len(ids_arr):
            return
        self.work.paint_logits(view, logits, ids_arr)
        tables = self.work.tables
        scores = sample_bilinear(logits, tables.pixel_coords(view, logits.shape[1]))
        n_pix = self.work.erp_hw[0] * self.work.erp_hw[1]
        for object_id, row in zip(ids_arr.tolist(), scores):
            mask = self._masks.setdefault(object_id, np.zeros(n_pix, dtype=bool))
            mask[tables.erp_index[view][row > 0]] = True

    def may_cover(self, view: int, size_px: int) -> bool:
        """Always True: on the host :meth:`project_work` is read anyway (nothing to save)."""
        return True

    def project_work(self, view: int, size_px: int) -> np.ndarray:
        """The work grid so far, nearest-sampled into ``view`` at ``size_px``."""
        return extract_patches(self.layout, self.work.labels, size_px, views=[view],
                               interpolation=cv2.INTER_NEAREST)[0]

    def finish(self, ids: Sequence[int], info: PointerInfo = PointerInfo(),
               records: bool = True, classes: Optional[ClassFusion] = None) -> FrameOutput:
        """Label map, pointers and extents of ``ids`` (others in the map are left out).

        ``records=False`` leaves :attr:`FrameOutput.pointers` empty (the caller builds them).
        ``classes``: the semantic map and the classes of ``ids``, on the host.
        """
        labels = self.canvas.labels.copy()
        known = np.zeros(max(int(labels.max()), int(self.work.labels.max())) + 1, dtype=bool)
        wanted = [i for i in ids if i < len(known)]
        known[wanted] = True
        known[0] = False
        pointers = (object_records(np.where(known[labels], labels, 0).astype(np.uint16),
                                   info.scores, info.ages, info.frames_since_seen,
                                   info.embeddings) if records else [])
        on_map = np.bincount(labels.reshape(-1), minlength=len(known))[:len(known)] > 0
        on_work = np.bincount(self.work.labels.reshape(-1), minlength=len(known))[:len(known)] > 0
        present = np.flatnonzero(known & (on_map | on_work)).tolist()
        return FrameOutput(labels, pointers, object_extents(self.work.labels, ids),
                           uncovered_fraction(self.work.labels), self.work.labels.copy(),
                           {i: m.reshape(self.work.erp_hw) for i, m in self._masks.items()},
                           present, np.flatnonzero(known & on_map).tolist(),
                           classes=None if classes is None else classes.on_host(labels, ids))


class TorchFramePath:
    """Device path: one upload, one ``grid_sample``, device canvases, one download per frame."""

    kind = FramePathKind.TORCH

    def __init__(self, layout: PatchLayout, out_hw: Tuple[int, int],
                 work_hw: Tuple[int, int] = DEFAULT_WORK_HW,
                 fusion: Union[FusionMode, str] = FusionMode.LEAST_DISTORTION,
                 logit_clip: float = DEFAULT_LOGIT_CLIP,
                 device: Union[str, torch.device] = 'cuda') -> None:
        """Device canvases for the published map and the work grid (tables cached in layout)."""
        self.layout = layout
        self.device = canonical_device(device)
        self.canvas = TorchLabelCanvas(layout, out_hw, fusion, logit_clip, self.device)
        self.work = TorchLabelCanvas(layout, work_hw, FusionMode.LEAST_DISTORTION, logit_clip,
                                     self.device)
        n_pix = self.work.erp_hw[0] * self.work.erp_hw[1]
        self._masks = torch.zeros((0, n_pix), dtype=torch.bool, device=self.device)
        self._mask_row: Dict[int, int] = {}
        self._painted: Set[int] = set()  # views that painted an object on the work grid

    def sample(self, erp: np.ndarray, size_px: int,
               views: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``(N, 3, S, S)`` float32 (0..255) patches of ``views`` from one uint8 upload."""
        return sample_patches(self.layout, upload_erp(erp, self.device), size_px, views=views)

    def begin_frame(self) -> None:
        """Empty both canvases and the masks (their rows are kept for reuse)."""
        self.canvas.clear()
        self.work.clear()
        self._masks.zero_()
        self._mask_row = {}
        self._painted = set()

    def paint(self, view: int, logits: Logits, ids: Sequence[int]) -> None:
        """One view's logits ``(K, h, w)`` (device, or host: uploaded) of objects ``ids``."""
        ids = [int(i) for i in ids]
        if isinstance(logits, np.ndarray):
            logits = to_device(logits, self.device, torch.float32)
        self.canvas.paint_logits(view, logits, ids)
        if not ids:
            return
        self.work.paint_logits(view, logits, ids)
        self._painted.add(int(view))
        for object_id in ids:
            self._mask_row.setdefault(object_id, len(self._mask_row))
        if len(self._mask_row) > self._masks.shape[0]:
            grown = torch.zeros((2 * len(self._mask_row), self._masks.shape[1]),
                                dtype=torch.bool, device=self.device)
            grown[:self._masks.shape[0]] = self._masks
            self._masks = grown
        rows = to_device([self._mask_row[i] for i in ids], self.device, torch.long)
        inside = sample_logits(self.work.tables, view, logits) > 0
        idx = self.work.tables.erp_index[view]
        flat = (rows[:, None] * self._masks.shape[1] + idx[None, :]).reshape(-1)
        every = self._masks.view(-1)
        every[flat] = every[flat] | inside.reshape(-1)  # distinct indices: a plain OR

    def may_cover(self, view: int, size_px: int) -> bool:
        """False when :meth:`project_work` of ``view`` is certainly all 0 (no device read).

        The work grid is cleared by :meth:`begin_frame` and written only at the pixels of views
        that painted an object since; :func:`work_reach` says which of those ``view`` reads.
        """
        if not self._painted:
            return False
        reach = work_reach(self.layout, self.work.erp_hw, size_px)
        return bool(reach[int(view), sorted(self._painted)].any())

    def project_work(self, view: int, size_px: int) -> torch.Tensor:
        """The work grid so far, nearest-sampled into ``view`` at ``size_px`` (device)."""
        return sample_labels(self.layout, self.work.labels, size_px, views=[view])[0]

    def finish(self, ids: Sequence[int], info: PointerInfo = PointerInfo(),
               records: bool = True, classes: Optional[ClassFusion] = None) -> FrameOutput:
        """One device-to-host copy: label map and the object table of ``ids``.

        ``records=False`` leaves :attr:`FrameOutput.pointers` empty (the caller builds them from
        :attr:`FrameOutput.table`). ``classes``: the semantic map (made on the device) and the
        classes of ``ids`` come in the same copy.
        """
        ids = [int(i) for i in ids]
        labels = self.canvas.labels
        device_table = object_table_device(labels, self.work.labels, ids)
        masks = self._masks[:len(self._mask_row)]
        semantic, class_table = (None, None) if classes is None else classes.on_device(labels,
                                                                                       ids)
        labels_host, table = download_frame(labels, device_table, ids, masks,
                                            self.work.labels, semantic, class_table)
        pointers = (records_from_table(table, info.scores, info.ages, info.frames_since_seen,
                                        info.embeddings) if records else [])
        work_masks = {i: table.masks[row].reshape(self.work.erp_hw)
                      for i, row in self._mask_row.items()}
        published = (None if table.classes is None else
                     frame_classes(labels_host, ids, table.classes, table.semantic))
        return FrameOutput(labels_host, pointers, table.extents(), table.uncovered_fraction,
                           table.work_labels, work_masks, table.present(), table.on_map(),
                           table, published)


FramePath = Union[NumpyFramePath, TorchFramePath]


def work_reach(layout: PatchLayout, work_hw: Tuple[int, int], size_px: int) -> np.ndarray:
    """Cached ``(N, N)`` bool: may view ``w``'s paint show in ``project_work(v, size_px)``?

    ``[v, w]`` is True when the re-projection of view ``v`` reads a pixel of the work grid
    (``work_hw``) that painting view ``w`` writes (its fusion-table pixels). Exact, from the two
    index tables the device path gathers and scatters with (no geometry margin): a view that no
    painted view reaches re-projects an empty work grid.
    """
    hw = (int(work_hw[0]), int(work_hw[1]))

    def build() -> np.ndarray:
        read = nearest_index_host(layout, hw, size_px)
        reach = np.zeros((len(layout), len(layout)), dtype=bool)
        for w, painted in enumerate(patch_to_erp_tables(layout, hw).erp_index):
            hit = np.zeros(hw[0] * hw[1], dtype=bool)
            hit[np.asarray(painted, dtype=np.int64)] = True
            reach[:, w] = hit[read].any(axis=1)
        reach.setflags(write=False)
        return reach

    return layout.cached(('frame_path.work_reach', hw, int(size_px)), build)


def make_frame_path(device: Union[str, torch.device], layout: PatchLayout,
                    out_hw: Tuple[int, int], work_hw: Tuple[int, int] = DEFAULT_WORK_HW,
                    fusion: Union[FusionMode, str] = FusionMode.LEAST_DISTORTION,
                    logit_clip: float = DEFAULT_LOGIT_CLIP,
                    kind: Optional[FramePathKind] = None) -> FramePath:
    """The frame path for ``device`` (:func:`choose_frame_path`), or the forced ``kind``."""
    chosen = kind or choose_frame_path(device)
    if chosen is FramePathKind.TORCH:
        return TorchFramePath(layout, out_hw, work_hw, fusion, logit_clip, device)
    return NumpyFramePath(layout, out_hw, work_hw, fusion, logit_clip)


def frame_path_for(config: PipelineConfig) -> Tuple[FramePathKind, torch.device]:
    """``engine.frame_path`` on ``model.device``: which path and the device it runs on."""
    choice = config.engine.frame_path
    if choice == FramePathKind.NUMPY.value:
        return FramePathKind.NUMPY, torch.device('cpu')
    device = resolve_device(config.model.device)
    if choice == FramePathKind.TORCH.value:
        return FramePathKind.TORCH, device
    return choose_frame_path(device), device
