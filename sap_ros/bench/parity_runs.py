"""The two sides of ``sap_bench parity``: upstream's video predictor and the engine's core.

Both run one set of random SAM2 weights, amplified identically; :func:`run_upstream` drives
``SAM2VideoPredictor`` frame by frame as an interactive session would, :func:`run_engine` the
engine's :class:`~sap_ros.engine.tracking.TrackingCore` with one view (the frame) per step.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
from hydra.utils import instantiate
import numpy as np
from omegaconf import OmegaConf
from PIL import Image
import sam2
import torch

from sap_ros.config import DiscoveryConfig, MemoryConfig, ModelConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.sam2_checkpoint import _VIDEO_OVERRIDES, spec_for
from sap_ros.engine.segmenter import Pixels, Sam2Segmenter, SegmentOutput, TrackRequest
from sap_ros.engine.tracking import TrackingCore

DATA_DIR = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data' / 'leader360v_beach'
MUTATIONS = ('swap_slots', 'pointer_off_by_one')
#: Mutations of one batched SAM2 call (scenarios that make calls with batch > 1).
BATCH_MUTATIONS = ('rotate_batch_memories',)


@dataclass(frozen=True)
class Event:
    """A prompt at one frame: a new object (mask or clicks) or a correction (clicks)."""

    frame: int
    object_id: int
    mask: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    correction: bool = False


@dataclass(frozen=True)
class Scenario:
    """A video (frame list) and the prompts given on it."""

    name: str
    frames: List[np.ndarray]
    events: List[Event]



@dataclass
class Comparison:
    """One engine run and the upstream run it must equal (compared by ``parity.compare``).

    ``batches``: batch size of every batched SAM2 tracking call the engine made. ``gating``
    False: a measured departure (reported, not part of the acceptance).
    """

    name: str
    mutation: str
    ours: Dict[Tuple[int, int], 'Step']
    theirs: Dict[Tuple[int, int], 'Step']
    frames: int
    batches: List[int] = field(default_factory=list)
    gating: bool = True


@dataclass(frozen=True)
class Setup:
    """What the extended scenarios share with the plain ones (``parity.measure``)."""

    frames: List[np.ndarray]
    segmenter: Sam2Segmenter
    predictor: Any
    folder: Path
    mutations: Tuple[str, ...]
    say: Callable[[str], None]
    data_dir: Path = DATA_DIR
    present_bias: float = 0.0


def decoded_frames(folder: Path, n_frames: int) -> List[np.ndarray]:
    """The frames upstream read: the JPEG files of ``folder`` decoded as its loader does."""
    return [np.array(Image.open(folder / f'{j:05d}.jpg').convert('RGB'))
            for j in range(n_frames)]


# ---------------------------------------------------------------------------- models
def build_models(image_size: int, seed: int, amplify: float,
                 model_config: str = ModelConfig().config, checkpoint: Optional[str] = None,
                 present_bias: float = 0.0, pointer_amplify: Optional[float] = None
                 ) -> Tuple[Sam2Segmenter, Any]:
    """Our segmenter and upstream's video predictor with the same amplified weights.

    Random weights of ``seed`` unless ``checkpoint`` names a file for ``model_config`` (e.g. one
    trained by ``sap_train``; use ``amplify`` 1 to keep it as trained). ``amplify`` scales the
    temporal encodings (``maskmem_tpos_enc``, ``obj_ptr_tpos_proj``), ``pointer_amplify``
    (default: ``amplify``) the object pointers (each layer of ``obj_ptr_proj`` by its square
    root); ``present_bias`` is added to every object-score logit (:func:`_bias_object_score`).
    """
    segmenter = Sam2Segmenter(ModelConfig(
        config=model_config, checkpoint=checkpoint or '', allow_random_weights=not checkpoint,
        image_size=image_size, seed=seed, device='cpu', dtype='float32'))
    model: Any = segmenter.adapter.model
    with torch.no_grad():
        model.maskmem_tpos_enc.mul_(amplify)
        for p in model.obj_ptr_tpos_proj.parameters():
            p.mul_(amplify)
        for p in model.obj_ptr_proj.parameters():
            p.mul_((amplify if pointer_amplify is None else pointer_amplify) ** 0.5)
    blank = segmenter.adapter.encode(np.zeros((1, image_size, image_size, 3), np.uint8))
    _memoise_image_encoder(model)
    _absent_on_blank_frames(model, blank.backbone_fpn[0])
    _bias_object_score(model, present_bias)
    return segmenter, build_predictor(segmenter, present_bias)


def build_predictor(segmenter: Sam2Segmenter, present_bias: float = 0.0, **overrides: Any
                    ) -> Any:
    """Upstream's ``SAM2VideoPredictor`` with ``segmenter``'s weights (and its hooks).

    ``overrides`` are SAM2 model arguments (``max_cond_frames_in_attn=2`` ...). With
    ``num_maskmem=K`` (7 in every released model) the temporal encodings become those SAM2's
    ``_prepare_memory_conditioned_features`` gives the same distances in the 7-slot model: the
    recent slots ``1 .. K-1`` steps back keep theirs, the conditioning slot keeps the last one.
    """
    model: Any = segmenter.adapter.model
    image_size = int(model.image_size)
    spec = spec_for(segmenter.adapter.model_name)  # a release name or a model yaml's path
    cfg = OmegaConf.load(os.path.join(sam2.__path__[0], spec.yaml))
    OmegaConf.update(cfg, 'model.image_size', image_size)
    for key, value in _VIDEO_OVERRIDES.items():
        OmegaConf.update(cfg, f'model.{key}', value, force_add=True)
    OmegaConf.update(cfg, 'model._target_', 'sam2.sam2_video_predictor.SAM2VideoPredictor')
    # SAM2's training setting: a corrected frame becomes a conditioning frame. fill_hole_area
    # needs the CUDA extension (without it upstream skips the step, with a warning).
    OmegaConf.update(cfg, 'model.add_all_frames_to_correct_as_cond', True, force_add=True)
    OmegaConf.update(cfg, 'model.fill_hole_area', 0, force_add=True)
    for key, value in overrides.items():
        OmegaConf.update(cfg, f'model.{key}', value, force_add=True)
    OmegaConf.resolve(cfg)
    predictor = instantiate(cfg.model, _recursive_=True)
    state = dict(model.state_dict())
    slots = int(predictor.num_maskmem)
    if slots != int(model.num_maskmem):
        tpos = state['maskmem_tpos_enc']
        state['maskmem_tpos_enc'] = torch.cat([tpos[:slots - 1], tpos[-1:]])
    predictor.load_state_dict(state, strict=True)
    predictor.eval()
    _memoise_image_encoder(predictor)
    blank = segmenter.adapter.encode(np.zeros((1, image_size, image_size, 3), np.uint8))
    _absent_on_blank_frames(predictor, blank.backbone_fpn[0])
    _bias_object_score(predictor, present_bias)
    return predictor


def _memoise_image_encoder(net: Any) -> None:
    """Encode each distinct image once per model (the scenarios share their frames)."""
    cache: Dict[bytes, Dict[str, Any]] = {}
    encode = net.forward_image

    def forward_image(img_batch: torch.Tensor) -> Dict[str, Any]:
        key = img_batch.detach().cpu().numpy().tobytes()
        if key not in cache:
            cache[key] = encode(img_batch)
        out = cache[key]
        return {k: list(v) if isinstance(v, list) else v for k, v in out.items()}

    net.forward_image = forward_image


def _absent_on_blank_frames(net: Any, blank_features: torch.Tensor) -> None:
    """Random weights barely notice an empty frame: make the object score say "absent" there.

    A forward hook on the mask decoder lowers the object-score logit by 40 wherever the image
    features are those of an all-black frame. Both copies get the same hook, so SAM2's own
    no-object path (masks to -1024, no-object pointer and memory embedding) runs in both.
    """
    ref = blank_features.detach()

    def hook(module: Any, args: Any, kwargs: Dict[str, Any], output: Any) -> Any:
        high_res = kwargs.get('high_res_features')
        if not high_res or high_res[0].shape[-2:] != ref.shape[-2:]:
            return output
        gap = (high_res[0] - ref).abs().flatten(1).amax(dim=1)
        blank = (gap < 1e-3).to(output[3].dtype)[:, None]
        return output[:3] + (output[3] - 40.0 * blank,)

    net.sam_mask_decoder.register_forward_hook(hook, with_kwargs=True)


def _bias_object_score(net: Any, bias: float) -> None:
    """Add ``bias`` to every object-score logit of the mask decoder (nothing when 0).

    A trained file may call the object absent on most frames; SAM2's gate then sets the masks to
    -1024 and swaps in the no-object pointer and memory embedding, and a wrong memory slot or
    pointer distance changes nothing a comparison could see. Both copies get the same hook.
    """
    if bias == 0.0:
        return

    def hook(module: Any, args: Any, output: Any) -> Any:
        return output[:3] + (output[3] + bias,)

    net.sam_mask_decoder.register_forward_hook(hook)


# ---------------------------------------------------------------------------- the video
def video_frames(n_frames: int, size: int, data_dir: Path = DATA_DIR
                 ) -> Tuple[List[np.ndarray], str]:
    """``n_frames`` RGB frames ``size`` squared: crops of real 360 video, or generated ones."""
    files = sorted(Path(data_dir).glob('frames/*.jpg'))
    if files:
        frames = []
        for k in range(n_frames):
            erp: np.ndarray = np.asarray(Image.open(files[k % len(files)]).convert('RGB'))
            h, w = erp.shape[:2]
            # A square around the horizon, drifting right: close to a perspective view.
            x0 = (w // 3 + 8 * k) % (w - h // 2)
            crop = erp[h // 4:h // 4 + h // 2, x0:x0 + h // 2]
            frames.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
        return frames, f'{data_dir.name}: {n_frames} crops of its ERP frames'
    rng = np.random.default_rng(0)
    base: np.ndarray = rng.integers(0, 255, (size // 8, size // 8, 3)).astype(np.uint8)
    base = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    frames = []
    for k in range(n_frames):
        frame = np.roll(base, 2 * k, axis=1).copy()
        cv2.circle(frame, (size // 3 + k, size // 2), size // 6, (230, 60, 40), -1)
        frames.append(frame)
    return frames, f'generated: {n_frames} frames of a moving disc on texture'


def _disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def scenarios(frames: List[np.ndarray]) -> List[Scenario]:
    """The five parity scenarios on ``frames`` (each as long as ``frames``)."""
    size = frames[0].shape[0]
    n = len(frames)
    mask_a = _disc(size, size * 0.4, size * 0.5, size * 0.18)
    mask_b = _disc(size, size * 0.7, size * 0.3, size * 0.12)
    click = np.array([[size * 0.4, size * 0.5]])
    blank = [f if not 8 <= k < 16 else np.full_like(f, 0) for k, f in enumerate(frames)]
    fix = np.array([[size * 0.45, size * 0.5], [size * 0.8, size * 0.8]])
    return [
        Scenario('mask_prompt', frames, [Event(0, 1, mask=mask_a)]),
        Scenario('point_prompt', frames, [Event(0, 1, points=click, labels=np.array([1]))]),
        Scenario('two_objects', frames, [Event(0, 1, mask=mask_a), Event(5, 2, mask=mask_b)]),
        Scenario('absent_and_back', blank, [Event(0, 1, mask=mask_a)]),
        Scenario('correction_clicks', frames, [
            Event(0, 1, mask=mask_a),
            Event(n // 2, 1, points=fix, labels=np.array([1, 0]), correction=True)]),
    ]


# ---------------------------------------------------------------------------- the two runs
Step = Tuple[np.ndarray, float, np.ndarray]  # low-res logits, object-score logit, pointer


def run_upstream(predictor: Any, scenario: Scenario, folder: Path) -> Dict[Tuple[int, int], Step]:
    """Upstream's video predictor, frame by frame as an interactive session would drive it."""
    for k, frame in enumerate(scenario.frames):
        Image.fromarray(frame).save(folder / f'{k:05d}.jpg', quality=95)
    with torch.inference_mode():
        state = predictor.init_state(str(folder))
        started = False
        for k in range(len(scenario.frames)):
            for ev in [e for e in scenario.events if e.frame == k and not e.correction]:
                if ev.mask is not None:
                    predictor.add_new_mask(state, k, ev.object_id, ev.mask)
                else:
                    predictor.add_new_points_or_box(state, k, ev.object_id, points=ev.points,
                                                    labels=ev.labels)
                started = True
            if started:
                for _ in predictor.propagate_in_video(state, start_frame_idx=k,
                                                      max_frame_num_to_track=0):
                    pass
            for ev in [e for e in scenario.events if e.frame == k and e.correction]:
                predictor.add_new_points_or_box(state, k, ev.object_id, points=ev.points,
                                                labels=ev.labels)
        predictor.propagate_in_video_preflight(state)
    steps: Dict[Tuple[int, int], Step] = {}
    for obj_id in state['obj_ids']:
        out_dict = state['output_dict_per_obj'][predictor._obj_id_to_idx(state, obj_id)]
        for part in ('cond_frame_outputs', 'non_cond_frame_outputs'):
            for k, out in out_dict[part].items():
                steps[(k, obj_id)] = (out['pred_masks'][0, 0].float().numpy(),
                                      float(out['object_score_logits'].reshape(-1)[0]),
                                      out['obj_ptr'].reshape(-1).float().numpy())
    return steps


