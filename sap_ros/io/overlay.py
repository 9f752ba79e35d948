"""Coloured preview of a label map over the camera frame (the ``overlay`` topic); no rclpy.

Each object id gets a fixed colour (golden-ratio hue steps, so neighbouring ids differ), the same
colour as its RViz marker. Objects with a class (``class_id > 0``) are captioned with the class
name and score at their centroid, as their RViz marker is.
"""
from __future__ import annotations

import colorsys
from typing import Sequence, Tuple

import cv2
import numpy as np

from sap_ros.engine.types import ObjectRecord
from sap_ros.sphere.geometry import lonlat_to_erp_pixel

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


def class_caption(obj: ObjectRecord) -> str:
    """``'<class name> <score>'`` of an object with a class, '' without one (``class_id`` 0).

    >>> class_caption(ObjectRecord(3, np.ones(3), 0.0, 0.0, 1.0, 1.0, 0.1, 9, 0.9, 0, 0,
    ...                            class_id=2, class_name='door', class_score=0.875))
    'door 0.88'
    """
    if obj.class_id <= 0:
        return ''
    return f'{obj.class_name or f"class {obj.class_id}"} {obj.class_score:.2f}'


def overlay_rgb(erp_rgb: np.ndarray, labels: np.ndarray,
                objects: Sequence[ObjectRecord] = (), alpha: float = 0.5) -> np.ndarray:
    """Blend object colours over the frame, at the label map's size; ``(h, w, 3)`` uint8 RGB.

    Pixels with label 0 keep the (resized) camera image. Each of ``objects`` with a class gets
    its :func:`class_caption` written at its centroid (white on a black box); objects
    without one get no text, so without a classifier the preview is the plain blend.

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
    out = np.where((labels > 0)[..., None], blended, erp_rgb)
    for obj in objects:
        caption = class_caption(obj)
        if caption:
            _draw_caption(out, caption, obj.lon_deg, obj.lat_deg)
    return out


def _draw_caption(image: np.ndarray, text: str, lon_deg: float, lat_deg: float) -> None:
    """Write ``text`` centred on the ERP direction, shifted to stay inside the image."""
    height, width = image.shape[:2]
    scale = max(0.3, height / 720.0)  # legible on a 1920 x 960 preview, still drawn on tiny ones
    thickness = max(1, round(scale * 1.5))
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale,
                                                 thickness)
    u, v = lonlat_to_erp_pixel(np.array(lon_deg), np.array(lat_deg), width, height)
    x = int(np.clip(round(float(u) - text_w / 2), 1, max(1, width - text_w)))
    y = int(np.clip(round(float(v) + text_h / 2), text_h, max(text_h, height - baseline)))
    cv2.rectangle(image, (x - 1, y - text_h - 1), (x + text_w, y + baseline), (0, 0, 0), -1)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
