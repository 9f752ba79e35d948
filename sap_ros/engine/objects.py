"""Object lifecycle: ids, ACTIVE -> MISSING -> RETIRED, merges and capacity (ARCHITECTURE §5).

Rules, in frame indices (the engine's camera-frame counter):

* :meth:`ObjectRegistry.create` hands out ``1, 2, 3, ...``; an id is never reused within a run,
  not even after its object retired. Ids go into the ``uint16`` label map (0 = no object), so the
  65536th creation raises :class:`SapError`; :meth:`ObjectRegistry.reset` (the node's ``reset``
  service) restarts at 1. A new object counts as seen in the frame that created it.
* :meth:`ObjectRegistry.end_frame` turns every live object not seen in that frame MISSING (its
  memory is kept). An object may stay missing for ``retire_after_frames`` frames; the end of the
  next frame without it retires it: seen last in frame ``s``, it is MISSING after frames
  ``s + 1 .. s + R`` and RETIRED at the end of frame ``s + R + 1``.
* Retired objects leave the registry (it stays bounded over an unbounded stream); the caller that
  retires them drops their memory.
"""
from __future__ import annotations

from dataclasses import dataclass
import enum
from typing import Dict, List, Optional

import numpy as np

from sap_ros.errors import ConfigError, InvalidInputError, SapError

MAX_OBJECT_ID = 65535  # largest value of a uint16 label map


class ObjectStatus(enum.Enum):
    """Where an object is in its lifecycle."""

    ACTIVE = 'active'  # seen in the latest frame
    MISSING = 'missing'  # not seen lately; memory kept, may come back with the same id
    RETIRED = 'retired'  # gone for good; its id is never handed out again


@dataclass
class ObjectTrack:
    """Mutable state of one tracked object.

    Attributes:
        id: persistent id (1..65535), its value in the label map.
        status: lifecycle state.
        created_frame: frame index of its creation.
        last_seen_frame: last frame index it was segmented in.
        extent_bearings: ``(M, 3)`` sample of unit bearings of its last mask, or None until seen.
        extent_radius_deg: angular radius of its last mask around ``centroid``, degrees.
        centroid: ``(3,)`` unit bearing of its last mask's area-weighted centroid, or None.
        motion_deg: how far ``centroid`` moved per frame between its last two sightings, degrees
            (0 until seen twice); view culling dilates the extent by it.
        score: confidence of its last sighting, in [0, 1].
        embedding: ``(256,)`` float32 SAM2 object pointer, or None.

    """

    id: int
    status: ObjectStatus
    created_frame: int
    last_seen_frame: int
    extent_bearings: Optional[np.ndarray] = None
    extent_radius_deg: float = 0.0
    centroid: Optional[np.ndarray] = None
    motion_deg: float = 0.0
    score: float = 0.0
    embedding: Optional[np.ndarray] = None

    def age_frames(self, frame_index: int) -> int:
        """Frames since creation (0 in the frame that created it)."""
        return frame_index - self.created_frame

    def frames_since_seen(self, frame_index: int) -> int:
        """Frames since it was last segmented (0 when seen in ``frame_index``)."""
        return frame_index - self.last_seen_frame


