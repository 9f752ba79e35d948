"""Object records (ARCHITECTURE §6): one navigation record per object of an ERP label map.

Everything is measured on the sphere: each pixel counts with its solid angle
(:func:`~sap_ros.sphere.geometry.erp_pixel_solid_angle_sr`). Per-object sums are
``np.bincount`` over ``(object, row)`` and ``(object, column)`` keys, so the cost is a few passes
over the pixels whatever the number of objects.
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Tuple

import numpy as np

from sap_ros.engine.types import EMBEDDING_DIM, ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import (
    bearing_to_lonlat,
    erp_pixel_solid_angle_sr,
    erp_pixel_to_lonlat,
    lonlat_to_bearing,
    validate_erp_shape,
)

# Below this mean resultant length (|sum of bearings| / solid angle) the centroid has no direction
# (a ring round the equator, the whole sphere) and the fallback of object_records is used.
_DEGENERATE_CENTROID = 1e-9
# Published label maps are uint16.
_MAX_ID = 65535


def wrap_aware_lon_extent(columns_present: np.ndarray, width: int) -> Tuple[float, float]:
    """Smallest arc of longitudes holding every present ERP column: ``(width_deg, centre_lon)``.

    The arc is the circle minus its largest run of absent columns, so an object crossing the
    seam at lon 180 is narrow, not 360 wide. Widths use pixel edges (one column is
    ``360 / width``). A full ring gives ``(360.0, 0.0)``; equal largest gaps resolve to the first.

    Args:
        columns_present: ``(width,)`` bool, True for each column the object occupies (any True).
        width: ERP width in pixels.

    Returns:
        ``(width_deg, centre_lon_deg)``, centre in ``[-180, 180)``.

    >>> cols = np.zeros(8, bool); cols[[0, 7]] = True
    >>> wrap_aware_lon_extent(cols, 8)
    (90.0, -180.0)

    """
    present = np.asarray(columns_present, dtype=bool).reshape(-1)
    if present.shape != (width,):
        raise InvalidInputError(
            f'columns_present must be ({width},) bool, got shape {present.shape}')
    cols = np.flatnonzero(present)
    if cols.size == 0:
        raise InvalidInputError('columns_present has no column: an empty object has no extent')
    if cols.size == width:
        return 360.0, 0.0
    # Step from each present column to the next one round the ring; the longest step jumps the
    # largest gap, and the arc starts right after it.
    steps = np.diff(np.append(cols, cols[0] + width))
    k = int(np.argmax(steps))
    span_cols = width - (int(steps[k]) - 1)
    start = int(cols[(k + 1) % cols.size])
    centre_u = start + 0.5 * (span_cols - 1)
    centre_lon = float(((centre_u + 0.5) / width * 360.0) % 360.0 - 180.0)
    return span_cols * 360.0 / width, centre_lon


def _check_labels(labels: np.ndarray) -> Tuple[np.ndarray, int, int]:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InvalidInputError(f'label map must be (H, W), got shape {labels.shape}')
    height, width = validate_erp_shape(labels.shape)
    if labels.dtype.kind not in 'ui':
        raise InvalidInputError(f'label map must hold integer ids, got dtype {labels.dtype}')
    if labels.size and (labels.min() < 0 or labels.max() > _MAX_ID):
        raise InvalidInputError(f'label map ids must be in [0, {_MAX_ID}], got '
                                f'[{int(labels.min())}, {int(labels.max())}]')
    return labels, height, width


def _embedding(object_id: int, value: Optional[np.ndarray]) -> np.ndarray:
    """L2-normalised float32 ``(256,)``; zeros when absent, zero or not finite.

    Every released SAM2 has 256-value pointers; a model with narrower ones (the nano yaml that
    ``sap_train`` ships: 64) fills the first values and leaves the rest 0.
    """
    out = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    if value is None:
        return out
    vec = np.asarray(value, dtype=np.float64).reshape(-1)
    if not 0 < vec.size <= EMBEDDING_DIM:
        raise InvalidInputError(f'embedding of object {object_id} must have 1..{EMBEDDING_DIM} '
                                f'values, got {vec.shape}')
    norm = float(np.linalg.norm(vec))
    if np.isfinite(norm) and norm > 0.0:
        out[:vec.size] = vec / norm
    return out


def object_records(labels: np.ndarray,
                    scores: Optional[Mapping[int, float]] = None,
                    ages: Optional[Mapping[int, int]] = None,
                    frames_since_seen: Optional[Mapping[int, int]] = None,
                    embeddings: Optional[Mapping[int, np.ndarray]] = None) -> List[ObjectRecord]:
    """One :class:`ObjectRecord` per nonzero id present in an ERP label map, sorted by id.

    * ``bearing``: sum of the pixel-centre bearings weighted by pixel solid angle, normalised;
      ``lon_deg``/``lat_deg`` are its direction. When that sum vanishes (a full ring round the
      equator, the whole sphere) the direction is taken at the centre of the longitude extent and
      the area-weighted mean latitude instead.
    * ``width_deg``: :func:`wrap_aware_lon_extent` of the object's columns (360 for an object
      round a pole); ``height_deg``: from the top edge of its highest row to the bottom edge of
      its lowest row (one pixel is ``180 / H`` high).
    * ``solid_angle_sr``: sum of its pixels' solid angles; ``area_px``: its pixel count.
    * From the maps, per id, with defaults for missing ids: ``score`` (default 1.0, the segmenter
      had no doubt, as for the geometric oracle; clipped to [0, 1], 0 if not finite),
      ``age_frames`` (0), ``frames_since_seen`` (0), ``embedding`` (L2-normalised float32
      ``(256,)``, zeros when absent, zero or not finite).

    Args:
        labels: ``(H, W)`` ERP label map (2:1, integer ids <= 65535, 0 = no object; uint16).
        scores: object id -> score (mean predicted IoU x object score).
        ages: object id -> frames since the object was created.
        frames_since_seen: object id -> frames since it was last segmented.
        embeddings: object id -> SAM2 object pointer, 256 values.

    Raises:
        ErpShapeError: ``labels`` is not a 2:1 ERP map.
        InvalidInputError: not integer ids, or an embedding is not 256 values.

    >>> labels = np.zeros((2, 4), np.uint16); labels[0] = 3
    >>> [(p.id, p.lat_deg > 0, p.width_deg, p.height_deg, p.area_px)
    ...  for p in object_records(labels)]
    [(3, True, 360.0, 90.0, 4)]

    """
    labels, height, width = _check_labels(labels)
    counts_per_id = np.bincount(labels.ravel())
    ids = np.flatnonzero(counts_per_id)
    ids = ids[ids > 0]
    if ids.size == 0:
        return []
    n_obj = ids.size
    # Compact ids to 1..K (0 = background) so tables are (K + 1, H) and (K + 1, W).
    lut = np.zeros(counts_per_id.size, dtype=np.intp)
    lut[ids] = np.arange(1, n_obj + 1)
    index = lut[labels]

    lon_col, _ = erp_pixel_to_lonlat(np.arange(width), np.zeros(width), width, height)
    _, lat_row = erp_pixel_to_lonlat(np.zeros(height), np.arange(height), width, height)
    lon_rad, lat_rad = np.radians(lon_col), np.radians(lat_row)
    sr_row = erp_pixel_solid_angle_sr(width, height)

    # (object, row) tables: pixel count and sums of cos/sin lon; bearings are separable in rows.
    row_key = (index * height + np.arange(height)[:, None]).ravel()
    size = (n_obj + 1) * height
    cos_lon = np.broadcast_to(np.cos(lon_rad)[None, :], (height, width)).ravel()
    sin_lon = np.broadcast_to(np.sin(lon_rad)[None, :], (height, width)).ravel()
    count_tab = np.bincount(row_key, minlength=size).reshape(n_obj + 1, height)[1:]
    cos_tab = np.bincount(row_key, weights=cos_lon, minlength=size).reshape(n_obj + 1, height)[1:]
    sin_tab = np.bincount(row_key, weights=sin_lon, minlength=size).reshape(n_obj + 1, height)[1:]
    col_key = (index * width + np.arange(width)[None, :]).ravel()
    col_present = (np.bincount(col_key, minlength=(n_obj + 1) * width) > 0).reshape(
        n_obj + 1, width)[1:]

    solid_angle = count_tab @ sr_row
    row_w = sr_row * np.cos(lat_rad)  # x = cos lat cos lon, y = -cos lat sin lon, z = sin lat
    sums = np.stack([cos_tab @ row_w, -(sin_tab @ row_w), count_tab @ (sr_row * np.sin(lat_rad))],
                    axis=-1)
    rows_present = count_tab > 0
    top = np.argmax(rows_present, axis=1)
    bottom = height - 1 - np.argmax(rows_present[:, ::-1], axis=1)
    heights = (bottom - top + 1) * 180.0 / height

    scores = scores or {}
    ages = ages or {}
    frames_since_seen = frames_since_seen or {}
    embeddings = embeddings or {}
    out: List[ObjectRecord] = []
    for k, obj_id in enumerate(ids.tolist()):
        width_deg, centre_lon = wrap_aware_lon_extent(col_present[k], width)
        norm = float(np.linalg.norm(sums[k]))
        if norm > _DEGENERATE_CENTROID * solid_angle[k]:
            bearing = sums[k] / norm
        else:
            mean_lat = float(count_tab[k] @ (sr_row * lat_row) / solid_angle[k])
            bearing = lonlat_to_bearing(np.array(centre_lon), np.array(mean_lat))
        lon, lat = bearing_to_lonlat(bearing)
        score = float(scores.get(obj_id, 1.0))
        out.append(ObjectRecord(
            id=obj_id,
            bearing=np.asarray(bearing, dtype=np.float64),
            lon_deg=float(lon),
            lat_deg=float(lat),
            width_deg=float(width_deg),
            height_deg=float(heights[k]),
            solid_angle_sr=float(solid_angle[k]),
            area_px=int(counts_per_id[obj_id]),
            score=float(np.clip(score, 0.0, 1.0)) if np.isfinite(score) else 0.0,
            age_frames=int(ages.get(obj_id, 0)),
            frames_since_seen=int(frames_since_seen.get(obj_id, 0)),
            embedding=_embedding(obj_id, embeddings.get(obj_id)),
        ))
    return out
