"""ERP frame -> patches on the model's device: one upload, one batched ``grid_sample``.

The sampling grids are built from :func:`~sap_ros.sphere.geometry.view_padded_erp_coords`, the
function the cv2 tables come from, and cached in the layout per (ERP size, patch size, device).
Patches are sampled directly at the requested side (``model.image_size``): no host remap, no
second resize. The frame is padded on the device like :func:`~sap_ros.sphere.sampler.pad_erp`
(one wrapped column each side, one replicated row top and bottom), so bilinear sampling is exact
across the 0/360 seam.

:func:`sample_labels` is the nearest-pixel counterpart for label maps (the engine's work grid
re-projected into a view), a gather through a cached index table.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as torch_f

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import validate_erp_shape, view_padded_erp_coords
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.torch_device import canonical_device, to_device

Device = Union[str, torch.device]


def upload_erp(erp: np.ndarray, device: Device) -> torch.Tensor:
    """A ``(H, W, C)`` uint8 NumPy frame as a uint8 tensor on ``device`` (the frame's one upload).

    Checked like the engine's input: 2:1, three dimensions, uint8 (a clear error otherwise).
    """
    if not isinstance(erp, np.ndarray) or erp.ndim != 3 or erp.dtype != np.uint8:
        shape = getattr(erp, 'shape', None)
        dtype = getattr(erp, 'dtype', type(erp).__name__)
        raise InvalidInputError(f'ERP frame must be an H x W x C uint8 NumPy array, got shape '
                                f'{shape} dtype {dtype}')
    validate_erp_shape(erp.shape)
    host = torch.from_numpy(np.ascontiguousarray(erp))
    target = canonical_device(device)
    if target.type == 'cuda':
        return host.pin_memory().to(target, non_blocking=True)
    return host if target.type == 'cpu' else host.to(target)


def erp_to_patch_grid(layout: PatchLayout, erp_hw: Tuple[int, int], size_px: int,
                      device: Device) -> torch.Tensor:
    """Cached ``(N, S, S, 2)`` float32 ``grid_sample`` grid (align_corners=False) on ``device``.

    Normalised coordinates of the padded ERP: ``x_n = (2 x + 1) / (W + 2) - 1``.
    """
    height, width = int(erp_hw[0]), int(erp_hw[1])
    size = int(size_px)
    target = canonical_device(device)

    def build() -> torch.Tensor:
        grid = torch.empty((len(layout), size, size, 2), dtype=torch.float32, device=target)
        for i, view in enumerate(layout.views):  # one view at a time bounds the host memory
            x, y = view_padded_erp_coords(view, height, width, size)
            norm = np.stack([(2.0 * x + 1.0) / (width + 2) - 1.0,
                             (2.0 * y + 1.0) / (height + 2) - 1.0], axis=-1)
            grid[i] = torch.from_numpy(norm.astype(np.float32))
        return grid

    return layout.cached(('erp_to_patch_grid', (height, width), size, str(target)), build)


def _padded_image(erp: torch.Tensor) -> torch.Tensor:
    """``(1, C, H + 2, W + 2)`` float32: wrapped columns, replicated rows (as ``pad_erp``)."""
    img = erp.permute(2, 0, 1).unsqueeze(0)
    img = torch.cat([img[..., -1:], img, img[..., :1]], dim=3)
    img = torch.cat([img[:, :, :1], img, img[:, :, -1:]], dim=2)
    return img.float()


def sample_patches(layout: PatchLayout, erp: torch.Tensor, size_px: Optional[int] = None,
                   views: Optional[Sequence[int]] = None) -> torch.Tensor:
    """All (or the listed) patches of a device ERP frame in one batched ``grid_sample``.

    Args:
        erp: ``(H, W, C)`` uint8 or float tensor, 2:1 (``ErpShapeError`` else).
        size_px: patch side, e.g. ``model.image_size`` (default: the layout's).
        views: view indices, in the returned order (default: all, index order).

    Returns:
        ``(len(views), C, S, S)`` float32 on ``erp.device``, values in the input's range
        (0..255 for uint8), bilinear.

    """
    if not isinstance(erp, torch.Tensor) or erp.ndim != 3:
        raise InvalidInputError(f'ERP tensor must be H x W x C, got shape '
                                f'{tuple(getattr(erp, "shape", ()))}')
    height, width = validate_erp_shape(tuple(erp.shape))
    size = layout.size_px if size_px is None else int(size_px)
    grid = erp_to_patch_grid(layout, (height, width), size, erp.device)
    if views is not None:
        grid = grid[to_device(np.asarray(views, dtype=np.int64), erp.device, torch.long)]
    img = _padded_image(erp)
    # The frame expanded over the batch (stride 0, no copy): one kernel for every patch.
    return torch_f.grid_sample(img.expand(grid.shape[0], -1, -1, -1), grid, mode='bilinear',
                               padding_mode='border', align_corners=False)


def nearest_index_host(layout: PatchLayout, erp_hw: Tuple[int, int],
                       size_px: int) -> np.ndarray:
    """Cached ``(N, S * S)`` int64 flat ERP index of the pixel nearest each patch pixel (host).

    Rounds the padded coordinates of :func:`view_padded_erp_coords` to the nearest pixel exactly
    as ``cv2.remap`` with ``INTER_NEAREST`` does on the padded frame (float32 maps, ties to
    even: many pixels of a view lie on a tie, e.g. the equator row) and maps the padding back:
    columns wrap, rows clamp.
    """
    height, width = int(erp_hw[0]), int(erp_hw[1])
    size = int(size_px)

    def build() -> np.ndarray:
        index = np.empty((len(layout), size * size), dtype=np.int64)
        for i, view in enumerate(layout.views):
            x, y = view_padded_erp_coords(view, height, width, size)
            col = (np.rint(x.astype(np.float32)).astype(np.int64) - 1) % width
            row = np.clip(np.rint(y.astype(np.float32)).astype(np.int64) - 1, 0, height - 1)
            index[i] = (row * width + col).reshape(-1)
        index.setflags(write=False)
        return index

    return layout.cached(('erp_to_patch_nearest_host', (height, width), size), build)


def erp_to_patch_nearest_index(layout: PatchLayout, erp_hw: Tuple[int, int], size_px: int,
                               device: Device) -> torch.Tensor:
    """:func:`nearest_index_host` on ``device`` (cached per device)."""
    height, width = int(erp_hw[0]), int(erp_hw[1])
    target = canonical_device(device)
    return layout.cached(
        ('erp_to_patch_nearest', (height, width), int(size_px), str(target)),
        lambda: torch.from_numpy(np.array(nearest_index_host(layout, (height, width),
                                                             size_px))).to(target))


def sample_labels(layout: PatchLayout, labels: torch.Tensor, size_px: int,
                  views: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Nearest-pixel patches ``(len(views), S, S)`` of a device ``(H, W)`` label map."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 2:
        raise InvalidInputError(f'label map must be an (H, W) tensor, got shape '
                                f'{tuple(getattr(labels, "shape", ()))}')
    height, width = validate_erp_shape(tuple(labels.shape))
    index = erp_to_patch_nearest_index(layout, (height, width), size_px, labels.device)
    if views is not None:
        index = index[to_device(np.asarray(views, dtype=np.int64), labels.device, torch.long)]
    return labels.reshape(-1)[index].reshape(index.shape[0], size_px, size_px)


def extract_patches_torch(layout: PatchLayout, erp: torch.Tensor,
                          size_px: Optional[int] = None) -> torch.Tensor:
    """All patches of a torch ERP frame in one batched ``grid_sample`` (stays on its device).

    Args:
        erp: ``(H, W, C)`` uint8 or float tensor (CPU or CUDA).

    Returns:
        ``(N, C, S, S)`` float32 tensor on ``erp.device`` (values in the input's range).
        See :func:`sample_patches` (views, sizes).

    """
    return sample_patches(layout, erp, size_px)
