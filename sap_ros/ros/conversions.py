"""rclpy message <-> NumPy wrappers around :mod:`sap_ros.io.image_codec`.

Outputs copy the input frame's header (stamp and frame_id), so a consumer can match masks and
objects to the image they came from. Byte payloads go into messages as ``array.array('B')``
through the field setter: the message constructor copies ``data`` about 5x slower.
"""
from __future__ import annotations

import array
import math
from typing import Any, Sequence

from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, PointStamped
import numpy as np
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from sap_ros.engine.types import ObjectRecord, Prompt
from sap_ros.io import image_codec
from sap_ros.io.overlay import class_caption, label_colour_rgb

#: Length of the marker arrows (and distance of the id labels), metres; bearings have no range.
MARKER_RADIUS_M = 2.0
MARKER_NAMESPACE = 'sap_objects'


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) -> ``(H, W, 3)`` uint8 RGB."""
    return image_codec.image_to_rgb(msg.encoding, msg.height, msg.width, msg.step,
                                    msg.is_bigendian, msg.data)


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg, png) -> ``(H, W, 3)`` uint8 RGB."""
    return image_codec.compressed_to_rgb(msg.format, msg.data)


def labels_to_image_msg(labels: np.ndarray, header: Header) -> Image:
    """Label map ``(H, W)`` uint16 -> ``mono16`` Image with ``header`` copied."""
    height, width, encoding, is_bigendian, step, data = (
        image_codec.labels_to_mono16_fields(labels))
    msg = Image(header=_copy_header(header), height=height, width=width, encoding=encoding,
                is_bigendian=is_bigendian, step=step)
    msg.data = _byte_array(data)
    return msg


def image_msg_to_labels(msg: Image) -> np.ndarray:
    """``mono16`` Image -> ``(H, W)`` uint16 label map (honours ``is_bigendian`` and padding)."""
    return image_codec.mono16_to_labels(msg.height, msg.width, msg.step, msg.is_bigendian,
                                        msg.data)


def rgb_to_image_msg(rgb: np.ndarray, header: Header) -> Image:
    """``(H, W, 3)`` uint8 RGB -> ``rgb8`` Image with ``header`` copied."""
    height, width = rgb.shape[:2]
    msg = Image(header=_copy_header(header), height=height, width=width, encoding='rgb8',
                is_bigendian=0, step=3 * width)
    msg.data = _byte_array(np.ascontiguousarray(rgb))
    return msg


def objects_to_cloud_msg(objects: Sequence[ObjectRecord], header: Header,
                         embeddings: bool) -> PointCloud2:
    """Objects -> ``sensor_msgs/PointCloud2`` (layout in :mod:`image_codec`), header copied."""
    specs, point_step, data = image_codec.objects_to_cloud_fields(objects, embeddings)
    fields = [PointField(name=name, offset=offset, datatype=datatype, count=count)
              for name, offset, datatype, count in specs]
    msg = PointCloud2(header=_copy_header(header), height=1, width=len(objects), fields=fields,
                      is_bigendian=False, point_step=point_step,
                      row_step=point_step * len(objects), is_dense=True)
    msg.data = _byte_array(data)
    return msg


def cloud_msg_to_objects_array(msg: PointCloud2) -> np.ndarray:
    """``objects`` PointCloud2 -> structured array (fields as in ``OBJECT_FIELDS``)."""
    return image_codec.cloud_to_objects_array(msg.fields, msg.point_step,
                                              msg.width * msg.height, msg.data, msg.is_bigendian)


def point_msg_to_prompt(msg: PointStamped) -> Prompt:
    """Bearing in the camera frame -> positive :class:`Prompt`; zero/NaN -> InvalidInputError."""
    return Prompt(np.array([msg.point.x, msg.point.y, msg.point.z], dtype=np.float64))


def objects_to_marker_array(objects: Sequence[ObjectRecord], header: Header) -> MarkerArray:
    """An arrow along each bearing plus a text label; clears the previous set.

    The label is the id, followed by the class name and score when the object has a class
    (``'4 door 0.88'``).
    """
    markers = [Marker(header=_copy_header(header), ns=MARKER_NAMESPACE, action=Marker.DELETEALL)]
    for obj in objects:
        r, g, b = (c / 255.0 for c in label_colour_rgb(obj.id))
        colour = ColorRGBA(r=r, g=g, b=b, a=1.0)
        tip = np.asarray(obj.bearing, dtype=np.float64) * MARKER_RADIUS_M
        tip_point = Point(x=float(tip[0]), y=float(tip[1]), z=float(tip[2]))
        # Arrow width grows with the object's angular size, so large objects stand out.
        shaft_m = max(0.01, MARKER_RADIUS_M * math.radians(min(obj.width_deg, 60.0)) * 0.1)
        arrow = Marker(header=_copy_header(header), ns=MARKER_NAMESPACE, id=2 * obj.id,
                       type=Marker.ARROW, action=Marker.ADD, color=colour,
                       lifetime=Duration(sec=0), points=[Point(), tip_point])
        arrow.scale.x, arrow.scale.y, arrow.scale.z = shaft_m, 2.0 * shaft_m, 2.0 * shaft_m
        arrow.pose.orientation.w = 1.0
        text = Marker(header=_copy_header(header), ns=MARKER_NAMESPACE, id=2 * obj.id + 1,
                      type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, color=colour,
                      text=f'{obj.id} {class_caption(obj)}'.rstrip())
        text.pose.position = Point(x=tip_point.x * 1.05, y=tip_point.y * 1.05,
                                   z=tip_point.z * 1.05 + 0.05)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.15
        markers.extend([arrow, text])
    return MarkerArray(markers=markers)


def _copy_header(header: Header) -> Header:
    stamp = Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)
    return Header(stamp=stamp, frame_id=header.frame_id)


def _byte_array(data: Any) -> array.array:
    out = array.array('B')
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    out.frombytes(data)
    return out
