"""The ``small_objects`` scene: spheres of 1 to 3 deg at both poles, on the seam, on the equator.

Issue 18 ("discovery misses small objects"): a 360 camera sees far or small things as a few
pixels, and where they sit matters (a pole is smeared over whole ERP rows, the seam cuts an
object in two). This scene holds only such objects, so a run on it answers one question: which
of them does discovery find, and when. Every object is a sphere, so its angular diameter is the
same from any direction: ``size_deg`` across, seen from the camera centre.

Sites (:data:`SMALL_OBJECTS`, at frame 0; longitude positive to the right, ARCHITECTURE §3):

* ``north_pole``: 1 deg exactly on the pole, 2 and 3 deg 7 deg away from it;
* ``south_pole``: 3 deg exactly on the pole, 1 and 2 deg 7 deg away from it;
* ``seam``: 1, 2 and 3 deg centred on the seam (lon 180, touching both ERP borders), at latitudes
  +8, 0 and -8;
* ``equator``: 1 deg straight ahead (lon 0, on a patch axis of the default layout), 2 deg at lon
  22.5 (halfway between two patch axes), 3 deg at lon -90.

The camera turns in place (:meth:`~sap_ros.synth.scene.SynthScene.trajectory` with no
translation), so every object keeps its size and latitude and only moves in longitude (the turn
carries the seam and equator objects across the views, the pole objects around the pole). The
spheres float at a distance that fits any room (:func:`site_distance_m`); their labels are
``1..12`` in the order of :data:`SMALL_OBJECTS`.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Dict, List, Tuple

import numpy as np

from sap_ros.synth import textures as tex
from sap_ros.synth.raycast import Background
from sap_ros.synth.spec import SceneObject, SceneSpec

Array = np.ndarray

SITES = ('north_pole', 'south_pole', 'seam', 'equator')
_ROLE = {'north_pole': 'zenith', 'south_pole': 'nadir', 'seam': 'seam', 'equator': 'small'}
_EQUATOR_DISTANCE_M = 2.0   # inside every room (half sizes >= 3.7 m) and outdoors
_POLE_DISTANCE_M = 1.0      # at most; less where the ceiling or the floor is nearer
_POLE_GAP_FRACTION = 0.6    # a pole sphere's centre lies at most this far to the ceiling/floor


@dataclass(frozen=True)
class SmallObject:
    """Where one sphere of the scene is seen from the start pose.

    Attributes:
        site: ``'north_pole'`` | ``'south_pole'`` | ``'seam'`` | ``'equator'``.
        size_deg: angular diameter seen from the camera centre, degrees.
        lon_deg: longitude of its centre at frame 0, degrees in (-180, 180].
        lat_deg: latitude of its centre, degrees.

    """

    site: str
    size_deg: float
    lon_deg: float
    lat_deg: float


SMALL_OBJECTS: Tuple[SmallObject, ...] = (
    SmallObject('north_pole', 1.0, 0.0, 90.0),
    SmallObject('north_pole', 2.0, 0.0, 83.0),
    SmallObject('north_pole', 3.0, 120.0, 83.0),
    SmallObject('south_pole', 3.0, 0.0, -90.0),
    SmallObject('south_pole', 1.0, 0.0, -83.0),
    SmallObject('south_pole', 2.0, -120.0, -83.0),
    SmallObject('seam', 1.0, 180.0, 8.0),
    SmallObject('seam', 2.0, 180.0, 0.0),
    SmallObject('seam', 3.0, 180.0, -8.0),
    SmallObject('equator', 1.0, 0.0, 0.0),
    SmallObject('equator', 2.0, 22.5, 0.0),
    SmallObject('equator', 3.0, -90.0, 0.0),
)


def site_distance_m(site: str, camera_height_m: float, ceiling_m: float) -> float:
    """Distance from the camera centre to the centre of a sphere at ``site``, metres.

    Seam and equator spheres float 2 m away; pole spheres 1 m, or nearer when the ceiling (north)
    or the floor (south) is closer than 1 / 0.6 m, so that a sphere never touches them.
    """
    if site == 'north_pole':
        return min(_POLE_DISTANCE_M, _POLE_GAP_FRACTION * (ceiling_m - camera_height_m))
    if site == 'south_pole':
        return min(_POLE_DISTANCE_M, _POLE_GAP_FRACTION * camera_height_m)
    return _EQUATOR_DISTANCE_M


def _direction(lon_deg: float, lat_deg: float) -> Array:
    """World unit vector of a camera direction at the start pose (REP-103 = world axes there)."""
    lon, lat = math.radians(lon_deg), math.radians(lat_deg)
    return np.array([math.cos(lat) * math.cos(lon), -math.cos(lat) * math.sin(lon),
                     math.sin(lat)])


def build_small_objects(spec: SceneSpec, rng: np.random.Generator
                        ) -> Tuple[List[SceneObject], Background, Dict[int, tex.ObjectTexture]]:
    """Objects, background and textures of the ``small_objects`` scene for ``spec``.

    ``spec.kind`` picks the surroundings (a room of the usual size, or ground and sky);
    ``spec.n_small`` and ``spec.n_plain`` are not used. The random generator only picks the room
    size and the colours: the objects' angles are always those of :data:`SMALL_OBJECTS`.
    """
    cam_h = float(spec.camera_height_m)
    if spec.kind == 'room':
        half_x, half_y = rng.uniform(4.6, 5.4), rng.uniform(3.7, 4.3)
        ceiling = float(rng.uniform(2.8, 3.2))
        background = Background('room', np.array([-half_x, -half_y, 0.0]),
                                np.array([half_x, half_y, ceiling]))
    else:
        ceiling = math.inf
        background = Background('outdoor', np.array([-60.0, -60.0, 0.0]),
                                np.array([60.0, 60.0, 50.0]))
    eye = np.array([0.0, 0.0, cam_h])
    hue_offset = rng.uniform()
    objects: List[SceneObject] = []
    textures: Dict[int, tex.ObjectTexture] = {}
    for index, planned in enumerate(SMALL_OBJECTS):
        dist = site_distance_m(planned.site, cam_h, ceiling)
        diameter = 2.0 * dist * math.sin(math.radians(planned.size_deg) / 2.0)
        centre = eye + dist * _direction(planned.lon_deg, planned.lat_deg)
        objects.append(SceneObject(index + 1, 'sphere', centre, np.full(3, diameter),
                                   _ROLE[planned.site]))
        pattern = tex.CYCLED_PATTERNS[index % len(tex.CYCLED_PATTERNS)]
        textures[index + 1] = tex.make_texture(rng, index, hue_offset, pattern)
    return objects, background, textures
