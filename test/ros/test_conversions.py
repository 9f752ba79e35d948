"""rclpy message wrappers: headers are copied, payloads survive a serialisation round trip."""
from __future__ import annotations

import dataclasses
import json
import math

from geometry_msgs.msg import PointStamped
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from sap_ros.engine.types import EMBEDDING_DIM, ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.io.overlay import label_colour_rgb, overlay_rgb
from sap_ros.ros import conversions
from sap_ros.ros.class_outputs import ClassNameTable


def _header() -> Header:
    header = Header(frame_id='camera_360')
    header.stamp.sec, header.stamp.nanosec = 1712, 345
    return header


def _wire(msg, kind):
    """What a subscriber in another process receives."""
    return deserialize_message(serialize_message(msg), kind)


def _object(object_id: int, bearing, **classes) -> ObjectRecord:
    bearing = np.asarray(bearing, dtype=np.float64) / np.linalg.norm(bearing)
    return ObjectRecord(id=object_id, bearing=bearing, lon_deg=0.0, lat_deg=0.0,
                         width_deg=20.0, height_deg=10.0, solid_angle_sr=0.05, area_px=42,
                         score=0.8, age_frames=3, frames_since_seen=1,
                         embedding=np.full(EMBEDDING_DIM, 1.0 / 16.0, np.float32), **classes)


def test_labels_round_trip_through_a_mono16_message() -> None:
    labels = np.random.default_rng(0).integers(0, 2000, (16, 32)).astype(np.uint16)
    msg = _wire(conversions.labels_to_image_msg(labels, _header()), Image)
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == (
        'mono16', 16, 32, 64, 0)
    assert msg.header.frame_id == 'camera_360' and msg.header.stamp.nanosec == 345
    np.testing.assert_array_equal(conversions.image_msg_to_labels(msg), labels)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8'])
def test_image_messages_decode_to_rgb(encoding: str) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (8, 16, 3)).astype(np.uint8)
    if encoding == 'mono8':
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]
    pixels = {'rgb8': rgb, 'bgr8': rgb[..., ::-1], 'mono8': rgb[..., 0]}[encoding]
    msg = Image(encoding=encoding, height=8, width=16, step=16 * (1 if encoding == 'mono8' else 3))
    msg.data = np.ascontiguousarray(pixels).tobytes()
    np.testing.assert_array_equal(conversions.image_msg_to_rgb(_wire(msg, Image)), rgb)


def test_objects_cloud_is_readable_as_a_structured_array() -> None:
    objects = [_object(4, [1.0, 0.0, 0.0]), _object(9, [0.0, -1.0, 1.0])]
    msg = _wire(conversions.objects_to_cloud_msg(objects, _header(), embeddings=True),
                PointCloud2)
    assert msg.header.frame_id == 'camera_360' and (msg.height, msg.width) == (1, 2)
    assert msg.row_step == 2 * msg.point_step and msg.is_dense and not msg.is_bigendian
    points = conversions.cloud_msg_to_objects_array(msg)
    assert points['id'].tolist() == [4, 9]
    np.testing.assert_allclose(points['z'], [0.0, math.sqrt(0.5)], atol=1e-6)
    assert points['frames_since_seen'].tolist() == [1, 1]
    np.testing.assert_allclose(np.linalg.norm(points['embedding'], axis=1), 1.0, rtol=1e-6)


def test_empty_object_list_is_an_empty_cloud_with_the_layout() -> None:
    msg = conversions.objects_to_cloud_msg([], _header(), embeddings=False)
    assert msg.width == 0 and len(msg.data) == 0
    names = [f.name for f in msg.fields]
    assert names[-3:] == ['frames_since_seen', 'class_id', 'class_score']
    assert conversions.cloud_msg_to_objects_array(msg).shape == (0,)


def test_overlay_message_is_rgb_at_the_label_size_with_the_object_colour() -> None:
    frame = np.full((64, 128, 3), 100, np.uint8)
    labels = np.zeros((32, 64), np.uint16)
    labels[:8, :8] = 5
    overlay = overlay_rgb(frame, labels, alpha=1.0)
    msg = _wire(conversions.rgb_to_image_msg(overlay, _header()), Image)
    rgb = conversions.image_msg_to_rgb(msg)
    assert rgb.shape == (32, 64, 3) and tuple(rgb[0, 0]) == label_colour_rgb(5)
    assert tuple(rgb[-1, -1]) == (100, 100, 100)


