"""Synthetic 360 degree scenes with exact instance labels, rendered to ERP.

A procedural scene (a textured room, or ground + sky outdoors) holds ~15 labelled objects:
boxes, spheres and vertical cylinders with their own solid textures, plus the hard cases of a 360
camera (ARCHITECTURE §8):

* ``zenith``: a ceiling lamp straight above the start position (covers the north pole),
* ``nadir``: a rug straight below it (covers the south pole),
* ``seam``: an object straight behind the start pose (lon = +-180 deg, touches both ERP borders),
* ``large``: one big object close to the camera, ``small``: several far objects (< 3 deg across),
* ``plain``: everything else.

That is the ``mixed`` scene (``SceneSpec.scene``, the default). ``small_objects`` holds only
spheres of 1 to 3 deg at both poles, on the seam and on the equator, seen by a camera turning in
place (``sap_ros.synth.small_objects``): the test of discovery's smallest objects.

Frames (world): z up, metres. The camera's REP-103 frame at ``yaw_deg = 0`` coincides with the
world axes (x forward = world +x, y left = world +y, z up); ``yaw_deg`` rotates it about world z,
positive = turning left (counterclockwise seen from above). So a world direction at azimuth
``theta`` (counterclockwise from +x) appears at ERP longitude ``lon = yaw_deg - theta``; turning
left by 10 deg moves a forward object 10 deg to the right in the image.

The start pose (frame 0 of :meth:`SynthScene.trajectory`) is ``position = (0, 0, camera height)``,
``yaw_deg = 0``. No object reaches into the vertical keep-out cylinder of radius ``KEEP_OUT_M``
around it (the lamp and the rug lie above / below the camera), and trajectory poses stay inside it,
so the camera never meets an object.

Labels are uint16: 0 = background stuff (walls, floor, ceiling, ground, sky), ``1..K`` = objects in
the order of :attr:`SynthScene.objects` (lamp, rug, seam, large, plain..., small...).
:meth:`SynthScene.semantic` gives the class of every pixel instead (the objects' kinds and the
surroundings' surfaces, ``sap_ros.synth.semantic``). Each label
pixel is the nearest object hit by the ray through the pixel centre, with the ray direction
taken exactly from ``sap_ros.sphere.geometry``. Everything is deterministic for a given
:class:`SceneSpec`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from sap_ros.errors import ErpShapeError, InvalidInputError
from sap_ros.synth import textures as tex
from sap_ros.synth.raycast import Background, Primitive, render_erp
from sap_ros.synth.semantic import semantic_labels
from sap_ros.synth.small_objects import build_small_objects
from sap_ros.synth.spec import MAX_WIDTH_PX, CameraPose, SceneObject, SceneSpec

Array = np.ndarray

KEEP_OUT_M = 1.8          # objects stay outside this horizontal radius around the start position
_CLAMP_START_M = 1.2      # trajectory offsets are exact up to here, then softly clamped ...
_CLAMP_LIMIT_M = 1.7      # ... to stay below this (the camera never comes near KEEP_OUT_M)
_CLEARANCE_M = 0.25       # gap between the keep-out disc / other footprints and an object
_CONE_MARGIN_RAD = math.radians(2.0)  # gap between objects' cones seen from the start position
LIGHT_DIR = np.array([0.45, 0.30, 0.84]) / np.linalg.norm([0.45, 0.30, 0.84])


@dataclass
class _Layout:
    """Objects placed so far, with what new ones must keep clear of (seen from the start)."""

    eye: Array
    inner_min: Array  # bounds of the space objects may occupy (room interior or a big square)
    inner_max: Array
    objects: List[SceneObject] = field(default_factory=list)
    cones: List[Tuple[Array, float]] = field(default_factory=list)

    def fits(self, obj: SceneObject, check_cone: bool = True) -> bool:
        """Inside the space, clear of the keep-out disc and of other footprints (and cones)."""
        half = 0.5 * obj.size
        r_xy = obj.footprint_radius_m
        xy = obj.center[:2]
        if np.any(xy - r_xy < self.inner_min[:2]) or np.any(xy + r_xy > self.inner_max[:2]):
            return False
        if obj.center[2] - half[2] < -1e-9 or obj.center[2] + half[2] > self.inner_max[2]:
            return False
        if np.hypot(*(xy - self.eye[:2])) < KEEP_OUT_M + r_xy + _CLEARANCE_M:
            return False
        for other in self.objects:
            if other.role in ('zenith', 'nadir'):
                continue
            gap = np.hypot(*(xy - other.center[:2])) - r_xy - other.footprint_radius_m
            if gap < _CLEARANCE_M:
                return False
        if not check_cone:
            return True
        axis, half_angle = self.cone(obj)
        for other_axis, other_half in self.cones:
            angle = math.acos(float(np.clip(axis @ other_axis, -1.0, 1.0)))
            if angle < half_angle + other_half + _CONE_MARGIN_RAD:
                return False
        return True

    def cone(self, obj: SceneObject) -> Tuple[Array, float]:
        """Axis and half angle of the object's bounding-sphere cone seen from the start."""
        rel = obj.center - self.eye
        dist = float(np.linalg.norm(rel))
        return rel / dist, math.asin(min(1.0, obj.radius_m / dist))

    def add(self, obj: SceneObject) -> None:
        """Accept ``obj`` (pole objects do not take part in the cone test)."""
        self.objects.append(obj)
        if obj.role not in ('zenith', 'nadir'):
            self.cones.append(self.cone(obj))


