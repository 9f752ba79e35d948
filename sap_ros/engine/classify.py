"""The classifier seam: class scores for the objects SAM2 decoded in one patch.

An object's class comes from its whole life on the sphere: every patch and frame where it was
decoded is one *sighting*, the classifier scores each sighting, and the engine fuses the scores
per object over views and frames before it publishes a class. This module holds the contract
that both sides share; implementations live beside it (the runtime's ``sam2_head``) or on the
evaluation side (the oracle classifier, which reads the ground truth).

Class ids are 1-based everywhere: ``class_id`` k names ``class_names[k - 1]``, and 0 means no
class (no classifier, or no evidence yet), in the records and in the semantic label map alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Tuple

import torch


@dataclass(frozen=True)
class Sightings:
    """The objects decoded in one patch of one frame, as one batch on the model's device.

    Attributes:
        view_index: the patch (index into the layout's views).
        object_ids: the ``N`` objects, in the order of the tensors' first dimension.
        features: ``(N, C)`` the patch's image features pooled under each object's mask at the
            decoder's resolution (``(N, 0)`` when the segmenter has no features, e.g. the
            geometric oracle).
        pointers: ``(N, C_ptr)`` SAM2's object pointers (``(N, 0)`` when there are none).
        mask_logits: ``(N, h, w)`` the objects' mask logits in the patch at the decoder's
            resolution.
        weights: ``(N,)`` how much each sighting counts in the fusion (its score times the
            view's distortion weight at the mask).

    """

    view_index: int
    object_ids: Tuple[int, ...]
    features: torch.Tensor
    pointers: torch.Tensor
    mask_logits: torch.Tensor
    weights: torch.Tensor


class Classifier(Protocol):
    """Scores sightings; never reads a tensor back to the host (no per-sighting sync)."""

    @property
    def class_names(self) -> Tuple[str, ...]:
        """The ``K`` class names; class id k (1-based) is ``class_names[k - 1]``."""

    def classify(self, sightings: Sightings) -> torch.Tensor:
        """``(N, K)`` class probabilities (rows sum to 1), on the sightings' device."""
