"""Device sampling of ERP frames and label maps, against the cv2 path and its tables."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sap_ros.errors import ErpShapeError, InvalidInputError
from sap_ros.sphere.geometry import PatchView
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import erp_to_patch_tables, extract_patches
from sap_ros.sphere.torch_device import FramePathKind, choose_frame_path, to_device
from sap_ros.sphere.torch_sampler import (
    erp_to_patch_grid,
    sample_labels,
    sample_patches,
    upload_erp,
)

HEIGHT, WIDTH = 128, 256
LAYOUT = PatchLayout.build(90.0, 64)


def smooth_erp() -> np.ndarray:
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    rgb = np.stack([127 + 120 * np.sin(2 * np.pi * u / WIDTH), 127 + 120 * np.cos(
        np.pi * v / HEIGHT), 127 + 60 * np.sin(2 * np.pi * (u + v) / 64)], axis=-1)
    return rgb.astype(np.uint8)


def test_grid_comes_from_the_same_coordinates_as_the_cv2_tables() -> None:
    grid = erp_to_patch_grid(LAYOUT, (HEIGHT, WIDTH), 48, 'cpu').numpy()
    maps = erp_to_patch_tables(LAYOUT, (HEIGHT, WIDTH), 48).maps_float
    x = ((grid[..., 0] + 1.0) * (WIDTH + 2) - 1.0) / 2.0
    y = ((grid[..., 1] + 1.0) * (HEIGHT + 2) - 1.0) / 2.0
    assert np.abs(x - maps[..., 0]).max() < 1e-3 and np.abs(y - maps[..., 1]).max() < 1e-3


@pytest.mark.parametrize('size_px', [64, 96])
def test_patches_at_any_size_match_cv2_at_that_size(size_px: int) -> None:
    """Sampled directly at the model's size: no second resize, same image as cv2's remap."""
    erp = smooth_erp()
    ours = sample_patches(LAYOUT, upload_erp(erp, 'cpu'), size_px)
    assert tuple(ours.shape) == (len(LAYOUT), 3, size_px, size_px)
    assert ours.dtype == torch.float32
    ref = extract_patches(LAYOUT, erp, size_px).astype(np.float32)
    diff = np.abs(ours.permute(0, 2, 3, 1).numpy() - ref)
    assert diff.mean() < 1.0 and diff.max() < 4.0


def test_listed_views_are_those_rows_of_the_full_batch() -> None:
    erp = upload_erp(smooth_erp(), 'cpu')
    every = sample_patches(LAYOUT, erp, 32)
    some = sample_patches(LAYOUT, erp, 32, views=[5, 0, 17])
    assert torch.equal(some, every[[5, 0, 17]])


def test_seam_is_continuous() -> None:
    """A view centred on the 180 deg seam sees both edges of the frame joined."""
    erp = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    erp[:, :WIDTH // 2] = 200   # left half bright, right half dark: the seam is an edge
    # 20 deg over 64 px: samples within half an ERP pixel of the seam, where the wrapped
    # padding column is what bilinear sampling reads.
    layout = PatchLayout([PatchView(-180.0, 0.0, 20.0, 64)], [0], LAYOUT.order)
    patch = sample_patches(layout, upload_erp(erp, 'cpu'), 64)[0, 0].numpy()
    ref = extract_patches(layout, erp, 64)[0, ..., 0].astype(np.float32)
    # cv2's maps are fixed point (1/32 px): on a 200-level edge that is up to ~6 levels.
    assert np.abs(patch - ref).max() < 8.0
    assert ((patch > 20) & (patch < 180)).any()  # a blended column at the seam, not a cut
    assert patch[:, :8].mean() < 20 and patch[:, -8:].mean() > 180


def test_label_sampling_is_the_nearest_pixel_like_cv2() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 60000, (HEIGHT, WIDTH)).astype(np.int32)
    ours = sample_labels(LAYOUT, torch.from_numpy(labels), 16).numpy()
    ref = extract_patches(LAYOUT, labels, 16, interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(ours, ref)  # the same pixel, ties included
    one = sample_labels(LAYOUT, torch.from_numpy(labels), 16, views=[7]).numpy()
    assert np.array_equal(one[0], ours[7])


@pytest.mark.parametrize('frame, error', [
    (np.zeros((100, 100, 3), np.uint8), ErpShapeError),
    (np.zeros((HEIGHT, WIDTH), np.uint8), InvalidInputError),
    (np.zeros((HEIGHT, WIDTH, 3), np.float32), InvalidInputError),
    ([[0]], InvalidInputError),
])
def test_bad_frames_are_rejected_at_upload(frame: object, error: type) -> None:
    with pytest.raises(error):
        upload_erp(frame, 'cpu')  # type: ignore[arg-type]


def test_upload_keeps_uint8() -> None:
    up = upload_erp(smooth_erp(), 'cpu')
    assert up.dtype == torch.uint8 and tuple(up.shape) == (HEIGHT, WIDTH, 3)


def test_bad_label_maps_are_rejected() -> None:
    with pytest.raises(InvalidInputError):
        sample_labels(LAYOUT, torch.zeros(HEIGHT, WIDTH, 1), 16)


def test_chooser_takes_torch_on_cuda_only() -> None:
    assert choose_frame_path('cuda') is FramePathKind.TORCH
    assert choose_frame_path(torch.device('cuda:1')) is FramePathKind.TORCH
    assert choose_frame_path('cpu') is FramePathKind.NUMPY
    assert choose_frame_path('mps') is FramePathKind.NUMPY
    with pytest.raises(InvalidInputError, match='gpu0'):
        choose_frame_path('gpu0')


def test_to_device_keeps_values_and_dtype() -> None:
    out = to_device([3, 65535, 7], 'cpu', torch.int32)
    assert out.dtype == torch.int32 and out.tolist() == [3, 65535, 7]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
def test_cuda_upload_and_sampling_do_not_wait_for_the_device() -> None:
    erp = smooth_erp()
    sample_patches(LAYOUT, upload_erp(erp, 'cuda'), 64)  # tables built (they sync once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        out = sample_patches(LAYOUT, upload_erp(erp, 'cuda'), 64, views=[1, 2])
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert out.device.type == 'cuda'
    ref = sample_patches(LAYOUT, upload_erp(erp, 'cpu'), 64, views=[1, 2])
    assert torch.allclose(out.cpu(), ref, atol=1e-2)
