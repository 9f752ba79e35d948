"""The oracle classifier: each sighting's class read from semantic ground truth (evaluation only).

The classifier seam's (``sap_ros.engine.classify``) upper bound, as the geometric oracle is the
segmenter's: with :class:`~sap_ros.eval.oracle_segmenter.OracleSegmenter` and this classifier,
the pipeline's semantic map measures the class fusion and publication alone, not a network.

For every sighting it answers a one-hot row: the class that holds most of the sighting's mask in
its patch. The semantic ground truth is cut into the patch as the oracle segmenter cuts its
labels (nearest sampling at ``size_px``, :func:`~sap_ros.sphere.sampler.extract_patches`), then
reduced to the decoder's resolution as class shares per decoder pixel (area average, as
:class:`~sap_ros.eval.oracle.GeometricOracle` builds its soft masks); a class's weight under a
mask is the sum of its shares over the mask's pixels (logit > 0; a mask with no such pixel uses
its highest-logit pixels). Class 0 ("none") and ``ignore`` pixels never win: a mask that covers
no class at all gets the uniform row ``1 / K`` (no evidence). All of this runs on the
sightings' device, without a host read; the shares of a patch are computed once per frame.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from sap_ros.engine.classify import Sightings
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import validate_erp_shape
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches


class OracleClassifier:
    """One-hot of the majority ground-truth class under each sighting's mask (module docstring).

    Args:
        layout: the pipeline's patch layout (``Sightings.view_index`` indexes its views).
        size_px: the patch side the oracle segmenter cuts (default: the layout's).
        class_names: the ``K`` classes; class id k (1-based) is ``class_names[k - 1]``.
        ignore: a ground-truth value meaning "unknown" (e.g. 255), never a class; None: none.

    Call :meth:`set_ground_truth` with the frame's ERP class map before each pipeline step.

    """

    def __init__(self, layout: PatchLayout, size_px: Optional[int] = None,
                 class_names: Sequence[str] = (), ignore: Optional[int] = None) -> None:
        """Check the class names; no ground truth yet."""
        self._names = tuple(str(n) for n in class_names)
        if not self._names:
            raise InvalidInputError('OracleClassifier needs at least one class name')
        self.layout = layout
        self.size_px = int(size_px or layout.size_px)
        self.ignore = ignore
        self.description = (f'oracle classifier ({len(self._names)} classes from semantic '
                            'ground truth)')
        self._gt: Optional[np.ndarray] = None
        self._shares: Dict[Tuple[int, int, int, str], torch.Tensor] = {}

    @property
    def class_names(self) -> Tuple[str, ...]:
        """The ``K`` class names."""
        return self._names

    def set_ground_truth(self, semantic_erp: np.ndarray) -> None:
        """The ERP class map of the next frame (uint8/uint16 class ids, 0 = none)."""
        gt = np.asarray(semantic_erp)
        if gt.ndim != 2 or not np.issubdtype(gt.dtype, np.integer):
            raise InvalidInputError(f'semantic ground truth must be an (H, W) integer class '
                                    f'map, got {gt.shape} {gt.dtype}')
        validate_erp_shape(gt.shape)
        known = gt if self.ignore is None else gt[gt != self.ignore]
        k = len(self._names)
        if known.size and (int(known.min()) < 0 or int(known.max()) > k):
            raise InvalidInputError(
                f'semantic ground truth holds class id {int(known.max())}, outside 0..{k} '
                f'(the {k} class names of the oracle classifier)')
        self._gt = gt.astype(np.int32)
        self._shares = {}

    def _view_shares(self, view_index: int, hw: Tuple[int, int],
                     device: torch.device) -> torch.Tensor:
        """``(h * w, K)`` share of each class in each decoder pixel of the view's patch."""
        key = (int(view_index), hw[0], hw[1], str(device))
        cached = self._shares.get(key)
        if cached is not None:
            return cached
        assert self._gt is not None
        patch = extract_patches(self.layout, self._gt, self.size_px, views=[int(view_index)],
                                interpolation=cv2.INTER_NEAREST)[0]
        h, w = hw
        shares = np.zeros((h * w, len(self._names)), dtype=np.float32)
        for value in np.unique(patch).tolist():
            if value == 0 or value == self.ignore:
                continue
            plane = cv2.resize((patch == value).astype(np.float32), (w, h),
                               interpolation=cv2.INTER_AREA)
            shares[:, value - 1] = plane.reshape(-1)
        tensor = torch.from_numpy(shares).to(device)
        self._shares[key] = tensor
        return tensor

    def classify(self, sightings: Sightings) -> torch.Tensor:
        """``(N, K)`` one-hot rows (uniform where the mask covers no class), on their device."""
        if self._gt is None:
            raise RuntimeError('OracleClassifier needs set_ground_truth() before each frame')
        logits = sightings.mask_logits
        n, k = int(logits.shape[0]), len(self._names)
        if n == 0:
            return torch.zeros((0, k), dtype=torch.float32, device=logits.device)
        h, w = int(logits.shape[-2]), int(logits.shape[-1])
        shares = self._view_shares(sightings.view_index, (h, w), logits.device)
        flat = logits.reshape(n, h * w).float()
        mask = (flat > 0).float()
        peak = (flat == flat.max(dim=1, keepdim=True).values).float()
        mask = torch.where(mask.sum(dim=1, keepdim=True) > 0, mask, peak)
        votes = mask @ shares                                    # (N, K)
        one_hot = torch.nn.functional.one_hot(votes.argmax(dim=1), k).float()
        uniform = torch.full_like(one_hot, 1.0 / k)
        return torch.where(votes.max(dim=1, keepdim=True).values > 0, one_hot, uniform)
