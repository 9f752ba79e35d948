"""Vectorised ray casting of a few primitives into an ERP image (used by ``synth_scene``).

One ray per ERP pixel centre (directions exactly per ``sap_ros.sphere.geometry``); the label of a
pixel is the nearest primitive hit by that ray, so labels are exact. The image is processed in
row chunks (bounded memory) and every primitive is only tested inside a conservative ERP block
(rows x column intervals, wrap-aware at the 0/360 degree seam) that contains its whole projection,
so small and far objects cost almost nothing. Loops run over primitives and chunks, never pixels.

World frame: z up. A camera at ``origin`` with heading ``yaw`` looks along world azimuth ``yaw``
(counterclockwise from +x seen from above); an ERP column at longitude ``lon`` (positive = right)
therefore looks along world azimuth ``yaw - lon``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from sap_ros.sphere.geometry import erp_pixel_to_lonlat
from sap_ros.synth import textures as tex

Array = np.ndarray
ColumnIntervals = List[Tuple[int, int]]

OBJECT_AMBIENT = 0.35
BACKGROUND_AMBIENT = 0.5


class Shape(str, Enum):
    """Geometric primitive of an object."""

    BOX = 'box'            # yawed box: half_size = half extents along its own x, y, z
    SPHERE = 'sphere'      # half_size = (r, r, r)
    CYLINDER = 'cylinder'  # vertical axis, closed: half_size = (r, r, half height)


@dataclass(frozen=True)
class Primitive:
    """One solid object as the ray caster sees it (world frame, metres)."""

    shape: Shape
    center: Array
    half_size: Array
    yaw_rad: float
    texture: tex.ObjectTexture


@dataclass(frozen=True)
class Background:
    """Label-0 surroundings: inside of an axis-aligned room box, or ground plane z = 0 + sky."""

    kind: str  # 'room' | 'outdoor'
    room_min: Array
    room_max: Array


# ------------------------------------------------------------------------------------ culling

def _column_intervals(u_lo: int, u_hi: int, width: int) -> ColumnIntervals:
    """Inclusive column range, possibly outside ``[0, W)``, -> wrapped half-open intervals."""
    count = u_hi - u_lo + 1
    if count >= width:
        return [(0, width)]
    start = u_lo % width
    if start + count <= width:
        return [(start, start + count)]
    return [(start, width), (0, start + count - width)]


def erp_block(prim: Primitive, origin: Array, yaw_rad: float, width: int, height: int
              ) -> Optional[Tuple[int, int, ColumnIntervals]]:
    """Conservative ERP block ``(row0, row1, column intervals)`` holding ``prim``'s projection.

    Spheres use their exact cone; boxes and cylinders the lat/lon range of their bounding vertical
    cylinder. One pixel of margin on every side. ``None`` when no pixel centre can see it.
    """
    rel = np.asarray(prim.center, dtype=np.float64) - origin
    hx, hy, hz = (float(v) for v in prim.half_size)
    if prim.shape is Shape.SPHERE:
        dist = float(np.linalg.norm(rel))
        if dist <= hx * 1.001 + 1e-6:
            return 0, height, [(0, width)]
        alpha = math.asin(hx / dist)
        lat_c = math.asin(max(-1.0, min(1.0, rel[2] / dist)))
        lat_hi, lat_lo = lat_c + alpha, lat_c - alpha
        if lat_hi >= math.pi / 2 or lat_lo <= -math.pi / 2:
            half_lon = math.pi
        else:
            half_lon = math.asin(min(1.0, math.sin(alpha) / math.cos(lat_c)))
    else:
        r_xy = math.hypot(hx, hy) if prim.shape is Shape.BOX else hx
        s = math.hypot(rel[0], rel[1])
        z0, z1 = rel[2] - hz, rel[2] + hz
        h_min, h_max = max(s - r_xy, 0.0), s + r_xy
        lat_hi = math.atan2(z1, h_min if z1 >= 0 else h_max)
        lat_lo = math.atan2(z0, h_min if z0 <= 0 else h_max)
        half_lon = math.pi if s <= r_xy else math.asin(r_xy / s)
    margin_lat, margin_lon = 180.0 / height, 360.0 / width
    v_lo = math.ceil((90.0 - (math.degrees(lat_hi) + margin_lat)) / 180.0 * height - 0.5)
    v_hi = math.floor((90.0 - (math.degrees(lat_lo) - margin_lat)) / 180.0 * height - 0.5)
    v_lo, v_hi = max(v_lo, 0), min(v_hi, height - 1)
    if v_lo > v_hi:
        return None
    half_lon_deg = math.degrees(half_lon) + margin_lon
    if half_lon_deg >= 180.0:
        return v_lo, v_hi + 1, [(0, width)]
    lon_c = math.degrees(yaw_rad - math.atan2(rel[1], rel[0]))
    u_lo = math.ceil((lon_c - half_lon_deg + 180.0) / 360.0 * width - 0.5)
    u_hi = math.floor((lon_c + half_lon_deg + 180.0) / 360.0 * width - 0.5)
    return v_lo, v_hi + 1, _column_intervals(u_lo, u_hi, width)


# ------------------------------------------------------------------------------- intersection

def _hit_sphere(rel_o: Tuple[float, float, float], r: float, dx: Array, dy: Array, dz: Array
                ) -> Array:
    ox, oy, oz = rel_o
    b = dx * ox + dy * oy + dz * oz
    disc = b * b - (ox * ox + oy * oy + oz * oz - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    return np.where((disc >= 0.0) & (t > 0.0), t, np.float32(np.inf))


def _hit_box(rel_o: Tuple[float, float, float], half: Tuple[float, float, float], yaw: float,
             dx: Array, dy: Array, dz: Array) -> Array:
    c, s = math.cos(yaw), math.sin(yaw)
    ox, oy, oz = rel_o
    local_o = (c * ox + s * oy, -s * ox + c * oy, oz)
    if yaw == 0.0:
        local_d = (dx, dy, dz)
    else:
        local_d = (c * dx + s * dy, -s * dx + c * dy, dz)
    t_near = np.full(np.shape(dx), -np.inf, dtype=np.float32)
    t_far = np.full(np.shape(dx), np.inf, dtype=np.float32)
    for o_a, d_a, h_a in zip(local_o, local_d, half):
        inv = 1.0 / d_a
        t1 = (-h_a - o_a) * inv
        t2 = (h_a - o_a) * inv
        t_near = np.maximum(t_near, np.minimum(t1, t2))
        t_far = np.minimum(t_far, np.maximum(t1, t2))
    return np.where((t_near <= t_far) & (t_near > 0.0), t_near, np.float32(np.inf))


def _hit_cylinder(rel_o: Tuple[float, float, float], r: float, hz: float,
                  dx: Array, dy: Array, dz: Array) -> Array:
    ox, oy, oz = rel_o
    shape = np.broadcast_shapes(dx.shape, dz.shape)
    t = np.full(shape, np.inf, dtype=np.float32)
    c_xy = ox * ox + oy * oy - r * r
    if c_xy > 0.0:  # outside the infinite cylinder: the side can be the entry
        a = dx * dx + dy * dy
        b = dx * ox + dy * oy
        disc = b * b - a * c_xy
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        z_side = oz + t_side * dz
        ok = (disc >= 0.0) & (t_side > 0.0) & (np.abs(z_side) <= hz)
        t = np.where(ok, t_side, t)
    if abs(oz) > hz:  # above the top or below the bottom: one cap can be the entry
        cap_z = hz if oz > 0 else -hz
        t_cap = (cap_z - oz) / dz
        px, py = ox + t_cap * dx, oy + t_cap * dy
        ok = (t_cap > 0.0) & (px * px + py * py <= r * r)
        t = np.where(ok, np.minimum(t, t_cap), t)
    return t


def intersect(prim: Primitive, origin: Array, dx: Array, dy: Array, dz: Array) -> Array:
    """Distance along unit rays to ``prim`` (float32, ``inf`` on a miss); origin outside it."""
    ox, oy, oz = (float(v) for v in (np.asarray(origin) - prim.center))
    rel_o = (ox, oy, oz)
    hx, hy, hz = (float(v) for v in prim.half_size)
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        if prim.shape is Shape.SPHERE:
            return _hit_sphere(rel_o, hx, dx, dy, dz)
        if prim.shape is Shape.BOX:
            return _hit_box(rel_o, (hx, hy, hz), prim.yaw_rad, dx, dy, dz)
        return _hit_cylinder(rel_o, hx, hz, dx, dy, dz)


def surface(prim: Primitive, points: Array) -> Tuple[Array, Array]:
    """World normals ``(N, 3)`` and normalised object-frame texture coordinates ``(N, 3)``."""
    rel = points - prim.center.astype(np.float32)
    half = prim.half_size.astype(np.float32)
    if prim.shape is Shape.SPHERE:
        q = rel / half
        return q / np.linalg.norm(q, axis=1, keepdims=True), q
    if prim.shape is Shape.BOX:
        c, s = np.float32(math.cos(prim.yaw_rad)), np.float32(math.sin(prim.yaw_rad))
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1],
                          rel[:, 2]], axis=1)
        q = local / half
        axis = np.argmax(np.abs(q), axis=1)
        n_local = np.zeros_like(q)
        rows = np.arange(q.shape[0])
        n_local[rows, axis] = np.sign(q[rows, axis])
        normal = np.stack([c * n_local[:, 0] - s * n_local[:, 1],
                           s * n_local[:, 0] + c * n_local[:, 1], n_local[:, 2]], axis=1)
        return normal, q
    q = rel / half
    radial = np.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2)
    cap = np.abs(q[:, 2]) > radial
    safe = np.maximum(radial, 1e-6)
    normal = np.stack([np.where(cap, 0.0, q[:, 0] / safe), np.where(cap, 0.0, q[:, 1] / safe),
                       np.where(cap, np.sign(q[:, 2]), 0.0)], axis=1).astype(np.float32)
    return normal, q


# --------------------------------------------------------------------------------- background

def room_faces(background: Background, origin: Array, dx: Array, dy: Array, dz: Array
               ) -> Tuple[Array, Array, Array, Array]:
    """Where unit world rays leave the room box: distance ``t`` and which face they hit.

    Returns ``(t, on_x, on_y, on_z)``: a wall at constant x, a wall at constant y, the floor or
    the ceiling (``on_z``; the floor where ``dz < 0``). Room backgrounds only.
    """
    ox, oy, oz = (float(v) for v in origin)
    lo, hi = background.room_min, background.room_max
    with np.errstate(divide='ignore', invalid='ignore'):
        # Distance to the wall each axis is heading for (+inf when parallel to it).
        tx = np.where(dx > 0.0, hi[0] - ox, ox - lo[0]).astype(np.float32) / np.abs(dx)
        ty = np.where(dy > 0.0, hi[1] - oy, oy - lo[1]).astype(np.float32) / np.abs(dy)
        tz = np.where(dz > 0.0, hi[2] - oz, oz - lo[2]).astype(np.float32) / np.abs(dz)
    t_xy = np.minimum(tx, ty)
    on_z = tz <= t_xy
    on_x = ~on_z & (tx <= ty)
    on_y = ~on_z & ~on_x
    return np.minimum(t_xy, tz), on_x, on_y, on_z


def shade_background(background: Background, origin: Array, dx: Array, dy: Array, dz: Array,
                     light_dir: Array) -> Array:
    """Colour ``(N, 3)`` of the label-0 surroundings along unit world rays ``(dx, dy, dz)``."""
    ox, oy, oz = (float(v) for v in origin)
    lx, ly, lz = (float(v) for v in light_dir)
    colour = np.empty((dx.shape[0], 3), dtype=np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
        if background.kind == 'outdoor':
            down = dz < 0.0
            t = oz / -dz[down]
            albedo = tex.ground_albedo(ox + t * dx[down], oy + t * dy[down], t)
            shade = BACKGROUND_AMBIENT + (1.0 - BACKGROUND_AMBIENT) * max(lz, 0.0)
            colour[down] = albedo * shade
            up = ~down
            colour[up] = tex.sky_colour(dx[up], dy[up], dz[up])
            return colour
    t, on_x, on_y, on_z = room_faces(background, origin, dx, dy, dz)
    px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
    floor = on_z & (dz < 0.0)
    ceiling = on_z & ~floor
    colour[floor] = tex.floor_albedo(px[floor], py[floor])
    colour[ceiling] = tex.ceiling_albedo(px[ceiling], py[ceiling])
    colour[on_x] = tex.wall_albedo(py[on_x], pz[on_x])
    colour[on_y] = tex.wall_albedo(px[on_y], pz[on_y])
    # Inward normals: -sign(d) along the axis of the face that was hit.
    n_dot_l = np.where(on_z, -np.sign(dz) * lz,
                       np.where(on_x, -np.sign(dx) * lx, -np.sign(dy) * ly))
    shade = BACKGROUND_AMBIENT + (1.0 - BACKGROUND_AMBIENT) * np.maximum(n_dot_l, 0.0)
    return colour * shade.astype(np.float32)[:, None]


# ------------------------------------------------------------------------------------- render

def render_erp(prims: Sequence[Primitive], ids: Sequence[int], background: Background,
               origin: Array, yaw_deg: float, width: int, light_dir: Array,
               max_chunk_px: int = 1 << 20, cull: bool = True) -> Tuple[Array, Array]:
    """Ray-cast one ERP frame: ``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint16 labels.

    ``ids[k]`` is the label of ``prims[k]``; pixels that hit no primitive get label 0 and the
    background colour. ``max_chunk_px`` bounds the pixels processed at once (memory);
    ``cull=False`` tests every primitive against every pixel (same result, slower: for tests).
    """
    height = width // 2
    origin = np.asarray(origin, dtype=np.float64)
    yaw_rad = math.radians(yaw_deg)
    lon_deg, _ = erp_pixel_to_lonlat(np.arange(width), np.zeros(width), width, height)
    _, lat_deg = erp_pixel_to_lonlat(np.zeros(height), np.arange(height), width, height)
    azimuth = yaw_rad - np.radians(lon_deg)
    cos_lat = np.cos(np.radians(lat_deg)).astype(np.float32)
    sin_lat = np.sin(np.radians(lat_deg)).astype(np.float32)
    cos_az, sin_az = np.cos(azimuth).astype(np.float32), np.sin(azimuth).astype(np.float32)
    origin32 = origin.astype(np.float32)
    light32 = np.asarray(light_dir, dtype=np.float32)

    labels = np.zeros((height, width), dtype=np.uint16)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    labels_flat, rgb_flat = labels.reshape(-1), rgb.reshape(-1, 3)
    blocks = [erp_block(p, origin, yaw_rad, width, height) if cull else (0, height, [(0, width)])
              for p in prims]
    chunk_rows = max(1, max_chunk_px // width)
    for r0 in range(0, height, chunk_rows):
        r1 = min(height, r0 + chunk_rows)
        t_best = np.full((r1 - r0, width), np.inf, dtype=np.float32)
        nearest = np.full((r1 - r0, width), -1, dtype=np.int16)
        visits = []
        for k, (prim, block) in enumerate(zip(prims, blocks)):
            if block is None or block[0] >= r1 or block[1] <= r0:
                continue
            ra, rb = max(block[0], r0), min(block[1], r1)
            for c0, c1 in block[2]:
                dx = cos_lat[ra:rb, None] * cos_az[None, c0:c1]
                dy = cos_lat[ra:rb, None] * sin_az[None, c0:c1]
                t = intersect(prim, origin, dx, dy, sin_lat[ra:rb, None])
                t_view = t_best[ra - r0:rb - r0, c0:c1]
                closer = t < t_view
                np.copyto(t_view, t, where=closer)
                nearest[ra - r0:rb - r0, c0:c1][closer] = k
                visits.append((k, ra, rb, c0, c1))
        for k, ra, rb, c0, c1 in visits:
            rr, cc = np.nonzero(nearest[ra - r0:rb - r0, c0:c1] == k)
            if rr.size == 0:
                continue
            rows, cols = rr + ra, cc + c0
            dx, dy, dz = cos_lat[rows] * cos_az[cols], cos_lat[rows] * sin_az[cols], sin_lat[rows]
            t = t_best[rows - r0, cols]
            points = np.stack([origin32[0] + t * dx, origin32[1] + t * dy, origin32[2] + t * dz],
                              axis=1)
            normal, q = surface(prims[k], points)
            texture = prims[k].texture
            albedo = tex.object_albedo(texture, q)
            colour = albedo if texture.emissive else tex.lambert(albedo, normal, light32,
                                                                 OBJECT_AMBIENT)
            flat = rows * width + cols
            rgb_flat[flat] = tex.to_uint8(colour)
            labels_flat[flat] = ids[k]
        flat = np.flatnonzero(nearest < 0)
        rows, cols = flat // width + r0, flat % width
        colour = shade_background(background, origin, cos_lat[rows] * cos_az[cols],
                                  cos_lat[rows] * sin_az[cols], sin_lat[rows], light32)
        rgb_flat[flat + r0 * width] = tex.to_uint8(colour)
    return rgb, labels
