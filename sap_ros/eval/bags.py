"""rosbag2 I/O for the offline tools, with the ``rosbags`` library (no rclpy).

Reading: camera frames (``sensor_msgs/Image`` or ``CompressedImage``) and label maps
(``mono16``/``mono8`` Images) from mcap and sqlite3 rosbag2 bags, as streams that know their
length (for progress bars) and close the bag when done. Writing: ``BagWriter`` (mcap by default,
or sqlite3) for RGB and JPEG images, ``mono16`` label maps and the ``objects`` PointCloud2.

Every failure is a ``BagError`` whose message names the path and, for topic problems, lists
every topic of the bag with its type and message count.

Pixel payloads go through ``sap_ros.io.image_codec`` (the same code the node uses); decoded
``rgb8`` frames and ``mono16`` label maps may be read-only views on the message buffer.
"""
from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore

from sap_ros.engine.types import ObjectRecord
from sap_ros.errors import InvalidInputError, SapError
from sap_ros.io.image_codec import (
    compressed_to_rgb,
    image_to_rgb,
    labels_to_mono16_fields,
    mono16_to_labels,
    objects_to_cloud_fields,
)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
STRING = 'std_msgs/msg/String'
POINT_CLOUD2 = 'sensor_msgs/msg/PointCloud2'
IMAGE_TYPES: Tuple[str, ...] = (IMAGE, COMPRESSED_IMAGE)
LABEL_ENCODINGS: Tuple[str, ...] = ('mono16', '16UC1', 'mono8', '8UC1')
BAG_VERSION: Literal[8] = 8  # rosbag2 metadata version written by ROS 2 Jazzy

TYPESTORE = get_typestore(getattr(Stores, 'ROS2_JAZZY', Stores.ROS2_HUMBLE))


class BagError(SapError):
    """A rosbag cannot be read or written as asked (the message says why and what it holds)."""


class BagStorage(enum.Enum):
    """rosbag2 storage plugin."""

    MCAP = 'mcap'
    SQLITE3 = 'sqlite3'


class ImageFrame(NamedTuple):
    """One camera frame: bag log time, header stamp (ns), header frame_id, RGB ``(H, W, 3)``."""

    timestamp_ns: int
    header_stamp_ns: int
    frame_id: str
    rgb: np.ndarray


class LabelFrame(NamedTuple):
    """One label map: time (bag log time, or header stamp on request) and ``(H, W)`` uint16."""

    timestamp_ns: int
    labels: np.ndarray


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _open_reader(bag_path: str | Path) -> Reader:
    path = Path(bag_path)
    if not path.exists():
        raise BagError(f'rosbag not found: {path}')
    try:
        reader = Reader(path)
        reader.open()
    except Exception as err:  # rosbags raises several types for unreadable bags
        raise BagError(f'cannot open rosbag {path}: {err}') from err
    return reader


def _topic_table(reader: Reader) -> Dict[str, Tuple[str, int]]:
    return {name: (info.msgtype or 'mixed types', int(info.msgcount))
            for name, info in sorted(reader.topics.items())}


def describe_topics(topics: Dict[str, Tuple[str, int]]) -> str:
    """One-line listing ``/a (type, N msgs), ...`` for error messages."""
    if not topics:
        return 'the bag has no topics'
    listing = ', '.join(f'{name} ({msgtype}, {count} msgs)'
                        for name, (msgtype, count) in topics.items())
    return f'topics in the bag: {listing}'


def bag_topics(bag_path: str | Path) -> Dict[str, Tuple[str, int]]:
    """Every topic of a bag -> ``(msgtype, message count)``, sorted by name."""
    reader = _open_reader(bag_path)
    try:
        return _topic_table(reader)
    finally:
        reader.close()


def count_messages(bag_path: str | Path, topic: str) -> int:
    """Number of messages on ``topic``; BagError (listing the topics) when it is absent."""
    topics = bag_topics(bag_path)
    if topic not in topics:
        raise BagError(f'topic {topic!r} not in rosbag {bag_path}; {describe_topics(topics)}')
    return topics[topic][1]


