"""Sphere geometry: ERP pixels <-> lon/lat <-> unit bearings <-> pinhole patch pixels.

Conventions (ARCHITECTURE §3), written once here and nowhere else:

* ERP pixel centres: ``lon = ((u + 0.5) / W) * 360 - 180`` degrees (the centre column looks
  forward),
  ``lat = 90 - ((v + 0.5) / H) * 180`` degrees (the top row looks up).
* Bearings are unit vectors in the camera frame, REP-103 (x forward, y left, z up):
  ``x = cos(lat) cos(lon)``, ``y = -cos(lat) sin(lon)``, ``z = sin(lat)``; so moving right in the
  image (growing ``lon``) turns right.
* A patch is a square pinhole view with its axis at ``(yaw_deg, pitch_deg)`` = (lon, lat) of the
  axis, roll 0, ``fov_deg`` across, ``size_px`` pixels across. Patch pixel ``(u, v)`` grows right
  and down like an image; pixel centres are at ``u + 0.5``.
* Angles are degrees at every public function, radians inside. Pixel area on the sphere is
  proportional to ``cos(lat)``.

All functions are vectorised over NumPy arrays of any shape.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Tuple

import numpy as np

from sap_ros.errors import ErpShapeError

Array = np.ndarray


def validate_erp_shape(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """Check that ``shape`` (H, W[, C]) is a non-empty 2:1 ERP frame and return ``(H, W)``.

    A width within 1 px of ``2 * H`` is accepted (odd sizes from some encoders).

    >>> validate_erp_shape((960, 1920, 3))
    (960, 1920)
    >>> validate_erp_shape((100, 100))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sap_ros.errors.ErpShapeError: ERP frame must be 2:1 ..., got shape (100, 100)
    """
    if len(shape) < 2:
        raise ErpShapeError(f'ERP frame must be H x W [x C], got shape {tuple(shape)}')
    height, width = int(shape[0]), int(shape[1])
    if height <= 0 or width <= 0:
        raise ErpShapeError(f'ERP frame is empty, got shape {tuple(shape)}')
    if abs(width - 2 * height) > 1:
        raise ErpShapeError(
            f'ERP frame must be 2:1 (width = 2 x height +- 1 px), got shape {tuple(shape)}')
    return height, width


def erp_pixel_to_lonlat(u: Array, v: Array, width: int, height: int) -> Tuple[Array, Array]:
    """ERP pixel coordinates (float, 0 at the first pixel's centre) -> (lon_deg, lat_deg).

    >>> erp_pixel_to_lonlat(np.array([0.0, 1.5]), np.array([0.0, 0.5]), 4, 2)
    (array([-135.,    0.]), array([45.,  0.]))
    """
    lon = (np.asarray(u, dtype=np.float64) + 0.5) / width * 360.0 - 180.0
    lat = 90.0 - (np.asarray(v, dtype=np.float64) + 0.5) / height * 180.0
    return lon, lat


def lonlat_to_erp_pixel(lon_deg: Array, lat_deg: Array, width: int, height: int
                        ) -> Tuple[Array, Array]:
    """(lon_deg, lat_deg) -> continuous ERP pixel coordinates (u, v); inverse of the above.

    ``u`` is wrapped into ``[-0.5, W - 0.5)`` so every longitude maps to one place.

    >>> lonlat_to_erp_pixel(np.array([180.0]), np.array([-90.0]), 4, 2)
    (array([-0.5]), array([1.5]))
    """
    lon = (np.asarray(lon_deg, dtype=np.float64) + 180.0) % 360.0
    u = lon / 360.0 * width - 0.5
    v = (90.0 - np.asarray(lat_deg, dtype=np.float64)) / 180.0 * height - 0.5
    return u, v


def lonlat_to_bearing(lon_deg: Array, lat_deg: Array) -> Array:
    """(lon_deg, lat_deg) -> unit bearing, shape ``(..., 3)`` float64, camera frame (REP-103).

    >>> np.round(lonlat_to_bearing(np.array([0.0, 90.0]), np.array([0.0, 0.0])), 6) + 0.0
    array([[ 1.,  0.,  0.],
           [ 0., -1.,  0.]])
    """
    lon, lat = np.broadcast_arrays(np.radians(np.asarray(lon_deg, dtype=np.float64)),
                                   np.radians(np.asarray(lat_deg, dtype=np.float64)))
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), -cos_lat * np.sin(lon), np.sin(lat)], axis=-1)


def bearing_to_lonlat(bearing: Array) -> Tuple[Array, Array]:
    """Bearing ``(..., 3)`` (any length > 0) -> (lon_deg in [-180, 180), lat_deg in [-90, 90]).

    >>> bearing_to_lonlat(np.array([[0.0, 0.0, 2.0], [0.0, 1.0, 0.0]]))
    (array([  0., -90.]), array([90.,  0.]))
    """
    b = np.asarray(bearing, dtype=np.float64)
    x, y, z = b[..., 0], b[..., 1], b[..., 2]
    lon = np.degrees(np.arctan2(-y, x)) + 0.0  # + 0.0 turns -0.0 into 0.0
    lon = np.where(lon >= 180.0, lon - 360.0, lon)
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return lon, lat


def erp_lonlat_grid(width: int, height: int) -> Tuple[Array, Array]:
    """Per-pixel (lon_deg, lat_deg) of an ERP image, each ``(H, W)`` float64."""
    lon, _ = erp_pixel_to_lonlat(np.arange(width), np.zeros(width), width, height)
    _, lat = erp_pixel_to_lonlat(np.zeros(height), np.arange(height), width, height)
    return np.broadcast_to(lon[None, :], (height, width)), np.broadcast_to(lat[:, None],
                                                                            (height, width))


def erp_bearings(width: int, height: int) -> Array:
    """Unit bearing of every ERP pixel centre, ``(H, W, 3)`` float64, camera frame."""
    lon, lat = erp_lonlat_grid(width, height)
    return lonlat_to_bearing(lon, lat)


def erp_row_weights(height: int) -> Array:
    """Spherical area weight ``cos(lat)`` of each ERP row, ``(H,)`` float64 (> 0 everywhere)."""
    _, lat = erp_pixel_to_lonlat(np.zeros(height), np.arange(height), 2 * height, height)
    return np.cos(np.radians(lat))


def erp_pixel_solid_angle_sr(width: int, height: int) -> Array:
    """Solid angle of each ERP row's pixels, steradians, ``(H,)``; they sum to 4 pi."""
    lat_edges = np.radians(90.0 - np.arange(height + 1) / height * 180.0)
    band = np.sin(lat_edges[:-1]) - np.sin(lat_edges[1:])
    return band * (2.0 * math.pi / width)


def angular_distance_deg(a: Array, b: Array) -> Array:
    """Angle in degrees between bearings ``a`` and ``b`` (broadcast over ``(..., 3)``)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = np.sum(a * b, axis=-1)
    return np.degrees(np.arctan2(cross, dot))


@dataclass(frozen=True)
class PatchView:
    """One square pinhole view on the sphere.

    Attributes:
        yaw_deg: longitude of the optical axis, degrees (0 = camera forward, + = right).
        pitch_deg: latitude of the optical axis, degrees (+90 = up).
        fov_deg: field of view across the square image, degrees, in (0, 180).
        size_px: image side in pixels.

    """

    yaw_deg: float
    pitch_deg: float
    fov_deg: float
    size_px: int

    @property
    def focal_px(self) -> float:
        """Focal length in pixels."""
        return 0.5 * self.size_px / math.tan(math.radians(self.fov_deg) / 2.0)

    @property
    def axis(self) -> Array:
        """Unit bearing of the optical axis, ``(3,)``."""
        return lonlat_to_bearing(np.array(self.yaw_deg), np.array(self.pitch_deg))

    def basis(self) -> Array:
        """Rows (right, down, forward) of the view's camera in the REP-103 frame, (3, 3).

        ``right`` points to growing lon at the axis, ``down`` to falling lat; at the poles the
        yaw still fixes the orientation, so a pitch of +-90 deg is well defined.
        """
        yaw, pitch = math.radians(self.yaw_deg), math.radians(self.pitch_deg)
        forward = np.array([math.cos(pitch) * math.cos(yaw), -math.cos(pitch) * math.sin(yaw),
                            math.sin(pitch)])
        right = np.array([-math.sin(yaw), -math.cos(yaw), 0.0])
        up = np.array([-math.sin(pitch) * math.cos(yaw), math.sin(pitch) * math.sin(yaw),
                       math.cos(pitch)])
        return np.stack([right, -up, forward])

    def pixel_to_bearing(self, u: Array, v: Array) -> Array:
        """Patch pixel coordinates (0 at the first pixel's centre) -> unit bearings ``(..., 3)``.

        >>> view = PatchView(0.0, 0.0, 90.0, 4)
        >>> np.round(view.pixel_to_bearing(np.array(1.5), np.array(1.5)), 6) + 0.0
        array([1., 0., 0.])
        """
        half = 0.5 * self.size_px
        x = np.asarray(u, dtype=np.float64) + 0.5 - half
        y = np.asarray(v, dtype=np.float64) + 0.5 - half
        f = np.full(np.broadcast(x, y).shape, self.focal_px)
        cam = np.stack(np.broadcast_arrays(x, y, f), axis=-1)
        rays = cam @ self.basis()
        return rays / np.linalg.norm(rays, axis=-1, keepdims=True)

    def bearing_to_pixel(self, bearing: Array) -> Tuple[Array, Array, Array]:
        """Bearings ``(..., 3)`` -> patch pixel coordinates ``(u, v)`` and ``in_front`` mask.

        Pixels behind the camera get ``u = v = -1e6`` and ``in_front = False``; points in front
        but outside the image keep their (out-of-range) coordinates.
        """
        cam = np.asarray(bearing, dtype=np.float64) @ self.basis().T
        z = cam[..., 2]
        in_front = z > 1e-9
        safe_z = np.where(in_front, z, 1.0)
        half = 0.5 * self.size_px
        u = np.where(in_front, cam[..., 0] / safe_z * self.focal_px + half - 0.5, -1e6)
        v = np.where(in_front, cam[..., 1] / safe_z * self.focal_px + half - 0.5, -1e6)
        return u, v, in_front

    def contains(self, bearing: Array, margin_px: float = 0.0) -> Array:
        """True where a bearing lands inside the patch image (pixel centres within the border)."""
        u, v, in_front = self.bearing_to_pixel(bearing)
        lo, hi = -0.5 - margin_px, self.size_px - 0.5 + margin_px
        return in_front & (u >= lo) & (u <= hi) & (v >= lo) & (v <= hi)

    def pixel_grid_bearings(self, size_px: int | None = None) -> Array:
        """Bearings of every pixel centre, ``(S, S, 3)``; ``size_px`` resamples the same view."""
        view = self if size_px is None else self.resized(size_px)
        idx = np.arange(view.size_px, dtype=np.float64)
        return view.pixel_to_bearing(idx[None, :], idx[:, None])

    def resized(self, size_px: int) -> 'PatchView':
        """The same view (axis and FOV) at another pixel size."""
        return PatchView(self.yaw_deg, self.pitch_deg, self.fov_deg, int(size_px))


def view_padded_erp_coords(view: PatchView, height: int, width: int, size_px: int
                           ) -> Tuple[np.ndarray, np.ndarray]:
    """Where each pixel centre of ``view`` at ``size_px`` lands in the padded ERP, ``(S, S)`` x2.

    Continuous ``(x, y)`` float64 pixel coordinates of the ERP padded by
    :func:`~sap_ros.sphere.sampler.pad_erp` (one column / row each side, so ``x = u + 1``,
    ``y = v + 1``); the one definition that the cv2 tables (``sampler.py``) and the torch
    sampling grids (``torch_sampler.py``) are both built from.
    """
    lon, lat = bearing_to_lonlat(view.pixel_grid_bearings(size_px))
    u, v = lonlat_to_erp_pixel(lon, lat, width, height)
    return u + 1.0, v + 1.0
