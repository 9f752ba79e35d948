"""Image / label / point-cloud payload codecs on plain message fields (no ROS needed)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from sap_ros.engine.types import EMBEDDING_DIM, ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.io import image_codec as codec


def _rgb(height: int = 4, width: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """What a camera driver would put in ``data`` (unpadded rows)."""
    return {
        'rgb8': rgb,
        'bgr8': rgb[..., ::-1],
        'rgba8': np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
        'bgra8': np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
    }[encoding]


def _padded(pixels: np.ndarray, pad: int) -> tuple[int, bytes]:
    rows = pixels.reshape(pixels.shape[0], -1)
    rows = np.hstack([rows, np.full((rows.shape[0], pad), 0xEE, np.uint8)])
    return rows.shape[1], rows.tobytes()


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
@pytest.mark.parametrize('pad', [0, 5])
def test_colour_encodings_decode_to_the_same_rgb(encoding: str, pad: int) -> None:
    rgb = _rgb()
    step, data = _padded(_encode(rgb, encoding), pad)
    out = codec.image_to_rgb(encoding, 4, 8, step, 0, data)
    assert out.shape == (4, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize('pad', [0, 3])
def test_mono8_is_replicated_to_grey_rgb(pad: int) -> None:
    grey = _rgb()[..., 0]
    step, data = _padded(grey, pad)
    out = codec.image_to_rgb('mono8', 4, 8, step, 0, data)
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


def test_rgb8_without_padding_is_a_zero_copy_view() -> None:
    buffer = bytearray(_rgb().tobytes())
    out = codec.image_to_rgb('rgb8', 4, 8, 24, 0, buffer)
    buffer[0] = (buffer[0] + 1) % 256
    assert out[0, 0, 0] == buffer[0]


@pytest.mark.parametrize('encoding', ['16UC1', 'bayer_rggb8', 'yuv422', ''])
def test_unsupported_encoding_names_it_and_the_supported_ones(encoding: str) -> None:
    with pytest.raises(InvalidInputError, match=f"'{encoding}'.*rgb8, bgr8, rgba8, bgra8, mono8"):
        codec.image_to_rgb(encoding, 4, 8, 64, 0, bytes(256))


@pytest.mark.parametrize('height, width, step, size, words', [
    (0, 8, 24, 0, ['height 0']),
    (4, 0, 24, 96, ['width 0']),
    (4, 8, 24, 95, ['95 bytes', '96']),
    (4, 8, 20, 96, ['step 20', '24']),
])
def test_malformed_sizes_are_rejected_with_the_numbers(height: int, width: int, step: int,
                                                       size: int, words: list) -> None:
    with pytest.raises(InvalidInputError) as info:
        codec.image_to_rgb('rgb8', height, width, step, 0, bytes(size))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize('ext, fmt', [('.jpg', 'jpeg'), ('.png', 'png'),
                                      ('.png', 'rgb8; png compressed rgb8')])
def test_compressed_images_decode_to_rgb(ext: str, fmt: str) -> None:
    rgb = np.zeros((32, 64, 3), np.uint8)
    rgb[:, :32] = (250, 10, 10)  # red left half, blue right half
    rgb[:, 32:] = (10, 10, 250)
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    out = codec.compressed_to_rgb(fmt, encoded.tobytes())
    assert out.shape == (32, 64, 3)
    if ext == '.png':
        np.testing.assert_array_equal(out, rgb)
    else:  # lossy: compare away from the colour edge (chroma subsampling blurs it)
        interior = np.r_[0:24, 40:64]
        assert np.abs(out[:, interior].astype(int) - rgb[:, interior]).max() <= 12


def test_corrupt_and_truncated_jpeg_are_rejected() -> None:
    ok, encoded = cv2.imencode('.jpg', _rgb(64, 128))
    assert ok
    data = encoded.tobytes()
    with pytest.raises(InvalidInputError, match='truncated'):
        codec.compressed_to_rgb('jpeg', data[:len(data) // 2])
    with pytest.raises(InvalidInputError, match='cannot decode'):
        codec.compressed_to_rgb('jpeg', b'\x00' * 10 + data[10:])
    with pytest.raises(InvalidInputError, match='empty'):
        codec.compressed_to_rgb('jpeg', b'')


@pytest.mark.parametrize('pad', [0, 6])
def test_mono16_round_trip_and_big_endian(pad: int) -> None:
    labels = np.random.default_rng(1).integers(0, 65536, (3, 5)).astype(np.uint16)
    height, width, encoding, big, step, data = codec.labels_to_mono16_fields(labels)
    assert (height, width, encoding, big, step) == (3, 5, 'mono16', 0, 10)
    assert data == labels.astype('<u2').tobytes()
    np.testing.assert_array_equal(codec.mono16_to_labels(height, width, step, big, data), labels)
    padded_step, padded = _padded(labels.astype('>u2').view(np.uint8), pad)
    np.testing.assert_array_equal(codec.mono16_to_labels(3, 5, padded_step, 1, padded), labels)


def test_labels_that_do_not_fit_uint16_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match='uint16'):
        codec.labels_to_mono16_fields(np.array([[70000]], dtype=np.int64))
    with pytest.raises(InvalidInputError, match='2-D'):
        codec.labels_to_mono16_fields(np.zeros((2, 2, 2), np.uint16))


def _pointer(object_id: int, lon_deg: float) -> ObjectRecord:
    embedding = np.random.default_rng(object_id).normal(size=EMBEDDING_DIM).astype(np.float32)
    lon = np.radians(lon_deg)
    return ObjectRecord(id=object_id, bearing=np.array([np.cos(lon), -np.sin(lon), 0.0]),
                         lon_deg=lon_deg, lat_deg=0.0, width_deg=10.0 + object_id,
                         height_deg=5.0, solid_angle_sr=0.01 * object_id, area_px=100 * object_id,
                         score=0.5, age_frames=object_id, frames_since_seen=0,
                         embedding=embedding / np.linalg.norm(embedding),
                         class_id=object_id % 5, class_name='x' if object_id % 5 else '',
                         class_score=0.2 * (object_id % 5))


@pytest.mark.parametrize('embeddings', [True, False])
def test_object_cloud_round_trip_has_the_documented_layout(embeddings: bool) -> None:
    objects = [_pointer(3, 90.0), _pointer(7, -179.0)]
    fields, point_step, data = codec.objects_to_cloud_fields(objects, embeddings)
    names = [f[0] for f in fields]
    assert names[:4] == ['x', 'y', 'z', 'id']
    assert ('embedding' in names) == embeddings
    assert names[-2:] == ['class_id', 'class_score']
    assert point_step == (52 + 4 * EMBEDDING_DIM if embeddings else 52) + 8
    assert len(data) == 2 * point_step
    points = codec.cloud_to_objects_array(fields, point_step, 2, data)
    assert points['id'].tolist() == [3, 7]
    np.testing.assert_allclose(np.stack([points['x'], points['y'], points['z']], axis=1),
                               np.stack([o.bearing for o in objects]), atol=1e-6)
    np.testing.assert_allclose(points['lon_deg'], [90.0, -179.0])
    assert points['area_px'].tolist() == [300, 700]
    assert points['class_id'].tolist() == [3, 2]
    np.testing.assert_allclose(points['class_score'], [0.6, 0.4], rtol=1e-6)
    if embeddings:
        assert points['embedding'].shape == (2, EMBEDDING_DIM)
        np.testing.assert_allclose(points['embedding'][1], objects[1].embedding)
        assert next(f for f in fields if f[0] == 'embedding')[3] == EMBEDDING_DIM


def test_cloud_fields_match_the_published_dtype() -> None:
    fields, point_step, _ = codec.objects_to_cloud_fields([], embeddings=True)
    assert point_step == codec.OBJECT_FIELDS.itemsize
    for name, offset, datatype, count in fields:
        assert codec.OBJECT_FIELDS.fields[name][1] == offset
        assert datatype in (codec.FLOAT32, codec.UINT32)
        assert count == (EMBEDDING_DIM if name == 'embedding' else 1)


def test_short_cloud_data_is_rejected() -> None:
    fields, point_step, data = codec.objects_to_cloud_fields([_pointer(1, 0.0)], False)
    with pytest.raises(InvalidInputError, match='point_step'):
        codec.cloud_to_objects_array(fields, point_step, 2, data)
