"""Which views the image encoder runs on in a frame (issue "encoder only where needed").

Encoding all patches every frame is the bulk of a frame's network time, yet most views of a
typical scene hold no tracked object and discovery only needs to see every view once per
``discovery.every_n_frames`` frames. :func:`schedule_encoder` returns, for one frame:

* ``discover``: a rotating share of the views for discovery - the zigzag path cut into
  ``every_n_frames`` contiguous runs (neighbouring views, so an object cut by one view's border
  is seen whole in the next), run ``frame_index % every_n_frames`` this frame. Any
  ``every_n_frames`` consecutive frames search every view exactly once; when the uncovered part
  of the sphere is large (``sweep_all``) every view is searched at once, as today.
* ``encode``: the views culling decodes live objects in, the views holding prompts, and the
  discovery share; ``enabled=False`` keeps the old behaviour (every view, every frame).

A pure function of its inputs, called by :class:`~sap_ros.engine.pipeline.SapPipeline` once per
frame before encoding: it decodes an object only in encoded views and leaves its memory untouched
elsewhere (nothing stale painted).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Tuple

import numpy as np

from sap_ros.errors import InvalidInputError


@dataclass(frozen=True)
class EncoderSchedule:
    """Views of one frame, ascending view indices.

    Attributes:
        encode: views whose patch the image encoder runs on.
        discover: views where discovery looks for new objects (a subset of ``encode``).

    """

    encode: Tuple[int, ...]
    discover: Tuple[int, ...]


def discovery_share(path: Sequence[int], frame_index: int,
                    every_n_frames: int) -> Tuple[int, ...]:
    """The run of ``path`` discovery searches in frame ``frame_index`` (ascending indices).

    >>> [discovery_share(range(5), f, 2) for f in range(3)]
    [(0, 1, 2), (3, 4), (0, 1, 2)]
    """
    if every_n_frames < 1:
        raise InvalidInputError(f'every_n_frames must be >= 1, got {every_n_frames}')
    if frame_index < 0:
        raise InvalidInputError(f'frame_index must be >= 0, got {frame_index}')
    runs = np.array_split(np.asarray(list(path), dtype=np.int64), every_n_frames)
    return tuple(sorted(int(v) for v in runs[frame_index % every_n_frames]))


def schedule_encoder(path: Sequence[int], object_views: Mapping[int, np.ndarray],
                     frame_index: int, every_n_frames: int,
                     prompt_views: Iterable[int] = (), sweep_all: bool = False,
                     enabled: bool = True, discovery: bool = True) -> EncoderSchedule:
    """The views to encode and to search in frame ``frame_index``.

    Args:
        path: every view index once, in visiting order (``PatchLayout.path``).
        object_views: live object id -> ``(N,)`` bool, the views culling decodes it in.
        frame_index: frames since start (the rotation's clock).
        every_n_frames: ``discovery.every_n_frames``: each view is searched once per this many
            consecutive frames.
        prompt_views: views holding a prompt or a seeding mask this frame.
        sweep_all: search every view this frame (e.g. the uncovered fraction is large).
        enabled: False: every view is encoded and searched (the unscheduled behaviour).
        discovery: False: no discovery this frame (disabled, or no ids left): no share to
            encode, nothing to search.

    """
    n_views = len(path)
    if n_views == 0 or sorted(path) != list(range(n_views)):
        raise InvalidInputError(f'path must visit each view once, got {list(path)}')
    share = discovery_share(path, frame_index, every_n_frames)
    if enabled and not discovery:
        share, sweep_all = (), False
    if not enabled or sweep_all:
        everything = tuple(range(n_views))
        return EncoderSchedule(everything, everything if sweep_all or not enabled else share)
    needed = np.zeros(n_views, dtype=bool)
    needed[list(share)] = True
    for object_id, views in object_views.items():
        mask = np.asarray(views)
        if mask.shape != (n_views,) or mask.dtype != bool:
            raise InvalidInputError(f'views of object {object_id} must be ({n_views},) bool, '
                                    f'got shape {mask.shape} dtype {mask.dtype}')
        needed |= mask
    for view in prompt_views:
        if not 0 <= int(view) < n_views:
            raise InvalidInputError(f'prompt view {view} is not in [0, {n_views})')
        needed[int(view)] = True
    return EncoderSchedule(tuple(int(v) for v in np.flatnonzero(needed)), share)