class MutatedSegmenter:
    """Our segmenter with one deliberate bookkeeping error (the harness must catch it)."""

    def __init__(self, inner: Any, mutation: str) -> None:
        """Wrap ``inner``; ``mutation`` is one of :data:`MUTATIONS` or :data:`BATCH_MUTATIONS`."""
        if mutation not in MUTATIONS + BATCH_MUTATIONS:
            raise ValueError(f'unknown mutation {mutation!r}; known: '
                             f'{MUTATIONS + BATCH_MUTATIONS}')
        self.inner, self.mutation = inner, mutation
        self.low_res_px, self.pointer_steps = inner.low_res_px, inner.pointer_steps
        self.input_px = getattr(inner, 'input_px', None)

    def mutate(self, memory: MemoryContext) -> MemoryContext:
        """The context with two recent slots swapped or the conditioning pointer one further."""
        if self.mutation == 'swap_slots':
            order = sorted(range(len(memory.recent_ago)), key=lambda k: memory.recent_ago[k])
            if len(order) < 2:
                return memory
            recent = list(memory.recent)
            recent[order[0]], recent[order[1]] = recent[order[1]], recent[order[0]]
            return replace(memory, recent=tuple(recent))
        if self.mutation != 'pointer_off_by_one' or not memory.cond_ago:
            return memory
        return replace(memory, cond_ago=(memory.cond_ago[0] + 1,) + memory.cond_ago[1:])

    def begin_frame(self, patches: Pixels, erp: np.ndarray,
                    views: Optional[Sequence[int]] = None) -> None:
        """Encode."""
        self.inner.begin_frame(patches, erp, views)

    def track(self, view_index: int, memory: MemoryContext, **kwargs: Any) -> SegmentOutput:
        """Track with the mutated context."""
        return self.inner.track(view_index, self.mutate(memory), **kwargs)

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """The inner (batched) call on mutated contexts.

        ``rotate_batch_memories``: objects that share one batched call (same distances) get
        each other's memories, rotated by one, as a wrong gather inside the call would do.
        """
        mutated = [replace(r, memory=self.mutate(r.memory)) for r in requests]
        if self.mutation == 'rotate_batch_memories':
            groups: Dict[Any, List[int]] = {}
            for k, req in enumerate(requests):
                groups.setdefault((req.memory.signature(), req.mask_prompt is not None),
                                  []).append(k)
            for members in groups.values():
                for k, source in zip(members, members[1:] + members[:1]):
                    mutated[k] = replace(requests[k], memory=requests[source].memory)
        return self.inner.track_many(view_index, mutated)

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> Any:
        """Unused by the harness."""
        return self.inner.discover(view_index, points_px, points_per_batch)

    def close(self) -> None:
        """Nothing to free here."""


