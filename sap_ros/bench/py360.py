"""py360convert's ``e2p`` on the layout's views beside our extraction (``sap_bench geometry``).

py360convert is the reference implementation of ERP -> perspective sampling that most 360
projects use; the bench times it on the same views and checks that its patches look like ours
(same yaw / pitch conventions).
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import List, Optional

import cv2
import numpy as np

from sap_ros.bench.common import median_ms
from sap_ros.sphere.layout import PatchLayout

MIN_CORRELATION = 0.9       # py360convert's patches must look like ours (same conventions)


def _grey_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
    if ga.std() == 0.0 or gb.std() == 0.0:
        return float(np.array_equal(ga, gb))
    return float(np.corrcoef(ga, gb)[0, 1])


@dataclass(frozen=True)
class Py360Comparison:
    """py360convert's ``e2p`` on the layout's views, next to ours."""

    e2p_ms: float
    cached_ms: Optional[float]
    centre_corr: float
    min_corr: float


def compare_py360convert(layout: PatchLayout, erp: np.ndarray, ours: np.ndarray,
                         repeats: int) -> Optional[Py360Comparison]:
    """Time py360convert's ``e2p`` on every view and check it agrees with ``ours`` (N, S, S, 3).

    Conventions: ``e2p(u_deg=yaw, v_deg=pitch)`` (its u grows to the right, v up, like our
    yaw = lon and pitch = lat). Returns None when py360convert is not installed.
    """
    try:
        from py360convert import e2p
    except ImportError:
        return None
    size = layout.size_px

    def run_e2p() -> List[np.ndarray]:
        return [e2p(erp, view.fov_deg, view.yaw_deg, view.pitch_deg, (size, size))
                for view in layout.views]

    e2p_ms, theirs = median_ms(run_e2p, repeats)
    corr = [_grey_correlation(a, b) for a, b in zip(ours, theirs)]
    centre = int(np.argmax(layout.axes @ np.array([1.0, 0.0, 0.0])))
    return Py360Comparison(e2p_ms, _py360_cached_ms(layout, erp, repeats), corr[centre],
                           min(corr))


def _py360_cached_ms(layout: PatchLayout, erp: np.ndarray, repeats: int) -> Optional[float]:
    """Sampling time of py360convert with its per-view samplers kept (built as ``e2p`` does)."""
    try:
        from py360convert.utils import EquirecSampler
    except ImportError:
        return None
    height, width = erp.shape[:2]
    size = layout.size_px
    try:
        samplers = [EquirecSampler.from_perspective(
            math.radians(v.fov_deg), math.radians(v.fov_deg), -math.radians(v.yaw_deg),
            math.radians(v.pitch_deg), 0.0, height, width, size, size, 1) for v in layout.views]
    except (AttributeError, TypeError):  # another py360convert version: skip this variant
        return None

    def run() -> List[np.ndarray]:
        return [np.stack([s(erp[..., c]) for c in range(erp.shape[2])], axis=-1)
                for s in samplers]

    return median_ms(run, repeats)[0]
