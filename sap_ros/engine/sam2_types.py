"""Typed values of :class:`~sap_ros.engine.sam2_adapter.Sam2Adapter`: memories, results, features.

Only :mod:`sap_ros.engine.sam2_adapter` builds them; the engine treats memories as opaque.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch


def _tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Prompts:
    """What a step gives SAM2 besides memory (all optional) and whether it is a prompted step."""

    prompted: bool
    points: Optional[Dict[str, torch.Tensor]] = None
    mask: Optional[torch.Tensor] = None
    prev_logits: Optional[torch.Tensor] = None


@dataclass
class MemoryPayload:
    """One memory entry of one object (stored opaquely by the engine's memory bank).

    ``maskmem_pos_enc`` depends only on ``image_size``: all payloads of an adapter share one
    tensor, so :attr:`nbytes` does not count it.
    """

    maskmem_features: torch.Tensor     # [1, C_mem, h, w], bfloat16 (as upstream stores it)
    maskmem_pos_enc: torch.Tensor      # [1, C_mem, h, w], shared
    obj_ptr: torch.Tensor              # [1, 256] float32
    object_score_logits: torch.Tensor  # [1, 1] float32

    @property
    def nbytes(self) -> int:
        """Bytes held by this entry alone (the shared positional encoding excluded)."""
        return _tensor_bytes(self.maskmem_features, self.obj_ptr, self.object_score_logits)


@dataclass
class TrackResult:
    """Output of one memory-conditioned step for one object on one patch."""

    low_res_logits: torch.Tensor  # [h4, w4] float32 mask logits at image_size / 4
    iou: float                    # predicted IoU of the chosen mask
    object_score: float           # sigmoid of SAM2's object-present logit, in [0, 1]
    obj_ptr: np.ndarray           # (256,) float32, raw (not normalised)
    memory: MemoryPayload         # the memory encoded from this output
    nonempty: bool                # some logit is > 0 (read with the scores, one copy per call)


@dataclass
class PendingTrack:
    """One SAM2 call's outputs on the device, before the scores are read back.

    ``scalars`` ``[B, 3 + 256]`` float32: max predicted IoU, object score, any logit > 0, the
    object pointer; ``low_res`` ``[B, h4, w4]`` float32 logits; one memory per object.
    """

    scalars: torch.Tensor
    low_res: torch.Tensor
    memories: List[MemoryPayload]


@dataclass
class EncodedPatches:
    """Image-encoder outputs of N patches, kept on the model device.

    ``backbone_fpn`` are SAM2's three feature levels, finest first, with the decoder's high-res
    projections already applied (as ``forward_image`` returns them). The positional encodings do
    not depend on the image, so one copy (batch 1) serves every patch.
    """

    backbone_fpn: List[torch.Tensor]    # per level [N, C_l, H_l, W_l]
    vision_pos_enc: List[torch.Tensor]  # per level [1, C, H_l, W_l]
    input_hw: Tuple[int, int]           # (height, width) of the input patches, pixels

    def __len__(self) -> int:
        return int(self.backbone_fpn[0].shape[0])

    def __getitem__(self, index: Union[int, slice]) -> 'EncodedPatches':
        """The patches ``index`` selects, as a new EncodedPatches (views, no copy)."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f'patch {index} out of range for {len(self)} patches')
            index = slice(index, index + 1 if index != -1 else None)
        return EncodedPatches([f[index] for f in self.backbone_fpn], self.vision_pos_enc,
                              self.input_hw)

    @property
    def nbytes(self) -> int:
        """Bytes held by the features (positional encodings included once)."""
        return _tensor_bytes(*self.backbone_fpn, *self.vision_pos_enc)


@dataclass
class DiscoveryResult:
    """One batch of :meth:`Sam2Adapter.discover`: every multimask output of every point."""

    low_res_logits: torch.Tensor  # [B, M, h4, w4] float32, M = 3 (multimask output)
    iou: torch.Tensor             # [B, M] predicted IoU of each mask
    object_score: torch.Tensor    # [B] sigmoid object score (not used by the filter, as upstream)
