"""Patch layout: which perspective views cover the sphere, and the order they are visited in.

Rows of constant pitch, ``step = fov * (1 - overlap)`` apart, each with as many yaw steps as its
widest (most equatorial) edge needs, plus cap views at +-90 deg. With the defaults (90 deg FOV,
overlap 0.5) that is 8 views at pitch -45, 0 and +45 plus two caps: 26 views, every point of the
sphere inside at least one view, and every consecutive pair of the zigzag path sharing about half
of its image (measured by :meth:`PatchLayout.overlap_matrix`, reported by ``sap_bench geometry``).
The caps are not needed for coverage at 90 deg (the +-45 rows reach the poles at their border),
but without them a pole is only seen at the very edge of a patch, where gnomonic stretch is
largest; with them every pole pixel is seen within 45 deg of some axis.

The layout owns its cached sampling tables (:meth:`cached`), keyed by what they depend on, so a
zigzag that cycles through all views never thrashes a small global LRU.
"""
from __future__ import annotations

import math
import threading
from typing import Callable, Dict, Hashable, List, Sequence, Tuple, TypeVar

import numpy as np

from sap_ros.config import PatchConfig, PathOrder
from sap_ros.errors import ConfigError
from sap_ros.sphere.geometry import PatchView, erp_bearings, erp_row_weights, lonlat_to_bearing

T = TypeVar('T')


def _row_pitches(fov_deg: float, overlap: float) -> List[float]:
    step = fov_deg * (1.0 - overlap)
    # Split pole to pole into k equal intervals of at most one step; the caps sit at +-90.
    k = max(2, int(math.ceil(180.0 / step - 1e-9)))
    return [-90.0 + j * 180.0 / k for j in range(1, k)]


def _row_yaw_count(pitch_deg: float, step_deg: float) -> int:
    # The row's band is widest at its equator-side edge: space yaws for that latitude.
    edge_lat = max(0.0, abs(pitch_deg) - step_deg / 2.0)
    n = max(3, int(math.ceil(360.0 * math.cos(math.radians(edge_lat)) / step_deg - 1e-9)))
    return n + n % 2  # even: the zigzag ends next to the south cap it started from


