"""The one place that runs SAM2: build, load, encode, memory-conditioned tracking, discovery.

Upstream's ``SAM2VideoPredictor`` wants a video on disk and keeps every frame's state forever, so
we call the model's own building blocks instead (``forward_image``,
``_prepare_backbone_features``, ``_track_step`` + ``_encode_memory_in_output`` = ``track_step``,
the prompt encoder and mask decoder) and keep the state in typed dataclasses
(:mod:`sap_ros.engine.sam2_types`). The engine keeps each object's memories with their distance in
the object's own video (:class:`~sap_ros.engine.memory.MemoryContext`); :meth:`Sam2Adapter.track`
builds a fresh SAM2 output dict per call that holds them at those distances, so SAM2's own
``_prepare_memory_conditioned_features`` picks slots and pointer distances as upstream does.

Conventions: patches are (N, H, W, 3) uint8 RGB; points are (x, y) in patch pixels with pixel
centres at integer coordinates; logits are at ``image_size / 4`` (the SAM2 decoder resolution).
On CPU everything runs in float32 (a float16/bfloat16 request falls back to float32 and says so in
``checkpoint_info``); on CUDA the model keeps float32 weights and runs under ``torch.autocast``.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from sap_ros.config import ModelConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.sam2_checkpoint import (
    build_sam2_model,
    check_state_dict,
    empty_checkpoint_message,
    identify_official,
    place_model,
    read_state_dict,
    resolve_checkpoint_path,
    resolve_device,
    resolve_dtype,
    spec_for,
)
from sap_ros.engine.sam2_prompts import Sam2Prompts
from sap_ros.engine.sam2_types import (
    DiscoveryResult,
    EncodedPatches,
    MemoryPayload,
    PendingTrack,
    Prompts,
    TrackResult,
)
from sap_ros.errors import CheckpointError, ConfigError, InvalidInputError
from sap_ros.sphere.torch_device import current_device, to_device

ArrayLike = Union[np.ndarray, torch.Tensor]

# ImageNet statistics, as SAM2's image and video predictors normalise their input.
_PIXEL_MEAN = (0.485, 0.456, 0.406)
_PIXEL_STD = (0.229, 0.224, 0.225)
# Memory features are stored as upstream's video predictor stores them.
_MEMORY_DTYPE = torch.bfloat16


class Sam2Adapter(Sam2Prompts):
    """SAM2 built from a :class:`ModelConfig`, with typed inputs and outputs."""

    def __init__(self, config: ModelConfig) -> None:
        """Build the model and load its checkpoint; raises CheckpointError / ConfigError."""
        spec = spec_for(config.config)
        if config.image_size < 64 or config.image_size % 32:
            raise ConfigError('model.image_size', f'must be a multiple of 32 and >= 64, got '
                              f'{config.image_size}')
        if config.encode_batch < 1:
            raise ConfigError('model.encode_batch', f'must be >= 1, got {config.encode_batch}')
        self.device = resolve_device(config.device)
        self.dtype, dtype_note = resolve_dtype(config.dtype, self.device)
        self.image_size = config.image_size
        self.model_name = spec.name
        self.encode_batch = config.encode_batch
        state = None
        if config.checkpoint and not config.random_weights:
            path = resolve_checkpoint_path(config.checkpoint, spec)
            official = identify_official(path)
            release = spec_for(official.config) if official else None
            if release is not None and release.name != spec.name:
                raise CheckpointError(f'{path} is the official {release.file_name} '
                                      f'(model.config={release.name}) but model.config='
                                      f'{spec.name}; set model.config={release.name}')
            state = read_state_dict(path)
            info = str(path) + (f' (official {release.file_name[:-3]} (sha256 {official.sha256}))'
                                if release and official else ' (not an official release file)')
        elif config.allow_random_weights:
            info = (f'RANDOM WEIGHTS (seed {config.seed}, model.allow_random_weights=true): '
                    f'masks are meaningless')
        else:
            raise CheckpointError(empty_checkpoint_message(spec))
        with current_device(self.device):  # upstream's "cuda" tables: on this device
            model = build_sam2_model(spec.yaml, config.image_size, config.seed)
        if state is not None:
            check_state_dict(path, state, model.state_dict(), spec)
            model.load_state_dict(state, strict=True)
        self.checkpoint_info = info + (f'; {dtype_note}' if dtype_note else '')
        self._model: Optional[torch.nn.Module] = place_model(model, self.device,
                                                             config.compile_image_encoder)
        #: The dtype SAM2 runs in under autocast (None: no autocast, float32). Only CUDA gets
        #: one from ``model.dtype``; ``sap_bench engine`` sets bfloat16 on the CPU to count the
        #: weight casts of a call.
        self.autocast_dtype: Optional[torch.dtype] = (
            None if self.dtype == torch.float32 else self.dtype)
        self._session_depth = 0
        self._maskmem_pos_enc: Optional[torch.Tensor] = None
        mean = torch.tensor(_PIXEL_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(_PIXEL_STD, device=self.device).view(1, 3, 1, 1)
        self._pixel_mean, self._pixel_std = mean, std

    # ------------------------------------------------------------------ plumbing
    @property
    def model(self) -> torch.nn.Module:
        """The SAM2Base module (raises RuntimeError after :meth:`close`)."""
        if self._model is None:
            raise RuntimeError('Sam2Adapter is closed')
        return self._model

    @property
    def _sam2(self) -> Any:
        """The model, for calls into SAM2Base's own methods (untyped upstream)."""
        return self.model

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One inference context around many SAM2 calls (a frame, an engine step).

        ``no_grad``, the model's CUDA device as the current one (events, streams and new tensors
        of the calls land there) and autocast. Autocast caches the low-precision copy of each
        weight until its outermost context exits, so one session around a frame casts every
        weight once per frame instead of once per call (upstream keeps one context around its
        whole propagation loop). Re-entrant: calls inside a session (every public call opens
        one) add nothing.
        """
        if self._session_depth:
            self._session_depth += 1
            try:
                yield
            finally:
                self._session_depth -= 1
            return
        # no_grad rather than inference_mode: the engine may edit returned tensors in place.
        device = current_device(self.device)
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else contextlib.nullcontext())
        with torch.no_grad(), device, autocast:
            self._session_depth = 1
            try:
                yield
            finally:
                self._session_depth = 0

    def _inference(self) -> ContextManager[None]:
        return self.session()

    def _prepare_images(self, chunk: ArrayLike) -> torch.Tensor:
        if isinstance(chunk, torch.Tensor) and _channels_first(chunk):  # the torch path's
            x = chunk.to(self.device).float() / 255.0
        else:
            x = (torch.from_numpy(np.ascontiguousarray(chunk)) if isinstance(chunk, np.ndarray)
                 else chunk)
            x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode='bilinear',
                              align_corners=False, antialias=True)
        return (x - self._pixel_mean) / self._pixel_std

    @staticmethod
    def _check_patches(patches: ArrayLike) -> Tuple[int, int]:
        """The patches' (height, width); a clear error for anything but the two layouts."""
        shape = tuple(patches.shape)
        if _channels_first(patches):
            if 0 in shape:
                raise InvalidInputError(f'patches must not be empty, got shape {shape}')
            return int(shape[2]), int(shape[3])
        if len(shape) != 4 or shape[3] != 3 or 0 in shape:
            raise InvalidInputError(f'patches must be (N, H, W, 3) uint8 RGB or (N, 3, H, W) '
                                    f'float tensors (0..255), got shape {shape}')
        if patches.dtype not in (np.uint8, torch.uint8):
            raise InvalidInputError(f'patches must be uint8, got {patches.dtype}')
        return int(shape[1]), int(shape[2])

    # ------------------------------------------------------------------ encoding
    def encode(self, patches: ArrayLike) -> EncodedPatches:
        """Encode patches, ``encode_batch`` per image-encoder forward.

        ``patches``: ``(N, H, W, 3)`` uint8 RGB (host or device), or ``(N, 3, H, W)`` float RGB
        in 0..255 already on the device (the torch frame path's samples).
        """
        return self._encode(patches, self.encode_batch)

    def encode_sequential(self, patches: ArrayLike) -> EncodedPatches:
        """Same result as :meth:`encode`, one patch per forward (the benchmark baseline)."""
        return self._encode(patches, 1)

    def _encode(self, patches: ArrayLike, chunk: int) -> EncodedPatches:
        input_hw = self._check_patches(patches)
        n = int(patches.shape[0])
        levels: List[torch.Tensor] = []
        pos: List[torch.Tensor] = []
        with self._inference():
            for start in range(0, n, chunk):
                out = self._sam2.forward_image(self._prepare_images(patches[start:start + chunk]))
                if not levels:  # preallocate once the shapes are known: no concatenation copy
                    levels = [f.new_empty((n,) + tuple(f.shape[1:])) for f in out['backbone_fpn']]
                    pos = [p[:1].clone() for p in out['vision_pos_enc']]
                for dst, src in zip(levels, out['backbone_fpn']):
                    dst[start:start + src.shape[0]] = src
        return EncodedPatches(levels, pos, input_hw)

    def _patch_features(self, encoded: EncodedPatches, index: int, batch: int
                        ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[Tuple[int, int]]]:
        if not -len(encoded) <= index < len(encoded):
            raise IndexError(f'patch_index {index} out of range for {len(encoded)} patches')
        index %= len(encoded)
        backbone_out = {
            'backbone_fpn': [f[index:index + 1].expand(batch, -1, -1, -1)
                             for f in encoded.backbone_fpn],
            'vision_pos_enc': [p.expand(batch, -1, -1, -1) for p in encoded.vision_pos_enc]}
        _, feats, pos, sizes = self._sam2._prepare_backbone_features(backbone_out)
        return feats, pos, sizes

    # ------------------------------------------------------------------ tracking
    def _memory_entry(self, payloads: Sequence[MemoryPayload]) -> Dict[str, object]:
        def cat(tensors: List[torch.Tensor]) -> torch.Tensor:
            return torch.cat([t.to(self.device, non_blocking=True) for t in tensors], dim=0)

        first_pos = payloads[0].maskmem_pos_enc
        if all(p.maskmem_pos_enc is first_pos for p in payloads):
            pos = first_pos.to(self.device).expand(len(payloads), -1, -1, -1)
        else:
            pos = cat([p.maskmem_pos_enc for p in payloads])
        return {'maskmem_features': cat([p.maskmem_features for p in payloads]),
                'maskmem_pos_enc': [pos],
                'obj_ptr': cat([p.obj_ptr for p in payloads]),
                'object_score_logits': cat([p.object_score_logits for p in payloads])}

    def _output_dict(self, contexts: Sequence[MemoryContext]) -> Tuple[int, Dict[str, Dict]]:
        """SAM2's per-object output dict of a video whose current frame is ``frame_idx``.

        Every memory sits at its distance from the current frame (``*_ago``), so SAM2's own
        ``_prepare_memory_conditioned_features`` picks the slots, pointers and distances exactly
        as upstream's video predictor does. Pointer-only entries closer than ``num_maskmem``
        would be read as memories: they are left out (only when ``memory.short_term`` is below
        ``num_maskmem - 1``).
        """
        num_maskmem = int(self._sam2.num_maskmem)
        first = contexts[0]
        frame_idx = max(first.cond_ago + first.recent_ago + first.pointers_ago, default=0)
        cond = {frame_idx - ago: self._memory_entry([c.cond[j] for c in contexts])
                for j, ago in enumerate(first.cond_ago)}
        non_cond = {frame_idx - ago: self._memory_entry([c.recent[k] for c in contexts])
                    for k, ago in enumerate(first.recent_ago)}
        for j, ago in enumerate(first.pointers_ago):
            t = frame_idx - ago
            if ago >= num_maskmem and t not in cond and t not in non_cond:
                ptrs = np.stack([c.pointers[j] for c in contexts])
                non_cond[t] = {'obj_ptr': to_device(ptrs, self.device, torch.float32)}
        return frame_idx, {'cond_frame_outputs': cond, 'non_cond_frame_outputs': non_cond}

    def _run_track(self, encoded: EncodedPatches, patch_index: int,
                   contexts: Sequence[MemoryContext], prompts: Prompts) -> PendingTrack:
        model = self._sam2
        frame_idx, output_dict = self._output_dict(contexts)
        feats, pos, sizes = self._patch_features(encoded, patch_index, len(contexts))
        # A streaming video is long: num_frames above max_obj_ptrs_in_encoder fixes the scale
        # of the object-pointer time encoding (upstream: min(num_frames, 16)).
        current_out, sam_outputs, _, _ = model._track_step(
            frame_idx=frame_idx, is_init_cond_frame=contexts[0].empty,
            current_vision_feats=feats, current_vision_pos_embeds=pos, feat_sizes=sizes,
            point_inputs=prompts.points, mask_inputs=prompts.mask, output_dict=output_dict,
            num_frames=frame_idx + 1 + model.max_obj_ptrs_in_encoder, track_in_reverse=False,
            prev_sam_mask_logits=prompts.prev_logits)
        _, _, ious, low_res, high_res, obj_ptr, score_logits = sam_outputs
        if prompts.prompted:
            # Upstream encodes a prompted frame's memory from its low-res output, upsampled,
            # binarised (propagate_in_video_preflight); a tracked frame's from the decoder's.
            high = F.interpolate(low_res, size=(self.image_size, self.image_size),
                                 mode='bilinear', align_corners=False)
            features, mem_pos = model._encode_new_memory(feats, sizes, high, score_logits,
                                                         is_mask_from_pts=True)
        else:
            model._encode_memory_in_output(feats, sizes, prompts.points, True, high_res,
                                           score_logits, current_out)
            features, mem_pos = current_out['maskmem_features'], current_out['maskmem_pos_enc']
        if self._maskmem_pos_enc is None:
            self._maskmem_pos_enc = mem_pos[-1][:1].clone()
        # Stored as upstream stores it (bfloat16), so memories read back identically.
        features = features.to(_MEMORY_DTYPE)
        obj_ptr, score_logits = obj_ptr.float(), score_logits.float()
        # Read back later, with the other calls of the patch: IoU, object score, whether any
        # logit is > 0, and the pointer of every object.
        scalars = torch.cat([ious.float().max(dim=1, keepdim=True).values,
                             torch.sigmoid(score_logits[:, :1]),
                             (low_res[:, 0] > 0).flatten(1).any(dim=1, keepdim=True).float(),
                             obj_ptr], dim=1)
        return PendingTrack(scalars, low_res[:, 0].float(), [
            MemoryPayload(features[b:b + 1].clone(), self._maskmem_pos_enc,
                          obj_ptr[b:b + 1].clone(), score_logits[b:b + 1].clone())
            for b in range(len(contexts))])

    @staticmethod
    def _read(pending: Sequence[PendingTrack]) -> List[List[TrackResult]]:
        """The results of several SAM2 calls with one device-to-host copy for all of them."""
        host = torch.cat([p.scalars for p in pending]).numpy(force=True)
        out, row = [], 0
        for p in pending:
            out.append([TrackResult(
                # A clone, not a view: a view would keep the whole batch's logits alive.
                low_res_logits=p.low_res[b].clone() if len(p.memories) > 1 else p.low_res[b],
                iou=float(host[row + b, 0]), object_score=float(host[row + b, 1]),
                nonempty=bool(host[row + b, 2] > 0), obj_ptr=host[row + b, 3:].copy(),
                memory=memory) for b, memory in enumerate(p.memories)])
            row += len(p.memories)
        return out

    def track(self, encoded: EncodedPatches, patch_index: int,
              memory: MemoryContext = MemoryContext(), *,
              mask_prompt: Optional[ArrayLike] = None, points_px: Optional[np.ndarray] = None,
              point_labels: Optional[np.ndarray] = None, prev_logits: Optional[ArrayLike] = None,
              as_conditioning: bool = False) -> TrackResult:
        """One SAM2 step for one object on one patch, as upstream's video predictor runs it.

        ``memory`` holds the object's memories at their distances (:class:`MemoryContext`);
        empty: the step is the object's first (an initial conditioning frame, prompt needed).

        Prompts: points (x, y in input-patch pixels, labels 1/0, default all 1), optionally
        with ``prev_logits`` (the step's earlier low-res logits, a correction: clamped to
        +-32 as upstream does), or a mask. With ``as_conditioning`` a mask is the output itself
        (``add_new_mask``; points are then not allowed); otherwise it is a dense decoder prompt
        with a padding point (``engine.mask_prompt``, not upstream). Memory of a prompted step
        is encoded from its low-res output as upstream does. No memory, no prompt: ValueError.
        """
        has_points = points_px is not None and len(points_px) > 0
        if mask_prompt is None and not has_points and memory.empty:
            raise ValueError('track() needs memories or a prompt (points/mask)')
        if as_conditioning and mask_prompt is not None and has_points:
            raise ValueError('as_conditioning with a mask prompt uses the mask as the output; '
                             'points cannot be combined with it')
        with self._inference():
            prompts = Prompts(prompted=has_points or as_conditioning)
            if points_px is not None and has_points:
                prompts.points = self._point_inputs(points_px, point_labels, encoded.input_hw)
                if prev_logits is not None:
                    prev = (prev_logits.to(self.device).float()
                            if isinstance(prev_logits, torch.Tensor)
                            else to_device(prev_logits, self.device, torch.float32))
                    prompts.prev_logits = prev.reshape(1, 1, *prev.shape[-2:]).clamp(-32, 32)
            if mask_prompt is not None and as_conditioning:
                prompts.mask = (self._mask_to_model(mask_prompt, self.image_size) >= 0.5).float()
            elif mask_prompt is not None:
                padding, prompts.prev_logits = self._dense_prompts([mask_prompt])
                prompts.points = prompts.points or padding
            return self._read([self._run_track(encoded, patch_index, [memory], prompts)])[0][0]

    def track_batch(self, encoded: EncodedPatches, patch_index: int,
                    memories: Sequence[MemoryContext],
                    mask_prompts: Optional[Sequence[ArrayLike]] = None) -> List[TrackResult]:
        """Propagate several objects on one patch in one SAM2 call.

        Every object needs memory and the same :meth:`MemoryContext.signature` (ValueError).
        ``mask_prompts`` (one per object, or None) are dense decoder prompts, as
        :meth:`track`'s ``mask_prompt`` without ``as_conditioning``. Results equal per-object
        :meth:`track` calls up to float rounding.
        """
        with self._inference():
            return self._read([self._batch(encoded, patch_index, memories, mask_prompts)])[0]

    def track_groups(self, encoded: EncodedPatches, patch_index: int,
                     groups: Sequence[Tuple[Sequence[MemoryContext],
                                            Optional[Sequence[ArrayLike]]]]
                     ) -> List[List[TrackResult]]:
        """Several :meth:`track_batch` calls on one patch, read back in one copy.

        ``groups``: ``(memories, mask_prompts)`` per call; the results of each call, in order.
        The decisions that need the scores (present or not) wait until the patch's calls are
        queued, so the host waits for the device once per patch, not once per call.
        """
        with self._inference():
            return self._read([self._batch(encoded, patch_index, memories, masks)
                               for memories, masks in groups])

    def _batch(self, encoded: EncodedPatches, patch_index: int,
               memories: Sequence[MemoryContext],
               mask_prompts: Optional[Sequence[ArrayLike]]) -> PendingTrack:
        if not memories:
            raise ValueError('track_batch needs at least one object')
        if mask_prompts is not None and len(mask_prompts) != len(memories):
            raise ValueError(f'track_batch needs one mask prompt per object, got '
                             f'{len(mask_prompts)} for {len(memories)} objects')
        signatures = {m.signature() for m in memories}
        if len(signatures) != 1 or memories[0].empty:
            raise ValueError(f'track_batch objects need memory at the same distances, got '
                             f'{sorted(signatures)}')
        prompts = Prompts(prompted=False)
        if mask_prompts is not None:
            prompts.points, prompts.prev_logits = self._dense_prompts(mask_prompts)
        return self._run_track(encoded, patch_index, memories, prompts)

    # ------------------------------------------------------------------ discovery
    def discover(self, encoded: EncodedPatches, patch_index: int, points_px: np.ndarray,
                 batch: int = 64) -> Iterator[DiscoveryResult]:
        """Segment-anything on one patch, ``batch`` points per mask-decoder call.

        As ``SAM2ImagePredictor._predict`` for upstream's automatic mask generator: each point
        alone as a positive prompt, no memory (``no_mem_embed`` on the image features), all
        three multimask outputs at the decoder's resolution (the filter upsamples them). Points
        are in input-patch pixels, mapped as upstream's ``transform_coords`` does
        (``x / width * image_size``). Yields one result per batch, on the model device; logits
        are not masked by the object score (returned separately). Filtering:
        :mod:`sap_ros.engine.discovery_filter`.
        """
        model = self._sam2
        pts = np.asarray(points_px, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
            raise InvalidInputError(f'points_px must be finite (P, 2) x, y, got shape '
                                    f'{pts.shape}')
        if batch < 1:
            raise InvalidInputError(f'discovery batch must be >= 1, got {batch}')
        height, width = encoded.input_hw
        scale = np.array([self.image_size / width, self.image_size / height])
        coords = to_device(pts * scale, self.device, torch.float32)
        with self._inference():
            feats, _, sizes = self._patch_features(encoded, patch_index, 1)
            # Image features as SAM2's image predictor prepares them: no memory -> no_mem_embed.
            top = feats[-1] + model.no_mem_embed if model.directly_add_no_mem_embed else feats[-1]
            image_embed = top.permute(1, 2, 0).reshape(1, -1, *sizes[-1])
            high_res = [f.permute(1, 2, 0).reshape(1, -1, *s)
                        for f, s in zip(feats[:-1], sizes[:-1])]
            image_pe = model.sam_prompt_encoder.get_dense_pe()
        for start in range(0, coords.shape[0], batch):
            with self._inference():
                chunk = coords[start:start + batch, None, :]
                labels = torch.ones(chunk.shape[:2], dtype=torch.int32, device=self.device)
                sparse, dense = model.sam_prompt_encoder(points=(chunk, labels), boxes=None,
                                                         masks=None)
                masks, iou_pred, _, score_logits = model.sam_mask_decoder(
                    image_embeddings=image_embed, image_pe=image_pe,
                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                    multimask_output=True, repeat_image=chunk.shape[0] > 1,
                    high_res_features=high_res if model.use_high_res_features_in_sam else None)
            yield DiscoveryResult(masks.float(), iou_pred.float(),
                                  torch.sigmoid(score_logits[:, 0].float()))

    def close(self) -> None:
        """Drop the model and cached tensors and release cached CUDA memory."""
        self._model = None
        self._maskmem_pos_enc = None
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()


def _channels_first(patches: ArrayLike) -> bool:
    """A ``(N, 3, H, W)`` floating-point tensor (the torch frame path's patches)."""
    return (isinstance(patches, torch.Tensor) and patches.is_floating_point()
            and patches.dim() == 4 and patches.shape[1] == 3)
