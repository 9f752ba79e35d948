"""Sampling between an ERP frame and the patches of a layout, through cached tables.

* ERP -> patches: per-view remap tables (``cv2.remap`` on NumPy images, fixed-point maps for
  speed) or one batched ``torch.nn.functional.grid_sample`` for torch tensors (CUDA or CPU).
* Patches -> ERP: per-view lists of the ERP pixels a view sees, with the patch pixel and the
  angle to the view's axis, so fusion is a few vectorised gathers (see ``fusion.py``).

Tables depend only on (layout, ERP size, patch size, device) and are built once, stored in the
layout (:meth:`PatchLayout.cached`). The ERP is padded by one column on each side (wrapping) and
one row on top and bottom (replicated), so bilinear sampling is exact across the 0/360 seam.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from sap_ros.core.errors import InvalidInputError
from sap_ros.core.geometry import (
    bearing_to_lonlat,
    erp_pixel_to_lonlat,
    lonlat_to_bearing,
    lonlat_to_erp_pixel,
    validate_erp_shape,
)
from sap_ros.core.layout import PatchLayout

try:  # torch is optional for the CPU path; the engine always has it.
    import torch
    import torch.nn.functional as torch_f
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


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
        lon, lat = bearing_to_lonlat(view.pixel_grid_bearings(size_px))
        u, v = lonlat_to_erp_pixel(lon, lat, width, height)
        maps[i, ..., 0] = u + 1.0  # + 1: the padded column / row
        maps[i, ..., 1] = v + 1.0
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


def _check_erp(erp) -> Tuple[int, int]:
    if erp.ndim not in (2, 3):
        raise InvalidInputError(
            f'ERP frame must be H x W or H x W x C, got shape {tuple(erp.shape)}')
    return validate_erp_shape(tuple(erp.shape))


def extract_patches(layout: PatchLayout, erp: np.ndarray, size_px: Optional[int] = None,
                    views: Optional[Sequence[int]] = None,
                    interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """All (or the listed) patches of a NumPy ERP frame with cached cv2 tables.

    Args:
        erp: ``(H, W[, C])`` image, any dtype cv2.remap supports; 2:1 (``ErpShapeError`` else).
        size_px: patch side (default: the layout's).
        views: view indices to extract, in the returned order (default: all, index order).
        interpolation: ``cv2.INTER_LINEAR`` for images, ``cv2.INTER_NEAREST`` for label maps.

    Returns:
        ``(len(views), S, S[, C])`` array of ``erp.dtype``.

    """
    height, width = _check_erp(erp)
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


def extract_patches_torch(layout: PatchLayout, erp: 'torch.Tensor',
                          size_px: Optional[int] = None) -> 'torch.Tensor':
    """All patches of a torch ERP frame in one batched ``grid_sample`` (stays on its device).

    Args:
        erp: ``(H, W, C)`` uint8 or float tensor (CPU or CUDA).

    Returns:
        ``(N, C, S, S)`` float32 tensor on ``erp.device`` (values in the input's range).

    """
    if erp.ndim != 3:
        raise InvalidInputError(f'ERP tensor must be H x W x C, got shape {tuple(erp.shape)}')
    height, width = validate_erp_shape(tuple(erp.shape))
    size = layout.size_px if size_px is None else int(size_px)
    key = ('erp_to_patch_grid', (height, width), size, str(erp.device))

    def build() -> 'torch.Tensor':
        tables = erp_to_patch_tables(layout, (height, width), size)
        grid = torch.from_numpy(np.array(tables.maps_float)).to(erp.device)
        # align_corners=False: normalised x = (2 * px + 1) / W_pad - 1 in padded pixels.
        grid[..., 0] = (2.0 * grid[..., 0] + 1.0) / (width + 2) - 1.0
        grid[..., 1] = (2.0 * grid[..., 1] + 1.0) / (height + 2) - 1.0
        return grid.reshape(1, len(layout) * size, size, 2)

    grid = layout.cached(key, build)
    img = erp.permute(2, 0, 1).unsqueeze(0).float()
    img = torch.cat([img[..., -1:], img, img[..., :1]], dim=3)
    img = torch.cat([img[:, :, :1], img, img[:, :, -1:]], dim=2)
    out = torch_f.grid_sample(img, grid, mode='bilinear', padding_mode='border',
                              align_corners=False)
    channels = erp.shape[2]
    return out.reshape(channels, len(layout), size, size).permute(1, 0, 2, 3)


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


def _build_patch_to_erp(layout: PatchLayout, height: int, width: int) -> PatchToErpTables:
    n = len(layout)
    parts: List[Tuple[List[np.ndarray], List[np.ndarray], List[np.ndarray]]] = [
        ([], [], []) for _ in range(n)]
    rows_per_chunk = max(1, 250_000 // width)
    reach_deg = math.degrees(math.atan(math.sqrt(2.0) * math.tan(
        math.radians(layout.fov_deg) / 2.0))) + 1.0
    for r0 in range(0, height, rows_per_chunk):
        r1 = min(height, r0 + rows_per_chunk)
        lon, lat = erp_pixel_to_lonlat(np.arange(width)[None, :], np.arange(r0, r1)[:, None],
                                       width, height)
        bearings = lonlat_to_bearing(lon, lat).reshape(-1, 3)
        lat_hi, lat_lo = float(lat.max()), float(lat.min())
        for view, (e_parts, p_parts, a_parts) in zip(layout.views, parts):
            # Skip row chunks outside the view's latitude band (its circumscribed cone).
            if (lat_lo > view.pitch_deg + reach_deg) or (lat_hi < view.pitch_deg - reach_deg):
                continue
            u, v, in_front = view.bearing_to_pixel(bearings)
            size = view.size_px
            fu, fv = (u + 0.5) / size, (v + 0.5) / size
            inside = in_front & (fu >= 0) & (fu < 1) & (fv >= 0) & (fv < 1)
            flat = np.nonzero(inside)[0]
            e_parts.append((flat + r0 * width).astype(np.int32))
            p_parts.append(np.stack([fu[flat], fv[flat]], axis=1).astype(np.float32))
            cos = np.clip(bearings[flat] @ view.axis, -1.0, 1.0)
            a_parts.append(np.degrees(np.arccos(cos)).astype(np.float32))

    def frozen(chunks: List[np.ndarray], empty_shape: Tuple[int, ...], dtype) -> np.ndarray:
        arr = np.concatenate(chunks) if chunks else np.zeros(empty_shape, dtype)
        arr.setflags(write=False)
        return arr

    return PatchToErpTables((height, width),
                            tuple(frozen(p[0], (0,), np.int32) for p in parts),
                            tuple(frozen(p[1], (0, 2), np.float32) for p in parts),
                            tuple(frozen(p[2], (0,), np.float32) for p in parts))


def patch_to_erp_tables(layout: PatchLayout, erp_hw: Tuple[int, int]) -> PatchToErpTables:
    """Cached patch -> ERP tables for an ERP grid of ``erp_hw`` = (H, W)."""
    key = ('patch_to_erp', (int(erp_hw[0]), int(erp_hw[1])))
    return layout.cached(key, lambda: _build_patch_to_erp(layout, int(erp_hw[0]),
                                                          int(erp_hw[1])))
