"""Records that leave the core: per-object pointers, prompts and the per-frame result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import erp_pixel_to_lonlat, lonlat_to_bearing

EMBEDDING_DIM = 256


@dataclass(frozen=True)
class ObjectRecord:
    """One visible object, for navigation (ARCHITECTURE §6).

    Attributes:
        id: persistent object id (>= 1, never reused within a run); its value in the label
            map.
        bearing: unit vector ``(3,)`` float64 in the camera frame (REP-103) towards the
            spherical-area-weighted centroid of the mask.
        lon_deg, lat_deg: the same direction as ERP longitude / latitude, degrees.
        width_deg, height_deg: angular extent in longitude (wrap-aware, at most 360) and latitude.
        solid_angle_sr: area of the mask on the unit sphere, steradians.
        area_px: number of pixels of the mask in the published label map.
        score: mean predicted IoU x object score over the patches that saw it, in [0, 1].
        age_frames: frames since the object was created (0 on its first frame).
        frames_since_seen: 0 when segmented in this frame.
        embedding: SAM2's object pointer ``(256,)`` float32, L2-normalised (all zeros when the
            segmenter has none, e.g. the geometric oracle).
        class_id: the object's published class, 1-based index into the classifier's class
            names (``class_names[class_id - 1]``); 0 = no class (no classifier configured, or
            no evidence yet). The same value as in the semantic label map.
        class_name: ``class_names[class_id - 1]``, '' when ``class_id`` is 0.
        class_score: the published class's share of the object's fused class evidence, in
            [0, 1]; 0 when ``class_id`` is 0.

    """

    id: int
    bearing: np.ndarray
    lon_deg: float
    lat_deg: float
    width_deg: float
    height_deg: float
    solid_angle_sr: float
    area_px: int
    score: float
    age_frames: int
    frames_since_seen: int
    embedding: np.ndarray = field(
        default_factory=lambda: np.zeros(EMBEDDING_DIM, dtype=np.float32))
    class_id: int = 0
    class_name: str = ''
    class_score: float = 0.0


@dataclass(frozen=True)
class Prompt:
    """An external prompt: a direction in the camera frame, positive or negative.

    Positive prompts create a new object at the next frame (or correct ``object_id``); negative
    prompts remove that direction from ``object_id`` (or from whichever object covers it).
    """

    bearing: np.ndarray
    positive: bool = True
    object_id: Optional[int] = None

    def __post_init__(self) -> None:
        """Validate and normalise the bearing."""
        b = np.asarray(self.bearing, dtype=np.float64).reshape(-1)
        if b.shape != (3,) or not np.all(np.isfinite(b)):
            raise InvalidInputError(f'prompt bearing must be 3 finite numbers, got {b.tolist()}')
        norm = float(np.linalg.norm(b))
        if norm < 1e-9:
            raise InvalidInputError(
                f'prompt bearing must not be the zero vector, got {b.tolist()}')
        object.__setattr__(self, 'bearing', b / norm)

    @classmethod
    def from_erp_pixel(cls, u: float, v: float, width: int, height: int,
                       positive: bool = True, object_id: Optional[int] = None) -> 'Prompt':
        """Prompt at ERP pixel ``(u, v)`` of an image of ``width x height`` pixels."""
        if not (0 <= u < width and 0 <= v < height):
            raise InvalidInputError(
                f'prompt pixel ({u}, {v}) is outside the {width}x{height} ERP image')
        lon, lat = erp_pixel_to_lonlat(np.array(u), np.array(v), width, height)
        return cls(lonlat_to_bearing(lon, lat), positive, object_id)


@dataclass
class FrameResult:
    """Output of ``SapPipeline.step`` for one ERP frame.

    Attributes:
        labels: ``(H_out, W_out)`` uint16 ERP label map, 0 = no object, value = object id;
            ``H_out = round(H * output.scale)``.
        objects: one pointer per object present in ``labels``, sorted by id.
        frame_index: 0-based count of frames processed since start or reset.
        timings_ms: wall time per pipeline stage (stage name -> milliseconds) and ``total``.
        semantic: ``(H_out, W_out)`` uint16 class-id map (each object's pixels carry its
            record's ``class_id``; 0 = no object or no class), None when no classifier is
            configured.

    """

    labels: np.ndarray
    objects: List[ObjectRecord]
    frame_index: int
    timings_ms: Dict[str, float] = field(default_factory=dict)
    semantic: Optional[np.ndarray] = None
