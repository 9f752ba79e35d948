"""``sap_bench parity`` scenario ``discovery``: per-patch candidates vs upstream's generator.

One patch image (a crop of the Leader360V beach clip in ``../shared/data`` when present, a
generated one otherwise), uint8 RGB at exactly ``image_size``, goes through

* upstream: ``SAM2AutomaticMaskGenerator(model, points_per_side=N, points_per_batch=B, ...)``
  ``.generate(patch)`` (``crop_n_layers=0``), and
* ours: ``Sam2Segmenter.begin_frame`` + ``discover`` on upstream's grid, filtered by
  :func:`~sap_ros.engine.discovery_filter.search_points` (the per-patch candidates, before the
  sphere-level steps),

with the same random weights (the very same module). Compared: the number of candidates, the mask
IoU of each matched pair (>= 0.999) and their predicted IoU (within 1e-4). Two runs:

* ``all_pass``: ``pred_iou_thresh`` 0 and ``stability_thresh`` 0 (random weights rarely pass
  upstream's thresholds), so the NMS alone decides among every mask of every point;
* ``defaults``: upstream's thresholds (0.8, 0.95) on a *sharpened* copy of the decoder (IoU head
  biased up, mask logits scaled) so that many masks pass them.

Mutations of our side that must fail: ``top1_multimask`` (the best of the 3 masks only) and
``low_res_decisions`` (stability, boxes and NMS on the 1/4-resolution logits).

torchvision cannot be installed here: :mod:`sap_ros.bench.torchvision_standin` stands in for it
when ``import torchvision`` fails. ``SAM2ImagePredictor`` hard-codes the backbone feature sizes
of a 1024 px input (``_bb_feat_sizes``); the harness sets them for ``image_size``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sap_ros.bench.common import result_field
from sap_ros.bench.parity_runs import DATA_DIR, video_frames
from sap_ros.bench.torchvision_standin import install as install_torchvision_standin
from sap_ros.config import ModelConfig
from sap_ros.engine.discovery_filter import CandidateFilter, grid_points, search_points
from sap_ros.engine.segmenter import Sam2Segmenter

DISCOVERY_MUTATIONS = ('top1_multimask', 'low_res_decisions')
DISCOVERY_THRESHOLDS = {'min_iou': 0.999, 'max_iou_pred_diff': 1e-4, 'min_candidates': 10}
_RUNS = {'all_pass': (0.0, 0.0), 'defaults': (0.8, 0.95)}
_MUTATED: Dict[str, Dict[str, Any]] = {'none': {}, 'top1_multimask': {'multimask': 'best'},
            'low_res_decisions': {'decide_at': 'decoder'}}


@dataclass
class DiscoveryParityResult:
    """Our per-patch candidates against upstream's generator on one patch, one run."""

    name: str = result_field('discovery/<run>: all_pass (thresholds 0) or defaults')
    mutation: str = result_field('none or the mutation applied to our side')
    points: int = result_field('grid points (points_per_side squared)')
    upstream: int = result_field('candidates upstream keeps')
    ours: int = result_field('candidates we keep')
    min_iou: float = result_field('smallest mask IoU of a matched pair (0 when counts differ)')
    max_iou_pred_diff: float = result_field('largest |predicted IoU difference| of a pair')
    passed: bool = result_field('same count (> min_candidates), IoU and predicted IoU within '
                                'the thresholds')


