"""Object extents on a low-res ERP work grid: area-weighted centroid and angular radius.

What view culling needs per object (``culling.views_touching``): the centroid is the sum of the
object's pixel-centre bearings weighted by ``cos(lat)`` (``erp_row_weights``), normalised; the
radius is the largest angle from it to one of the object's pixels. A centroid that vanishes (a
ring round the sphere) gives ``(1, 0, 0)`` and 180 deg (every view). The rule the engine applies
on its work grid, written once for the host path; ``engine.torch_records`` computes the same on
the device from the same tables.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from sap_ros.sphere.geometry import (
    angular_distance_deg,
    erp_bearings,
    erp_row_weights,
    validate_erp_shape,
)

DEGENERATE_NORM = 1e-9     # below this |weighted bearing sum| the centroid has no direction
FALLBACK_CENTROID = (1.0, 0.0, 0.0)
FALLBACK_RADIUS_DEG = 180.0


def object_extents(labels: np.ndarray, ids: Sequence[int]
                   ) -> Dict[int, Tuple[np.ndarray, float]]:
    """``id -> (centroid (3,), radius_deg)`` for each of ``ids`` present in an ERP label map."""
    height, width = validate_erp_shape(np.shape(labels))
    flat = np.asarray(labels).reshape(-1)
    bearings = erp_bearings(width, height).reshape(-1, 3)
    weights = np.repeat(erp_row_weights(height), width)
    out: Dict[int, Tuple[np.ndarray, float]] = {}
    for object_id in ids:
        mask = flat == object_id
        if not mask.any():
            continue
        pts = bearings[mask]
        centroid = (pts * weights[mask][:, None]).sum(0)
        norm = float(np.linalg.norm(centroid))
        if norm < DEGENERATE_NORM:
            out[int(object_id)] = (np.array(FALLBACK_CENTROID), FALLBACK_RADIUS_DEG)
            continue
        centroid = centroid / norm
        out[int(object_id)] = (centroid, float(angular_distance_deg(pts, centroid).max()))
    return out


def uncovered_fraction(labels: np.ndarray) -> float:
    """Share of the sphere no object covers: ``cos(lat)``-weighted fraction of 0 pixels."""
    height, width = validate_erp_shape(np.shape(labels))
    free_per_row = (np.asarray(labels) == 0).sum(axis=1)
    weights = erp_row_weights(height)
    return min(1.0, float(free_per_row @ weights / (weights.sum() * width)))  # no rounding > 1
