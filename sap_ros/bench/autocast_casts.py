"""``sap_bench engine``, part casts: weight casts of one SAM2 call under bf16 autocast.

Autocast keeps the low-precision copy of each weight until its outermost context exits. Entered
per SAM2 call, every call casts every weight it touches again (hundreds of tiny kernels);
upstream keeps one context around its whole propagation loop. The engine enters one segmenter
session per frame (:func:`sap_ros.engine.segmenter.session`). This part counts
``aten::_to_copy`` ops with the torch profiler for the same tracking call (one object, memory of
two earlier steps) made three ways:

* ``own``: the call alone, in its own context (what every call paid before the frame session);
* ``session``: inside the segmenter's session, after another call of the session (the engine);
* ``outer``: inside one outer ``torch.no_grad()`` + ``torch.autocast`` context that the caller
  holds, after another call in it (upstream's way).

On the CPU the engine runs float32 (``model.dtype`` falls back), so this part forces bf16 CPU
autocast on its own adapter to count; casts do not depend on the device.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np
import torch

from sap_ros.config import ModelConfig
from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.segmenter import Sam2Segmenter

CAST_OP = 'aten::_to_copy'


def count_ops(fn: Callable[[], Any], name: str = CAST_OP) -> int:
    """How many ``name`` ops the torch profiler records while ``fn()`` runs (CPU activity)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for event in prof.events() if event.name == name)


def _memory_of(segmenter: Sam2Segmenter) -> MemoryContext:
    """A created object's memory context two steps on (a conditioning and a recent memory)."""
    side = segmenter.low_res_px * 4
    mask = np.zeros((side, side), bool)
    mask[side // 4:side // 2, side // 4:side // 2] = True
    created = segmenter.track(0, MemoryContext(), mask_prompt=mask, as_conditioning=True)
    tracked = segmenter.track(0, MemoryContext(cond=(created.memory,), cond_ago=(2,)))
    return MemoryContext(cond=(created.memory,), cond_ago=(2,), recent=(tracked.memory,),
                         recent_ago=(1,))


def measure_casts(model: ModelConfig, image_size: int) -> Dict[str, Any]:
    """``weight_casts_per_sam2_call`` (session), ``..._outer`` and ``..._own_context``."""
    config = ModelConfig(**{**{f: getattr(model, f) for f in model.__dataclass_fields__},
                            'device': 'cpu', 'image_size': image_size,
                            'compile_image_encoder': False})
    segmenter = Sam2Segmenter(config, device_outputs=True)
    adapter = segmenter.adapter
    adapter.autocast_dtype = torch.bfloat16  # the CUDA setting, counted on the CPU
    rng = np.random.default_rng(0)
    segmenter.begin_frame(rng.integers(0, 255, (2, image_size, image_size, 3), np.uint8),
                          np.zeros((4, 8, 3), np.uint8))
    memory = _memory_of(segmenter)

    def call() -> Any:
        return segmenter.track(1, memory)

    call()
    own = count_ops(call)
    with segmenter.session():
        call()
        session = count_ops(call)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        call()
        outer = count_ops(call)
    segmenter.close()
    return dict(weight_casts_per_sam2_call=session, weight_casts_per_sam2_call_outer=outer,
                weight_casts_per_sam2_call_own_context=own,
                weight_casts_ratio=session / max(outer, 1))