class MessageStream:
    """Decoded messages of one topic, in log-time order; closes the bag when exhausted.

    Use as an iterator (optionally in a ``with`` block); ``len()`` is the number of messages.
    With ``skip_invalid`` a message that fails to decode is skipped and counted in ``skipped``;
    otherwise it raises a BagError naming the topic, index and time.
    """

    def __init__(self, bag_path: str | Path, topic: str, accepted: Sequence[str],
                 decode: Callable[[Any, int, str], Any], skip_invalid: bool = False) -> None:
        """Open the bag and check that ``topic`` exists, has an accepted type and messages."""
        self.path = Path(bag_path)
        self.topic = topic
        self.skipped = 0
        self._decode = decode
        self._skip_invalid = skip_invalid
        self._reader: Optional[Reader] = _open_reader(self.path)
        try:
            topics = _topic_table(self._reader)
            if topic not in topics:
                raise BagError(f'topic {topic!r} not in rosbag {self.path}; '
                               f'{describe_topics(topics)}')
            self.msgtype, self.count = topics[topic]
            if self.msgtype not in accepted:
                raise BagError(f'topic {topic!r} in rosbag {self.path} has type {self.msgtype}, '
                               f"expected {' or '.join(accepted)}; {describe_topics(topics)}")
            if self.count == 0:
                raise BagError(f'topic {topic!r} in rosbag {self.path} has no messages; '
                               f'{describe_topics(topics)}')
            connections = [c for c in self._reader.connections if c.topic == topic]
            self._messages = self._reader.messages(connections=connections)
        except BaseException:
            self.close()
            raise
        self._index = 0

    def __len__(self) -> int:
        """Number of messages on the topic (including any that will be skipped)."""
        return self.count

    def __iter__(self) -> 'MessageStream':
        """The stream is its own iterator (it can be read once)."""
        return self

    def __next__(self) -> Any:
        """Decode the next message."""
        while self._reader is not None:
            try:
                connection, timestamp_ns, raw = next(self._messages)
            except StopIteration:
                self.close()
                break
            index = self._index
            self._index += 1
            try:
                msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
                return self._decode(msg, timestamp_ns, connection.msgtype)
            except (InvalidInputError, SerdeError, ValueError, IndexError, AssertionError) as err:
                if self._skip_invalid:
                    self.skipped += 1
                    continue
                self.close()
                raise BagError(f'{self.topic} message {index} (t={timestamp_ns} ns) in '
                               f'{self.path}: {err}') from err
        raise StopIteration

    def close(self) -> None:
        """Close the bag (idempotent)."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def __enter__(self) -> 'MessageStream':
        """Context manager: the bag closes on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the bag."""
        self.close()


def _decode_image(msg: Any, timestamp_ns: int, msgtype: str) -> ImageFrame:
    if msgtype == COMPRESSED_IMAGE:
        rgb = compressed_to_rgb(msg.format, msg.data)
    else:
        rgb = image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                           msg.data)
    return ImageFrame(int(timestamp_ns), stamp_to_ns(msg.header.stamp), str(msg.header.frame_id),
                      rgb)


def open_image_stream(bag_path: str | Path, topic: str,
                      skip_invalid: bool = False) -> MessageStream:
    """Camera frames of ``topic`` (Image or CompressedImage) as ``ImageFrame`` tuples.

    ``(timestamp_ns, header_stamp_ns, frame_id, rgb)``; ``rgb`` is ``(H, W, 3)`` uint8.
    Raises BagError at once for a missing bag, a missing topic, an unsupported type or a topic
    without messages.
    """
    return MessageStream(bag_path, topic, IMAGE_TYPES, _decode_image, skip_invalid)


def labels_from_image_fields(encoding: str, height: int, width: int, step: int,
                             is_bigendian: int, data: Any) -> np.ndarray:
    """``mono16``/``16UC1``/``mono8``/``8UC1`` Image fields -> ``(H, W)`` uint16 labels."""
    if encoding in ('mono16', '16UC1'):
        return mono16_to_labels(height, width, step, is_bigendian, data)
    if encoding in ('mono8', '8UC1'):
        buffer = np.frombuffer(data, dtype=np.uint8)
        if height <= 0 or width <= 0 or step < width or buffer.size < step * height:
            raise InvalidInputError(f'mono8 label image {width}x{height} (step {step}) has '
                                    f'{buffer.size} bytes')
        return buffer[:step * height].reshape(height, step)[:, :width].astype(np.uint16)
    raise InvalidInputError(f'unsupported label encoding {encoding!r} '
                            f"(supported: {', '.join(LABEL_ENCODINGS)})")


def open_label_stream(bag_path: str | Path, topic: str,
                      use_header_stamp: bool = False) -> MessageStream:
    """Label maps of an Image ``topic`` (mono16 or mono8) as ``LabelFrame`` tuples.

    ``timestamp_ns`` is the bag log time, or the header stamp with ``use_header_stamp``.
    """
    def decode(msg: Any, timestamp_ns: int, msgtype: str) -> LabelFrame:
        labels = labels_from_image_fields(msg.encoding, msg.height, msg.width, msg.step,
                                          msg.is_bigendian, msg.data)
        stamp = stamp_to_ns(msg.header.stamp) if use_header_stamp else int(timestamp_ns)
        return LabelFrame(stamp, labels)

    return MessageStream(bag_path, topic, (IMAGE,), decode)


def iter_messages(bag_path: str | Path, topic: str) -> MessageStream:
    """Raw deserialized messages of ``topic`` (any type) as ``(timestamp_ns, msg)`` pairs."""
    def decode(msg: Any, timestamp_ns: int, msgtype: str) -> Tuple[int, Any]:
        return int(timestamp_ns), msg

    topics = bag_topics(bag_path)
    accepted = (topics[topic][0],) if topic in topics else ()
    return MessageStream(bag_path, topic, accepted, decode)


def _header(stamp_ns: int, frame_id: str) -> Any:
    time = TYPESTORE.types['builtin_interfaces/msg/Time'](
        sec=int(stamp_ns) // 1_000_000_000, nanosec=int(stamp_ns) % 1_000_000_000)
    return TYPESTORE.types['std_msgs/msg/Header'](stamp=time, frame_id=frame_id)


def _bytes_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


class BagWriter:
    """Write a rosbag2 (mcap by default) of camera, label and object messages.

    Args:
        path: output bag directory; must not exist yet.
        compressed: zstd-compress the storage (mcap chunks; sqlite3: every message).
        storage: ``BagStorage.MCAP`` or ``BagStorage.SQLITE3`` (or their names).

    Topics are added on first write (or with ``add_topic``); the log time of every message is
    its header stamp unless ``log_time_ns`` is given. Use as a context manager.

    """

    def __init__(self, path: str | Path, compressed: bool = False,
                 storage: BagStorage | str = BagStorage.MCAP) -> None:
        """Prepare the writer (the bag is created by ``open()`` or ``with``)."""
        self.path = Path(path)
        self.storage = BagStorage(storage)
        if self.path.exists():
            raise BagError(f'output bag {self.path} exists already')
        plugin = StoragePlugin.MCAP if self.storage == BagStorage.MCAP else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugin)
        if compressed:
            mode = (CompressionMode.STORAGE if self.storage == BagStorage.MCAP
                    else CompressionMode.MESSAGE)
            self._writer.set_compression(mode, CompressionFormat.ZSTD)
        self._connections: Dict[str, Any] = {}
        self._open = False
        self.counts: Dict[str, int] = {}

    def open(self) -> 'BagWriter':
        """Create the bag directory and storage file."""
        try:
            self._writer.open()
        except Exception as err:
            raise BagError(f'cannot create rosbag {self.path}: {err}') from err
        self._open = True
        return self

    def close(self) -> None:
        """Write the index and ``metadata.yaml`` (idempotent)."""
        if self._open:
            self._open = False
            self._writer.close()

    def __enter__(self) -> 'BagWriter':
        """Open the bag."""
        return self.open()

    def __exit__(self, *exc: object) -> None:
        """Close the bag; what was written before an exception stays readable."""
        self.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` with ``msgtype`` (e.g. ``sensor_msgs/msg/Image``)."""
        if not self._open:
            raise BagError(f'rosbag {self.path} is not open for writing')
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise BagError(f'topic {topic!r} already has type '
                               f'{self._connections[topic].msgtype}, not {msgtype}')
            return
        self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                               typestore=TYPESTORE)
        self.counts[topic] = 0

    def write_message(self, topic: str, msg: Any, stamp_ns: int,
                      log_time_ns: Optional[int] = None) -> None:
        """Serialize and write any ``rosbags`` message object on ``topic``."""
        self.add_topic(topic, msg.__msgtype__)
        data = TYPESTORE.serialize_cdr(msg, msg.__msgtype__)
        log_time = int(stamp_ns if log_time_ns is None else log_time_ns)
        self._writer.write(self._connections[topic], log_time, data)
        self.counts[topic] += 1

    def write_image(self, topic: str, rgb: np.ndarray, stamp_ns: int, frame_id: str = 'camera',
                    log_time_ns: Optional[int] = None) -> None:
        """Write an ``rgb8`` Image from an ``(H, W, 3)`` uint8 array."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InvalidInputError(f'RGB image must be (H, W, 3), got shape {rgb.shape}')
        height, width = rgb.shape[:2]
        msg = TYPESTORE.types[IMAGE](
            header=_header(stamp_ns, frame_id), height=height, width=width, encoding='rgb8',
            is_bigendian=0, step=3 * width, data=rgb.reshape(-1))
        self.write_message(topic, msg, stamp_ns, log_time_ns)

    def write_compressed_image(self, topic: str, rgb: np.ndarray, stamp_ns: int,
                               frame_id: str = 'camera', quality: int = 90,
                               log_time_ns: Optional[int] = None) -> None:
        """Write a JPEG CompressedImage (``format 'jpeg'``) of an ``(H, W, 3)`` RGB array."""
        ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(np.asarray(rgb, np.uint8),
                                                     cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise InvalidInputError(f'cannot JPEG-encode an image of shape {np.shape(rgb)}')
        msg = TYPESTORE.types[COMPRESSED_IMAGE](header=_header(stamp_ns, frame_id),
                                                format='jpeg', data=jpeg.reshape(-1))
        self.write_message(topic, msg, stamp_ns, log_time_ns)

    def write_labels(self, topic: str, labels: np.ndarray, stamp_ns: int,
                     frame_id: str = 'camera', log_time_ns: Optional[int] = None) -> None:
        """Write a ``mono16`` Image of an ``(H, W)`` label map (values < 65536)."""
        height, width, encoding, is_bigendian, step, data = labels_to_mono16_fields(labels)
        msg = TYPESTORE.types[IMAGE](
            header=_header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
            is_bigendian=is_bigendian, step=step, data=_bytes_array(data))
        self.write_message(topic, msg, stamp_ns, log_time_ns)

    def write_string(self, topic: str, text: str, stamp_ns: int,
                     log_time_ns: Optional[int] = None) -> None:
        """Write a ``std_msgs/String`` (e.g. JSON metadata such as class names)."""
        msg = TYPESTORE.types[STRING](data=str(text))
        self.write_message(topic, msg, stamp_ns, log_time_ns)

    def write_objects(self, topic: str, objects: Sequence[ObjectRecord], stamp_ns: int,
                      frame_id: str = 'camera', embeddings: bool = True,
                      log_time_ns: Optional[int] = None) -> None:
        """Write the ``objects`` PointCloud2 (layout in ``sap_ros.io.image_codec``)."""
        specs, point_step, data = objects_to_cloud_fields(list(objects), embeddings)
        point_field = TYPESTORE.types['sensor_msgs/msg/PointField']
        fields: List[Any] = [point_field(name=name, offset=offset, datatype=datatype, count=count)
                             for name, offset, datatype, count in specs]
        msg = TYPESTORE.types[POINT_CLOUD2](
            header=_header(stamp_ns, frame_id), height=1, width=len(objects), fields=fields,
            is_bigendian=False, point_step=point_step, row_step=point_step * len(objects),
            data=_bytes_array(data), is_dense=True)
        self.write_message(topic, msg, stamp_ns, log_time_ns)
