"""Pixel and point-cloud payloads <-> NumPy, on plain message fields (no rclpy import).

The node passes rclpy message fields and the rosbag tools ``rosbags`` message fields (same names),
so every function takes the fields, not a message. Decoding is zero-copy where it can be
(``np.frombuffer`` views honouring ``step`` padding) plus at most one ``cv2.cvtColor``.

``objects`` PointCloud2 layout (height 1, one point per object, little-endian, dense):

=================  =========  ======  =====  ===================================================
field              datatype   offset  count  meaning
=================  =========  ======  =====  ===================================================
x, y, z            FLOAT32    0,4,8   1      unit bearing to the object centroid, camera frame
id                 UINT32     12      1      object id = its value in the ``masks`` label map
lon_deg, lat_deg   FLOAT32    16, 20  1      the same direction as ERP longitude / latitude
width_deg          FLOAT32    24      1      angular width (longitude extent, wrap-aware)
height_deg         FLOAT32    28      1      angular height (latitude extent)
solid_angle_sr     FLOAT32    32      1      area on the unit sphere, steradians
score              FLOAT32    36      1      mean predicted IoU x object score, [0, 1]
area_px            UINT32     40      1      pixels in the published label map
age_frames         UINT32     44      1      frames since the object was created
frames_since_seen  UINT32     48      1      0 when segmented in this frame
embedding          FLOAT32    52      256    SAM2 object pointer, L2-normalised (optional)
class_id           UINT32     1076    1      1-based class (its ``semantic`` value), 0 = none
class_score        FLOAT32    1080    1      the class's share of the fused evidence, [0, 1]
=================  =========  ======  =====  ===================================================

``point_step`` is 1084 bytes with the embedding and 60 without (``output.embeddings: false``; the
class fields then sit at 52 and 56). The class fields come last, so every older field keeps its
offset; a cloud written before them (``point_step`` 1076 or 52, no ``class_id`` field) decodes
with the same offsets and simply lacks the class fields.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Sequence, Tuple

import cv2
import numpy as np

from sap_ros.engine.types import EMBEDDING_DIM, ObjectRecord
from sap_ros.errors import InvalidInputError

#: Supported raw encodings -> (channels, cv2 conversion to RGB or None when already RGB).
_RAW_ENCODINGS = {
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
}
SUPPORTED_ENCODINGS: Tuple[str, ...] = tuple(_RAW_ENCODINGS)

# sensor_msgs/PointField datatype constants.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_DATATYPE_CODES = {INT8: 'i1', UINT8: 'u1', INT16: 'i2', UINT16: 'u2', INT32: 'i4', UINT32: 'u4',
                   FLOAT32: 'f4', FLOAT64: 'f8'}
_CODE_DATATYPES = {code: datatype for datatype, code in _DATATYPE_CODES.items()}

_SCALAR_FIELDS: Tuple[Tuple[str, str], ...] = (
    ('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('id', '<u4'),
    ('lon_deg', '<f4'), ('lat_deg', '<f4'), ('width_deg', '<f4'), ('height_deg', '<f4'),
    ('solid_angle_sr', '<f4'), ('score', '<f4'), ('area_px', '<u4'),
    ('age_frames', '<u4'), ('frames_since_seen', '<u4'))

#: Appended after the fields above (and after ``embedding``): older offsets never move.
_CLASS_FIELDS: Tuple[Tuple[str, str], ...] = (('class_id', '<u4'), ('class_score', '<f4'))

#: The ``objects`` PointCloud2 point as a packed little-endian NumPy structured dtype.
OBJECT_FIELDS: np.dtype = np.dtype(list(_SCALAR_FIELDS)
                                   + [('embedding', '<f4', (EMBEDDING_DIM,))]
                                   + list(_CLASS_FIELDS))
OBJECT_FIELDS_NO_EMBEDDING: np.dtype = np.dtype(list(_SCALAR_FIELDS) + list(_CLASS_FIELDS))

FieldSpec = Tuple[str, int, int, int]  # PointField (name, offset, datatype, count)


def image_to_rgb(encoding: str, height: int, width: int, step: int, is_bigendian: int,
                 data: Any) -> np.ndarray:
    """Raw ``sensor_msgs/Image`` fields -> ``(H, W, 3)`` uint8 RGB.

    ``rgb8`` comes back as a view on ``data`` (read-only when ``data`` is ``bytes``); the other
    encodings cost one ``cv2.cvtColor``. ``is_bigendian`` does not matter for 8-bit encodings.

    >>> image_to_rgb('bgr8', 1, 2, 8, 0, bytes([1, 2, 3, 4, 5, 6, 0, 0])).tolist()
    [[[3, 2, 1], [6, 5, 4]]]
    >>> image_to_rgb('16UC1', 1, 2, 4, 0, bytes(4))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sap_ros.errors.InvalidInputError: unsupported image encoding '16UC1' (supported: ...)
    """
    if encoding not in _RAW_ENCODINGS:
        raise InvalidInputError(f'unsupported image encoding {encoding!r} '
                                f"(supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels, conversion = _RAW_ENCODINGS[encoding]
    pixels = _row_view(f'{encoding} image', height, width, step, channels, 1, data)
    pixels = pixels.reshape(height, width, channels) if channels > 1 else pixels
    if conversion is None:
        return pixels
    return cv2.cvtColor(pixels, conversion)


def compressed_to_rgb(format: str, data: Any) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` fields (jpeg, png) -> ``(H, W, 3)`` uint8 RGB.

    >>> compressed_to_rgb('jpeg', b'not an image')
    Traceback (most recent call last):
    ...
    sap_ros.errors.InvalidInputError: cannot decode compressed image (format 'jpeg', 12 bytes)
    """
    if 'compresseddepth' in format.lower():
        raise InvalidInputError(f'unsupported compressed format {format!r} (supported: jpeg, png)')
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise InvalidInputError(f'compressed image is empty (format {format!r})')
    if buffer[:2].tobytes() == b'\xff\xd8' and b'\xff\xd9' not in buffer[-32:].tobytes():
        # libjpeg decodes a truncated stream with a warning and grey rows: reject it instead.
        raise InvalidInputError(f'JPEG data is truncated (no end-of-image marker, '
                                f'{buffer.size} bytes)')
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise InvalidInputError(
            f'cannot decode compressed image (format {format!r}, {buffer.size} bytes)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def labels_to_mono16_fields(labels: np.ndarray) -> Tuple[int, int, str, int, int, bytes]:
    """Label map ``(H, W)`` -> Image fields ``(height, width, 'mono16', 0, step, data)``.

    The data is little-endian (``is_bigendian = 0``) with no row padding.

    >>> labels_to_mono16_fields(np.array([[1, 258]], dtype=np.uint16))[:5]
    (1, 2, 'mono16', 0, 4)
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in 'ui':
        raise InvalidInputError(f'label map must be a 2-D integer array, got shape '
                                f'{labels.shape} dtype {labels.dtype}')
    if labels.size and (labels.min() < 0 or labels.max() > 0xFFFF):
        raise InvalidInputError(f'label values must fit uint16, got range '
                                f'[{labels.min()}, {labels.max()}]')
    height, width = labels.shape
    data = np.ascontiguousarray(labels, dtype='<u2').tobytes()
    return height, width, 'mono16', 0, 2 * width, data


def mono16_to_labels(height: int, width: int, step: int, is_bigendian: int,
                     data: Any) -> np.ndarray:
    """``mono16`` Image fields -> ``(H, W)`` uint16 label map in native byte order.

    >>> mono16_to_labels(1, 2, 4, 1, bytes([0, 1, 1, 2])).tolist()
    [[1, 258]]
    """
    rows = _row_view('mono16 image', height, width, step, 1, 2, data)
    order = '>' if is_bigendian else '<'
    return rows.view(f'{order}u2').reshape(height, width).astype(np.uint16)


def objects_to_cloud_fields(objects: Sequence[ObjectRecord], embeddings: bool
                            ) -> Tuple[List[FieldSpec], int, bytes]:
    """Objects -> PointCloud2 ``(fields, point_step, data)`` with one point per object.

    ``fields`` are ``(name, offset, datatype, count)`` for ``sensor_msgs/PointField``; the cloud is
    ``height = 1``, ``width = len(objects)``, little-endian and dense.

    >>> fields, point_step, data = objects_to_cloud_fields([], embeddings=False)
    >>> fields[:2], point_step, data
    ([('x', 0, 7, 1), ('y', 4, 7, 1)], 60, b'')
    """
    dtype = OBJECT_FIELDS if embeddings else OBJECT_FIELDS_NO_EMBEDDING
    points = np.zeros(len(objects), dtype=dtype)
    if objects:
        bearings = np.array([np.asarray(o.bearing, dtype=np.float64) for o in objects])
        points['x'], points['y'], points['z'] = bearings[:, 0], bearings[:, 1], bearings[:, 2]
        for name, _ in _SCALAR_FIELDS[3:] + _CLASS_FIELDS:
            points[name] = [getattr(o, name) for o in objects]
        if embeddings:
            points['embedding'] = np.array([np.asarray(o.embedding, dtype=np.float32).reshape(
                EMBEDDING_DIM) for o in objects])
    return dtype_to_fields(dtype), dtype.itemsize, points.tobytes()


def dtype_to_fields(dtype: np.dtype) -> List[FieldSpec]:
    """A packed structured dtype -> PointField ``(name, offset, datatype, count)`` specs."""
    if dtype.names is None or dtype.fields is None:
        raise InvalidInputError(f'expected a structured dtype, got {dtype}')
    specs = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        base, shape = (sub.subdtype if sub.subdtype else (sub, ()))
        count = int(np.prod(shape)) if shape else 1
        specs.append((name, int(offset), _CODE_DATATYPES[base.str[1:]], count))
    return specs


def cloud_to_objects_array(fields: Iterable[Any], point_step: int, width: int, data: Any,
                           is_bigendian: bool = False) -> np.ndarray:
    """PointCloud2 fields -> structured array of ``width`` points (a view on ``data``).

    ``fields`` are PointField messages (``name``, ``offset``, ``datatype``, ``count``) or
    ``(name, offset, datatype, count)`` tuples; a field with ``count > 1`` becomes a sub-array
    (``embedding`` -> ``(N, 256)``).

    >>> fields, step, data = objects_to_cloud_fields([], embeddings=True)
    >>> cloud_to_objects_array(fields, step, 0, data).dtype == OBJECT_FIELDS
    True
    """
    order = '>' if is_bigendian else '<'
    names, formats, offsets = [], [], []
    for field in fields:
        name, offset, datatype, count = _field_spec(field)
        if datatype not in _DATATYPE_CODES:
            raise InvalidInputError(f'PointField {name!r} has unknown datatype {datatype}')
        code = order + _DATATYPE_CODES[datatype]
        names.append(name)
        formats.append((code, (count,)) if count > 1 else code)
        offsets.append(offset)
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                      'itemsize': point_step})
    buffer = np.frombuffer(data, dtype=np.uint8)
    if width < 0 or buffer.size < point_step * width:
        raise InvalidInputError(f'point cloud data has {buffer.size} bytes, expected at least '
                                f'point_step {point_step} x width {width}')
    return buffer[:point_step * width].view(dtype)


def _field_spec(field: Any) -> FieldSpec:
    if hasattr(field, 'name'):
        return str(field.name), int(field.offset), int(field.datatype), int(field.count)
    name, offset, datatype, count = field
    return str(name), int(offset), int(datatype), int(count)


def _row_view(what: str, height: int, width: int, step: int, channels: int, item_bytes: int,
              data: Any) -> np.ndarray:
    """``(H, W * channels)`` view (uint8, or bytes of ``item_bytes``) skipping row padding."""
    if height <= 0 or width <= 0:
        raise InvalidInputError(f'{what} is empty: height {height}, width {width}')
    row_bytes = width * channels * item_bytes
    if step < row_bytes:
        raise InvalidInputError(f'{what} step {step} is smaller than width {width} x '
                                f'{channels * item_bytes} bytes per pixel = {row_bytes}')
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size < step * height:
        raise InvalidInputError(f'{what} data has {buffer.size} bytes, expected step {step} x '
                                f'height {height} = {step * height}')
    rows = buffer[:step * height].reshape(height, step)[:, :row_bytes]
    if item_bytes == 1:
        return rows
    return np.ascontiguousarray(rows)
