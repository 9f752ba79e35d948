"""Which views decode which object: extents on the work grid, following objects along the path.

The frame path (:mod:`sap_ros.engine.frame_path`) keeps a low-resolution ERP grid
(:data:`WORK_HW`) of the current frame's labels as the patches are visited. Re-projected into the
next patch it is the objects' **prior** there: the geometry the engine uses for association,
culling, suppressing rediscovery of known objects and merging (never, by default, as an input to
SAM2). Each object's extent on that grid (centroid, angular radius, motion per frame) decides
which patches decode it next frame; within a frame a sighting's cap adds the views it touches
(:meth:`ObjectExtents.follow`), so an object is followed beyond its known extent.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from sap_ros.engine.objects import ObjectTrack
from sap_ros.engine.pixels import to_host
from sap_ros.sphere.culling import views_touching
from sap_ros.sphere.extents import DEGENERATE_NORM, FALLBACK_CENTROID, FALLBACK_RADIUS_DEG
from sap_ros.sphere.geometry import angular_distance_deg
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.torch_device import to_device

WORK_HW = (128, 256)        # low-res sphere grid for priors and object extents
MAX_MOTION_DEG = 90.0       # cap on the per-frame motion that dilates an extent for culling
HALF_DIAGONAL = 0.5 * 2.0 ** 0.5  # of a square pixel, in pixel sides: slack around pixel centres
Mask = Union[np.ndarray, torch.Tensor]
Extent = Tuple[np.ndarray, float]


class ObjectExtents:
    """The views each object is decoded in: from its extent and this frame's sightings."""

    def __init__(self, layout: PatchLayout, culling_margin_deg: float) -> None:
        """No object yet for ``layout``; extents dilated by ``culling_margin_deg``."""
        self.layout = layout
        self.margin_deg = float(culling_margin_deg)
        self._half_fov = layout.fov_deg / 2.0
        self.views_of: Dict[int, np.ndarray] = {}

    def clear(self) -> None:
        """Forget every object (reset)."""
        self.views_of.clear()

    def decodes_in(self, object_id: int, view: int) -> bool:
        """Culling: may ``object_id`` be in ``view`` (True while its extent is unknown)?"""
        views = self.views_of.get(object_id)
        return views is None or bool(views[view])

    def follow(self, view: int, sightings: Sequence[Tuple[int, Mask]]) -> None:
        """Add the views that each sighting's cap (``(id, decoder-resolution mask)``) touches.

        Masks are NumPy or tensors on one device; the caps of device masks are computed there and
        read back in one copy for all of them. Each mask must hold a pixel (a sighting).
        """
        if not sightings:
            return
        low = int(sightings[0][1].shape[0])
        masks = [m for _, m in sightings]
        device_masks = [m for m in masks if isinstance(m, torch.Tensor)]
        caps = (_caps_on_device(self._grid_device(view, low, device_masks[0].device),
                                device_masks)
                if len(device_masks) == len(masks)
                else [_cap(self._grid(view, low), to_host(m)) for m in masks])
        # A mask pixel reaches half its diagonal beyond its centre; a decoder pixel spans at most
        # fov / low degrees (at the patch centre).
        margin = self.margin_deg + HALF_DIAGONAL * self.layout.fov_deg / low
        for (object_id, _), (centroid, radius) in zip(sightings, caps):
            views = self.views_of.setdefault(object_id, np.zeros(len(self.layout), bool))
            views |= views_touching(self.layout.bases, self._half_fov, centroid, radius, margin)

    def _grid(self, view: int, low: int) -> np.ndarray:
        return self.layout.cached(
            ('pipeline.grid_bearings', view, low),
            lambda: self.layout.views[view].pixel_grid_bearings(low).reshape(-1, 3))

    def _grid_device(self, view: int, low: int, device: torch.device) -> torch.Tensor:
        return self.layout.cached(
            ('extents.grid_bearings', view, low, str(device)),
            lambda: to_device(self._grid(view, low), device, torch.float64))

    def update(self, track: ObjectTrack, elapsed_frames: int, extent: Optional[Extent]) -> None:
        """Centroid, radius and motion of ``track`` -> the views to decode it in next frame.

        ``extent`` is the object's ``(centroid, radius_deg)`` on this frame's work grid
        (``sphere.extents.object_extents``; None: not on the grid, nothing changes). The extent is
        dilated by the culling margin plus how far its centroid moved per frame since its previous
        sighting (``elapsed_frames`` ago), so an object that the camera's turn or its own motion
        carries across views is still decoded where it will be.
        """
        if extent is None:
            return
        centroid, radius = np.asarray(extent[0], dtype=np.float64), float(extent[1])
        if track.centroid is not None and elapsed_frames > 0:
            moved = float(angular_distance_deg(track.centroid, centroid))
            track.motion_deg = min(moved / elapsed_frames, MAX_MOTION_DEG)
        track.centroid, track.extent_radius_deg = centroid, radius
        # Half a work-grid pixel's diagonal (a pixel is at most 180 / rows degrees on a side).
        margin = self.margin_deg + track.motion_deg + HALF_DIAGONAL * 180.0 / WORK_HW[0]
        self.views_of[track.id] = views_touching(self.layout.bases, self._half_fov, centroid,
                                                 radius, margin)

    def relabel(self, drop: int, keep: int) -> None:
        """Object ``drop`` became ``keep`` (merge)."""
        self.views_of.pop(drop, None)

    def forget(self, object_id: int) -> None:
        """Stop culling for a retired object."""
        self.views_of.pop(object_id, None)


def _cap(grid: np.ndarray, mask: np.ndarray) -> Extent:
    """Centroid of a mask's pixel bearings and the largest angle from it to one of them."""
    bearings = grid[mask.reshape(-1) > 0]
    centroid = bearings.sum(axis=0)
    norm = float(np.linalg.norm(centroid))
    if norm < DEGENERATE_NORM:
        return np.array(FALLBACK_CENTROID), FALLBACK_RADIUS_DEG
    centroid = centroid / norm
    return centroid, float(angular_distance_deg(bearings, centroid).max())


def _caps_on_device(grid: torch.Tensor, masks: Sequence[torch.Tensor]) -> list:
    """:func:`_cap` of every mask on their device, one copy back: centroid and farthest pixel."""
    inside = torch.stack([m.reshape(-1) > 0 for m in masks])           # (K, P)
    sums = inside.to(grid.dtype) @ grid                                  # (K, 3)
    norms = sums.norm(dim=1, keepdim=True)
    centroids = sums / norms.clamp(min=1e-300)
    dots = (centroids @ grid.T).masked_fill(~inside, float('inf'))     # (K, P)
    farthest = grid[dots.argmin(dim=1)]                                  # the largest angle
    host = torch.cat([centroids, farthest, norms], dim=1).numpy(force=True)
    caps = []
    for row in host:
        if row[6] < DEGENERATE_NORM:
            caps.append((np.array(FALLBACK_CENTROID), FALLBACK_RADIUS_DEG))
            continue
        caps.append((row[:3], float(angular_distance_deg(row[3:6], row[:3]))))
    return caps
