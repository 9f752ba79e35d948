"""Object records and extents from device label maps, and the frame's one device-to-host copy.

The device computes, per object id the engine names (host ints, no ``unique`` on the device):

* on the published label map, the sums :func:`~sap_ros.engine.records.object_records` starts
  from: pixel count, solid angle, solid-angle-weighted bearing sum, first and last row, the
  latitude moment of its degenerate-centroid fallback, and which columns it occupies;
* on the low-res work grid, the extent culling needs (``sphere.extents``): the ``cos(lat)``
  weighted centroid and the angular radius around it.

Per-pixel tables come from the same ``geometry.py`` functions as the host path (uploaded once per
size and device). Everything is ``index_add_`` / ``scatter_reduce_`` and matrix products: nothing
is read on the host until :func:`download_frame` packs the label map (uint16) and the table into
one byte buffer and copies it once (pinned memory and one event wait on CUDA). The host then
builds the :class:`ObjectRecord` records with the host path's own helpers
(:func:`wrap_aware_lon_extent`, ``bearing_to_lonlat``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from sap_ros.engine.records import _embedding, wrap_aware_lon_extent
from sap_ros.engine.types import ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.extents import DEGENERATE_NORM, FALLBACK_CENTROID, FALLBACK_RADIUS_DEG
from sap_ros.sphere.geometry import (
    bearing_to_lonlat,
    erp_bearings,
    erp_pixel_solid_angle_sr,
    erp_pixel_to_lonlat,
    erp_row_weights,
    lonlat_to_bearing,
    validate_erp_shape,
)
from sap_ros.sphere.torch_device import canonical_device, to_device

Device = Union[str, torch.device]
_MAX_ID = 65535
_DEGENERATE_CENTROID = 1e-9   # as in pointers.py: |bearing sum| / solid angle below this
# Columns of the packed per-object table (float64).
_AREA, _SR, _SUM, _TOP, _BOTTOM, _LAT = 0, 1, 2, 5, 6, 7
_CENTROID, _RADIUS, _WORK_AREA, _N_COLS = 8, 11, 12, 13


_TABLES: Dict[Tuple[str, int, int, str], Tuple[torch.Tensor, ...]] = {}
_BACKGROUND_SPREAD = 32  # background pixels of a row accumulate into this many cells, not one
_FIXED_ONE = float(2 ** 40)  # cos / sin lon in int64 fixed point: a row of 8192 px fits 2**53


def _cached(kind: str, height: int, width: int, device: torch.device,
            build: Callable[[], List[np.ndarray]]) -> Tuple[torch.Tensor, ...]:
    key = (kind, height, width, str(canonical_device(device)))
    tables = _TABLES.get(key)
    if tables is None:
        tables = _TABLES[key] = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device)
                                      for a in build())
    return tables


def _pixel_tables(height: int, width: int, device: torch.device) -> Tuple[torch.Tensor, ...]:
    """Tables on ``device`` from ``geometry.py``, built once per size and device.

    Per column ``(1, cos lon, sin lon)`` as int64 fixed point (``_FIXED_ONE``: sums are exact
    and a symmetric ring cancels to exactly zero, as in float64 on the host); per row, float64,
    solid angle, sin lat, lat (deg), cos lat and the area weight of ``erp_row_weights``. Freed by
    :func:`clear_device_tables`.
    """
    def build() -> List[np.ndarray]:
        lon, _ = erp_pixel_to_lonlat(np.arange(width), np.zeros(width), width, height)
        _, lat = erp_pixel_to_lonlat(np.zeros(height), np.arange(height), width, height)
        per_col = np.stack([np.full(width, 1.0 / _FIXED_ONE), np.cos(np.radians(lon)),
                            np.sin(np.radians(lon))])
        return [np.rint(per_col * _FIXED_ONE).astype(np.int64)] + [a.astype(np.float64) for a in (
            erp_pixel_solid_angle_sr(width, height), np.sin(np.radians(lat)), lat,
            np.cos(np.radians(lat)), erp_row_weights(height))]

    return _cached('rows', height, width, device, build)


def _bearing_tables(height: int, width: int, device: torch.device) -> Tuple[torch.Tensor, ...]:
    """Float64 per pixel bearing ``(H * W, 3)`` and bearing times its row's area weight.

    Only for the low-res work grid (extents), built once per size and device.
    """
    def build() -> List[np.ndarray]:
        bearings = erp_bearings(width, height).reshape(-1, 3).astype(np.float64)
        return [bearings, bearings * np.repeat(erp_row_weights(height), width)[:, None]]

    return _cached('bearings', height, width, device, build)


def clear_device_tables() -> None:
    """Free the per-pixel tables of every size and device (the engine's ``close``)."""
    _TABLES.clear()


def _slot_map(labels: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """Per pixel: 1 + the position of its id in ``ids``, 0 for background and other ids."""
    lut = np.zeros(_MAX_ID + 2, dtype=np.int64)
    lut[np.asarray(ids, dtype=np.int64)] = np.arange(1, len(ids) + 1)
    table = to_device(lut, labels.device, torch.long)
    return table[labels.long().clamp(0, _MAX_ID + 1)]


def _pointer_sums(labels: torch.Tensor, ids: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(K, 8)`` float64 (area .. lat moment) and ``(K, W)`` uint8 columns present.

    Per (row, object): pixel count and the cos / sin lon sums, integer ``scatter_add_`` of the
    per-column values (no per-pixel table); background pixels spread over
    ``_BACKGROUND_SPREAD`` cells per row instead of all hitting one address.
    """
    height, width = labels.shape
    k = len(ids)
    per_col, sr_row, sin_lat, lat_deg, cos_lat, _ = _pixel_tables(height, width, labels.device)
    slot = _slot_map(labels, ids)
    columns = torch.arange(width, device=labels.device)
    cell = torch.where(slot > 0, slot + (_BACKGROUND_SPREAD - 1),
                       (columns % _BACKGROUND_SPREAD)[None, :])
    sums = torch.zeros((3, height, _BACKGROUND_SPREAD + k), dtype=torch.int64,
                       device=labels.device)
    for j in range(3):
        sums[j].scatter_add_(1, cell, per_col[j].expand(height, width))
    per_row = sums[:, :, _BACKGROUND_SPREAD:].transpose(1, 2).double()  # (3, K, H)
    count, cos_tab, sin_tab = per_row[0], per_row[1] / _FIXED_ONE, per_row[2] / _FIXED_ONE
    col_key = (slot * width + columns[None, :]).reshape(-1)
    cols = torch.zeros((k + 1) * width, dtype=torch.uint8, device=labels.device)
    cols.index_fill_(0, col_key, 1)
    row_w = sr_row * cos_lat
    present = (count > 0).to(torch.int8)
    top = torch.argmax(present, dim=1)  # first maximum: the first row holding the object
    bottom = height - 1 - torch.argmax(present.flip(1), dim=1)
    table = torch.stack([count.sum(1), count @ sr_row, cos_tab @ row_w, -(sin_tab @ row_w),
                         count @ (sr_row * sin_lat), top.double(), bottom.double(),
                         count @ (sr_row * lat_deg)], dim=1)
    return table, cols.reshape(k + 1, width)[1:]


def _extent_sums(work_labels: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """``(K, 5)`` float64 on the work grid (``sphere.extents``).

    Centroid (3), radius (deg), pixel count.
    """
    height, width = work_labels.shape
    k = len(ids)
    bearings, weighted = _bearing_tables(height, width, work_labels.device)
    slot = _slot_map(work_labels, ids).reshape(-1)
    sums = torch.zeros((k + 1, 3), dtype=torch.float64, device=work_labels.device)
    sums.index_add_(0, slot, weighted)
    area = torch.zeros(k + 1, dtype=torch.int64, device=work_labels.device)
    area.scatter_add_(0, slot, torch.ones(1, dtype=torch.int64,
                                          device=slot.device).expand(slot.shape[0]))
    area = area.double()[:, None]
    norm = torch.linalg.vector_norm(sums, dim=1, keepdim=True)
    degenerate = norm < DEGENERATE_NORM
    fallback = to_device(FALLBACK_CENTROID, work_labels.device, torch.float64)
    centroid = torch.where(degenerate, fallback, sums / norm.clamp_min(1e-300))
    own = centroid[slot]
    cross = torch.linalg.vector_norm(torch.linalg.cross(bearings, own), dim=1)
    angle = torch.rad2deg(torch.atan2(cross, (bearings * own).sum(1)))
    radius = torch.zeros(k + 1, dtype=torch.float64, device=work_labels.device)
    radius.scatter_reduce_(0, slot, angle, reduce='amax', include_self=True)
    radius = torch.where(degenerate[:, 0], FALLBACK_RADIUS_DEG, radius)
    return torch.cat([centroid, radius[:, None], area], dim=1)[1:]


@dataclass(frozen=True)
class ObjectTable:
    """The per-object table of one frame on the host (rows follow ``ids``).

    ``stats`` is ``(K, 13)`` float64 (area, solid angle, bearing sum xyz, top and bottom row,
    latitude moment; on the work grid: centroid xyz, radius, area); ``columns`` ``(K, W)``
    uint8; ``uncovered_fraction`` the share of the work grid (``cos(lat)`` weighted) no object
    covers; ``masks`` and ``work_labels`` (uint16) what was passed to :func:`download_frame`
    (``(0, 0)`` if nothing); ``semantic`` (uint16, as the label map) and ``classes``
    (``(K, 2)`` float64) likewise, None when not passed.
    """

    ids: Tuple[int, ...]
    stats: np.ndarray
    columns: np.ndarray
    erp_hw: Tuple[int, int]
    uncovered_fraction: float
    masks: np.ndarray
    work_labels: np.ndarray
    semantic: Optional[np.ndarray] = None
    classes: Optional[np.ndarray] = None

    def on_map(self) -> List[int]:
        """The ids on the label map (sorted)."""
        return sorted(i for i, area in zip(self.ids, self.stats[:, _AREA]) if area > 0)

    def present(self) -> List[int]:
        """The ids on the label map or on the work grid (sorted)."""
        on = (self.stats[:, _AREA] > 0) | (self.stats[:, _WORK_AREA] > 0)
        return sorted(i for i, here in zip(self.ids, on) if here)

    def extents(self) -> Dict[int, Tuple[np.ndarray, float]]:
        """``id -> (centroid, radius_deg)`` for the ids on the work grid (as ``object_extents``).

        Ids absent from the work grid are left out.
        """
        out = {}
        for k, object_id in enumerate(self.ids):
            row = self.stats[k]
            if row[_WORK_AREA] == 0:
                continue
            out[object_id] = (row[_CENTROID:_RADIUS].copy(), float(row[_RADIUS]))
        return out


@dataclass(frozen=True)
class DeviceObjectTable:
    """The object table on the device, before :func:`download_frame`.

    ``stats`` ``(K, 13)`` float64 and ``columns`` ``(K, W)`` uint8 as in :class:`ObjectTable`;
    ``uncovered`` ``(1,)`` float64: the ``cos(lat)``-weighted share of the work grid no object
    covers (what decides an early discovery).
    """

    stats: torch.Tensor
    columns: torch.Tensor
    uncovered: torch.Tensor


def _uncovered(work_labels: torch.Tensor) -> torch.Tensor:
    height, width = work_labels.shape
    weight_row = _pixel_tables(height, width, work_labels.device)[5]
    free_per_row = (work_labels == 0).sum(dim=1).to(torch.float64)
    return ((free_per_row @ weight_row) / (weight_row.sum() * width)).clamp(max=1.0).reshape(1)


def object_table_device(labels: torch.Tensor, work_labels: torch.Tensor,
                        ids: Sequence[int]) -> DeviceObjectTable:
    """The device object table of ``ids`` (host ints) on ``labels`` and ``work_labels``."""
    for name, lab in (('labels', labels), ('work_labels', work_labels)):
        if not isinstance(lab, torch.Tensor) or lab.ndim != 2:
            raise InvalidInputError(f'{name} must be an (H, W) tensor, got '
                                    f'{tuple(getattr(lab, "shape", ()))}')
        validate_erp_shape(tuple(lab.shape))
    ids = [int(i) for i in ids]
    if any(not 0 < i <= _MAX_ID for i in ids) or len(set(ids)) != len(ids):
        raise InvalidInputError(f'ids must be distinct and in [1, {_MAX_ID}], got {ids}')
    stats, cols = _pointer_sums(labels, ids)
    return DeviceObjectTable(torch.cat([stats, _extent_sums(work_labels, ids)], dim=1), cols,
                             _uncovered(work_labels))


def download_frame(labels: torch.Tensor, table: DeviceObjectTable, ids: Sequence[int],
                   masks: Optional[torch.Tensor] = None,
                   work_labels: Optional[torch.Tensor] = None,
                   semantic: Optional[torch.Tensor] = None,
                   classes: Optional[torch.Tensor] = None) -> Tuple[np.ndarray, ObjectTable]:
    """The frame's one device-to-host copy: uint16 label map and :class:`ObjectTable`.

    ``masks``: optional ``(M, P)`` bool rows (e.g. each object's union of masks on the work
    grid) and ``work_labels`` an optional second label map, both in the same copy
    (``ObjectTable.masks``, ``ObjectTable.work_labels``); so are ``semantic`` (a class-id map
    of the label map's shape) and ``classes`` (``(K, 2)`` float64 per id: class id, score).
    """
    height, width = labels.shape
    k = len(ids)
    if masks is None:
        masks = torch.zeros((0, 0), dtype=torch.bool, device=labels.device)
    if work_labels is None:
        work_labels = torch.zeros((0, 0), dtype=torch.int32, device=labels.device)
    n_class_cols = 0 if classes is None else 2
    # Bytes: float64 first (aligned): uncovered share, stats, classes; then the maps as int16
    # (uint16 bits), then the columns and the masks.
    floats = torch.cat([table.uncovered, table.stats.reshape(-1)] + (
        [] if classes is None else [classes.to(torch.float64).reshape(-1)]))
    maps = torch.cat([labels.reshape(-1), work_labels.reshape(-1)] + (
        [] if semantic is None else [semantic.reshape(-1)])).to(torch.int16)
    packed = torch.cat([floats.contiguous().view(torch.uint8).reshape(-1),
                        maps.contiguous().view(torch.uint8).reshape(-1),
                        table.columns.reshape(-1), masks.to(torch.uint8).reshape(-1)])
    if packed.device.type == 'cuda':
        host = torch.empty(packed.shape, dtype=torch.uint8, pin_memory=True)
        with torch.cuda.device(packed.device):  # the copy and its event on the same stream
            host.copy_(packed, non_blocking=True)
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(packed.device))
        done.synchronize()
    else:
        host = packed
    buf = host.numpy()
    n_stats = (1 + k * (_N_COLS + n_class_cols)) * 8
    n_semantic = 0 if semantic is None else height * width
    n_labels = (height * width + work_labels.numel() + n_semantic) * 2
    floats_host = buf[:n_stats].view(np.float64)
    stats_host = floats_host[1:1 + k * _N_COLS].reshape(k, _N_COLS).copy()
    classes_host = (None if classes is None
                    else floats_host[1 + k * _N_COLS:].reshape(k, 2).copy())
    maps_host = buf[n_stats:n_stats + n_labels].view(np.uint16)
    labels_host = maps_host[:height * width].reshape(height, width).copy()
    n_work = work_labels.numel()
    work_host = maps_host[height * width:height * width + n_work].reshape(
        work_labels.shape).copy()
    semantic_host = (None if semantic is None
                     else maps_host[height * width + n_work:].reshape(height, width).copy())
    n_cols = k * width
    cols_host = buf[n_stats + n_labels:n_stats + n_labels + n_cols].reshape(k, width).copy()
    masks_host = buf[n_stats + n_labels + n_cols:].reshape(masks.shape).astype(bool)
    return labels_host, ObjectTable(tuple(int(i) for i in ids), stats_host, cols_host,
                                    (height, width), float(floats_host[0]), masks_host,
                                    work_host, semantic_host, classes_host)


def records_from_table(table: ObjectTable, scores: Optional[Mapping[int, float]] = None,
                        ages: Optional[Mapping[int, int]] = None,
                        frames_since_seen: Optional[Mapping[int, int]] = None,
                        embeddings: Optional[Mapping[int, np.ndarray]] = None
                        ) -> List[ObjectRecord]:
    """The :func:`object_records` records from a downloaded table (ids present, sorted)."""
    height, width = table.erp_hw
    scores, ages = scores or {}, ages or {}
    frames_since_seen, embeddings = frames_since_seen or {}, embeddings or {}
    out: List[ObjectRecord] = []
    for k in np.argsort(np.asarray(table.ids, dtype=np.int64), kind='stable'):
        row, obj_id = table.stats[k], table.ids[k]
        if row[_AREA] == 0:
            continue
        width_deg, centre_lon = wrap_aware_lon_extent(table.columns[k] > 0, width)
        sums, solid_angle = row[_SUM:_SUM + 3], float(row[_SR])
        norm = float(np.linalg.norm(sums))
        if norm > _DEGENERATE_CENTROID * solid_angle:
            bearing = sums / norm
        else:
            bearing = lonlat_to_bearing(np.array(centre_lon), np.array(row[_LAT] / solid_angle))
        lon, lat = bearing_to_lonlat(bearing)
        score = float(scores.get(obj_id, 1.0))
        out.append(ObjectRecord(
            id=obj_id, bearing=np.asarray(bearing, dtype=np.float64), lon_deg=float(lon),
            lat_deg=float(lat), width_deg=float(width_deg),
            height_deg=float((row[_BOTTOM] - row[_TOP] + 1) * 180.0 / height),
            solid_angle_sr=solid_angle, area_px=int(row[_AREA]),
            score=float(np.clip(score, 0.0, 1.0)) if np.isfinite(score) else 0.0,
            age_frames=int(ages.get(obj_id, 0)),
            frames_since_seen=int(frames_since_seen.get(obj_id, 0)),
            embedding=_embedding(obj_id, embeddings.get(obj_id))))
    return out
