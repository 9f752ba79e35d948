"""``sap_bench parity``: the whole ``SapPipeline`` along its zigzag path against upstream.

Two ERP frames (the beach clip resized, or a generated panorama) go through ``SapPipeline`` with a
layout of 14 patches (``patches.fov_deg`` 120, overlap 0.5, side ``model.image_size``),
discovery off, the host frame path, and one object prompted by a bearing (a click at the axis of
the second patch of the path). Upstream's ``SAM2VideoPredictor`` runs on the video of the same
patches in path order: frame 0's zigzag, then frame 1's (the path reversed), written as JPEG
files. The patches are the engine's own (``extract_patches``, what the host frame path samples);
:class:`DecodedPatches` checks that the pipeline sampled exactly those and hands SAM2 the
JPEG-decoded pixels upstream reads instead. Per decoded patch the low-res logits, the object
score and the object pointer are compared.

* ``pipeline_zigzag``: view culling off and every patch encoded (``engine.encode_all_views``), so
  the object is decoded in every patch after its prompt: 13 + 14 steps.
* ``pipeline_culled``: view culling on and the default encoder schedule; upstream runs on the
  subsequence of patches the engine decoded the object in, as its video.

``memory.*`` stay at their defaults: the object has one conditioning step, and 6 recent memories
plus 15 pointers are what SAM2 attends to, so the bank holds everything upstream reads.
Mutations: ``reverse_path`` (frame 1 visited in frame 0's direction, not reversed) and
``skip_patch`` (the engine skips the second patch of frame 1), besides the slot mutations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from sap_ros.bench.parity_runs import (
    MUTATIONS,
    Comparison,
    Event,
    MutatedSegmenter,
    Scenario,
    Setup,
    Step,
    count_batches,
    decoded_frames,
    run_upstream,
)
from sap_ros.config import (
    DiscoveryConfig,
    EngineConfig,
    MemoryConfig,
    ModelConfig,
    PatchConfig,
    PipelineConfig,
)
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.segmenter import Pixels, SegmentOutput, TrackRequest
from sap_ros.engine.types import Prompt
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches

SCENARIOS = ('pipeline_zigzag', 'pipeline_culled')
#: Mutations of the pipeline's path (each scenario also runs :data:`MUTATIONS`).
PATH_MUTATIONS = ('reverse_path', 'skip_patch')
FOV_DEG, OVERLAP = 120.0, 0.5
PROMPT_STEP = 1  # the prompt is in the second patch of frame 0's path
Patches = Dict[Tuple[int, int], np.ndarray]  # (frame, view) -> patch


def erp_frames(size_px: int, data_dir: Path) -> Tuple[List[np.ndarray], str]:
    """Two ERP frames, ``(1.5 size_px, 3 size_px)``: the clip's first two, or generated ones."""
    height = 3 * size_px // 2
    files = sorted(Path(data_dir).glob('frames/*.jpg'))[:2]
    if len(files) == 2:
        frames = [cv2.resize(np.asarray(Image.open(f).convert('RGB')), (2 * height, height),
                             interpolation=cv2.INTER_AREA) for f in files]
        return frames, f'{data_dir.name}: its first 2 ERP frames'
    rng = np.random.default_rng(1)
    base: np.ndarray = rng.integers(0, 255, (height // 8, height // 4, 3)).astype(np.uint8)
    base = cv2.resize(base, (2 * height, height), interpolation=cv2.INTER_CUBIC)
    frames = []
    for k in range(2):
        frame = np.roll(base, 3 * k, axis=1).copy()
        cv2.circle(frame, (height + 3 * k, height // 2), height // 6, (230, 60, 40), -1)
        frames.append(frame)
    return frames, 'generated: 2 ERP frames of a disc on texture'


class DecodedPatches:
    """A segmenter that gets the JPEG-decoded patches upstream reads, and records each output.

    ``begin_frame`` checks that the pipeline sampled exactly ``sampled`` (the patches written as
    JPEG) and passes ``decoded`` on instead; ``outputs`` maps ``(frame, view)`` to the object's
    output there (the scenarios track one object).
    """

    def __init__(self, inner: Any, sampled: Patches, decoded: Patches) -> None:
        """Wrap ``inner`` (our segmenter, or a mutated one)."""
        self.inner, self.sampled, self.decoded = inner, sampled, decoded
        self.low_res_px, self.pointer_steps = inner.low_res_px, inner.pointer_steps
        self.frame = -1
        self.outputs: Dict[Tuple[int, int], SegmentOutput] = {}

    def begin_frame(self, patches: Pixels, erp: np.ndarray,
                    views: Optional[Sequence[int]] = None) -> None:
        """Swap in the decoded patches of ``views`` (default all) and encode them."""
        self.frame += 1
        rows = list(range(len(patches))) if views is None else list(views)
        for row, view in enumerate(rows):
            if not np.array_equal(np.asarray(patches[row]), self.sampled[(self.frame, view)]):
                raise RuntimeError(f'the pipeline sampled another patch {view} in frame '
                                   f'{self.frame} than the one written for upstream')
        swapped = np.stack([self.decoded[(self.frame, view)] for view in rows])
        self.inner.begin_frame(swapped, erp, views)

    def track(self, view_index: int, memory: MemoryContext, **kwargs: Any) -> SegmentOutput:
        """Track (and record the output)."""
        out: SegmentOutput = self.inner.track(view_index, memory, **kwargs)
        self.outputs[(self.frame, view_index)] = out
        return out

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """Track (and record the outputs)."""
        outs: List[SegmentOutput] = self.inner.track_many(view_index, requests)
        for out in outs:
            self.outputs[(self.frame, view_index)] = out
        return outs

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> Any:
        """Unused (discovery is off)."""
        return self.inner.discover(view_index, points_px, points_per_batch)

    def close(self) -> None:
        """Nothing to free here."""


def _config(size_px: int, culling: bool) -> PipelineConfig:
    return PipelineConfig(
        model=ModelConfig(allow_random_weights=True, image_size=size_px, device='cpu',
                          dtype='float32'),
        patches=PatchConfig(fov_deg=FOV_DEG, size_px=size_px, overlap=OVERLAP),
        memory=MemoryConfig(max_objects=8),
        engine=EngineConfig(frame_path='numpy', encode_all_views=not culling),
        discovery=DiscoveryConfig(enabled=False))


def _path_mutation(layout: PatchLayout, mutation: str) -> None:
    """Break the pipeline's path on purpose (this layout instance only)."""
    path = layout.path

    def one_way(frame_index: int) -> Tuple[int, ...]:
        return path

    def skipping(frame_index: int) -> Tuple[int, ...]:
        order = path if frame_index % 2 == 0 else path[::-1]
        return order[:1] + order[2:] if frame_index == 1 else order

    layout.frame_path = one_way if mutation == 'reverse_path' else skipping  # type: ignore


def run_pipeline(segmenter: Any, frames: List[np.ndarray], culling: bool,
                 sampled: Patches, decoded: Patches, mutation: str = 'none'
                 ) -> Dict[Tuple[int, int], SegmentOutput]:
    """The pipeline over ``frames`` with the prompt; the object's output per (frame, view)."""
    size_px = next(iter(sampled.values())).shape[0]
    inner = segmenter if mutation in ('none',) + PATH_MUTATIONS else MutatedSegmenter(
        segmenter, mutation)
    wrapper = DecodedPatches(inner, sampled, decoded)
    pipe = SapPipeline(_config(size_px, culling), segmenter=wrapper, view_culling=culling)
    if mutation in PATH_MUTATIONS:
        _path_mutation(pipe.layout, mutation)
    pipe.add_prompts([prompt(pipe.layout)])
    for frame in frames:
        pipe.step(frame)
    return wrapper.outputs


def prompt(layout: PatchLayout) -> Prompt:
    """The scenarios' prompt: the axis of the patch at :data:`PROMPT_STEP` of frame 0."""
    return Prompt(layout.axes[layout.path[PROMPT_STEP]])


def _steps(outputs: Dict[Tuple[int, int], SegmentOutput], position: Dict[Tuple[int, int], int]
           ) -> Dict[Tuple[int, int], Step]:
    return {(position[key], 1): (np.asarray(out.logits),
                                 float(out.memory.object_score_logits.reshape(-1)[0]),
                                 np.asarray(out.obj_ptr))
            for key, out in outputs.items()}


def comparisons(setup: Setup, only: Optional[Sequence[str]] = None) -> Iterator[Comparison]:
    """Both scenarios (those named in ``only``), each with its mutations."""
    size_px = int(setup.frames[0].shape[0])
    erps, _ = erp_frames(size_px, setup.data_dir)
    layout = PatchLayout.build(FOV_DEG, size_px, 'zigzag', OVERLAP)
    sampled = {(f, v): patch for f, erp in enumerate(erps)
               for v, patch in enumerate(extract_patches(layout, erp, size_px))}
    order = [(f, v) for f in range(len(erps)) for v in layout.frame_path(f)]
    view = layout.path[PROMPT_STEP]
    u, v, _ = layout.views[view].bearing_to_pixel(prompt(layout).bearing[None])
    click = np.array([[u[0], v[0]]])
    decoded: Patches = {}
    for name in SCENARIOS:
        if only is not None and name not in only:
            continue
        culling = name == 'pipeline_culled'
        if not decoded:  # every patch once through JPEG, as upstream reads it
            folder = setup.folder / 'pipeline_patches'
            folder.mkdir()
            for k, key in enumerate(order):
                Image.fromarray(sampled[key]).save(folder / f'{k:05d}.jpg', quality=95)
            decoded = dict(zip(order, decoded_frames(folder, len(order))))
        setup.say(f'{name}: engine')
        with count_batches(setup.segmenter) as batches:
            outputs = run_pipeline(setup.segmenter, erps, culling, sampled, decoded)
        video = sorted(outputs, key=order.index) if culling else order
        position = {key: k for k, key in enumerate(video)}
        start = position[(0, view)]
        setup.say(f'{name}: upstream SAM2VideoPredictor on {len(video)} patches')
        folder = setup.folder / name
        folder.mkdir()
        # SAM2 scales pointer distances by min(video length, 16); the engine's stream is long
        # (README: "time scale of a long video"): a shorter video is padded with its last patch,
        # and the padding is not compared.
        padding = max(0, int(setup.predictor.max_obj_ptrs_in_encoder) - len(video))
        scenario = Scenario(name, [sampled[key] for key in video + video[-1:] * padding],
                            [Event(start, 1, points=click, labels=np.array([1]))])
        theirs = {key: step for key, step in run_upstream(setup.predictor, scenario,
                                                          folder).items()
                  if key[0] < len(video)}
        yield Comparison(name, 'none', _steps(outputs, position), theirs, len(video),
                         list(batches))
        for mutation in [m for m in MUTATIONS + PATH_MUTATIONS if m in setup.mutations]:
            setup.say(f'{name}: engine with {mutation}')
            mutated = run_pipeline(setup.segmenter, erps, culling, sampled, decoded, mutation)
            known = {key: out for key, out in mutated.items() if key in position}
            yield Comparison(name, mutation, _steps(known, position), theirs, len(video))

