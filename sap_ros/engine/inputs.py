"""What users hand the pipeline, checked and brought into its patches: frames and object masks."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import erp_bearings, erp_row_weights, validate_erp_shape
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches


def check_frame(erp: np.ndarray) -> Tuple[int, int]:
    """``(H, W)`` of an ``(H, W, 3)`` uint8 RGB 2:1 frame; a clear error for anything else."""
    if not isinstance(erp, np.ndarray):
        raise InvalidInputError(f'ERP frame must be a NumPy array, got {type(erp).__name__}')
    if erp.ndim != 3 or erp.shape[2] != 3 or erp.dtype != np.uint8:
        raise InvalidInputError(f'ERP frame must be H x W x 3 uint8 RGB, got shape '
                                f'{tuple(erp.shape)} dtype {erp.dtype}')
    return validate_erp_shape(erp.shape)


def object_mask_in_patch(layout: PatchLayout, erp_mask: np.ndarray, low_px: int
                         ) -> Tuple[int, np.ndarray]:
    """A mask on the sphere re-projected into the view that sees its centroid best.

    ``erp_mask``: ``(H, W)`` bool of any 2:1 size. Returns the view and the ``(4 low_px,
    4 low_px)`` bool mask in it (the patch resolution SAM2's ``add_new_mask`` reads).
    """
    mask = np.asarray(erp_mask).astype(bool)
    validate_erp_shape(mask.shape)
    if not mask.any():
        raise InvalidInputError('object mask is empty')
    h, w = mask.shape
    bearings = erp_bearings(w, h)[mask]
    weights = np.repeat(erp_row_weights(h)[:, None], w, axis=1)[mask]
    centroid = (bearings * weights[:, None]).sum(0)
    if np.linalg.norm(centroid) < 1e-9:
        centroid = bearings[0]
    view = int(layout.views_containing(centroid / np.linalg.norm(centroid))[0])
    patch = extract_patches(layout, mask.astype(np.uint8) * 255, low_px * 4, views=[view])
    return view, patch[0] >= 128
