"""The ``objects`` PointCloud2 bytes, checked against the README table, not against our dtype.

Every expected byte string is packed here with :mod:`struct` from the README's offsets, so a
change of the field table (order, type, offset) breaks these tests even when the codec and its
decoder change together. A planner without ``sensor_msgs_py`` reads the bytes the same way.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Tuple

import numpy as np
import pytest

from sap_ros.engine.types import ObjectRecord
from sap_ros.io.image_codec import objects_to_cloud_fields

FLOAT32, UINT32 = 7, 6  # sensor_msgs/PointField datatypes
#: The README's table: name -> (offset, datatype, count).
README_TABLE: Dict[str, Tuple[int, int, int]] = {
    'x': (0, FLOAT32, 1), 'y': (4, FLOAT32, 1), 'z': (8, FLOAT32, 1), 'id': (12, UINT32, 1),
    'lon_deg': (16, FLOAT32, 1), 'lat_deg': (20, FLOAT32, 1), 'width_deg': (24, FLOAT32, 1),
    'height_deg': (28, FLOAT32, 1), 'solid_angle_sr': (32, FLOAT32, 1),
    'score': (36, FLOAT32, 1), 'area_px': (40, UINT32, 1), 'age_frames': (44, UINT32, 1),
    'frames_since_seen': (48, UINT32, 1), 'embedding': (52, FLOAT32, 256),
}


def _objects() -> List[ObjectRecord]:
    rng = np.random.default_rng(3)
    out = []
    for k in range(3):
        bearing = rng.normal(size=3)
        embedding = rng.normal(size=256).astype(np.float32)
        out.append(ObjectRecord(
            id=7 + 1000 * k, bearing=bearing / np.linalg.norm(bearing), lon_deg=-120.5 + 90 * k,
            lat_deg=12.25 - 20 * k, width_deg=30.0 + k, height_deg=15.5 + k,
            solid_angle_sr=0.125 * (k + 1), area_px=4321 + k, score=0.75 - 0.25 * k,
            age_frames=17 + k, frames_since_seen=3 if k == 1 else 0,
            embedding=embedding / np.linalg.norm(embedding)))
    return out


def _packed(obj: ObjectRecord, embeddings: bool) -> bytes:
    """One point, packed field by field at the README offsets (little-endian)."""
    head = struct.pack('<fffIffffffIII', *obj.bearing, obj.id,
                       obj.lon_deg, obj.lat_deg, obj.width_deg, obj.height_deg,
                       obj.solid_angle_sr, obj.score, obj.area_px, obj.age_frames,
                       obj.frames_since_seen)
    assert len(head) == 52
    if not embeddings:
        return head
    return head + struct.pack('<256f', *np.asarray(obj.embedding, np.float32))


@pytest.mark.parametrize('embeddings, point_step', [(True, 1076), (False, 52)])
def test_cloud_bytes_are_the_readme_layout(embeddings: bool, point_step: int) -> None:
    objects = _objects()
    fields, step, data = objects_to_cloud_fields(objects, embeddings)
    assert step == point_step
    expected = {k: v for k, v in README_TABLE.items() if embeddings or k != 'embedding'}
    assert {name: (offset, datatype, count) for name, offset, datatype, count in fields} == (
        expected)
    assert bytes(data) == b''.join(_packed(o, embeddings) for o in objects)


def _planner_read(fields, point_step: int, data: bytes, name: str) -> list:
    """How a planner reads one field of every point: find it by name, unpack at its offset."""
    (offset, datatype, count), = [(f[1], f[2], f[3]) for f in fields if f[0] == name]
    code = {FLOAT32: 'f', UINT32: 'I'}[datatype]
    values = []
    for start in range(0, len(data), point_step):
        unpacked = struct.unpack_from(f'<{count}{code}', data, start + offset)
        values.append(unpacked[0] if count == 1 else unpacked)
    return values


def test_a_planner_finds_the_biggest_visible_object_and_its_bearing() -> None:
    objects = _objects()
    fields, step, data = objects_to_cloud_fields(objects, embeddings=True)
    ids = _planner_read(fields, step, data, 'id')
    seen = _planner_read(fields, step, data, 'frames_since_seen')
    sizes = _planner_read(fields, step, data, 'solid_angle_sr')
    visible = [k for k in range(len(ids)) if seen[k] == 0]
    biggest = max(visible, key=lambda k: sizes[k])
    assert ids[biggest] == 2007 and sizes[biggest] == pytest.approx(0.375)
    bearing = [_planner_read(fields, step, data, axis)[biggest] for axis in 'xyz']
    np.testing.assert_allclose(bearing, objects[2].bearing, atol=1e-6)
    assert _planner_read(fields, step, data, 'score')[biggest] == pytest.approx(0.25)
    assert _planner_read(fields, step, data, 'area_px')[biggest] == 4323
    embedding = np.array(_planner_read(fields, step, data, 'embedding')[biggest])
    assert embedding.shape == (256,) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