def _random_size(rng: np.random.Generator, kind: str, lo: float, hi: float) -> Array:
    """Full extents of a ``kind`` object with every dimension roughly in ``[lo, hi]`` metres."""
    if kind == 'sphere':
        return np.full(3, rng.uniform(lo, hi))
    if kind == 'cylinder':
        d = rng.uniform(lo, hi)
        return np.array([d, d, rng.uniform(lo, hi) * 1.3])
    return rng.uniform(lo, hi, size=3)


def _small_size(rng: np.random.Generator, kind: str, dist: float) -> Array:
    """Full extents whose bounding sphere spans 1.5..2.5 deg at ``dist`` metres."""
    diameter = dist * math.radians(rng.uniform(1.5, 2.5))
    edge = {'sphere': diameter, 'box': diameter / math.sqrt(3.0)}.get(
        kind, diameter / math.sqrt(2.0))
    return np.full(3, edge)


SizeFn = Callable[[np.random.Generator, str, float], Array]


def _place(layout: _Layout, rng: np.random.Generator, role: str, kinds: Tuple[str, ...],
           size_fn: SizeFn, dist_range: Tuple[float, float],
           height_range: Optional[Tuple[float, float]] = None, tries: int = 300) -> None:
    """Rejection-sample one object; the cone test is dropped for the last third of the tries.

    Objects stand on the floor unless ``height_range`` gives their centre height (wall-mounted).
    """
    for attempt in range(tries):
        kind = str(rng.choice(kinds))
        azimuth = rng.uniform(-math.pi, math.pi)
        dist = rng.uniform(*dist_range)
        xy = layout.eye[:2] + dist * np.array([math.cos(azimuth), math.sin(azimuth)])
        size = size_fn(rng, kind, dist)
        z = 0.5 * size[2] if height_range is None else rng.uniform(*height_range)
        yaw_deg = float(rng.uniform(-90.0, 90.0)) if kind == 'box' else 0.0
        obj = SceneObject(len(layout.objects) + 1, kind, np.array([xy[0], xy[1], z]),
                          np.asarray(size), role, yaw_deg)
        if layout.fits(obj, check_cone=attempt < 2 * tries // 3):
            layout.add(obj)
            return


def _build_layout(spec: SceneSpec, rng: np.random.Generator) -> Tuple[_Layout, Background]:
    cam_h = float(spec.camera_height_m)
    eye = np.array([0.0, 0.0, cam_h])
    if spec.kind == 'room':
        half_x, half_y = rng.uniform(4.6, 5.4), rng.uniform(3.7, 4.3)
        height = rng.uniform(2.8, 3.2)
        room_min, room_max = np.array([-half_x, -half_y, 0.0]), np.array([half_x, half_y, height])
        layout = _Layout(eye, room_min + [0.1, 0.1, 0.0], room_max - [0.1, 0.1, 0.0])
        lamp_z = height - 0.04
        seam_size = np.array([rng.uniform(0.5, 0.8), rng.uniform(1.0, 1.4), rng.uniform(1.0, 1.6)])
        seam_dist = rng.uniform(2.9, half_x - 0.6)
        large_range, plain_range, plain_dist = (1.1, 1.6), (0.45, 0.9), (3.0, 5.0)
        small_dist, small_height = (3.4, 4.5), (0.3, height - 0.4)
    else:
        room_min, room_max = np.array([-60.0, -60.0, 0.0]), np.array([60.0, 60.0, 50.0])
        layout = _Layout(eye, np.array([-35.0, -35.0, 0.0]), np.array([35.0, 35.0, 20.0]))
        lamp_z = cam_h + rng.uniform(2.0, 2.5)
        seam_size = np.array([rng.uniform(1.0, 1.5), rng.uniform(2.0, 3.0), rng.uniform(2.0, 3.0)])
        seam_dist = rng.uniform(5.0, 7.0)
        large_range, plain_range, plain_dist = (1.5, 2.4), (0.8, 2.5), (4.0, 14.0)
        small_dist, small_height = (18.0, 30.0), None
    # Pole objects sized by the elevation of their rim seen from the start pose: the lamp lies
    # above 63..68 deg, the rug below -50..-56 deg, so both cover |lat| > 60 deg there.
    lamp_r = (lamp_z - 0.04 - cam_h) / math.tan(math.radians(rng.uniform(63.0, 68.0)))
    rug_r = (cam_h - 0.02) / math.tan(math.radians(rng.uniform(50.0, 56.0)))
    layout.add(SceneObject(1, 'lamp', np.array([0.0, 0.0, lamp_z]),
                           np.array([2 * lamp_r, 2 * lamp_r, 0.08]),
                           'zenith'))
    layout.add(SceneObject(2, 'rug', np.array([0.0, 0.0, 0.01]),
                           np.array([2 * rug_r, 2 * rug_r, 0.02]), 'nadir'))
    seam_x = -max(seam_dist, KEEP_OUT_M + _CLEARANCE_M + 0.05 + math.hypot(*(0.5 * seam_size[:2])))
    layout.add(SceneObject(3, 'box', np.array([seam_x, 0.0, 0.5 * seam_size[2]]),
                           np.asarray(seam_size), 'seam'))
    large_kind = 'box' if rng.uniform() < 0.7 else 'cylinder'
    large_size = _random_size(rng, large_kind, *large_range) * [1.0, 1.0, 1.4]
    large_r = large_size[0] / 2 if large_kind == 'cylinder' else math.hypot(*large_size[:2]) / 2
    near = KEEP_OUT_M + _CLEARANCE_M + large_r + 0.05
    _place(layout, rng, 'large', (large_kind,), lambda *_: large_size, (near, near + 0.3))
    for _ in range(spec.n_plain):
        _place(layout, rng, 'plain', ('box', 'sphere', 'cylinder'),
               lambda r, kind, _d: _random_size(r, kind, *plain_range), plain_dist)
    for _ in range(spec.n_small):
        _place(layout, rng, 'small', ('box', 'sphere', 'cylinder'), _small_size, small_dist,
               height_range=small_height)
    return layout, Background(spec.kind, room_min, room_max)


def _mixed_scene(spec: SceneSpec, rng: np.random.Generator
                 ) -> Tuple[List[SceneObject], Background, Dict[int, tex.ObjectTexture]]:
    """Objects, background and textures of the ``mixed`` scene (the module docstring)."""
    layout, background = _build_layout(spec, rng)
    # Textures: neighbours around the start position never share a pattern or a hue.
    ring = [o for o in layout.objects if o.role not in ('zenith', 'nadir')]
    ring.sort(key=lambda o: math.atan2(o.center[1], o.center[0]))
    hue_offset = rng.uniform()
    textures = {}
    for rank, obj in enumerate(ring):
        pattern = tex.CYCLED_PATTERNS[rank % len(tex.CYCLED_PATTERNS)]
        if rank == len(ring) - 1 and rank % len(tex.CYCLED_PATTERNS) == 0 and rank > 0:
            pattern = tex.CYCLED_PATTERNS[1]  # the ring closes: differ from the first one
        textures[obj.id] = tex.make_texture(rng, rank + 2, hue_offset, pattern)
    textures[1] = tex.make_texture(rng, 0, hue_offset, tex.TexturePattern.RINGS, emissive=True)
    textures[2] = tex.make_texture(rng, 1, hue_offset, tex.TexturePattern.RINGS)
    return layout.objects, background, textures


def _soft_clamp(offset: Array) -> Array:
    """Keep an (N, 2) horizontal offset below 1.7 m (identity up to 1.2 m, then tanh)."""
    r = np.linalg.norm(offset, axis=1, keepdims=True)
    span = _CLAMP_LIMIT_M - _CLAMP_START_M
    r_new = np.where(r <= _CLAMP_START_M, r,
                     _CLAMP_START_M + span * np.tanh((r - _CLAMP_START_M) / span))
    return offset * np.where(r > 0, r_new / np.maximum(r, 1e-12), 1.0)


class SynthScene:
    """A procedural 360 degree scene (see the module docstring for frames and conventions).

    >>> scene = SynthScene(SceneSpec(kind='room', seed=0))
    >>> [o.role for o in scene.objects[:4]]
    ['zenith', 'nadir', 'seam', 'large']
    >>> rgb, labels = scene.render(scene.trajectory(5)[4], 64)
    >>> rgb.shape, rgb.dtype, labels.shape, labels.dtype
    ((32, 64, 3), dtype('uint8'), (32, 64), dtype('uint16'))
    """

    def __init__(self, spec: SceneSpec = SceneSpec()) -> None:
        """Build the scene for ``spec`` (fast: a few milliseconds).

        Attributes set: ``spec``; ``objects`` (label order); ``primitives`` (the ray caster's
        view of ``objects``, same order); ``background`` (room box or outdoor ground + sky).
        """
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        if spec.scene == 'small_objects':
            placed, self.background, textures = build_small_objects(spec, rng)
        else:
            placed, self.background, textures = _mixed_scene(spec, rng)
        self.objects: Tuple[SceneObject, ...] = tuple(
            SceneObject(o.id, o.kind, o.center, o.size, o.role, o.yaw_deg,
                        textures[o.id].pattern.value) for o in placed)
        self.primitives: Tuple[Primitive, ...] = tuple(
            Primitive(o.shape, o.center, 0.5 * o.size, math.radians(o.yaw_deg), textures[o.id])
            for o in self.objects)
        self._ids = tuple(o.id for o in self.objects)

    @property
    def start_pose(self) -> CameraPose:
        """Frame 0 (``mixed``: lamp straight above, rug straight below, seam object behind)."""
        return CameraPose(np.array([0.0, 0.0, float(self.spec.camera_height_m)]), 0.0)

    def object(self, object_id: int) -> SceneObject:
        """The object with label ``object_id``; ``InvalidInputError`` if there is none."""
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise InvalidInputError(
            f'no object with id {object_id!r} (ids are 1..{len(self.objects)})')

    def trajectory(self, n_frames: int, speed_m_per_frame: Optional[float] = None,
                   turn_deg_per_frame: float = 3.0) -> List[CameraPose]:
        """Poses of a camera driving forward while turning at a constant rate (deterministic).

        ``speed_m_per_frame`` None: 0.05 m in the ``mixed`` scene, 0 in ``small_objects`` (the
        camera turns in place there, so the objects keep their angular sizes and latitudes).

        Frame ``k`` has ``yaw_deg = k * turn_deg_per_frame`` (positive = left, not wrapped) and
        the position of a unicycle that moved ``speed_m_per_frame`` per frame along its heading (a
        circle of radius ``speed / turn``; 3 deg and 0.05 m per frame give ~0.95 m and a full turn
        in 120 frames). Horizontal offsets beyond 1.2 m from the start are softly clamped below
        1.7 m, so the camera stays inside the object-free ``KEEP_OUT_M`` disc (a straight run
        slows down and stops near its edge). Frame 0 is :attr:`start_pose`.
        """
        if speed_m_per_frame is None:
            speed_m_per_frame = 0.0 if self.spec.scene == 'small_objects' else 0.05
        if int(n_frames) != n_frames or n_frames < 0:
            raise InvalidInputError(f'n_frames must be an integer >= 0, got {n_frames!r}')
        if not (math.isfinite(speed_m_per_frame) and speed_m_per_frame >= 0.0):
            raise InvalidInputError(
                f'speed_m_per_frame must be finite and >= 0, got {speed_m_per_frame!r}')
        if not math.isfinite(turn_deg_per_frame):
            raise InvalidInputError(
                f'turn_deg_per_frame must be finite, got {turn_deg_per_frame!r}')
        frames = np.arange(int(n_frames), dtype=np.float64)
        start = self.start_pose
        yaw0 = math.radians(start.yaw_deg)
        yaw = yaw0 + np.radians(turn_deg_per_frame) * frames
        omega = math.radians(turn_deg_per_frame)
        if abs(omega) < 1e-9:
            offset = speed_m_per_frame * frames[:, None] * [math.cos(yaw0), math.sin(yaw0)]
        else:
            radius = speed_m_per_frame / omega
            offset = radius * np.stack([np.sin(yaw) - math.sin(yaw0),
                                        math.cos(yaw0) - np.cos(yaw)], axis=1)
        offset = _soft_clamp(offset.reshape(-1, 2))
        return [CameraPose(start.position + [dx, dy, 0.0], math.degrees(y))
                for (dx, dy), y in zip(offset, yaw)]

    def render(self, pose: CameraPose, width: int,
               object_ids: Optional[Iterable[int]] = None) -> Tuple[Array, Array]:
        """Render ``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint16 labels, ``H = width // 2``.

        ``width`` must be an even integer in ``[8, 16384]`` (``ErpShapeError`` otherwise).
        ``object_ids`` keeps only those objects (the others are removed from the scene, so
        nothing occludes them): e.g. amodal masks or visibility checks. The pose must not lie
        inside an object (trajectory poses never do). Cost: ~0.2 s at 1024 x 512 and ~3 s at
        4096 x 2048 on one CPU core; memory is bounded by 2^20-pixel row chunks.
        """
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) \
                or width < 8 or width % 2 or width > MAX_WIDTH_PX:
            raise ErpShapeError(f'synthetic ERP width must be an even integer in '
                                f'[8, {MAX_WIDTH_PX}] (height = width / 2), got {width!r}')
        if object_ids is None:
            keep = list(range(len(self.objects)))
        else:
            wanted = {self.object(int(i)).id for i in object_ids}
            keep = [k for k, o in enumerate(self.objects) if o.id in wanted]
        return render_erp([self.primitives[k] for k in keep], [self._ids[k] for k in keep],
                          self.background, pose.position, pose.yaw_deg, int(width), LIGHT_DIR)

    def semantic(self, pose: CameraPose, labels: Array) -> Array:
        """The ``(H, W)`` uint16 class map (``sap_ros.synth.semantic``) of a frame.

        ``labels``: the instance map :meth:`render` returned for ``pose`` (same width).
        """
        return semantic_labels(self.objects, self.background, pose, labels)

    def bearing_of(self, object_id: int, pose: CameraPose) -> Array:
        """Unit bearing ``(3,)`` float64, camera frame (REP-103), from the camera to the centre."""
        rel = self.object(object_id).center - pose.position
        yaw = math.radians(pose.yaw_deg)
        c, s = math.cos(yaw), math.sin(yaw)
        cam = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]])
        return cam / np.linalg.norm(cam)
