"""View culling: which patch views an object's last known extent on the sphere can touch.

Cost then grows with the objects in view, not with every object ever seen (DESIGN §5). The test is
conservative: a square pinhole view of field of view ``fov`` lies inside the cone around its
axis of half-angle ``atan(sqrt(2) * tan(fov / 2))`` (through its corners), and the object lies
inside the cap of angular radius ``radius`` around its centroid; a view is kept when cone and
(dilated) cap meet, i.e. when the angle between axis and centroid is at most
``cone + radius + margin``. A view that sees any point of the object is therefore never dropped;
a few views that only come near it are kept too.
"""
from __future__ import annotations

import math

import numpy as np

from sap_ros.core.errors import InvalidInputError

# Slack for rounding when a point sits exactly on a view's corner ray (degrees).
_EPS_DEG = 1e-6


def circumscribed_half_angle_deg(half_fov_deg: float) -> float:
    """Half-angle of the cone around a square view's axis through its corners, degrees.

    >>> round(circumscribed_half_angle_deg(45.0), 4)
    54.7356
    """
    if not 0.0 < half_fov_deg < 90.0:
        raise InvalidInputError(f'half_fov_deg must be in (0, 90), got {half_fov_deg}')
    return math.degrees(math.atan(math.sqrt(2.0) * math.tan(math.radians(half_fov_deg))))


def views_touching(axes: np.ndarray, half_fov_deg: float, centroid: np.ndarray,
                   radius_deg: float, margin_deg: float) -> np.ndarray:
    """Views whose circumscribed cone meets the object's cap dilated by ``margin_deg``.

    Args:
        axes: ``(N, 3)`` unit bearings of the view axes (camera frame).
        half_fov_deg: half the square views' field of view, degrees, in (0, 90).
        centroid: ``(3,)`` bearing of the object's centroid (normalised here).
        radius_deg: angular radius of the object around its centroid, degrees, >= 0.
        margin_deg: extra dilation, degrees, >= 0.

    Returns:
        ``(N,)`` bool, True for every view that may see part of the object.

    >>> axes = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    >>> views_touching(axes, 45.0, np.array([1.0, 0.0, 0.0]), 5.0, 0.0)
    array([ True, False])

    """
    axes = np.asarray(axes, dtype=np.float64)
    if axes.ndim != 2 or axes.shape[1] != 3 or not np.all(np.isfinite(axes)):
        raise InvalidInputError(f'axes must be a finite (N, 3) array, got shape {axes.shape}')
    c = np.asarray(centroid, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(c)) if c.shape == (3,) and np.all(np.isfinite(c)) else 0.0
    if norm < 1e-12:
        raise InvalidInputError(f'centroid must be a non-zero finite 3-vector, got {c.tolist()}')
    for name, value in (('radius_deg', radius_deg), ('margin_deg', margin_deg)):
        if not (math.isfinite(value) and value >= 0.0):
            raise InvalidInputError(f'{name} must be finite and >= 0, got {value}')
    reach_deg = circumscribed_half_angle_deg(half_fov_deg) + radius_deg + margin_deg + _EPS_DEG
    if reach_deg >= 180.0:
        return np.ones(axes.shape[0], dtype=bool)
    axes_unit = axes / np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-12)
    cos_angle = np.clip(axes_unit @ (c / norm), -1.0, 1.0)
    return cos_angle >= math.cos(math.radians(reach_deg))