class PatchLayout:
    """Views covering the whole sphere and their visiting path.

    Args:
        views: the views, in a fixed index order (``view_index`` everywhere refers to it).
        path: view indices in visiting order for even frames; odd frames run it backwards, so
            the last patch of a frame and the first of the next are the same view.
        order: how ``path`` was built.

    Use :meth:`from_config` or :meth:`build` rather than the constructor.

    """

    def __init__(self, views: Sequence[PatchView], path: Sequence[int], order: PathOrder) -> None:
        """Store views and path; validate that the path visits every view exactly once."""
        if sorted(path) != list(range(len(views))):
            raise ValueError(f'path must visit each of the {len(views)} views once, got {path}')
        self.views: Tuple[PatchView, ...] = tuple(views)
        self.path: Tuple[int, ...] = tuple(int(i) for i in path)
        self.order = order
        self.axes = np.stack([v.axis for v in self.views])
        # Rows (right, down, forward) of each view's camera: world bearing -> camera frame.
        self.bases = np.stack([v.basis() for v in self.views])
        self._cache: Dict[Hashable, object] = {}
        self._lock = threading.RLock()  # builders may use other cached tables
        self._overlap: np.ndarray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, fov_deg: float = 90.0, size_px: int = 1024, order: str = 'zigzag',
              overlap: float = 0.5) -> 'PatchLayout':
        """Rows + caps layout for a square FOV, visited in ``order`` ('zigzag' or 'raster')."""
        try:
            path_order = PathOrder(order)
        except ValueError:
            raise ConfigError('patches.order', f"must be 'zigzag' or 'raster', got {order!r}")
        step = fov_deg * (1.0 - overlap)
        pitches = _row_pitches(fov_deg, overlap)
        rows: List[List[int]] = []
        views: List[PatchView] = []
        for pitch in pitches:
            n = _row_yaw_count(pitch, step)
            rows.append([])
            for j in range(n):
                yaw = j * 360.0 / n
                yaw = yaw - 360.0 if yaw >= 180.0 else yaw
                rows[-1].append(len(views))
                views.append(PatchView(yaw, pitch, fov_deg, size_px))
        south = len(views)
        views.append(PatchView(0.0, -90.0, fov_deg, size_px))
        north = len(views)
        views.append(PatchView(0.0, 90.0, fov_deg, size_px))
        if path_order is PathOrder.RASTER:
            path = [north] + [i for row in reversed(rows) for i in
                              sorted(row, key=lambda k: views[k].yaw_deg % 360.0)] + [south]
            return cls(views, path, path_order)
        layout = cls(views, _zigzag(views, rows, south, north), path_order)
        m = layout.overlap_matrix()
        layout.path = tuple(_repair_weak_steps(layout.path, np.minimum(m, m.T),
                                               floor=WEAK_STEP_FRACTION * overlap))
        return layout

    @classmethod
    def from_config(cls, cfg: PatchConfig) -> 'PatchLayout':
        """Layout for the ``patches.*`` parameters."""
        return cls.build(cfg.fov_deg, cfg.size_px, cfg.order, cfg.overlap)

    # ------------------------------------------------------------------ path
    def frame_path(self, frame_index: int) -> Tuple[int, ...]:
        """View indices in visiting order for frame ``frame_index`` (alternating direction)."""
        return self.path if frame_index % 2 == 0 else self.path[::-1]

    def __len__(self) -> int:
        """Number of views."""
        return len(self.views)

    @property
    def size_px(self) -> int:
        """Patch side in pixels (all views share it)."""
        return self.views[0].size_px

    @property
    def fov_deg(self) -> float:
        """Field of view of every view, degrees."""
        return self.views[0].fov_deg

    # ------------------------------------------------------------------ measurements
    def overlap_matrix(self, samples_px: int = 48) -> np.ndarray:
        """``M[a, b]`` = fraction of view ``a``'s image (solid-angle weighted) also seen by ``b``.

        Computed on a ``samples_px``-square grid of each view (cached); the diagonal is 1.
        """
        if self._overlap is None:
            n = len(self.views)
            out = np.zeros((n, n))
            for a, view in enumerate(self.views):
                grid = view.resized(samples_px)
                bearings = grid.pixel_grid_bearings().reshape(-1, 3)
                # Solid angle of a gnomonic pixel falls as cos^3 of its angle to the axis.
                weight = (bearings @ view.axis) ** 3
                weight = weight / weight.sum()
                for b, other in enumerate(self.views):
                    out[a, b] = float(weight[other.contains(bearings)].sum())
            np.fill_diagonal(out, 1.0)
            self._overlap = out
        return self._overlap

    def path_overlaps(self) -> np.ndarray:
        """Overlap of each consecutive pair along the path, ``min(M[a,b], M[b,a])``, (N-1,)."""
        m = self.overlap_matrix()
        p = self.path
        return np.array([min(m[a, b], m[b, a]) for a, b in zip(p[:-1], p[1:])])

    def coverage(self, erp_width: int = 1024) -> float:
        """Fraction of the sphere (area-weighted) inside at least one view, on an ERP grid."""
        height = erp_width // 2
        bearings = erp_bearings(erp_width, height).reshape(-1, 3)
        covered = np.zeros(len(bearings), dtype=bool)
        for view in self.views:
            covered |= view.contains(bearings)
        weights = np.repeat(erp_row_weights(height), erp_width)
        return float(weights[covered].sum() / weights.sum())

    def views_containing(self, bearing: np.ndarray) -> np.ndarray:
        """Indices of the views whose image contains ``bearing`` (3,), nearest axis first."""
        inside = [i for i, v in enumerate(self.views) if v.contains(bearing[None])[0]]
        return np.array(sorted(inside, key=lambda i: -float(self.axes[i] @ bearing)), dtype=int)

    # ------------------------------------------------------------------ table cache
    def cached(self, key: Hashable, build: Callable[[], T]) -> T:
        """Return the table stored under ``key``, building it once (thread-safe)."""
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]  # type: ignore[return-value]

    def clear_cache(self) -> None:
        """Drop every cached table (e.g. when a device goes away)."""
        with self._lock:
            self._cache.clear()


