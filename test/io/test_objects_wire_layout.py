"""The ``objects`` PointCloud2 bytes, checked against the README table, not against our dtype.

Every expected byte string is packed here with :mod:`struct` from the README's offsets, so a
change of the field table (order, type, offset) breaks these tests even when the codec and its
decoder change together. A planner without ``sensor_msgs_py`` reads the bytes the same way.

The class fields (issue 21) were appended: a planner written for the layout before them (frozen
below as ``OLD_TABLE``) must still read every field it knows at the offset it knows.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Tuple

import numpy as np
import pytest

from sap_ros.engine.types import ObjectRecord
from sap_ros.io.image_codec import cloud_to_objects_array, objects_to_cloud_fields

FLOAT32, UINT32 = 7, 6  # sensor_msgs/PointField datatypes
#: The README's table: name -> (offset, datatype, count).
README_TABLE: Dict[str, Tuple[int, int, int]] = {
    'x': (0, FLOAT32, 1), 'y': (4, FLOAT32, 1), 'z': (8, FLOAT32, 1), 'id': (12, UINT32, 1),
    'lon_deg': (16, FLOAT32, 1), 'lat_deg': (20, FLOAT32, 1), 'width_deg': (24, FLOAT32, 1),
    'height_deg': (28, FLOAT32, 1), 'solid_angle_sr': (32, FLOAT32, 1),
    'score': (36, FLOAT32, 1), 'area_px': (40, UINT32, 1), 'age_frames': (44, UINT32, 1),
    'frames_since_seen': (48, UINT32, 1), 'embedding': (52, FLOAT32, 256),
    'class_id': (1076, UINT32, 1), 'class_score': (1080, FLOAT32, 1),
}
#: The README's table with ``output.embeddings: false``: no embedding, the class fields move up.
README_TABLE_NO_EMBEDDING = {
    **{k: v for k, v in README_TABLE.items() if k not in ('embedding', 'class_id', 'class_score')},
    'class_id': (52, UINT32, 1), 'class_score': (56, FLOAT32, 1),
}
#: The layout before the class fields (point_step 1076, or 52 without the embedding).
OLD_TABLE = {k: v for k, v in README_TABLE.items() if k not in ('class_id', 'class_score')}


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
            embedding=embedding / np.linalg.norm(embedding),
            class_id=(0, 2, 5)[k], class_name=('', 'door', 'person')[k],
            class_score=(0.0, 0.5, 0.875)[k]))
    return out


def _packed(obj: ObjectRecord, embeddings: bool) -> bytes:
    """One point, packed field by field at the README offsets (little-endian)."""
    head = struct.pack('<fffIffffffIII', *obj.bearing, obj.id,
                       obj.lon_deg, obj.lat_deg, obj.width_deg, obj.height_deg,
                       obj.solid_angle_sr, obj.score, obj.area_px, obj.age_frames,
                       obj.frames_since_seen)
    assert len(head) == 52
    embedding = b''
    if embeddings:
        embedding = struct.pack('<256f', *np.asarray(obj.embedding, np.float32))
    return head + embedding + struct.pack('<If', obj.class_id, obj.class_score)


@pytest.mark.parametrize('embeddings, point_step', [(True, 1084), (False, 60)])
def test_cloud_bytes_are_the_readme_layout(embeddings: bool, point_step: int) -> None:
    objects = _objects()
    fields, step, data = objects_to_cloud_fields(objects, embeddings)
    assert step == point_step
    expected = README_TABLE if embeddings else README_TABLE_NO_EMBEDDING
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


def _old_planner_read(point_step: int, data: bytes, name: str) -> list:
    """A planner written before the class fields: offsets hard-coded from the old table."""
    offset, datatype, count = OLD_TABLE[name]
    code = {FLOAT32: 'f', UINT32: 'I'}[datatype]
    return [struct.unpack_from(f'<{count}{code}', data, start + offset)
            for start in range(0, len(data), point_step)]


@pytest.mark.parametrize('embeddings', [True, False])
def test_a_planner_of_the_old_layout_reads_the_new_messages(embeddings: bool) -> None:
    objects = _objects()
    fields, step, data = objects_to_cloud_fields(objects, embeddings)
    by_name = {f[0]: f[1:] for f in fields}
    for name, spec in OLD_TABLE.items():  # a field-list reader finds every old field unmoved
        if embeddings or name != 'embedding':
            assert by_name[name] == spec, name
    # A reader with hard-coded offsets, stepping by the message's point_step.
    assert [v[0] for v in _old_planner_read(step, data, 'id')] == [o.id for o in objects]
    assert [v[0] for v in _old_planner_read(step, data, 'frames_since_seen')] == [0, 3, 0]
    for axis, name in enumerate('xyz'):
        np.testing.assert_allclose([v[0] for v in _old_planner_read(step, data, name)],
                                   [o.bearing[axis] for o in objects], atol=1e-6)
    np.testing.assert_allclose([v[0] for v in _old_planner_read(step, data, 'lon_deg')],
                               [o.lon_deg for o in objects], atol=1e-4)
    assert [v[0] for v in _old_planner_read(step, data, 'area_px')] == [4321, 4322, 4323]
    if embeddings:
        np.testing.assert_allclose(_old_planner_read(step, data, 'embedding'),
                                   [o.embedding for o in objects], atol=1e-6)


def test_a_reader_tells_the_layouts_apart_and_decodes_an_old_cloud() -> None:
    objects = _objects()
    old_data = b''.join(_packed(o, True)[:1076] for o in objects)  # as written before issue 21
    old_fields = [(name, *spec) for name, spec in OLD_TABLE.items()]
    points = cloud_to_objects_array(old_fields, 1076, len(objects), old_data)
    assert 'class_id' not in points.dtype.names  # the old layout: no class fields
    assert points['id'].tolist() == [o.id for o in objects]
    fields, step, data = objects_to_cloud_fields(objects, embeddings=True)
    new_points = cloud_to_objects_array(fields, step, len(objects), data)
    assert step == 1084 and 'class_id' in new_points.dtype.names
    for name in OLD_TABLE:
        np.testing.assert_array_equal(new_points[name], points[name])
    assert new_points['class_id'].tolist() == [0, 2, 5]


def test_a_planner_reads_the_class_of_each_object() -> None:
    fields, step, data = objects_to_cloud_fields(_objects(), embeddings=False)
    classes = _planner_read(fields, step, data, 'class_id')
    scores = _planner_read(fields, step, data, 'class_score')
    ids = _planner_read(fields, step, data, 'id')
    people = [ids[k] for k in range(len(ids)) if classes[k] == 5 and scores[k] > 0.8]
    assert people == [2007]
