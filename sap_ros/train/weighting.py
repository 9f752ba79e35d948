"""``--loss-weights distortion``: patch pixels weighted by the solid angle they cover.

PanoSAM2's distortion-guided mask loss weights pixels by how much the projection distorts them;
in our geometry a pinhole patch pixel at ``(x, y)`` on the tangent plane (units of the focal
length) covers a solid angle proportional to ``(1 + x^2 + y^2)^(-3/2)``: the patch centre counts
most, the stretched corners least, so the loss measures area on the sphere as ``sap_eval`` does.
The weights are normalised to mean 1. Only upstream's focal and dice mask terms are weighted
(the IoU and object-score terms are upstream's); an idea of ours, unmeasured with real weights.

Upstream's ``MultiStepMultiMasksAndIous`` calls the module functions ``sigmoid_focal_loss`` and
``dice_loss`` of ``training.loss_fns``; :func:`distortion_weighted` rebinds them, for the loss
computation only, to weighted versions that leave every other call (shapes that are not
full-size patch masks) to upstream's own.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F

from sap_ros.train.data import ExportSpec


def solid_angle_weights(size_px: int, fov_deg: float) -> torch.Tensor:
    """``(S, S)`` float32 solid angle per pixel relative to the mean (mean 1).

    >>> w = solid_angle_weights(4, 90.0)
    >>> bool(w[1, 1] > w[0, 0]), round(float(w.mean()), 6)
    (True, 1.0)
    """
    half = math.tan(math.radians(fov_deg) / 2.0)
    axis = ((torch.arange(size_px, dtype=torch.float64) + 0.5) / size_px * 2.0 - 1.0) * half
    y, x = torch.meshgrid(axis, axis, indexing='ij')
    weights = (1.0 + x * x + y * y) ** -1.5
    return (weights / weights.mean()).float()


@contextlib.contextmanager
def distortion_weighted(spec: ExportSpec, device: torch.device) -> Iterator[None]:
    """Within the block, upstream's mask focal and dice terms weight pixels by solid angle."""
    import training.loss_fns as loss_fns
    weights = solid_angle_weights(spec.size_px, spec.fov_deg).to(device)
    focal, dice = loss_fns.sigmoid_focal_loss, loss_fns.dice_loss

    def weighted_focal(inputs, targets, num_objects, alpha=0.25, gamma=2,
                       loss_on_multimask=False):
        if not loss_on_multimask or inputs.shape[-2:] != weights.shape:
            return focal(inputs, targets, num_objects, alpha, gamma, loss_on_multimask)
        prob = inputs.sigmoid()
        p_true = prob * targets + (1 - prob) * (1 - targets)
        per_pixel = F.binary_cross_entropy_with_logits(inputs, targets, reduction='none')
        per_pixel = per_pixel * (1 - p_true) ** gamma
        if alpha >= 0:
            per_pixel = per_pixel * (alpha * targets + (1 - alpha) * (1 - targets))
        return (per_pixel * weights).flatten(2).mean(-1) / num_objects

    def weighted_dice(inputs, targets, num_objects, loss_on_multimask=False):
        if not loss_on_multimask or inputs.shape[-2:] != weights.shape:
            return dice(inputs, targets, num_objects, loss_on_multimask)
        prob = (inputs.sigmoid() * weights).flatten(2)
        truth = (targets * weights).flatten(2)
        overlap = 2 * (prob * targets.flatten(2)).sum(-1)
        return (1 - (overlap + 1) / (prob.sum(-1) + truth.sum(-1) + 1)) / num_objects

    loss_fns.sigmoid_focal_loss, loss_fns.dice_loss = weighted_focal, weighted_dice
    try:
        yield
    finally:
        loss_fns.sigmoid_focal_loss, loss_fns.dice_loss = focal, dice
