"""Per-pixel values that may live on the host (NumPy) or on the model device (torch).

The engine's per-pixel stages take either (:mod:`sap_ros.engine.frame_path` picks where a frame
runs); these helpers keep the few places that must mix them honest about host reads.
"""
from __future__ import annotations

from typing import Dict, Sequence, Union

import numpy as np
import torch

from sap_ros.sphere.torch_device import to_device

#: Per-pixel values of a segmenter's inputs and outputs: host arrays or device tensors.
Pixels = Union[np.ndarray, torch.Tensor]


def label_counts(labels: Pixels, ids: Sequence[int]) -> Dict[int, int]:
    """Pixels of each of ``ids`` in a label patch, read in one go."""
    if isinstance(labels, torch.Tensor):
        # Only the ids asked for, in one read: torch.bincount on CUDA reads the maximum back
        # first (to size its output), then the counts.
        wanted = to_device(list(ids), labels.device, torch.long)
        flat = labels.reshape(-1).long()
        host = (flat[None, :] == wanted[:, None]).sum(dim=1).numpy(force=True)
        return {i: int(host[k]) for k, i in enumerate(ids)}
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=max(ids) + 1)
    return {i: int(counts[i]) for i in ids}


def to_host(values: Pixels) -> np.ndarray:
    """A NumPy copy of a host or device array (a host read for a device one)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def like(values: Pixels, ref: Pixels) -> Pixels:
    """``values`` as the same kind (and device) as ``ref`` (uploads do not wait for the device)."""
    if isinstance(ref, torch.Tensor):
        if isinstance(values, torch.Tensor):
            return values if values.device == ref.device else values.to(ref.device)
        return to_device(values, ref.device, torch.bool if values.dtype == bool else torch.float32)
    return to_host(values)
