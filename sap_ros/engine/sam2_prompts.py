"""SAM2 prompts in the model's terms: points, masks and dense prompts on the model device.

A mixin of :class:`~sap_ros.engine.sam2_adapter.Sam2Adapter` (kept apart to keep that module
short); nothing here imports ``sam2``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.torch_device import to_device

ArrayLike = Union[np.ndarray, torch.Tensor]

# SAM2 turns a binary mask into logits as 20 * m - 10 (sigmoid(+-10) ~ 1 / 0); we use the same
# scale when a mask is fed to the prompt encoder as a dense prompt.
_MASK_LOGIT_SCALE, _MASK_LOGIT_BIAS = 20.0, -10.0


class Sam2Prompts:
    """Point, mask and dense prompts for SAM2 at ``image_size`` on ``device``."""

    device: torch.device
    image_size: int

    @property
    def _sam2(self) -> Any:
        raise NotImplementedError

    def _points_to_model(self, points_px: np.ndarray, input_hw: Tuple[int, int]) -> torch.Tensor:
        pts = np.asarray(points_px, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
            raise InvalidInputError(f'points_px must be finite (P, 2) x, y, got shape '
                                    f'{pts.shape}')
        height, width = input_hw
        scale = np.array([self.image_size / width, self.image_size / height])
        # Map pixel centres exactly: centre x + 0.5 of the patch lands on the same fraction of
        # the model input (SAM2's prompt encoder adds the 0.5 back).
        model_xy = (pts + 0.5) * scale - 0.5
        return to_device(model_xy, self.device, torch.float32)

    def _mask_to_model(self, mask: ArrayLike, size: int) -> torch.Tensor:
        if isinstance(mask, np.ndarray):  # uploaded without waiting for the device queue
            m = (to_device(mask, self.device, torch.float32)
                 if np.issubdtype(mask.dtype, np.floating)
                 else to_device(mask > 0, self.device, torch.bool))
        else:
            m = mask
        if m.dim() != 2 or 0 in m.shape:
            raise InvalidInputError(f'mask_prompt must be (h, w), got shape {tuple(m.shape)}')
        m = m.to(self.device)
        m = (m > 0).float() if not m.is_floating_point() else m.float().clamp(0.0, 1.0)
        m = m[None, None]
        if m.shape[-2:] != (size, size):
            m = F.interpolate(m, size=(size, size), mode='bilinear', align_corners=False,
                              antialias=True)
        return m

    def _point_inputs(self, points_px: np.ndarray, point_labels: Optional[np.ndarray],
                      input_hw: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        labels = (np.ones(len(points_px)) if point_labels is None
                  else np.asarray(point_labels).reshape(-1))
        if labels.shape[0] != len(points_px) or not np.isin(labels, (0, 1)).all():
            raise InvalidInputError(f'point_labels must be one 0/1 label per point, got '
                                    f'{labels!r} for {len(points_px)} points')
        return {'point_coords': self._points_to_model(points_px, input_hw)[None],
                'point_labels': to_device(labels, self.device, torch.int32)[None]}

    def _dense_prompts(self, masks: Sequence[ArrayLike]
                       ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """Masks -> SAM2 mask-decoder logits ``[B, 1, s, s]`` and the padding point per mask.

        Without clicks SAM2 itself adds one padding point (label -1) next to a dense prompt.
        """
        side = self._sam2.sam_prompt_encoder.mask_input_size[0]
        low = torch.cat([self._mask_to_model(m, side) for m in masks])
        padding = {
            'point_coords': torch.zeros(len(masks), 1, 2, device=self.device),
            'point_labels': -torch.ones(len(masks), 1, dtype=torch.int32, device=self.device)}
        return padding, low * _MASK_LOGIT_SCALE + _MASK_LOGIT_BIAS
