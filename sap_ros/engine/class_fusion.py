"""Class fusion: each object's class evidence over all its sightings, and the published class.

Per object an evidence vector ``e`` (``K`` classes) lives on the model's device: every sighting
adds ``weight x probabilities`` (its weight: the sighting's score times the view's distortion
weight at the mask, :mod:`sap_ros.engine.class_stage`), over every patch and frame of the
object's life. Once per frame the published class is decided on the device:

* an object without a class takes ``argmax e`` as soon as it has evidence;
* afterwards the class changes only when another class's evidence exceeds the current one's by
  ``classifier.switch_margin`` x the object's total evidence (hysteresis: a minority of
  conflicting sightings never flips it, a sustained majority does);
* the class score is the published class's evidence / the total (its share).

A merge adds the dropped object's evidence to the kept one's; a retired object's evidence is
dropped. The published classes reach the host inside the frame's one download
(:meth:`ClassFusion.on_device`) or, on the host frame path, in one read (:meth:`on_host`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.torch_device import canonical_device, to_device

_MAX_ID = 65535  # the label map's largest id (uint16)


def moved(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` on ``device`` as ``dtype``; no ``.to(device)`` call when it is there already.

    (A device tensor stays where it is; ``sap_bench``'s host-read counter, which counts every
    ``.to('cpu')`` so that a CPU run shows what would wait on CUDA, then sees no read.)
    """
    if tensor.device != device:
        tensor = tensor.to(device)
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


@dataclass(frozen=True)
class ClassFrame:
    """One frame's published classes on the host.

    Attributes:
        semantic: ``(H, W)`` uint16 class ids of the label map's pixels (0 = none).
        by_id: object id -> ``(class_id, class_score)`` for the ids the frame asked for.

    """

    semantic: np.ndarray
    by_id: Dict[int, Tuple[int, float]]

    def class_of(self, object_id: int) -> int:
        """The published class id of ``object_id`` (0 when it has none)."""
        return self.by_id.get(int(object_id), (0, 0.0))[0]


