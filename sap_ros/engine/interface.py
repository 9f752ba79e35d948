"""The one interface between an engine and its users (the node, replay, evaluation).

:class:`~sap_ros.engine.pipeline.SapPipeline` implements it, and so does every baseline that
replay steps beside it (:class:`~sap_ros.eval.erp_baseline.Sam2ErpBaseline`), so neither the
node nor replay needs to know which engine it holds.
"""
from __future__ import annotations

from typing import Protocol, Sequence, Tuple

import numpy as np

from sap_ros.engine.memory import MemoryStats
from sap_ros.engine.types import FrameResult, Prompt


class Engine(Protocol):
    """One ERP frame in, one label map and one record per object out; not thread-safe."""

    @property
    def description(self) -> str:
        """What segments (model, device, weights, layout), for logs and reports."""

    @property
    def frame_index(self) -> int:
        """Frames processed since start or :meth:`reset`."""

    @property
    def class_names(self) -> Tuple[str, ...]:
        """The class names of the records' ``class_id`` (k names entry k - 1); () without."""

    @property
    def ids_left(self) -> int:
        """Object ids the engine can still issue before :meth:`reset` (ids are never reused)."""

    def step(self, erp_rgb: np.ndarray, prompts: Sequence[Prompt] = ()) -> FrameResult:
        """Segment one ``(H, W, 3)`` uint8 RGB ERP frame (2:1); ``prompts`` apply to it."""

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        """Queue external prompts for the next frame."""

    def memory_stats(self) -> MemoryStats:
        """Objects, entries and bytes held in memory (bounded), and the ids left."""

    def reset(self) -> None:
        """Forget all objects and memory (ids restart at 1)."""

    def close(self) -> None:
        """Free the model and device memory; the engine cannot step afterwards."""
