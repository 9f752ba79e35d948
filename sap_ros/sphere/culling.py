"""View culling: which patch views an object's last known extent on the sphere can touch.

Cost then grows with the objects in view, not with every object ever seen (ARCHITECTURE §5). The
object is bounded by the cap of angular radius ``radius`` around its centroid; a view is kept when
the angular distance from the centroid to the view's square (the spherical quadrilateral that a
square pinhole image covers) is at most ``radius + margin``. The test is exact for the cap, so a
view that sees any point of the object is never dropped, and a view whose corner only passes near
the object is not kept as it would be by a cone around the view's axis (the earlier, looser test:
it decoded each object in about twice as many views).

In the view's camera frame (x right, y down, z forward) the square is the intersection of the four
hemispheres ``|x| <= t z`` and ``|y| <= t z`` with ``t = tan(fov / 2)``; its edges are arcs of the
great circles ``x = +-t z`` and ``y = +-t z`` between the corner rays ``(+-t, +-t, 1)``.
"""
from __future__ import annotations

import math

import numpy as np

from sap_ros.errors import InvalidInputError

# Slack for rounding when a point sits exactly on a view's edge (degrees).
_EPS_DEG = 1e-6


def circumscribed_half_angle_deg(half_fov_deg: float) -> float:
    """Half-angle of the cone around a square view's axis through its corners, degrees.

    >>> round(circumscribed_half_angle_deg(45.0), 4)
    54.7356
    """
    _check_half_fov(half_fov_deg)
    return math.degrees(math.atan(math.sqrt(2.0) * math.tan(math.radians(half_fov_deg))))


def distance_to_square_deg(points_cam: np.ndarray, half_fov_deg: float) -> np.ndarray:
    """Angular distance from unit bearings in a view's camera frame to its square, degrees.

    Args:
        points_cam: ``(..., 3)`` unit bearings, camera frame (x right, y down, z forward).
        half_fov_deg: half the square view's field of view, degrees, in (0, 90).

    Returns:
        ``(...)`` distances, 0 inside the square (its border included).

    >>> t = math.tan(math.radians(30.0))
    >>> corner = np.array([t, t, 1.0]) / math.sqrt(2 * t * t + 1)
    >>> [round(float(d), 4) for d in distance_to_square_deg(
    ...     np.array([[0.0, 0.0, 1.0], corner, [1.0, 0.0, 0.0]]), 30.0)]
    [0.0, 0.0, 60.0]

    """
    _check_half_fov(half_fov_deg)
    p = np.asarray(points_cam, dtype=np.float64)
    t = math.tan(math.radians(half_fov_deg))
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    inside = (np.abs(x) <= t * z) & (np.abs(y) <= t * z)
    corners = np.array([[-t, -t, 1.0], [t, -t, 1.0], [t, t, 1.0], [-t, t, 1.0]])
    corners /= np.linalg.norm(corners, axis=1, keepdims=True)
    best = np.full(p.shape[:-1], np.inf)
    for k in range(4):
        a, b = corners[k], corners[(k + 1) % 4]
        normal = np.cross(a, b)
        normal /= np.linalg.norm(normal)
        # Nearest point of the edge's great circle; it is on the edge when it lies between a, b.
        along = p @ normal
        foot = p - along[..., None] * normal
        foot_norm = np.linalg.norm(foot, axis=-1)
        on_arc = ((np.cross(a, foot) @ normal) >= 0.0) & ((np.cross(foot, b) @ normal) >= 0.0) \
            & (foot_norm > 1e-12)
        to_circle = np.degrees(np.arctan2(np.abs(along), foot_norm))
        to_ends = np.degrees(np.arccos(np.clip(np.maximum(p @ a, p @ b), -1.0, 1.0)))
        best = np.minimum(best, np.where(on_arc, to_circle, to_ends))
    return np.where(inside, 0.0, best)


def views_touching(bases: np.ndarray, half_fov_deg: float, centroid: np.ndarray,
                   radius_deg: float, margin_deg: float) -> np.ndarray:
    """Views whose square meets the object's cap dilated by ``margin_deg``.

    Args:
        bases: ``(N, 3, 3)`` rows (right, down, forward) of each view's camera in the world
            frame (``PatchView.basis``).
        half_fov_deg: half the square views' field of view, degrees, in (0, 90).
        centroid: ``(3,)`` bearing of the object's centroid (normalised here).
        radius_deg: angular radius of the object around its centroid, degrees, >= 0.
        margin_deg: extra dilation, degrees, >= 0.

    Returns:
        ``(N,)`` bool, True for every view that may see part of the object.

    >>> from sap_ros.sphere.geometry import PatchView
    >>> bases = np.stack([PatchView(yaw, 0.0, 90.0, 8).basis() for yaw in (0.0, 180.0)])
    >>> views_touching(bases, 45.0, np.array([1.0, 0.0, 0.0]), 5.0, 0.0)
    array([ True, False])

    """
    bases = np.asarray(bases, dtype=np.float64)
    if bases.ndim != 3 or bases.shape[1:] != (3, 3) or not np.all(np.isfinite(bases)):
        raise InvalidInputError(f'bases must be a finite (N, 3, 3) array, got shape {bases.shape}')
    _check_half_fov(half_fov_deg)
    c = np.asarray(centroid, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(c)) if c.shape == (3,) and np.all(np.isfinite(c)) else 0.0
    if norm < 1e-12:
        raise InvalidInputError(f'centroid must be a non-zero finite 3-vector, got {c.tolist()}')
    for name, value in (('radius_deg', radius_deg), ('margin_deg', margin_deg)):
        if not (math.isfinite(value) and value >= 0.0):
            raise InvalidInputError(f'{name} must be finite and >= 0, got {value}')
    reach_deg = radius_deg + margin_deg + _EPS_DEG
    if reach_deg >= 180.0:
        return np.ones(bases.shape[0], dtype=bool)
    cam = bases @ (c / norm)
    cam /= np.maximum(np.linalg.norm(cam, axis=-1, keepdims=True), 1e-12)
    return distance_to_square_deg(cam, half_fov_deg) <= reach_deg


def _check_half_fov(half_fov_deg: float) -> None:
    if not 0.0 < half_fov_deg < 90.0:
        raise InvalidInputError(f'half_fov_deg must be in (0, 90), got {half_fov_deg}')
