"""Held-out patch IoU of a ``SAM2Train`` model (``sap_train eval`` and the evaluations of fit).

- **one click, best of 3**: each chosen patch alone, one click at the centre of each object
  (upstream's ``pt_sampling_for_eval: center``), before any correction click; the IoU of the
  best of SAM2's three candidate masks with the ground truth, averaged over objects.
- **propagation**: a window of patches along the path, the ground-truth mask of each object
  given on the first patch (upstream's eval prompt), SAM2's memory carrying it through the
  rest; the IoU of the final mask on every later patch where the object is present, averaged.
- **presence**: on the same later patches, the share where SAM2's object-score gate (score > 0:
  the object is there, else its mask is forced empty) agrees with the ground truth (the object
  covers a pixel of the patch). Propagation ignores the patches an object has left, so a model
  that calls every object present scores no lower there; presence tells the two apart.

The patches and windows are a fixed function of ``seed``, so two checkpoints are scored on the
same ones. The model's own random generators are left as they were (training continues alike).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Dict, Iterator, List

import numpy as np
import torch

from sap_ros.train.model import prompt_rng
from sap_ros.train.videos import PatchVideos, Sample

EVAL_SEED = 20260  # fixed: the held-out patches do not change with the training seed


@dataclass(frozen=True)
class EvalSpec:
    """How much of the held-out set to score."""

    patches: int = 64        # one-click patches
    windows: int = 16        # propagation windows
    num_frames: int = 4      # patches per propagation window
    max_objects: int = 3     # objects per patch / window
    batch: int = 16          # patches per forward pass (one-click)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module, **settings: object) -> Iterator[None]:
    saved = {k: getattr(model, k) for k in settings}
    rng_state = copy.deepcopy(prompt_rng(model).bit_generator.state)
    was_training = model.training
    for key, value in settings.items():
        setattr(model, key, value)
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            yield
    finally:
        for key, value in saved.items():
            setattr(model, key, value)
        prompt_rng(model).bit_generator.state = rng_state
        model.train(was_training)


def _iou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """IoU over the last two dims (1.0 where both are empty)."""
    inter = (pred & truth).flatten(-2).sum(-1).float()
    union = (pred | truth).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def one_click_best_of_3(model: torch.nn.Module, videos: PatchVideos, spec: EvalSpec,
                        device: torch.device) -> float:
    """Mean best-of-3 IoU of one centre click per object (see the module docstring)."""
    windows = videos.windows(1)
    samples = [videos.sample(EVAL_SEED, 0, i, 1, spec.max_objects, windows)
               for i in range(spec.patches)]
    scores: List[float] = []
    # One correction round at least (upstream fails with none); its result is not read.
    with _eval_mode(model, num_correction_pt_per_frame=1):
        for k in range(0, len(samples), spec.batch):
            batch = videos.batch(samples[k:k + spec.batch], 1).to(device)
            (out,) = model(batch)
            candidates = out['multistep_pred_multimasks_high_res'][0] > 0  # O x 3 x H x W
            truth = batch.masks[0][:, None]
            scores += _iou(candidates, truth).amax(dim=1).tolist()
    return float(np.mean(scores))


def propagation(model: torch.nn.Module, videos: PatchVideos, spec: EvalSpec,
                device: torch.device) -> Dict[str, float]:
    """Propagation IoU and presence of first-patch masks (see the module docstring)."""
    windows = videos.windows(spec.num_frames)
    scores: List[float] = []
    agree: List[bool] = []
    with _eval_mode(model, prob_to_use_pt_input_for_eval=0.0, num_init_cond_frames_for_eval=1):
        for i in range(spec.windows):
            sample: Sample = videos.sample(EVAL_SEED, 1, i, spec.num_frames, spec.max_objects,
                                           windows)
            batch = videos.batch([sample], spec.num_frames).to(device)
            outs = model(batch)
            for t in range(1, spec.num_frames):
                truth = batch.masks[t]
                present = truth.flatten(1).any(dim=1)
                pred = outs[t]['pred_masks_high_res'][:, 0] > 0
                scores += _iou(pred, truth)[present].tolist()
                called = outs[t]['multistep_object_score_logits'][-1][:, 0] > 0
                agree += (called == present).tolist()
    return {'propagation': float(np.mean(scores)) if scores else float('nan'),
            'presence': float(np.mean(agree))}


def evaluate(model: torch.nn.Module, videos: PatchVideos, spec: EvalSpec = EvalSpec(),
             device: torch.device = torch.device('cpu')) -> Dict[str, float]:
    """The held-out scores of ``model`` (unwrapped ``SAM2Train``) on ``videos``."""
    return {'one_click_best_of_3': one_click_best_of_3(model, videos, spec, device),
            **propagation(model, videos, spec, device)}
