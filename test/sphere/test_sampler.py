"""ERP <-> patch sampling through the layout's cached tables (ARCHITECTURE §2, §4, §9)."""
from __future__ import annotations

import math
from typing import Callable, Hashable, List, Tuple

import cv2
import numpy as np
import pytest
import torch

from sap_ros.errors import ErpShapeError, InvalidInputError
from sap_ros.sphere import sampler
from sap_ros.sphere.geometry import (
    PatchView,
    angular_distance_deg,
    bearing_to_lonlat,
    erp_bearings,
    erp_lonlat_grid,
    lonlat_to_erp_pixel,
)
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import (
    erp_to_patch_tables,
    extract_patches,
    extract_patches_uncached,
    patch_to_erp_tables,
)
from sap_ros.sphere.torch_sampler import extract_patches_torch

HEIGHT, WIDTH = 128, 256
SIZE_PX = 64


def new_layout(fov_deg: float = 90.0, size_px: int = SIZE_PX) -> PatchLayout:
    """A fresh layout (empty cache) of the default shape."""
    return PatchLayout.build(fov_deg, size_px, 'zigzag', 0.5)


LAYOUT = new_layout()


def random_erp(seed: int = 0, shape: Tuple[int, ...] = (HEIGHT, WIDTH, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def smooth_erp(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A colour image that varies smoothly over the sphere (continuous across seam and poles)."""
    b = erp_bearings(width, height)
    return np.clip(127.5 + 100.0 * b[..., [0, 1, 2]] * np.array([1.0, 0.8, 0.9]), 0,
                   255).astype(np.uint8)


def coordinate_erp(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Float ERP whose channels are its own pixel coordinates (u, v, 0)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([u, v, np.zeros_like(u)], axis=-1)


def expected_erp_uv(view: PatchView, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Continuous ERP position of each pixel centre of ``view``, from the geometry module."""
    lon, lat = bearing_to_lonlat(view.pixel_grid_bearings())
    return lonlat_to_erp_pixel(lon, lat, width, height)


def index_of(lay: PatchLayout, yaw_deg: float, pitch_deg: float) -> int:
    for i, view in enumerate(lay.views):
        same_yaw = abs((view.yaw_deg - yaw_deg + 180.0) % 360.0 - 180.0) < 1e-9
        if same_yaw and view.pitch_deg == pitch_deg:
            return i
    raise AssertionError(f'no view at yaw {yaw_deg}, pitch {pitch_deg}')


# ---------------------------------------------------------------------------- cache
@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_cached_output_equals_uncached_bit_for_bit(dtype: type) -> None:
    lay = new_layout()
    erp = random_erp(1).astype(dtype)
    reference = extract_patches_uncached(lay, erp)
    first = extract_patches(lay, erp)
    second = extract_patches(lay, erp)
    assert first.dtype == erp.dtype and first.shape == (len(lay), SIZE_PX, SIZE_PX, 3)
    assert np.array_equal(first, reference)
    assert np.array_equal(second, reference)
    assert np.array_equal(extract_patches_uncached(lay, erp), reference)


def test_tables_are_built_once_and_kept_by_the_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    lay = new_layout()
    builds: List[Tuple[int, int, int]] = []
    real_build = sampler._build_erp_to_patch

    def counting_build(layout: PatchLayout, height: int, width: int,
                       size_px: int) -> sampler.ErpToPatchTables:
        builds.append((height, width, size_px))
        return real_build(layout, height, width, size_px)

    monkeypatch.setattr(sampler, '_build_erp_to_patch', counting_build)
    erp = random_erp(2)
    extract_patches(lay, erp)
    assert builds == [(HEIGHT, WIDTH, SIZE_PX)]
    table = erp_to_patch_tables(lay, (HEIGHT, WIDTH))
    extract_patches(lay, erp)
    extract_patches(lay, random_erp(3))
    assert builds == [(HEIGHT, WIDTH, SIZE_PX)]
    assert erp_to_patch_tables(lay, (HEIGHT, WIDTH)) is table
    # Another ERP size or patch size is another table; the first one stays.
    extract_patches(lay, random_erp(4, (64, 128, 3)))
    extract_patches(lay, erp, size_px=32)
    assert builds[1:] == [(64, 128, SIZE_PX), (HEIGHT, WIDTH, 32)]
    assert erp_to_patch_tables(lay, (HEIGHT, WIDTH)) is table
    # Another layout has its own cache.
    extract_patches(new_layout(), erp)
    assert len(builds) == 4


def test_cached_tables_are_read_only() -> None:
    table = erp_to_patch_tables(LAYOUT, (HEIGHT, WIDTH))
    assert table.maps_float.shape == (len(LAYOUT), SIZE_PX, SIZE_PX, 2)
    with pytest.raises(ValueError):
        table.maps_float[0, 0, 0, 0] = 0.0
    back = patch_to_erp_tables(LAYOUT, (HEIGHT, WIDTH))
    with pytest.raises(ValueError):
        back.erp_index[0][0] = 0


def test_torch_grid_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    lay = new_layout()
    built: List[object] = []
    real_cached = lay.cached

    def spy(key: Hashable, build: Callable[[], object]) -> object:
        return real_cached(key, lambda: (built.append(key), build())[1])

    monkeypatch.setattr(lay, 'cached', spy)
    erp = torch.from_numpy(random_erp(5))
    first = extract_patches_torch(lay, erp)
    n_built = len(built)
    assert n_built >= 1
    second = extract_patches_torch(lay, erp)
    assert len(built) == n_built
    assert torch.equal(first, second)


# ---------------------------------------------------------------------------- what patches show
def test_constant_erp_gives_constant_patches() -> None:
    colour = np.array([17, 200, 99], dtype=np.uint8)
    erp = np.broadcast_to(colour, (HEIGHT, WIDTH, 3)).copy()
    patches = extract_patches(LAYOUT, erp)
    assert np.array_equal(patches, np.broadcast_to(colour, patches.shape))
    patches_t = extract_patches_torch(LAYOUT, torch.from_numpy(erp))
    assert torch.allclose(patches_t, torch.tensor(colour, dtype=torch.float32)[None, :, None,
                                                                                None]
                          .expand_as(patches_t), atol=1e-3)


def red_blue_erp(height: int, width: int) -> np.ndarray:
    """Left half (lon < 0) red, right half (lon > 0) blue, RGB."""
    erp = np.zeros((height, width, 3), np.uint8)
    erp[:, : width // 2, 0] = 255
    erp[:, width // 2:, 2] = 255
    return erp


def assert_sharp_split(patch_rgb: np.ndarray, left: int, right: int) -> None:
    """Left columns pure ``left`` channel, right columns pure ``right``, no dark seam column."""
    size = patch_rgb.shape[0]
    half = size // 2
    patch = patch_rgb.astype(np.int32)
    assert np.all(patch[..., 1] == 0)
    # Every pixel is a mix of the two colours: nothing black or garbage at the seam.
    assert np.all(np.abs(patch[..., 0] + patch[..., 2] - 255) <= 1)
    assert np.all(patch[:, : half - 2, left] == 255)
    assert np.all(patch[:, half + 2:, right] == 255)
    # The split is sharp: within a pixel or two of the centre line.
    assert np.all(patch[:, half - 2, left] > 127) and np.all(patch[:, half + 1, right] > 127)


def bilinear_columns(erp: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Reference: interpolate an ERP that is constant down each column at ``u``, wrapping."""
    u0 = np.floor(u)
    frac = (u - u0)[..., None]
    width = erp.shape[1]
    c0 = u0.astype(int) % width
    c1 = (c0 + 1) % width
    row = erp[0].astype(np.float64)
    return (1.0 - frac) * row[c0] + frac * row[c1]


def test_backward_view_wraps_the_seam() -> None:
    # Patch pixels (1.4 deg) finer than ERP pixels (2.8 deg): the patch columns next to the
    # centre sample between the last and the first ERP column, which only wrapping gets right.
    height, width = 64, 128
    erp = red_blue_erp(height, width)
    # Looking back (yaw 180): on the left of the image lon < 180 (blue, right half of the ERP),
    # on the right lon > 180, i.e. from -180 on (red, left half).
    back = index_of(LAYOUT, 180.0, 0.0)
    reference = bilinear_columns(erp, expected_erp_uv(LAYOUT.views[back], width, height)[0])
    patches = extract_patches(LAYOUT, erp)
    assert_sharp_split(patches[back], left=2, right=0)
    assert np.abs(patches[back] - reference).max() <= 2.0
    patches_t = extract_patches_torch(LAYOUT, torch.from_numpy(erp))
    back_t = patches_t[back].permute(1, 2, 0).numpy()
    assert np.abs(back_t - reference).max() <= 0.1
    assert_sharp_split(np.round(back_t).astype(np.uint8), left=2, right=0)
    # And the forward view sees the same split the other way round (no wrap needed).
    front = index_of(LAYOUT, 0.0, 0.0)
    assert_sharp_split(patches[front], left=0, right=2)


def test_centre_pixel_of_each_view_is_the_erp_pixel_on_its_axis() -> None:
    size = 33  # odd: the centre pixel looks exactly along the axis
    lay = new_layout(size_px=size)
    erp = random_erp(6)
    colours = []
    cols = np.arange(WIDTH)
    for i, view in enumerate(lay.views):
        u0, v0 = lonlat_to_erp_pixel(np.array(view.yaw_deg), np.array(view.pitch_deg), WIDTH,
                                     HEIGHT)
        # A 4 x 4 block of one colour around the axis: bilinear sampling there is exact.
        du = (cols - float(u0) + WIDTH / 2) % WIDTH - WIDTH / 2
        rows = np.clip(np.arange(math.floor(v0) - 1, math.floor(v0) + 3), 0, HEIGHT - 1)
        colour = np.array([(37 * i) % 256, 255 - 5 * i, (11 * i + 3) % 256], np.uint8)
        erp[np.ix_(rows, cols[np.abs(du) <= 1.5])] = colour
        colours.append(colour)
    patches = extract_patches(lay, erp)
    centre = size // 2
    for i, colour in enumerate(colours):
        assert np.array_equal(patches[i, centre, centre], colour), lay.views[i]


@pytest.mark.parametrize('height, width', [(HEIGHT, WIDTH), (HEIGHT, WIDTH + 1)])
def test_every_patch_pixel_samples_its_erp_position(height: int, width: int) -> None:
    # The ERP holds its own coordinates, so each patch pixel tells where it was sampled.
    erp = coordinate_erp(height, width)
    patches = extract_patches(LAYOUT, erp)
    for i, view in enumerate(LAYOUT.views):
        u, v = expected_erp_uv(view, width, height)
        interior = (u >= 0.0) & (u <= width - 1.0) & (v >= 0.0) & (v <= height - 1.0)
        assert interior.mean() > 0.5
        # cv2's fixed-point maps quantise positions to 1/32 px.
        assert np.abs(patches[i, ..., 0] - u)[interior].max() < 0.02, view
        assert np.abs(patches[i, ..., 1] - v)[interior].max() < 0.02, view
    patches_t = extract_patches_torch(LAYOUT, torch.from_numpy(erp)).numpy()
    for i, view in enumerate(LAYOUT.views):
        u, v = expected_erp_uv(view, width, height)
        interior = (u >= 0.0) & (u <= width - 1.0) & (v >= 0.0) & (v <= height - 1.0)
        assert np.abs(patches_t[i, 0] - u)[interior].max() < 2e-3, view
        assert np.abs(patches_t[i, 1] - v)[interior].max() < 2e-3, view


def test_views_and_size_arguments() -> None:
    erp = random_erp(7)
    full = extract_patches(LAYOUT, erp)
    subset = extract_patches(LAYOUT, erp, views=[5, 0, 5])
    assert np.array_equal(subset, full[[5, 0, 5]])
    small = extract_patches(LAYOUT, erp, size_px=32)
    assert small.shape == (len(LAYOUT), 32, 32, 3)
    small_t = extract_patches_torch(LAYOUT, torch.from_numpy(erp), size_px=32)
    assert small_t.shape == (len(LAYOUT), 3, 32, 32)


def test_grey_and_single_channel_frames_keep_their_layout() -> None:
    erp = random_erp(8, (HEIGHT, WIDTH))
    grey = extract_patches(LAYOUT, erp)
    assert grey.shape == (len(LAYOUT), SIZE_PX, SIZE_PX)
    one = extract_patches(LAYOUT, erp[..., None])
    assert one.shape == (len(LAYOUT), SIZE_PX, SIZE_PX, 1)
    assert np.array_equal(one[..., 0], grey)


def test_torch_path_agrees_with_cv2_path() -> None:
    erp = smooth_erp()
    patches = extract_patches(LAYOUT, erp).astype(np.float32)
    patches_t = extract_patches_torch(LAYOUT, torch.from_numpy(erp))
    assert tuple(patches_t.shape) == (len(LAYOUT), 3, SIZE_PX, SIZE_PX)
    assert patches_t.dtype == torch.float32 and patches_t.device.type == 'cpu'
    diff = np.abs(patches_t.permute(0, 2, 3, 1).numpy() - patches)
    # cv2 uses fixed-point maps and rounds to uint8; torch samples with float maps.
    assert diff.mean() < 1.5
    assert diff.max() < 4.0
    # Float input gives the same result as uint8 input.
    patches_f = extract_patches_torch(LAYOUT, torch.from_numpy(erp.astype(np.float32)))
    assert torch.allclose(patches_f, patches_t)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
def test_torch_path_on_cuda_matches_cpu_and_stays_on_the_device() -> None:
    lay = new_layout()
    erp = torch.from_numpy(smooth_erp())
    on_cpu = extract_patches_torch(lay, erp)
    on_gpu = extract_patches_torch(lay, erp.cuda())
    assert on_gpu.device.type == 'cuda'
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-3)
    # One sampling grid per device, both kept.
    assert torch.equal(extract_patches_torch(lay, erp.cuda()), on_gpu)
    assert torch.equal(extract_patches_torch(lay, erp), on_cpu)


@pytest.mark.parametrize('labels', [np.array([0, 3, 7, 200, 1000], np.uint16),
                                    np.array([0, 5, 65_535, 70_000, 1_000_000], np.int32)],
                         ids=['uint16', 'int32'])
def test_nearest_sampling_of_a_label_map_keeps_labels(labels: np.ndarray) -> None:
    erp = np.random.default_rng(9).choice(labels, size=(HEIGHT, WIDTH))
    patches = extract_patches(LAYOUT, erp, interpolation=cv2.INTER_NEAREST)
    assert patches.dtype == labels.dtype
    assert set(np.unique(patches).tolist()) <= set(labels.tolist())
    # And each pixel takes the label of the nearest ERP pixel (ties at half pixels excluded).
    for i, view in enumerate(LAYOUT.views):
        u, v = expected_erp_uv(view, WIDTH, HEIGHT)
        clear = (np.abs(u - np.floor(u) - 0.5) > 0.01) & (np.abs(v - np.floor(v) - 0.5) > 0.01)
        col = np.floor(u + 0.5).astype(int) % WIDTH
        row = np.clip(np.floor(v + 0.5).astype(int), 0, HEIGHT - 1)
        assert np.array_equal(patches[i][clear], erp[row, col][clear]), view


# ---------------------------------------------------------------------------- invalid input
@pytest.mark.parametrize('shape, error', [
    ((100, 100, 3), ErpShapeError),
    ((HEIGHT, WIDTH + 2, 3), ErpShapeError),
    ((0, 0, 3), ErpShapeError),
    ((0, 0), ErpShapeError),
    ((WIDTH,), InvalidInputError),
    ((2, HEIGHT, WIDTH, 3), InvalidInputError),
])
def test_bad_frames_are_rejected_naming_the_shape(shape: tuple, error: type) -> None:
    erp = np.zeros(shape, np.uint8)
    for extract in (extract_patches, extract_patches_uncached):
        with pytest.raises(error) as info:
            extract(LAYOUT, erp)
        assert str(shape) in str(info.value)


@pytest.mark.parametrize('dtype, interpolation', [
    (np.bool_, cv2.INTER_LINEAR), (np.int8, cv2.INTER_LINEAR), (np.int32, cv2.INTER_LINEAR),
    (np.int64, cv2.INTER_LINEAR), (np.uint32, cv2.INTER_LINEAR), (np.float16, cv2.INTER_LINEAR),
    (np.bool_, cv2.INTER_NEAREST), (np.uint32, cv2.INTER_NEAREST), (np.int64, cv2.INTER_NEAREST),
])
def test_unsupported_dtypes_are_rejected_naming_what_works(dtype: type,
                                                           interpolation: int) -> None:
    erp = np.zeros((HEIGHT, WIDTH), dtype)
    with pytest.raises(InvalidInputError, match=f'{np.dtype(dtype).name}.*uint8.*float32'):
        extract_patches(LAYOUT, erp, interpolation=interpolation)


@pytest.mark.parametrize('dtype, interpolation', [
    (np.uint8, cv2.INTER_LINEAR), (np.uint16, cv2.INTER_LINEAR), (np.int16, cv2.INTER_LINEAR),
    (np.float32, cv2.INTER_LINEAR), (np.float64, cv2.INTER_LINEAR),
    (np.int8, cv2.INTER_NEAREST), (np.int32, cv2.INTER_NEAREST), (np.uint16, cv2.INTER_NEAREST),
])
@pytest.mark.parametrize('channels', [(), (2,), (4,)])
def test_supported_dtypes_keep_their_dtype_and_values(dtype: type, interpolation: int,
                                                      channels: tuple) -> None:
    erp = np.full((HEIGHT, WIDTH) + channels, 7, dtype)
    patches = extract_patches(LAYOUT, erp, interpolation=interpolation)
    assert patches.dtype == dtype and patches.shape[3:] == channels and (patches == 7).all()


@pytest.mark.parametrize('shape, error', [
    ((100, 100, 3), ErpShapeError),
    ((0, 0, 3), ErpShapeError),
    ((HEIGHT, WIDTH), InvalidInputError),
    ((WIDTH,), InvalidInputError),
])
def test_bad_tensors_are_rejected_naming_the_shape(shape: tuple, error: type) -> None:
    with pytest.raises(error) as info:
        extract_patches_torch(LAYOUT, torch.zeros(shape, dtype=torch.uint8))
    assert str(shape) in str(info.value)


# ---------------------------------------------------------------------------- patch -> ERP
@pytest.mark.parametrize('fov_deg', [90.0, 120.0])
def test_patch_to_erp_tables_see_every_erp_pixel(fov_deg: float) -> None:
    lay = LAYOUT if fov_deg == 90.0 else new_layout(fov_deg)
    tables = patch_to_erp_tables(lay, (HEIGHT, WIDTH))
    assert patch_to_erp_tables(lay, (HEIGHT, WIDTH)) is tables
    assert tables.erp_hw == (HEIGHT, WIDTH)
    seen = np.zeros(HEIGHT * WIDTH, dtype=np.int32)
    for index in tables.erp_index:
        assert np.all((index >= 0) & (index < HEIGHT * WIDTH))
        assert len(np.unique(index)) == len(index)
        seen[index] += 1
    assert seen.min() >= 1
    circumscribed = math.degrees(math.atan(math.sqrt(2.0) * math.tan(math.radians(fov_deg) / 2)))
    assert max(float(a.max()) for a in tables.angle_deg) <= circumscribed + 1e-4


@pytest.mark.parametrize('fov_deg', [90.0, 120.0])
def test_patch_to_erp_tables_match_a_brute_force_projection(fov_deg: float) -> None:
    lay = LAYOUT if fov_deg == 90.0 else new_layout(fov_deg)
    tables = patch_to_erp_tables(lay, (HEIGHT, WIDTH))
    bearings = erp_bearings(WIDTH, HEIGHT).reshape(-1, 3)
    lon, _ = erp_lonlat_grid(WIDTH, HEIGHT)
    assert lon.size == len(bearings)
    for i, view in enumerate(lay.views):
        u, v, in_front = view.bearing_to_pixel(bearings)
        size = view.size_px
        inside = in_front & (u >= -0.5) & (u < size - 0.5) & (v >= -0.5) & (v < size - 0.5)
        assert np.array_equal(np.sort(tables.erp_index[i]), np.nonzero(inside)[0]), view
        # Each entry points back at its ERP pixel's bearing and gives its angle to the axis.
        own = bearings[tables.erp_index[i]]
        coords = tables.pixel_coords(i, size).astype(np.float64)
        back = view.pixel_to_bearing(coords[:, 0], coords[:, 1])
        assert angular_distance_deg(back, own).max() < 1e-3, view
        assert np.allclose(tables.angle_deg[i], angular_distance_deg(own, view.axis), atol=1e-3)
        nearest = tables.nearest_index(i, size)
        assert np.all((nearest >= 0) & (nearest < size * size))
        ue, ve = u[tables.erp_index[i]], v[tables.erp_index[i]]
        expected = np.floor(ve + 0.5).astype(int) * size + np.floor(ue + 0.5).astype(int)
        # The tables store float32: a coordinate within 1e-4 px of a pixel border may round
        # either way; every other one must pick exactly the nearest pixel.
        on_border = (np.abs((ue + 0.5) - np.round(ue + 0.5)) < 1e-4) | (
            np.abs((ve + 0.5) - np.round(ve + 0.5)) < 1e-4)
        assert np.array_equal(nearest[~on_border], expected[~on_border])
        assert on_border.mean() < 0.01