WEAK_STEP_FRACTION = 0.5  # zigzag steps below this fraction of the target overlap are repaired


def _zigzag(views: Sequence[PatchView], rows: Sequence[Sequence[int]], south: int,
            north: int) -> List[int]:
    """Column-first boustrophedon: up one yaw column, down the next, caps at the first column.

    Columns are the equator row's yaw steps; a view of a sparser row joins the column nearest
    its yaw. The path starts at the south cap, climbs column 0, visits the north cap, then runs
    down column 1, up column 2, ... so each step moves to a neighbour; the last column ends
    next to column 0 (the yaw ring closes) and next to the south cap.
    """
    widest = max(rows, key=len)
    col_yaws = np.array([views[i].yaw_deg for i in widest])
    columns: List[List[int]] = [[] for _ in widest]
    for row in rows:
        for i in row:
            diff = (views[i].yaw_deg - col_yaws + 180.0) % 360.0 - 180.0
            columns[int(np.argmin(np.abs(diff)))].append(i)
    order = np.argsort(col_yaws % 360.0)
    path = [south]
    for rank, c in enumerate(order):
        column = sorted(columns[c], key=lambda i: views[i].pitch_deg)
        path.extend(column if rank % 2 == 0 else column[::-1])
        if rank == 0:
            path.append(north)
    return path


def _repair_weak_steps(path: Sequence[int], overlap: np.ndarray, floor: float,
                       max_segment: int = 3) -> List[int]:
    """Move short runs of views into the weakest step of ``path`` until every step is >= floor.

    The column zigzag jumps two rows where a sparse row has no view in a column (e.g. FOV 60,
    overlap 0.6: steps of 0.19). For the weakest step ``a -> b`` every run of up to
    ``max_segment`` consecutive views elsewhere on the path is tried between them (either way
    round); the move that makes the worst of the three steps it touches largest is taken when that
    beats the weak step. Paths whose steps all reach ``floor`` come back unchanged.

    >>> m = np.array([[1, .1, .5, .1], [.1, 1, .1, .5], [.5, .1, 1, .6], [.1, .5, .6, 1]])
    >>> _repair_weak_steps([0, 1, 2, 3], m, floor=0.4)
    [0, 2, 3, 1]
    """
    path = [int(i) for i in path]
    for _ in range(2 * len(path)):  # each repair lifts the weakest step; bounded anyway
        steps = overlap[path[:-1], path[1:]]
        weak = int(np.argmin(steps))
        if steps[weak] >= floor:
            break
        best_score, best_path = float(steps[weak]), None
        for length in range(1, max_segment + 1):
            for j in range(len(path) - length + 1):
                if j <= weak + 1 and weak < j + length:
                    continue  # the run must not contain a or b
                seg = path[j:j + length]
                rest = path[:j] + path[j + length:]
                joined = (overlap[path[j - 1], path[j + length]]
                          if 0 < j and j + length < len(path) else 1.0)
                at = weak if j > weak else weak - length  # index of a in ``rest``
                a, b = rest[at], rest[at + 1]
                for run in (seg, seg[::-1]):
                    score = min(joined, overlap[a, run[0]], overlap[run[-1], b])
                    if score > best_score + 1e-9:
                        best_score, best_path = score, rest[:at + 1] + run + rest[at + 1:]
        if best_path is None:
            break
        path = best_path
    return path


def sphere_points(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors (Fibonacci lattice), ``(n, 3)``; for coverage checks."""
    i = np.arange(n) + 0.5
    lat = np.degrees(np.arcsin(1.0 - 2.0 * i / n))
    lon = (np.degrees(np.pi * (1.0 + 5.0 ** 0.5) * i) % 360.0) - 180.0
    return lonlat_to_bearing(lon, lat)
