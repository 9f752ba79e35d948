"""Which frame path runs where, and host -> device uploads that do not stall the device queue.

Two implementations of the non-network part of a frame (sampling the patches, fusing the logits,
object extents and pointers) share one geometry (the tables of ``sampler.py`` / ``geometry.py``):

* ``numpy``: cv2 remap and NumPy gathers on the host. Faster on a CPU (cv2's fixed-point remap
  beats ``grid_sample``; see ``sap_bench engine``'s ``nonnetwork_ms``).
* ``torch``: everything on the model's device; the frame is uploaded once as uint8 and one
  device-to-host copy brings back the label map and the object table.

:func:`choose_frame_path` picks per device. :func:`to_device` uploads small host tables (object
ids, lookup tables) without a host synchronisation: a plain ``tensor.to('cuda')`` from pageable
memory waits for the whole queue (``cudaStreamSynchronize``), one from pinned memory with
``non_blocking=True`` does not.
"""
from __future__ import annotations

import contextlib
from enum import Enum
from typing import Any, ContextManager, Sequence, Union

import numpy as np
import torch

from sap_ros.errors import ConfigError, InvalidInputError


class FramePathKind(Enum):
    """Implementation of the non-network part of a frame (module docstring)."""

    NUMPY = 'numpy'
    TORCH = 'torch'


def choose_frame_path(device: Union[str, torch.device]) -> FramePathKind:
    """The faster path for a torch device: ``torch`` on CUDA, ``numpy`` elsewhere (CPU, MPS).

    MPS stays on NumPy until it is measured (``grid_sample`` bicubic is missing on some MPS
    builds).

    >>> choose_frame_path('cuda:0'), choose_frame_path('cpu')
    (<FramePathKind.TORCH: 'torch'>, <FramePathKind.NUMPY: 'numpy'>)
    """
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise InvalidInputError(f'not a torch device: {device!r} ({err})') from None
    return FramePathKind.TORCH if kind == 'cuda' else FramePathKind.NUMPY


def to_device(values: Union[np.ndarray, Sequence[int], Sequence[float]],
              device: Union[str, torch.device], dtype: torch.dtype) -> torch.Tensor:
    """A host array (or list) as a tensor on ``device``, uploaded without a host sync on CUDA.

    On CUDA the values go through pinned memory with ``non_blocking=True`` (PyTorch's caching
    host allocator keeps the pinned block alive until the copy is done); on the CPU this is a
    plain conversion.
    """
    host = torch.as_tensor(np.asarray(values), dtype=dtype)
    target = torch.device(device)
    if target.type == 'cpu':
        return host
    if target.type != 'cuda':
        return host.to(target)
    return host.pin_memory().to(target, non_blocking=True)


def canonical_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` with its index: ``cuda`` becomes the current CUDA device.

    Caches keyed by it hold one entry for ``cuda`` and ``cuda:0``, not two.

    >>> canonical_device('cpu')
    device(type='cpu')
    """
    target = torch.device(device)
    if target.type == 'cuda' and target.index is None:
        return torch.device('cuda', torch.cuda.current_device())
    return target


def current_device(device: Union[str, torch.device]) -> ContextManager[Any]:
    """``device`` as the current CUDA device while the block runs (a no-op off CUDA).

    CUDA events, streams and ``"cuda"`` tensors without an index go to the current device; the
    engine makes the model's device current around a frame, so ``cuda:1`` works as ``cuda:0``.
    """
    target = torch.device(device)
    return torch.cuda.device(target) if target.type == 'cuda' else contextlib.nullcontext()


def resolve_device(name: str) -> torch.device:
    """Map ``model.device`` to a torch device; ConfigError('model.device') if unusable."""
    if name == 'auto':
        if torch.cuda.is_available():
            return torch.device('cuda', torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device('mps')
        return torch.device('cpu')
    if name == 'cpu':
        return torch.device('cpu')
    if name == 'mps':
        if not torch.backends.mps.is_available():
            raise ConfigError('model.device', "'mps' requested but MPS is not available")
        return torch.device('mps')
    if name == 'cuda' or (name.startswith('cuda:') and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError('model.device', f'{name!r} requested but CUDA is not available '
                              f'(torch {torch.__version__}); use auto or cpu')
        index = int(name[5:]) if ':' in name else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError('model.device', f'{name!r} requested but only {count} CUDA '
                              f'device(s) are visible')
        return torch.device('cuda', index)
    raise ConfigError('model.device', f'must be auto|cpu|cuda|cuda:N|mps, got {name!r}')