def _localise(model: Any, amplitude: float) -> Any:
    """Hooks that give every point its own masks: a disc around the point per multimask output.

    Random weights answer every point with nearly the same image-wide mask (box NMS would keep
    one). A forward hook on the prompt encoder records the prompt points (model input pixels);
    one on the mask decoder adds ``amplitude * (1 - d**2 / r**2)`` to its masks, ``d`` the
    distance to the point and ``r`` 12 %, 25 % and 40 % of the side for the three outputs, on
    top of the network's own logits. Both sides run the same module, so the same hooks.
    """
    seen: dict = {}

    def prompts(module: Any, args: Any, kwargs: dict, output: Any) -> Any:
        points = kwargs.get('points')
        seen['xy'] = None if points is None else points[0][:, 0, :].detach()
        return output

    def masks(module: Any, args: Any, kwargs: dict, output: Any) -> Any:
        xy = seen.get('xy')
        low = output[0]
        if xy is None or xy.shape[0] != low.shape[0] or low.shape[1] != 3:
            return output
        side = low.shape[-1]
        grid = (torch.arange(side, device=low.device, dtype=torch.float32) + 0.5) * 4.0
        dx = grid[None, None, :] - xy[:, 0, None, None] - 0.5
        dy = grid[None, :, None] - xy[:, 1, None, None] - 0.5
        d2 = (dx ** 2 + dy ** 2)[:, None]
        radii = torch.tensor([0.12, 0.25, 0.4], device=low.device) * side * 4.0
        bump = amplitude * (1.0 - d2 / radii[None, :, None, None] ** 2)
        return (low + bump.to(low.dtype),) + tuple(output[1:])

    model.sam_prompt_encoder.register_forward_hook(prompts, with_kwargs=True)
    model.sam_mask_decoder.register_forward_hook(masks, with_kwargs=True)
    return model


def _sharpen(model: Any, iou_bias: float = 2.5, amplitude: float = 60.0) -> Any:
    """A copy whose decoder predicts high IoUs and crisp masks (random weights pass neither)."""
    sharp = copy.deepcopy(model)
    with torch.no_grad():
        sharp.sam_mask_decoder.iou_prediction_head.layers[-1].bias.add_(iou_bias)
    return _localise(sharp, amplitude)