@contextmanager
def count_batches(segmenter: Any) -> Iterator[List[int]]:
    """The batch size of every batched SAM2 tracking call ``segmenter`` makes in the block.

    Counted where the adapter runs one SAM2 call on several objects (``_batch``: behind both
    ``track_batch`` and ``track_groups``, which queues a patch's calls and reads them once).
    """
    adapter = getattr(segmenter, 'inner', segmenter).adapter
    sizes: List[int] = []
    batch = adapter._batch

    def counted(encoded: Any, patch_index: int, memories: Sequence[MemoryContext],
                *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(memories))
        return batch(encoded, patch_index, memories, *args, **kwargs)

    adapter._batch = counted
    try:
        yield sizes
    finally:
        del adapter._batch  # the class method again


def run_engine(segmenter: Any, scenario: Scenario, memory: Optional[MemoryConfig] = None
               ) -> Dict[Tuple[int, int], Step]:
    """The engine's tracking core over the same video, one view (the frame) per step."""
    memory = memory or MemoryConfig(max_objects=8)
    core = TrackingCore(segmenter, np.ones((1, 1)), memory, DiscoveryConfig(enabled=False))
    ids: Dict[int, int] = {}  # scenario object id -> engine id
    steps: Dict[Tuple[int, int], Step] = {}
    for k, frame in enumerate(scenario.frames):
        segmenter.begin_frame(frame[None], frame)
        core.next_step()
        outputs: Dict[int, SegmentOutput] = {}
        for engine_id, out in core.propagate(0, k, sorted(ids.values())):
            outputs[engine_id] = out
        for ev in [e for e in scenario.events if e.frame == k]:
            if ev.correction and ev.points is not None and ev.labels is not None:
                outputs[ids[ev.object_id]] = core.correct(0, k, ids[ev.object_id], ev.points,
                                                          ev.labels)
                continue
            made = core.create(0, k, mask=ev.mask, points_px=ev.points, point_labels=ev.labels)
            if made is None:
                raise RuntimeError(f'{scenario.name}: the engine found nothing at the prompt of '
                                   f'object {ev.object_id} (try another --seed)')
            ids[ev.object_id] = made[0]
            outputs[made[0]] = made[1]
        for obj_id, engine_id in ids.items():
            out = outputs[engine_id]
            score = float(out.memory.object_score_logits.reshape(-1)[0])
            steps[(k, obj_id)] = (np.asarray(out.logits), score, np.asarray(out.obj_ptr))
    return steps
