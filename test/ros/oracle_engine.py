"""Test helper: the real pipeline behind the node, with the geometric oracle in place of SAM2.

Every frame is the same synthetic scene of caps on the sphere, whose ground truth the oracle
answers from, so objects are really created, tracked, remembered and forgotten.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import numpy as np

from sap_ros.bench.probes import cap_scene
from sap_ros.config import PipelineConfig
from sap_ros.engine.interface import Engine
from sap_ros.engine.memory import MemoryStats
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.types import FrameResult, Prompt
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.layout import PatchLayout


class OracleEngine:
    """:class:`SapPipeline` with an :class:`OracleSegmenter` fed the scene's ground truth."""

    def __init__(self, config: PipelineConfig, gt: np.ndarray) -> None:
        self._oracle = OracleSegmenter(PatchLayout.from_config(config.patches))
        self._pipeline = SapPipeline(config, segmenter=self._oracle)
        self._gt = gt
        self.description = 'SapPipeline with the geometric oracle'

    @property
    def frame_index(self) -> int:
        return self._pipeline.frame_index

    @property
    def ids_left(self) -> int:
        return self._pipeline.ids_left

    def step(self, erp_rgb: np.ndarray, prompts: Sequence[Prompt] = ()) -> FrameResult:
        self._oracle.set_ground_truth(self._gt)
        return self._pipeline.step(erp_rgb, prompts)

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        self._pipeline.add_prompts(prompts)

    def memory_stats(self) -> MemoryStats:
        return self._pipeline.memory_stats()

    def reset(self) -> None:
        self._pipeline.reset()

    def close(self) -> None:
        self._pipeline.close()


def oracle_engine_factory(caps: int, width: int
                          ) -> Tuple[Callable[[PipelineConfig], Engine], np.ndarray]:
    """A node pipeline factory and the RGB frame whose ground truth it knows."""
    rgb, gt = cap_scene(caps, 15.0, width)
    return (lambda config: OracleEngine(config, gt)), rgb