class ObjectRegistry:
    """Live objects of one run, their ids and lifecycle; bounded by ``max_objects``."""

    def __init__(self, retire_after_frames: int, max_objects: int) -> None:
        """Create an empty registry.

        Args:
            retire_after_frames: frames an object may stay missing before it retires (>= 1).
            max_objects: most live objects kept by :meth:`enforce_capacity` (>= 1).

        """
        for name, value in (('memory.retire_after_frames', retire_after_frames),
                            ('memory.max_objects', max_objects)):
            if int(value) != value or value < 1:
                raise ConfigError(name, f'must be an integer >= 1, got {value}')
        self._retire_after = int(retire_after_frames)
        self._max_objects = int(max_objects)
        self._tracks: Dict[int, ObjectTrack] = {}
        self._next_id = 1

    @property
    def ids_left(self) -> int:
        """How many more objects :meth:`create` can make before :meth:`reset` is needed."""
        return MAX_OBJECT_ID - self._next_id + 1

    def __len__(self) -> int:
        """Number of live (ACTIVE or MISSING) objects."""
        return len(self._tracks)

    def __contains__(self, object_id: object) -> bool:
        """True when ``object_id`` is live."""
        return object_id in self._tracks

    def create(self, frame_index: int) -> ObjectTrack:
        """New ACTIVE object, seen in ``frame_index``, with the next unused id."""
        if self._next_id > MAX_OBJECT_ID:
            raise SapError(f'object ids exhausted: {MAX_OBJECT_ID} objects were created in this '
                           f'run (uint16 label map); reset the tracker to start again at 1')
        track = ObjectTrack(id=self._next_id, status=ObjectStatus.ACTIVE,
                            created_frame=frame_index, last_seen_frame=frame_index)
        self._tracks[track.id] = track
        self._next_id += 1
        return track

    def get(self, object_id: int) -> ObjectTrack:
        """The live object with this id; raises :class:`InvalidInputError` otherwise."""
        track = self._tracks.get(object_id)
        if track is None:
            state = 'retired' if self._was_issued(object_id) else 'unknown'
            raise InvalidInputError(f'object id {object_id} is {state}')
        return track

    def live(self) -> List[ObjectTrack]:
        """ACTIVE and MISSING objects, by id."""
        return [self._tracks[i] for i in sorted(self._tracks)]

    def active(self) -> List[ObjectTrack]:
        """ACTIVE objects, by id."""
        return [t for t in self.live() if t.status is ObjectStatus.ACTIVE]

    def mark_seen(self, object_id: int, frame_index: int, score: float) -> None:
        """Record a sighting in ``frame_index``: the object becomes ACTIVE."""
        track = self.get(object_id)
        track.status = ObjectStatus.ACTIVE
        track.last_seen_frame = max(track.last_seen_frame, frame_index)
        track.score = float(score)

    def end_frame(self, frame_index: int) -> List[int]:
        """Close ``frame_index``: unseen objects go MISSING or retire; returns ids retired now."""
        retired = []
        for track in self.live():
            missing = frame_index - track.last_seen_frame
            if missing <= 0:
                continue
            if missing > self._retire_after:
                self.retire(track.id)
                retired.append(track.id)
            else:
                track.status = ObjectStatus.MISSING
        return retired

    def merge(self, keep_id: int, drop_id: int, frame_index: int) -> None:
        """``drop_id`` turned out to be ``keep_id``: retire it now, keep its freshest sighting.

        ``keep_id`` takes the earlier creation frame and the later sighting of the two (with that
        sighting's extent, centroid, score and embedding); it is ACTIVE when either was.
        """
        if keep_id == drop_id:
            raise InvalidInputError(f'cannot merge object {keep_id} into itself')
        keep, drop = self.get(keep_id), self.get(drop_id)
        if drop.last_seen_frame > keep.last_seen_frame:
            keep.last_seen_frame = drop.last_seen_frame
            keep.extent_bearings, keep.extent_radius_deg = (drop.extent_bearings,
                                                            drop.extent_radius_deg)
            keep.centroid, keep.score = drop.centroid, drop.score
            if drop.embedding is not None:
                keep.embedding = drop.embedding
        keep.motion_deg = max(keep.motion_deg, drop.motion_deg)
        keep.created_frame = min(keep.created_frame, drop.created_frame)
        seen_now = keep.last_seen_frame >= frame_index
        if seen_now or ObjectStatus.ACTIVE in (keep.status, drop.status):
            keep.status = ObjectStatus.ACTIVE
        self.retire(drop_id)

    def retire(self, object_id: int) -> None:
        """Retire a live object now (no-op when it already retired)."""
        track = self._tracks.pop(object_id, None)
        if track is None:
            if self._was_issued(object_id):
                return
            raise InvalidInputError(f'object id {object_id} is unknown')
        track.status = ObjectStatus.RETIRED

    def enforce_capacity(self) -> List[int]:
        """Retire objects while more than ``max_objects`` are live; returns the retired ids.

        Order: MISSING before ACTIVE; among them the least recently seen first, then the lowest
        score, then the newest id (the least established object).
        """
        excess = len(self._tracks) - self._max_objects
        if excess <= 0:
            return []
        order = sorted(self._tracks.values(),
                       key=lambda t: (t.status is ObjectStatus.ACTIVE, t.last_seen_frame, t.score,
                                      -t.id))
        retired = [t.id for t in order[:excess]]
        for object_id in retired:
            self.retire(object_id)
        return retired

    def reset(self) -> None:
        """Forget every object (each one held elsewhere reads RETIRED); the next id is 1 again."""
        for track in self._tracks.values():
            track.status = ObjectStatus.RETIRED
        self._tracks.clear()
        self._next_id = 1

    def _was_issued(self, object_id: object) -> bool:
        return isinstance(object_id, (int, np.integer)) and 1 <= int(object_id) < self._next_id
