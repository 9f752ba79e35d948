"""Where the engine's objects are on the sphere: the work grid, extents and view culling.

A low-resolution ERP grid (:data:`WORK_HW`) collects the current frame's labels as the patches are
visited. Re-projected into the next patch it is the objects' **prior** there: the geometry the
engine uses for association, culling, suppressing rediscovery of known objects and merging (never,
by default, as an input to SAM2). Each object's extent (centroid, angular radius, motion per frame)
decides which patches decode it next frame.
"""
from __future__ import annotations

from typing import Dict

import cv2
import numpy as np

from sap_ros.engine.objects import ObjectTrack
from sap_ros.sphere.culling import views_touching
from sap_ros.sphere.fusion import LabelCanvas, sample_bilinear
from sap_ros.sphere.geometry import angular_distance_deg, erp_bearings, erp_row_weights
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches

WORK_HW = (128, 256)        # low-res sphere grid for priors and object extents
MAX_MOTION_DEG = 90.0       # cap on the per-frame motion that dilates an extent for culling
HALF_DIAGONAL = 0.5 * 2.0 ** 0.5  # of a square pixel, in pixel sides: slack around pixel centres


class ObjectExtents:
    """The work grid of the current frame and the views each object is decoded in."""

    def __init__(self, layout: PatchLayout, culling_margin_deg: float) -> None:
        """Empty grid for ``layout``; extents dilated by ``culling_margin_deg``."""
        self.layout = layout
        self.margin_deg = float(culling_margin_deg)
        self.work = LabelCanvas(layout, WORK_HW)
        self.bearings = erp_bearings(WORK_HW[1], WORK_HW[0]).reshape(-1, 3)
        self.weights = np.repeat(erp_row_weights(WORK_HW[0]), WORK_HW[1])
        self._half_fov = layout.fov_deg / 2.0
        self.views_of: Dict[int, np.ndarray] = {}
        self.masks: Dict[int, np.ndarray] = {}

    def clear(self) -> None:
        """Forget every object (reset)."""
        self.work.clear()
        self.views_of.clear()
        self.masks.clear()

    def begin_frame(self) -> None:
        """An empty work grid and no masks for the new frame (extents are kept)."""
        self.work.clear()
        self.masks = {}

    def decodes_in(self, object_id: int, view: int) -> bool:
        """Culling: may ``object_id`` be in ``view`` (True while its extent is unknown)?"""
        views = self.views_of.get(object_id)
        return views is None or bool(views[view])

    def prior(self, view: int, low_px: int) -> np.ndarray:
        """The labels so far this frame, re-projected into ``view`` at ``low_px`` squared."""
        return extract_patches(self.layout, self.work.labels, low_px, views=[view],
                               interpolation=cv2.INTER_NEAREST)[0]

    def paint(self, view: int, ids: np.ndarray, logits: np.ndarray) -> None:
        """Add a patch's outputs to the work grid and to each object's union mask (merging)."""
        self.work.paint_logits(view, logits, ids)
        tables = self.work.tables
        scores = sample_bilinear(logits, tables.pixel_coords(view, logits.shape[1]))
        for object_id, row in zip(ids.tolist(), scores):
            mask = self.masks.get(object_id)
            if mask is None:
                mask = self.masks[object_id] = np.zeros(WORK_HW[0] * WORK_HW[1], bool)
            mask[tables.erp_index[view][row > 0]] = True

    def follow(self, object_id: int, view: int, mask: np.ndarray) -> None:
        """Add the views that a sighting's cap (decoder-resolution ``mask`` in ``view``) touches.

        This follows an object beyond its known extent without decoding it in every neighbour.
        """
        low = mask.shape[0]
        grid = self.layout.cached(
            ('pipeline.grid_bearings', view, low),
            lambda: self.layout.views[view].pixel_grid_bearings(low).reshape(-1, 3))
        bearings = grid[mask.reshape(-1)]
        centroid = bearings.sum(axis=0)
        centroid /= np.linalg.norm(centroid)
        radius = float(angular_distance_deg(bearings, centroid).max())
        # A mask pixel reaches half its diagonal beyond its centre; a decoder pixel spans at most
        # fov / low degrees (at the patch centre).
        margin = self.margin_deg + HALF_DIAGONAL * self.layout.fov_deg / low
        views = self.views_of.setdefault(object_id, np.zeros(len(self.layout), bool))
        views |= views_touching(self.layout.bases, self._half_fov, centroid, radius, margin)

    def update(self, track: ObjectTrack, elapsed_frames: int) -> None:
        """Centroid, radius and motion of ``track`` on the work grid -> the views to decode it in.

        The extent is dilated by the culling margin plus how far its centroid moved per frame
        since its previous sighting (``elapsed_frames`` ago), so an object that the camera's turn
        or its own motion carries across views is still decoded where it will be.
        """
        mask = self.work.labels.reshape(-1) == track.id
        if not mask.any():
            return
        bearings = self.bearings[mask]
        weights = self.weights[mask]
        centroid = (bearings * weights[:, None]).sum(0)
        norm = np.linalg.norm(centroid)
        if norm < 1e-9:
            centroid, radius = np.array([1.0, 0.0, 0.0]), 180.0
        else:
            centroid = centroid / norm
            radius = float(angular_distance_deg(bearings, centroid).max())
        if track.centroid is not None and elapsed_frames > 0:
            moved = float(angular_distance_deg(track.centroid, centroid))
            track.motion_deg = min(moved / elapsed_frames, MAX_MOTION_DEG)
        track.centroid, track.extent_radius_deg = centroid, radius
        # Half a work-grid pixel's diagonal (a pixel is at most 180 / rows degrees on a side).
        margin = self.margin_deg + track.motion_deg + HALF_DIAGONAL * 180.0 / WORK_HW[0]
        self.views_of[track.id] = views_touching(self.layout.bases, self._half_fov, centroid,
                                                 radius, margin)

    def uncovered_fraction(self) -> float:
        """Share of the sphere (area-weighted) no object labels on the work grid."""
        work = self.work.labels.reshape(-1)
        return float(self.weights[work == 0].sum() / self.weights.sum())

    def relabel(self, drop: int, keep: int) -> None:
        """Object ``drop`` became ``keep`` (merge)."""
        work = self.work.labels
        work[work == drop] = keep
        self.views_of.pop(drop, None)

    def forget(self, object_id: int) -> None:
        """Stop culling for a retired object."""
        self.views_of.pop(object_id, None)
