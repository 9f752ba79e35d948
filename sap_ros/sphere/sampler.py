"""Sampling between an ERP frame and the patches of a layout, through cached tables.

* ERP -> patches: per-view remap tables (``cv2.remap`` on NumPy images, fixed-point maps for
  speed); the torch counterpart (one batched ``grid_sample``, CUDA or CPU) is
  :mod:`sap_ros.sphere.torch_sampler`, built from the same coordinates
  (:func:`~sap_ros.sphere.geometry.view_padded_erp_coords`).
* Patches -> ERP: per-view lists of the ERP pixels a view sees, with the patch pixel and the
  angle to the view's axis, so fusion is a few vectorised gathers (see ``fusion.py``).

Tables depend only on (layout, ERP size, patch size, device) and are built once, stored in the
layout (:meth:`PatchLayout.cached`). The ERP is padded by one column on each side (wrapping) and
one row on top and bottom (replicated), so bilinear sampling is exact across the 0/360 seam.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import math
import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import (
    PatchView,
    erp_pixel_to_lonlat,
    validate_erp_shape,
    view_padded_erp_coords,
)
from sap_ros.sphere.layout import PatchLayout


@dataclass(frozen=True)
class ErpToPatchTables:
    """Remap tables from a padded ERP (H+2, W+2) to each view at ``size_px``.

    ``maps_fixed[i]`` is the (CV_16SC2, CV_16UC1) pair cv2.remap is fastest with;
    ``maps_float`` is ``(N, S, S, 2)`` float32 x, y in padded-ERP pixels (for torch and tests).
    """

    erp_hw: Tuple[int, int]
    size_px: int
    maps_float: np.ndarray
    maps_fixed: Tuple[Tuple[np.ndarray, np.ndarray], ...]


def _build_erp_to_patch(layout: PatchLayout, height: int, width: int,
                        size_px: int) -> ErpToPatchTables:
    maps = np.empty((len(layout), size_px, size_px, 2), dtype=np.float32)
    fixed = []
    for i, view in enumerate(layout.views):
        maps[i, ..., 0], maps[i, ..., 1] = view_padded_erp_coords(view, height, width, size_px)
        fixed.append(cv2.convertMaps(maps[i, ..., 0], maps[i, ..., 1], cv2.CV_16SC2))
    maps.setflags(write=False)
    return ErpToPatchTables((height, width), size_px, maps, tuple(fixed))


def erp_to_patch_tables(layout: PatchLayout, erp_hw: Tuple[int, int],
                        size_px: Optional[int] = None) -> ErpToPatchTables:
    """Cached ERP -> patch tables for an ERP of ``erp_hw`` = (H, W) and patches of ``size_px``."""
    size = layout.size_px if size_px is None else int(size_px)
    height, width = int(erp_hw[0]), int(erp_hw[1])
    key = ('erp_to_patch', (height, width), size)
    return layout.cached(key, lambda: _build_erp_to_patch(layout, height, width, size))


def pad_erp(erp: np.ndarray) -> np.ndarray:
    """Pad an ERP by one wrapped column each side and one replicated row top and bottom."""
    wrapped = cv2.copyMakeBorder(erp, 0, 0, 1, 1, cv2.BORDER_WRAP)
    return cv2.copyMakeBorder(wrapped, 1, 1, 0, 0, cv2.BORDER_REPLICATE)


# What cv2.remap samples (others raise a bare cv2.error, some only for some channel counts).
REMAP_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)
REMAP_NEAREST_DTYPES = REMAP_DTYPES + (np.int8, np.int32)


def _check_erp(erp, interpolation: int = cv2.INTER_LINEAR) -> Tuple[int, int]:
    if not isinstance(erp, np.ndarray):
        raise InvalidInputError(f'ERP frame must be a NumPy array, got {type(erp).__name__}')
    if erp.ndim not in (2, 3):
        raise InvalidInputError(
            f'ERP frame must be H x W or H x W x C, got shape {tuple(erp.shape)}')
    nearest = interpolation == cv2.INTER_NEAREST
    allowed = REMAP_NEAREST_DTYPES if nearest else REMAP_DTYPES
    if erp.dtype.type not in allowed:
        names = ', '.join(np.dtype(t).name for t in allowed)
        raise InvalidInputError(
            f'ERP frame dtype {erp.dtype} cannot be resampled with '
            f'{"nearest" if nearest else "linear"} interpolation; use one of {names} '
            f'(e.g. a bool mask as uint8, labels as uint16 or int32)')
    return validate_erp_shape(tuple(erp.shape))


def extract_patches(layout: PatchLayout, erp: np.ndarray, size_px: Optional[int] = None,
                    views: Optional[Sequence[int]] = None,
                    interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """All (or the listed) patches of a NumPy ERP frame with cached cv2 tables.

    Args:
        erp: ``(H, W[, C])`` image, 2:1 (``ErpShapeError`` else), of a dtype cv2.remap samples:
            ``REMAP_DTYPES``, or ``REMAP_NEAREST_DTYPES`` with nearest interpolation.
        size_px: patch side (default: the layout's).
        views: view indices to extract, in the returned order (default: all, index order).
        interpolation: ``cv2.INTER_LINEAR`` for images, ``cv2.INTER_NEAREST`` for label maps.

    Returns:
        ``(len(views), S, S[, C])`` array of ``erp.dtype``.

    """
    height, width = _check_erp(erp, interpolation)
    tables = erp_to_patch_tables(layout, (height, width), size_px)
    padded = pad_erp(erp)
    index = range(len(layout)) if views is None else views
    size = tables.size_px
    out = np.empty((len(index), size, size) + erp.shape[2:], dtype=erp.dtype)
    for k, i in enumerate(index):
        if interpolation == cv2.INTER_NEAREST:
            m = tables.maps_float[i]
            cv2.remap(padded, m[..., 0], m[..., 1], interpolation, dst=out[k])
        else:
            m1, m2 = tables.maps_fixed[i]
            cv2.remap(padded, m1, m2, interpolation, dst=out[k])
    return out


def extract_patches_uncached(layout: PatchLayout, erp: np.ndarray,
                             size_px: Optional[int] = None) -> np.ndarray:
    """Same as :func:`extract_patches` but rebuilding the tables (reference for tests)."""
    height, width = _check_erp(erp)
    size = layout.size_px if size_px is None else int(size_px)
    tables = _build_erp_to_patch(layout, height, width, size)
    padded = pad_erp(erp)
    out = np.empty((len(layout), size, size) + erp.shape[2:], dtype=erp.dtype)
    for i, (m1, m2) in enumerate(tables.maps_fixed):
        cv2.remap(padded, m1, m2, cv2.INTER_LINEAR, dst=out[i])
    return out


@dataclass(frozen=True)
class PatchToErpTables:
    """For each view, the ERP pixels (of an ``erp_hw`` grid) it sees.

    Per view ``i``: ``erp_index[i]`` flat ERP pixel indices (int32); ``patch_uv[i]`` ``(M, 2)``
    float32 position of each of those pixels in the patch as a fraction of its side (0 = left /
    top edge, 1 = right / bottom edge), so one table serves every patch or logit resolution;
    ``angle_deg[i]`` the angle between the pixel's bearing and the view's axis (float32; smaller
    = less distortion).
    """

    erp_hw: Tuple[int, int]
    erp_index: Tuple[np.ndarray, ...]
    patch_uv: Tuple[np.ndarray, ...]
    angle_deg: Tuple[np.ndarray, ...]

    @property
    def nbytes(self) -> int:
        """Memory held by the tables."""
        return sum(a.nbytes + b.nbytes + c.nbytes for a, b, c in
                   zip(self.erp_index, self.patch_uv, self.angle_deg))

    def nearest_index(self, view_index: int, size_px: int) -> np.ndarray:
        """Flat index of the nearest pixel of a ``size_px`` patch for each ERP pixel of a view."""
        uv = np.minimum((self.patch_uv[view_index] * size_px).astype(np.int32), size_px - 1)
        return uv[:, 1] * size_px + uv[:, 0]

    def pixel_coords(self, view_index: int, size_px: int) -> np.ndarray:
        """``(M, 2)`` float32 x, y pixel coordinates (0 = first pixel centre) at ``size_px``."""
        return self.patch_uv[view_index] * np.float32(size_px) - np.float32(0.5)


_BUILD_THREADS = 4     # patch -> ERP tables: views built concurrently (at most the CPU count)
_CHUNK_PX = 1 << 20  # candidate ERP pixels projected at once (bounds the float64 temporaries)


def _cone_row_segments(view: PatchView, height: int, width: int
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ERP row segments ``(row, first column, length)`` covering a view's circumscribed cone.

    For a row at latitude ``lat``, the pixels within angle ``reach`` of the axis at
    ``(lon0, lat0)`` have ``cos(lon - lon0) >= (cos reach - sin lat sin lat0) /
    (cos lat cos lat0)``: one longitude interval, widened by a pixel and split in two where it
    wraps, so the segments come out in ascending flat-index order.
    """
    reach = math.radians(math.degrees(math.atan(
        math.sqrt(2.0) * math.tan(math.radians(view.fov_deg) / 2.0))) + 0.5)
    lat0, lon0 = math.radians(view.pitch_deg), view.yaw_deg
    rows = np.arange(height)
    _, lat_deg = erp_pixel_to_lonlat(np.zeros(height), rows, width, height)
    lat = np.radians(lat_deg)
    rows = rows[np.abs(lat - lat0) <= reach]
    lat = lat[rows]
    denom = np.cos(lat) * math.cos(lat0)
    numer = math.cos(reach) - np.sin(lat) * math.sin(lat0)
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = np.where(denom > 1e-12, numer / np.maximum(denom, 1e-300), -2.0)
    half_deg = np.degrees(np.arccos(np.clip(ratio, -1.0, 1.0))) + 360.0 / width
    first = np.ceil((lon0 - half_deg + 180.0) / 360.0 * width - 0.5).astype(np.int64)
    last = np.floor((lon0 + half_deg + 180.0) / 360.0 * width - 0.5).astype(np.int64)
    length = np.minimum(last - first + 1, width)
    full = (ratio <= -1.0) | (length >= width)
    first = np.where(full, 0, first % width)
    length = np.where(full, width, length)
    tail = np.maximum(first + length - width, 0)  # wrapped part, starting at column 0
    head_len = length - tail
    seg_row = np.concatenate([rows[tail > 0], rows])
    seg_first = np.concatenate([np.zeros(int(np.count_nonzero(tail)), np.int64), first])
    seg_len = np.concatenate([tail[tail > 0], head_len])
    order = np.lexsort((seg_first, seg_row))
    return seg_row[order], seg_first[order], seg_len[order]


def _view_table(view: PatchView, height: int, width: int, cos_lat: np.ndarray,
                sin_lat: np.ndarray, cos_lon: np.ndarray, sin_lon: np.ndarray
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(erp_index, patch_uv, angle_deg)`` of one view (ascending ERP index).

    The camera coordinates of a bearing ``(cos lat cos lon, -cos lat sin lon, sin lat)`` are
    separable: ``basis_r . b = cos lat * (r_x cos lon - r_y sin lon) + r_z sin lat``, so each
    candidate costs a few gathers and multiply-adds instead of building its bearing.
    """
    seg_row, seg_first, seg_len = _cone_row_segments(view, height, width)
    total = int(seg_len.sum())
    offsets = np.cumsum(seg_len) - seg_len
    rows = np.repeat(seg_row, seg_len)
    cols = np.repeat(seg_first - offsets, seg_len) + np.arange(total, dtype=np.int64)
    basis = view.basis()  # rows: right, down, forward (= the axis)
    per_col = basis[:, :1] * cos_lon[None, :] - basis[:, 1:2] * sin_lon[None, :]  # (3, W)
    size, focal = view.size_px, view.focal_px
    e_parts, p_parts, a_parts = [], [], []
    for c0 in range(0, total, _CHUNK_PX):
        row, col = rows[c0:c0 + _CHUNK_PX], cols[c0:c0 + _CHUNK_PX]
        cl, sl = cos_lat[row], sin_lat[row]
        cam_z = cl * per_col[2, col] + basis[2, 2] * sl
        in_front = cam_z > 1e-9
        inv_z = focal / np.where(in_front, cam_z, 1.0) / size
        fu = (cl * per_col[0, col] + basis[0, 2] * sl) * inv_z + 0.5
        fv = (cl * per_col[1, col] + basis[1, 2] * sl) * inv_z + 0.5
        keep = np.nonzero(in_front & (fu >= 0) & (fu < 1) & (fv >= 0) & (fv < 1))[0]
        e_parts.append((row[keep] * width + col[keep]).astype(np.int32))
        p_parts.append(np.stack([fu[keep], fv[keep]], axis=1).astype(np.float32))
        a_parts.append(np.degrees(np.arccos(np.clip(cam_z[keep], -1.0, 1.0))).astype(np.float32))

    def frozen(chunks: List[np.ndarray], empty_shape: Tuple[int, ...], dtype) -> np.ndarray:
        arr = np.concatenate(chunks) if chunks else np.zeros(empty_shape, dtype)
        arr.setflags(write=False)
        return arr

    return (frozen(e_parts, (0,), np.int32), frozen(p_parts, (0, 2), np.float32),
            frozen(a_parts, (0,), np.float32))


def _build_patch_to_erp(layout: PatchLayout, height: int, width: int) -> PatchToErpTables:
    """Project only the ERP pixels inside each view's circumscribed cone (row by row).

    The cone holds ~1.3x the pixels the square view sees, so the cost is about the number of
    table entries, not views x ERP pixels. Views are built in a few threads (NumPy releases the
    GIL on these array operations).
    """
    lon_deg, _ = erp_pixel_to_lonlat(np.arange(width), np.zeros(width), width, height)
    _, lat_deg = erp_pixel_to_lonlat(np.zeros(height), np.arange(height), width, height)
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    trig = (np.cos(lat), np.sin(lat), np.cos(lon), np.sin(lon))

    def build(view: PatchView) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _view_table(view, height, width, *trig)

    workers = max(1, min(_BUILD_THREADS, os.cpu_count() or 1, len(layout)))
    if workers == 1:
        parts = [build(view) for view in layout.views]
    else:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(build, layout.views))
    return PatchToErpTables((height, width), tuple(p[0] for p in parts),
                            tuple(p[1] for p in parts), tuple(p[2] for p in parts))


def patch_to_erp_tables(layout: PatchLayout, erp_hw: Tuple[int, int]) -> PatchToErpTables:
    """Cached patch -> ERP tables for an ERP grid of ``erp_hw`` = (H, W)."""
    key = ('patch_to_erp', (int(erp_hw[0]), int(erp_hw[1])))
    return layout.cached(key, lambda: _build_patch_to_erp(layout, int(erp_hw[0]),
                                                          int(erp_hw[1])))
