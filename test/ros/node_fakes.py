"""Test helpers: a controllable stand-in pipeline (an ``Engine``) and an in-process ``SapNode``.

The node runs in the test process on its own executor thread and is reached over real DDS by a
:class:`~ros_probe.Probe`; only the pipeline is a stand-in, so the tests need no model and every
timing is in the test's hands (a frame blocks on :attr:`FakeFactory.gate` until released).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
import itertools
import os
import threading
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_probe import Probe, erp_frame

from sap_ros.engine.memory import MemoryStats
from sap_ros.engine.types import FrameResult, ObjectRecord, Prompt
from sap_ros.ros.node import SapNode

SUCCESS = TransitionCallbackReturn.SUCCESS
_names = itertools.count()


@dataclass
class FakePipeline:
    """Labels one block of every frame as object 1; records what it was given and when.

    With ``class_names`` it also stands in for a classifier: object 1 is of the last class
    (score 0.75) and results carry the semantic map, as SapPipeline's do with one configured.
    ``events`` lists ``step``, ``reset`` and ``close`` in the order they happened. A frame waits
    on ``gate`` (set = go), so a test decides how long it lasts; ``on_step`` runs inside it.
    """

    scale: float
    gate: Optional[threading.Event] = None
    fail_next: Optional[BaseException] = None
    on_step: Optional[Callable[[], None]] = None
    pipeline_ms: float = 1.0
    frame_markers: List[int] = field(default_factory=list)
    prompts: List[Sequence[Prompt]] = field(default_factory=list)
    events: List[str] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    description: str = 'fake pipeline'
    ids_left: int = 65535
    class_names: Tuple[str, ...] = ()

    @property
    def resets(self) -> int:
        return self.events.count('reset')

    @property
    def closed(self) -> bool:
        return 'close' in self.events

    @property
    def frame_index(self) -> int:
        return len(self.frame_markers)

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        self.prompts.append(list(prompts))

    def step(self, erp_rgb: np.ndarray, prompts: Sequence[Prompt] = ()) -> FrameResult:
        assert not self.closed, 'step after close'
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(120.0)
        if self.on_step is not None:
            self.on_step()
        self.events.append('step')
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.frame_markers.append(int(erp_rgb[0, 0, 0]))
        self.prompts.append(list(prompts))
        height, width = erp_rgb.shape[:2]
        labels = np.zeros((round(height * self.scale), round(width * self.scale)), np.uint16)
        labels[: labels.shape[0] // 2, : labels.shape[1] // 4] = 1
        obj = ObjectRecord(id=1, bearing=np.array([0.0, 1.0, 0.0]), lon_deg=-90.0, lat_deg=0.0,
                            width_deg=90.0, height_deg=90.0, solid_angle_sr=1.0,
                            area_px=int((labels == 1).sum()), score=0.9, age_frames=0,
                            frames_since_seen=0)
        semantic = None
        if self.class_names:
            class_id = len(self.class_names)
            obj = dataclasses.replace(obj, class_id=class_id, class_name=self.class_names[-1],
                                      class_score=0.75)
            semantic = np.where(labels == 1, class_id, 0).astype(np.uint16)
        return FrameResult(labels, [obj], len(self.frame_markers) - 1,
                           {'total': self.pipeline_ms}, semantic=semantic)

    def reset(self) -> None:
        self.events.append('reset')

    def close(self) -> None:
        self.events.append('close')

    def memory_stats(self) -> MemoryStats:
        return MemoryStats(objects=1, entries=3, bytes=1000, recent=2, conditioning=1,
                           ids_left=self.ids_left)


class FakeFactory:
    """Pipeline factory that remembers what it built (or raises ``error``).

    ``gate`` starts open; clear it to hold every frame inside the pipeline until it is set.
    """

    def __init__(self, error: Optional[Exception] = None,
                 class_names: Tuple[str, ...] = ()) -> None:
        self.error = error
        self.class_names = class_names
        self.built: List[FakePipeline] = []
        self.gate = threading.Event()
        self.gate.set()
        self.on_step: Optional[Callable[[], None]] = None
        self.pipeline_ms = 1.0

    def __call__(self, config) -> FakePipeline:
        if self.error is not None:
            raise self.error
        self.built.append(FakePipeline(config.output.scale, gate=self.gate,
                                       on_step=self.on_step, pipeline_ms=self.pipeline_ms,
                                       class_names=self.class_names))
        return self.built[-1]


def make_node(context, factory, namespace: str = '', clock: Optional[Callable[[], float]] = None,
              **params) -> SapNode:
    """An unconfigured in-process node (random weights allowed, CPU) with ``params`` set."""
    overrides = {'model.allow_random_weights': True, 'model.device': 'cpu', **params}
    extra = {} if clock is None else {'clock': clock}
    namespace = namespace or f'/unit{os.getpid()}_{next(_names)}'  # unique across processes
    return SapNode(factory, context=context, namespace=namespace,
                   parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
                   **extra)


@dataclass
class Running:
    """A configured and active in-process node, the probe that talks to it and its factory."""

    node: SapNode
    probe: Probe
    factory: FakeFactory

    @property
    def pipeline(self) -> FakePipeline:
        return self.factory.built[-1]


def run_node(context, factory: Optional[Callable] = None,
             clock: Optional[Callable[[], float]] = None, **params) -> Iterator[Running]:
    """Generator for fixtures: configure + activate, spin, yield, then tear everything down."""
    factory = FakeFactory() if factory is None else factory
    node = make_node(context, factory, clock=clock, **params)
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == SUCCESS
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    probe = Probe(context, namespace=node.get_namespace(),
                  probe_name=f'probe{os.getpid()}_{next(_names)}')
    probe.wait_subscribed(probe.image_pub)
    try:
        yield Running(node, probe, factory)
    finally:
        if isinstance(factory, FakeFactory):
            factory.gate.set()
        probe.close()
        executor.shutdown()
        node.release()
        node.destroy_node()


#: ``with running_node(context, factory, **params) as running:`` for tests with their own setup.
running_node = contextlib.contextmanager(run_node)


class FakeClock:
    """A clock (seconds) that only moves when told to."""

    def __init__(self, start_s: float = 100.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def marked_frame(marker: int, height: int = 64) -> np.ndarray:
    """A small ERP frame whose first pixel carries ``marker`` (the stand-in records it)."""
    frame = erp_frame(height)
    frame[0, 0, 0] = marker
    return frame
