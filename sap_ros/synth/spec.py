"""What a synthetic scene is made of: its spec, the camera pose and the labelled objects.

:class:`~sap_ros.synth.scene.SynthScene` places the objects and renders the frames.
"""
from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

from sap_ros.errors import ConfigError, InvalidInputError
from sap_ros.synth import textures as tex
from sap_ros.synth.raycast import Shape

Array = np.ndarray

MAX_WIDTH_PX = 16384
KINDS = ('box', 'sphere', 'cylinder', 'lamp', 'rug')
ROLES = ('seam', 'zenith', 'nadir', 'large', 'small', 'plain')
SCENES = ('mixed', 'small_objects')


@dataclass(frozen=True)
class SceneSpec:
    """What to build.

    Attributes:
        kind: ``'room'`` (floor, walls, ceiling, ~10 m x 8 m x 3 m) or ``'outdoor'`` (ground
            plane + sky, objects up to ~30 m away).
        seed: seed of every random choice (sizes, positions, kinds, colours, patterns).
        n_small: number of small far objects (each < 3 deg across from the start pose), 0..12.
        n_plain: number of ordinary mid-distance objects, 0..10.
        camera_height_m: height of the camera above the floor / ground, 0.5..2.2 m.
        scene: ``'mixed'`` (the hard cases of a 360 camera among ordinary objects,
            ``sap_ros.synth.scene``) or ``'small_objects'`` (only spheres of 1 to 3 deg at both
            poles, on the seam and on the equator, ``sap_ros.synth.small_objects``; ``n_small``
            and ``n_plain`` are not used).

    """

    kind: str = 'room'
    seed: int = 0
    n_small: int = 6
    n_plain: int = 5
    camera_height_m: float = 1.5
    scene: str = 'mixed'

    def __post_init__(self) -> None:
        """Reject values that cannot make a scene, naming the field."""
        if self.kind not in ('room', 'outdoor'):
            raise ConfigError('SceneSpec.kind', f"must be 'room' or 'outdoor', got {self.kind!r}")
        if self.scene not in SCENES:
            raise ConfigError('SceneSpec.scene', f'must be one of {SCENES}, got {self.scene!r}')
        if not 0 <= int(self.n_small) <= 12:
            raise ConfigError('SceneSpec.n_small', f'must be in 0..12, got {self.n_small}')
        if not 0 <= int(self.n_plain) <= 10:
            raise ConfigError('SceneSpec.n_plain', f'must be in 0..10, got {self.n_plain}')
        if not 0.5 <= float(self.camera_height_m) <= 2.2:
            raise ConfigError('SceneSpec.camera_height_m',
                              f'must be in [0.5, 2.2] m, got {self.camera_height_m}')


def _vec3(value: object, name: str) -> Array:
    arr = np.array(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InvalidInputError(f'{name} must be 3 finite numbers, got {value!r}')
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class CameraPose:
    """Camera pose in the world (z up, metres).

    Attributes:
        position: ``(3,)`` float64, world position of the camera centre.
        yaw_deg: heading: the camera's x (forward) axis points at world azimuth ``yaw_deg``
            (counterclockwise from +x seen from above; positive = turned left).

    """

    position: Array
    yaw_deg: float = 0.0

    def __post_init__(self) -> None:
        """Store the position as a read-only float64 ``(3,)`` array."""
        object.__setattr__(self, 'position', _vec3(self.position, 'CameraPose.position'))
        if not math.isfinite(float(self.yaw_deg)):
            raise InvalidInputError(f'CameraPose.yaw_deg must be finite, got {self.yaw_deg!r}')
        object.__setattr__(self, 'yaw_deg', float(self.yaw_deg))


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One labelled object.

    Attributes:
        id: its label value in the rendered label map (1..K).
        kind: ``'box'`` | ``'sphere'`` | ``'cylinder'`` (vertical axis) | ``'lamp'`` | ``'rug'``
            (lamp and rug are flat vertical cylinders, i.e. discs).
        center: ``(3,)`` float64 world position of its centre (centroid of the solid).
        size: ``(3,)`` float64 full extents in metres along the object's own x, y, z (a box's
            edges; a sphere's diameter three times; a cylinder's diameter, diameter, height).
        role: ``'seam'`` | ``'zenith'`` | ``'nadir'`` | ``'large'`` | ``'small'`` | ``'plain'``.
        yaw_deg: rotation of the object about world z (boxes only; 0 for the others).
        texture: name of its procedural pattern (``synth_textures.TexturePattern`` value).

    """

    id: int
    kind: str
    center: Array
    size: Array
    role: str
    yaw_deg: float = 0.0
    texture: str = tex.TexturePattern.STRIPES.value

    def __post_init__(self) -> None:
        """Check kind and role; store center and size as read-only float64 ``(3,)`` arrays."""
        if self.kind not in KINDS or self.role not in ROLES:
            raise InvalidInputError(f'SceneObject kind must be one of {KINDS} and role one of '
                                    f'{ROLES}, got {self.kind!r}, {self.role!r}')
        object.__setattr__(self, 'center', _vec3(self.center, 'SceneObject.center'))
        object.__setattr__(self, 'size', _vec3(self.size, 'SceneObject.size'))

    @property
    def radius_m(self) -> float:
        """Radius of its bounding sphere, metres."""
        half = 0.5 * self.size
        if self.kind == 'box':
            return float(np.linalg.norm(half))
        if self.kind == 'sphere':
            return float(half[0])
        return float(math.hypot(half[0], half[2]))

    @property
    def footprint_radius_m(self) -> float:
        """Radius of the vertical cylinder around ``center`` that holds the object, metres."""
        half = 0.5 * self.size
        return float(math.hypot(half[0], half[1]) if self.kind == 'box' else half[0])

    @property
    def shape(self) -> Shape:
        """Geometric primitive used to ray-cast it."""
        if self.kind == 'box':
            return Shape.BOX
        return Shape.SPHERE if self.kind == 'sphere' else Shape.CYLINDER
