"""Coloured preview of a label map over the camera frame (the ``overlay`` topic); no rclpy.

Each object id gets a fixed colour (golden-ratio hue steps, so neighbouring ids differ), the same
colour as its RViz marker.
"""
from __future__ import annotations

import colorsys
from typing import Tuple

import cv2
import numpy as np

_PALETTE_SIZE = 256
_GOLDEN_RATIO = 0.618033988749895


def _palette() -> np.ndarray:
    colours = np.zeros((_PALETTE_SIZE, 3), dtype=np.uint8)
    for index in range(1, _PALETTE_SIZE):
        r, g, b = colorsys.hsv_to_rgb((index * _GOLDEN_RATIO) % 1.0, 0.85, 1.0)
        colours[index] = (round(r * 255), round(g * 255), round(b * 255))
    return colours


_PALETTE = _palette()


def label_colour_rgb(object_id: int) -> Tuple[int, int, int]:
    """RGB colour (0..255) of an object id; ids repeat colours every 255.

    >>> label_colour_rgb(1) != label_colour_rgb(2)
    True
    """
    index = (int(object_id) - 1) % (_PALETTE_SIZE - 1) + 1
    r, g, b = _PALETTE[index]
    return int(r), int(g), int(b)


def overlay_rgb(erp_rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend object colours over the frame, at the label map's size; ``(h, w, 3)`` uint8 RGB.

    Pixels with label 0 keep the (resized) camera image.

    >>> out = overlay_rgb(np.zeros((4, 8, 3), np.uint8), np.ones((2, 4), np.uint16), alpha=1.0)
    >>> out.shape, tuple(out[0, 0]) == label_colour_rgb(1)
    ((2, 4, 3), True)
    """
    height, width = labels.shape
    if erp_rgb.shape[:2] != (height, width):
        erp_rgb = cv2.resize(erp_rgb, (width, height), interpolation=cv2.INTER_AREA)
    index = np.where(labels > 0, (labels.astype(np.int64) - 1) % (_PALETTE_SIZE - 1) + 1, 0)
    colours = _PALETTE[index]
    blended = cv2.addWeighted(erp_rgb, 1.0 - alpha, colours, alpha, 0.0)
    return np.where((labels > 0)[..., None], blended, erp_rgb)