class ClassFusion:
    """Evidence per object on ``device`` and the hysteresis rule (module docstring)."""

    def __init__(self, n_classes: int, switch_margin: float,
                 device: Union[str, torch.device] = 'cpu') -> None:
        """Empty evidence for ``n_classes`` classes."""
        if n_classes < 1:
            raise InvalidInputError(f'a classifier needs >= 1 class, got {n_classes}')
        if not 0.0 <= switch_margin <= 1.0:
            raise InvalidInputError(f'switch_margin must be in [0, 1], got {switch_margin}')
        self.n_classes = int(n_classes)
        self.switch_margin = float(switch_margin)
        self.device = canonical_device(device)
        self._rows: Dict[int, int] = {}
        self._free: List[int] = []
        self._evidence = torch.zeros((0, self.n_classes), dtype=torch.float32,
                                     device=self.device)
        self._current = torch.zeros(0, dtype=torch.long, device=self.device)  # 1-based, 0 none

    # ------------------------------------------------------------------ evidence
    def _row(self, object_id: int) -> int:
        row = self._rows.get(object_id)
        if row is not None:
            return row
        if not self._free:
            old = self._evidence.shape[0]
            grown = max(16, 2 * old)
            self._evidence = torch.cat([self._evidence, self._evidence.new_zeros(
                (grown - old, self.n_classes))])
            self._current = torch.cat([self._current, self._current.new_zeros(grown - old)])
            self._free = list(range(grown - 1, old - 1, -1))
        row = self._rows[object_id] = self._free.pop()
        return row

    def add(self, object_ids: Sequence[int], probabilities: torch.Tensor,
            weights: torch.Tensor) -> None:
        """Add ``weights[i] x probabilities[i]`` to object ``object_ids[i]`` (no host read)."""
        n = len(object_ids)
        if tuple(probabilities.shape) != (n, self.n_classes) or tuple(weights.shape) != (n,):
            raise InvalidInputError(f'{n} sightings need ({n}, {self.n_classes}) probabilities '
                                    f'and ({n},) weights, got {tuple(probabilities.shape)} and '
                                    f'{tuple(weights.shape)}')
        if not n:
            return
        rows = to_device([self._row(int(i)) for i in object_ids], self.device, torch.long)
        votes = (moved(probabilities, self.device, torch.float32)
                 * moved(weights, self.device, torch.float32)[:, None])
        self._evidence.index_add_(0, rows, votes)

    def merge(self, keep: int, drop: int) -> None:
        """``drop`` became ``keep``: its evidence joins ``keep``'s.

        ``keep``'s published class is decided anew, on the sum, at the next :meth:`decide`.
        """
        row = self._rows.get(drop)
        if row is None:
            return
        kept = self._row(keep)  # first: it may grow the tensors
        self._evidence[kept] += self._evidence[row]
        self.forget(drop)

    def forget(self, object_id: int) -> None:
        """Drop a retired object's evidence and class."""
        row = self._rows.pop(object_id, None)
        if row is not None:
            self._evidence[row] = 0.0
            self._current[row] = 0
            self._free.append(row)

    def reset(self) -> None:
        """Forget every object."""
        for object_id in list(self._rows):
            self.forget(object_id)

    # ------------------------------------------------------------------ decision
    def decide(self) -> None:
        """Update every object's published class with the hysteresis rule (on the device)."""
        if not self._rows:
            return
        evidence, current = self._evidence, self._current
        total = evidence.sum(dim=1)
        best_value, best = evidence.max(dim=1)
        now = evidence.gather(1, (current - 1).clamp(min=0)[:, None])[:, 0]
        first = (current == 0) & (total > 0)
        switch = (current > 0) & (best_value > now + self.switch_margin * total)
        self._current = torch.where(first | switch, best + 1, current)

    def _table(self, ids: Sequence[int]) -> torch.Tensor:
        """``(len(ids), 2)`` float64 on the device: class id and class score per id."""
        rows = [self._rows.get(int(i), -1) for i in ids]
        known = to_device([r >= 0 for r in rows], self.device, torch.bool)
        index = to_device([max(r, 0) for r in rows], self.device, torch.long)
        if not self._rows:
            return torch.zeros((len(ids), 2), dtype=torch.float64, device=self.device)
        current = torch.where(known, self._current[index], 0)
        evidence = self._evidence[index].double()
        share = (evidence.gather(1, (current - 1).clamp(min=0)[:, None])[:, 0]
                 / evidence.sum(dim=1).clamp(min=1e-30))
        share = torch.where(current > 0, share, 0.0)
        return torch.stack([current.double(), share], dim=1)

    def on_device(self, labels: torch.Tensor, ids: Sequence[int]
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Decide, then the semantic map of ``labels`` and the class table of ``ids``.

        Both stay on the device for the frame's one download: ``(H, W)`` int32 class ids (ids
        not in ``ids`` get 0) and ``(len(ids), 2)`` float64 (class id, class score).
        """
        self.decide()
        table = self._table(ids)
        lut = torch.zeros(_MAX_ID + 1, dtype=torch.int32, device=labels.device)
        if len(ids):
            lut[to_device(list(ids), labels.device, torch.long)] = moved(
                table[:, 0], labels.device, torch.int32)
        return lut[labels.long().clamp(0, _MAX_ID)], table

    def on_host(self, labels: np.ndarray, ids: Sequence[int]) -> ClassFrame:
        """Decide, then the frame's classes on the host (one read of the class table)."""
        self.decide()
        table = self._table(ids).cpu().numpy()
        return frame_classes(labels, ids, table)


def frame_classes(labels: np.ndarray, ids: Sequence[int], table: np.ndarray,
                  semantic: Optional[np.ndarray] = None) -> ClassFrame:
    """A :class:`ClassFrame` from a host class table (and the semantic map, when downloaded)."""
    by_id = {int(i): (int(row[0]), float(row[1])) for i, row in zip(ids, table)}
    if semantic is None:
        lut = np.zeros(_MAX_ID + 1, dtype=np.uint16)
        for object_id, (class_id, _) in by_id.items():
            lut[object_id] = class_id
        semantic = lut[labels]
    return ClassFrame(semantic.astype(np.uint16, copy=False), by_id)