def _upstream(model: Any, patch: np.ndarray, n: int, batch: int, thresholds: Tuple[float, float],
              image_size: int) -> Tuple[List[np.ndarray], np.ndarray]:
    install_torchvision_standin()
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    generator = SAM2AutomaticMaskGenerator(
        model, points_per_side=n, points_per_batch=batch, pred_iou_thresh=thresholds[0],
        stability_score_thresh=thresholds[1], stability_score_offset=1.0, mask_threshold=0.0,
        box_nms_thresh=0.7, output_mode='binary_mask')
    # SAM2ImagePredictor assumes a 1024 px input for its feature maps' sizes.
    generator.predictor._bb_feat_sizes = [(image_size // s, image_size // s) for s in (4, 8, 16)]
    anns = generator.generate(patch)
    return ([np.asarray(a['segmentation'], bool) for a in anns],
            np.array([a['predicted_iou'] for a in anns], np.float64))


def _ours(segmenter: Sam2Segmenter, patch: np.ndarray, n: int, batch: int,
          thresholds: Tuple[float, float], mutation: str) -> Tuple[List[np.ndarray], np.ndarray]:
    filt = CandidateFilter(pred_iou_thresh=thresholds[0], stability_thresh=thresholds[1],
                           nms_iou=0.7, max_keep=0, **_MUTATED[mutation])
    segmenter.begin_frame(patch[None], patch)
    side = patch.shape[0]
    found = search_points(segmenter, 0, grid_points(side, n), side, filt, batch)
    masks = [np.asarray(torch.as_tensor(m).cpu().numpy(), bool) for m in found.masks]
    # Low-resolution masks (the mutation) are compared at the patch's size, pixel by pixel.
    masks = [m if m.shape[0] == side else np.kron(m, np.ones((side // m.shape[0],) * 2, bool))
             for m in masks]
    return masks, found.iou


def compare(name: str, mutation: str, points: int, theirs: Tuple[List[np.ndarray], np.ndarray],
            ours: Tuple[List[np.ndarray], np.ndarray]) -> DiscoveryParityResult:
    """Match each upstream candidate to ours by mask IoU (one to one) and measure the pairs."""
    masks_a, iou_a = theirs
    masks_b, iou_b = ours
    if len(masks_a) != len(masks_b) or not masks_a:
        return DiscoveryParityResult(name, mutation, points, len(masks_a), len(masks_b), 0.0,
                                     float('inf'), False)
    a = np.stack(masks_a).reshape(len(masks_a), -1).astype(np.float32)
    b = np.stack(masks_b).reshape(len(masks_b), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    free = set(range(len(masks_b)))
    worst, diff = 1.0, 0.0
    for i in np.argsort(-iou.max(axis=1), kind='stable'):
        j = max(free, key=lambda k: (iou[i, k], -abs(iou_a[i] - iou_b[k])))
        free.remove(j)
        worst = min(worst, float(iou[i, j]))
        diff = max(diff, abs(float(iou_a[i]) - float(iou_b[j])))
    passed = (len(masks_a) > DISCOVERY_THRESHOLDS['min_candidates']
              and worst >= DISCOVERY_THRESHOLDS['min_iou']
              and diff <= DISCOVERY_THRESHOLDS['max_iou_pred_diff'])
    return DiscoveryParityResult(name, mutation, points, len(masks_a), len(masks_b), worst, diff,
                                 passed)


def measure_discovery(image_size: int = 128, seed: int = 0, points_per_side: int = 8,
                      points_per_batch: int = 24, data_dir: Path = DATA_DIR,
                      mutations: Sequence[str] = DISCOVERY_MUTATIONS,
                      progress: Optional[Any] = None) -> List[DiscoveryParityResult]:
    """Both runs (``all_pass``, ``defaults``), each unmutated and with every mutation."""
    say = progress or (lambda message: None)
    frames, _ = video_frames(1, image_size, data_dir)
    patch = np.ascontiguousarray(frames[0])
    segmenter = Sam2Segmenter(ModelConfig(allow_random_weights=True, image_size=image_size,
                                          seed=seed, device='cpu', dtype='float32'))
    plain = segmenter.adapter.model
    base = copy.deepcopy(plain)
    _localise(plain, 4.0)
    results: List[DiscoveryParityResult] = []
    n_points = points_per_side ** 2
    for run, thresholds in _RUNS.items():
        model = plain if run == 'all_pass' else _sharpen(base)
        segmenter.adapter._model = model  # our side and upstream share the module
        name = f'discovery/{run}'
        say(f'{name}: upstream SAM2AutomaticMaskGenerator')
        with torch.no_grad():
            theirs = _upstream(model, patch, points_per_side, points_per_batch, thresholds,
                               image_size)
        for mutation in ('none', *mutations):
            say(f'{name}: engine' + ('' if mutation == 'none' else f' with {mutation}'))
            ours = _ours(segmenter, patch, points_per_side, points_per_batch, thresholds,
                         mutation)
            results.append(compare(name, mutation, n_points, theirs, ours))
    segmenter.adapter._model = plain
    return results


def format_rows(results: Sequence[DiscoveryParityResult]) -> List[str]:
    """Table lines for ``sap_bench parity``."""
    lines = [f'{"scenario":<20}{"mutation":<20}{"points":>7}{"upstream":>9}{"ours":>6}'
             f'{"min_iou":>10}{"iou_pred_diff":>15}  result']
    for r in results:
        lines.append(f'{r.name:<20}{r.mutation:<20}{r.points:>7}{r.upstream:>9}{r.ours:>6}'
                     f'{r.min_iou:>10.4f}{r.max_iou_pred_diff:>15.3g}  '
                     f'{"pass" if r.passed else "FAIL"}')
    return lines


def discovery_passed(results: Sequence[DiscoveryParityResult]) -> bool:
    """Every unmutated run passes and every mutated one fails."""
    return bool(results) and all(r.passed == (r.mutation == 'none') for r in results)
