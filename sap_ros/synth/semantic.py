"""Semantic ground truth of the synthetic scenes: what every ERP pixel is, as a class id.

The class list is fixed (:data:`SEMANTIC_CLASSES`), the same for every scene, seed and kind, and
1-based as everywhere in sap_ros (class id k names ``SEMANTIC_CLASSES[k - 1]``; 0 = none):

====  ==========  ================================================================
  id  class       pixels
====  ==========  ================================================================
   1  box         objects of kind ``box`` (the seam object, most large ones, ...)
   2  sphere      objects of kind ``sphere`` (every object of ``small_objects``)
   3  cylinder    objects of kind ``cylinder``
   4  lamp        the ceiling lamp over the north pole (``mixed`` scene)
   5  rug         the rug under the south pole (``mixed`` scene)
   6  floor       room: the floor (instance label 0)
   7  wall        room: the four walls (instance label 0)
   8  ceiling     room: the ceiling (instance label 0)
   9  ground      outdoor: the ground plane (instance label 0)
  10  sky         outdoor: everything above the horizon that is not an object
====  ==========  ================================================================

Objects take the class of their kind (``SceneObject.kind``); the surroundings, which carry
instance label 0 in ``/gt/labels``, take the class of the surface the pixel's ray meets (the same
ray, direction and face test as the renderer), so a room's ERP holds no 0 at all and an outdoor
one neither. Every pixel of an instance id carries that object's class.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import erp_pixel_to_lonlat
from sap_ros.synth.raycast import Background, room_faces
from sap_ros.synth.spec import KINDS, CameraPose, SceneObject

Array = np.ndarray

SEMANTIC_CLASSES = ('box', 'sphere', 'cylinder', 'lamp', 'rug',
                    'floor', 'wall', 'ceiling', 'ground', 'sky')


def class_id(name: str) -> int:
    """1-based id of a class of :data:`SEMANTIC_CLASSES`.

    >>> class_id('box'), class_id('sky')
    (1, 10)
    """
    if name not in SEMANTIC_CLASSES:
        raise InvalidInputError(f'unknown synthetic class {name!r} (classes: {SEMANTIC_CLASSES})')
    return SEMANTIC_CLASSES.index(name) + 1


#: Object kind -> class id.
KIND_CLASS: Dict[str, int] = {kind: class_id(kind) for kind in KINDS}


def background_classes(background: Background, origin: Array, dx: Array, dy: Array,
                       dz: Array) -> Array:
    """Class ids (uint16) of the label-0 surroundings along unit world rays ``(dx, dy, dz)``.

    Outdoor: ``ground`` for rays going down (``dz < 0``, as the renderer shades them), ``sky``
    otherwise. Room: ``floor``, ``ceiling`` or ``wall``, the face of the room box the ray meets.
    """
    if background.kind == 'outdoor':
        return np.where(dz < 0.0, class_id('ground'), class_id('sky')).astype(np.uint16)
    _, _, _, on_z = room_faces(background, origin, dx, dy, dz)
    out = np.full(np.shape(dx), class_id('wall'), dtype=np.uint16)
    out[on_z & (dz < 0.0)] = class_id('floor')
    out[on_z & ~(dz < 0.0)] = class_id('ceiling')
    return out


def semantic_labels(objects: Sequence[SceneObject], background: Background, pose: CameraPose,
                    labels: Array) -> Array:
    """The ``(H, W)`` uint16 class map of a frame rendered at ``pose`` with instance ``labels``.

    ``labels`` is the renderer's instance map of that frame (0 = surroundings, else the id of
    one of ``objects``); an id that is not an object's raises ``InvalidInputError``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != 2 * labels.shape[0]:
        raise InvalidInputError(f'instance labels must be an (H, 2H) ERP map, got {labels.shape}')
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.uint16)
    for obj in objects:
        if obj.id < len(lut):
            lut[obj.id] = KIND_CLASS[obj.kind]
    out = lut[labels]
    unknown = (out == 0) & (labels != 0)
    if unknown.any():
        raise InvalidInputError(f'instance id {int(labels[unknown][0])} is not an object of the '
                                'scene')
    height, width = labels.shape
    rows, cols = np.nonzero(labels == 0)
    if rows.size:
        # The renderer's rays (sap_ros.synth.raycast.render_erp), in float32 as there.
        lon_deg, _ = erp_pixel_to_lonlat(np.arange(width), np.zeros(width), width, height)
        _, lat_deg = erp_pixel_to_lonlat(np.zeros(height), np.arange(height), width, height)
        azimuth = math.radians(pose.yaw_deg) - np.radians(lon_deg)
        cos_lat = np.cos(np.radians(lat_deg)).astype(np.float32)
        sin_lat = np.sin(np.radians(lat_deg)).astype(np.float32)
        cos_az, sin_az = np.cos(azimuth).astype(np.float32), np.sin(azimuth).astype(np.float32)
        out[rows, cols] = background_classes(
            background, np.asarray(pose.position, dtype=np.float64),
            cos_lat[rows] * cos_az[cols], cos_lat[rows] * sin_az[cols], sin_lat[rows])
    return out