def test_markers_point_along_each_bearing_and_clear_the_old_ones() -> None:
    objects = [_object(4, [1.0, 0.0, 0.0]), _object(9, [0.0, 1.0, 0.0])]
    msg = _wire(conversions.objects_to_marker_array(objects, _header()), MarkerArray)
    assert msg.markers[0].action == Marker.DELETEALL
    arrows = [m for m in msg.markers if m.type == Marker.ARROW and m.action == Marker.ADD]
    assert len(arrows) == 2 and all(m.header.frame_id == 'camera_360' for m in arrows)
    tip = arrows[1].points[1]
    np.testing.assert_allclose([tip.x, tip.y, tip.z],
                               [0.0, conversions.MARKER_RADIUS_M, 0.0], atol=1e-9)
    assert sorted(m.text for m in msg.markers if m.type == Marker.TEXT_VIEW_FACING) == ['4', '9']


def test_markers_name_the_class_of_classified_objects_only() -> None:
    objects = [_object(4, [1.0, 0.0, 0.0], class_id=3, class_name='person', class_score=0.914),
               _object(9, [0.0, 1.0, 0.0])]
    msg = _wire(conversions.objects_to_marker_array(objects, _header()), MarkerArray)
    texts = {m.id: m.text for m in msg.markers if m.type == Marker.TEXT_VIEW_FACING}
    assert texts == {9: '4 person 0.91', 19: '9'}


def _caption_frame():
    frame = np.full((480, 960, 3), 100, np.uint8)
    labels = np.zeros((240, 480), np.uint16)
    labels[100:140, 220:260] = 5  # around lon 0, lat 0
    return frame, labels


def test_overlay_captions_classified_objects_at_their_centroid() -> None:
    frame, labels = _caption_frame()
    plain = overlay_rgb(frame, labels)
    unclassified = _object(5, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(overlay_rgb(frame, labels, [unclassified]), plain)
    door = _object(5, [1.0, 0.0, 0.0], class_id=2, class_name='door', class_score=0.5)
    captioned = overlay_rgb(frame, labels, [door])
    changed = np.argwhere(np.any(captioned != plain, axis=-1))
    assert len(changed) > 50 and (captioned == 255).all(axis=-1).any()  # white text drawn
    (v0, u0), (v1, u1) = changed.min(axis=0), changed.max(axis=0)
    assert v0 <= 120 <= v1 and u0 <= 240 <= u1  # over the centroid (lon 0, lat 0)
    assert v1 - v0 < 40 and u1 - u0 < 160
    person = _object(5, [1.0, 0.0, 0.0], class_id=1, class_name='person', class_score=0.5)
    assert not np.array_equal(overlay_rgb(frame, labels, [person]), captioned)


def test_overlay_caption_at_the_seam_stays_inside_the_image() -> None:
    frame, labels = _caption_frame()
    behind = dataclasses.replace(
        _object(5, [-1.0, 0.0, 0.0], class_id=2, class_name='door', class_score=0.5),
        lon_deg=179.9)
    captioned = overlay_rgb(frame, labels, [behind])
    columns = np.flatnonzero(np.any(captioned != overlay_rgb(frame, labels), axis=(0, 2)))
    # The whole caption (as wide as at lon 0), shifted left to end at the right border.
    width = labels.shape[1]
    assert columns.max() >= width - 6 and columns.max() - columns.min() > 40


def test_class_name_table_fills_gaps_from_the_records() -> None:
    table = ClassNameTable(['wall', 'door'])
    assert table.update([_object(1, [1.0, 0.0, 0.0])]) is False  # no class: nothing new
    door = _object(2, [1.0, 0.0, 0.0], class_id=2, class_name='door', class_score=0.9)
    assert table.update([door]) is False
    lamp = _object(3, [1.0, 0.0, 0.0], class_id=4, class_name='lamp', class_score=0.9)
    assert table.update([lamp, door]) is True
    assert json.loads(table.to_json()) == ['wall', 'door', '', 'lamp']


def test_prompt_from_point_is_normalised_and_bad_vectors_are_rejected() -> None:
    msg = PointStamped()
    msg.point.x, msg.point.y, msg.point.z = 0.0, 3.0, 4.0
    np.testing.assert_allclose(conversions.point_msg_to_prompt(msg).bearing, [0.0, 0.6, 0.8])
    for x, y, z in [(0.0, 0.0, 0.0), (math.nan, 0.0, 1.0), (math.inf, 0.0, 0.0)]:
        msg.point.x, msg.point.y, msg.point.z = x, y, z
        with pytest.raises(InvalidInputError):
            conversions.point_msg_to_prompt(msg)
