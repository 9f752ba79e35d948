"""``sap_bench parity``: batched objects and the memory bound against upstream.

* ``batched_objects``: three objects prompted (masks) on frame 0. From frame 1 on, their memories
  lie at the same distances, so the engine propagates them in one SAM2 call with batch 3
  (``Sam2Segmenter.track_many`` -> ``Sam2Adapter.track_batch``); upstream holds the three in one
  inference state. Mutation ``rotate_batch_memories``: inside the batched call each object gets
  the next one's memories.
* ``memory_bound``: an object prompted on frame 0 and corrected on six later frames, with
  ``memory.long_term`` 2, against upstream with ``max_cond_frames_in_attn`` 2 (corrected frames are
  conditioning frames: ``add_all_frames_to_correct_as_cond``). Upstream attends to the two
  conditioning frames closest in time; the unselected ones still serve as recent memories and
  pointers while they lie within ``num_maskmem - 1`` / 15 frames. Mutation
  ``keep_creation_prompt``: the engine with that option (our departure: the creation prompt stays
  a conditioning memory past the bound), the behaviour before the engine followed upstream here.
* ``memory_short_term`` (reported, not gating): ``memory.short_term`` 3 against upstream with
  ``num_maskmem`` 4, whose temporal encodings are the 7-slot model's for the same distances
  (:func:`~sap_ros.bench.parity_runs.build_predictor`). The engine's model keeps 7 slots, so a
  step 4-6 back can give neither a memory nor its pointer (SAM2 reads a memory from every entry
  that close); upstream with 4 slots reads those pointers. The row measures that departure.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator, List, Optional, Sequence

import numpy as np

from sap_ros.bench.parity_runs import (
    BATCH_MUTATIONS,
    MUTATIONS,
    Comparison,
    Event,
    MutatedSegmenter,
    Scenario,
    Setup,
    build_predictor,
    count_batches,
    decoded_frames,
    run_engine,
    run_upstream,
)
from sap_ros.config import MemoryConfig

#: Scenario names of this module, in report order.
SCENARIOS = ('batched_objects', 'memory_bound')
#: Reported departures of this module (not gating).
DEPARTURES = ('memory_short_term',)
#: Mutations of the engine's memory configuration.
CONFIG_MUTATIONS = ('keep_creation_prompt',)
#: Mutations each scenario must fail.
SCENARIO_MUTATIONS = {'batched_objects': MUTATIONS + BATCH_MUTATIONS,
                      'memory_bound': MUTATIONS + CONFIG_MUTATIONS}
LONG_TERM = 2
SHORT_TERM = 3


def _disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def batched_scenario(frames: List[np.ndarray]) -> Scenario:
    """Three objects prompted by masks on frame 0."""
    s = frames[0].shape[0]
    return Scenario('batched_objects', frames, [
        Event(0, 1, mask=_disc(s, s * 0.4, s * 0.5, s * 0.18)),
        Event(0, 2, mask=_disc(s, s * 0.7, s * 0.3, s * 0.12)),
        Event(0, 3, mask=_disc(s, s * 0.75, s * 0.75, s * 0.1))])


def bound_scenario(frames: List[np.ndarray], name: str = 'memory_bound') -> Scenario:
    """A mask on frame 0, then a positive and a negative click every third frame (3 .. 18)."""
    s = frames[0].shape[0]
    events = [Event(0, 1, mask=_disc(s, s * 0.4, s * 0.5, s * 0.18))]
    for j, k in enumerate(range(3, min(len(frames), 19), 3)):
        dx = 0.05 * (j % 3)
        events.append(Event(k, 1, points=np.array([[s * (0.4 + dx), s * 0.5],
                                                   [s * (0.85 - dx), s * 0.8]]),
                            labels=np.array([1, 0]), correction=True))
    return Scenario(name, frames, events)


def comparisons(setup: Setup, only: Optional[Sequence[str]] = None) -> Iterator[Comparison]:
    """Every run of this module (those named in ``only``): scenarios, mutations, departure."""
    memory = MemoryConfig(max_objects=8)
    bounded = MemoryConfig(max_objects=8, long_term=LONG_TERM)
    short = MemoryConfig(max_objects=8, short_term=SHORT_TERM)
    plans = [(batched_scenario(setup.frames), setup.predictor, memory, True),
             (bound_scenario(setup.frames), None, bounded, True),
             (Scenario('memory_short_term', setup.frames, bound_scenario(setup.frames).events[:1]),
              None, short, False)]
    for scenario, predictor, config, gating in plans:
        if only is not None and scenario.name not in only:
            continue
        if predictor is None:
            setup.say(f'{scenario.name}: building upstream with the matching bound')
            overrides = ({'max_cond_frames_in_attn': LONG_TERM} if config.long_term == LONG_TERM
                         else {'num_maskmem': SHORT_TERM + 1})
            predictor = build_predictor(setup.segmenter, setup.present_bias, **overrides)
        folder = setup.folder / scenario.name
        folder.mkdir()
        setup.say(f'{scenario.name}: upstream SAM2VideoPredictor')
        theirs = run_upstream(predictor, scenario, folder)
        scenario = Scenario(scenario.name, decoded_frames(folder, len(scenario.frames)),
                            scenario.events)
        mutations = SCENARIO_MUTATIONS.get(scenario.name, ()) if gating else ()
        for mutation in ('none',) + tuple(m for m in mutations if m in setup.mutations):
            setup.say(f'{scenario.name}: engine' + ('' if mutation == 'none'
                                                    else f' with {mutation}'))
            engine = (setup.segmenter if mutation in ('none',) + CONFIG_MUTATIONS
                      else MutatedSegmenter(setup.segmenter, mutation))
            engine_config = (replace(config, keep_creation_prompt=True)
                             if mutation == 'keep_creation_prompt' else config)
            with count_batches(engine) as batches:
                ours = run_engine(engine, scenario, engine_config)
            yield Comparison(scenario.name, mutation, ours, theirs, len(scenario.frames),
                             list(batches), gating)
