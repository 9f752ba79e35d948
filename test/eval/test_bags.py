"""rosbag2 I/O: write then read back (mcap and sqlite3), and errors that list the bag's topics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sap_ros.engine.types import ObjectRecord
from sap_ros.eval.bags import (
    TYPESTORE,
    BagError,
    BagWriter,
    bag_topics,
    count_messages,
    iter_messages,
    open_image_stream,
    open_label_stream,
)
from sap_ros.io.image_codec import cloud_to_objects_array

STAMPS_NS = [1_000_000_000 + k * 100_000_000 for k in range(3)]
LOG_OFFSET_NS = 5_000_000  # recorded 5 ms after the header stamp


def smooth_rgb(k: int) -> np.ndarray:
    """A smooth 64 x 128 image (JPEG-friendly), different for every ``k``."""
    v, u = np.mgrid[0:64, 0:128]
    return np.stack([(2 * u + 10 * k) % 256, 4 * v, np.full_like(u, 40 * k)], axis=-1
                    ).astype(np.uint8)


def label_map(k: int) -> np.ndarray:
    labels = np.zeros((64, 128), np.uint16)
    labels[10:30, 5 * k:5 * k + 40] = 300 + k  # beyond 8 bits on purpose
    return labels


def write_demo_bag(path: Path, storage: str, compressed: bool = False) -> None:
    with BagWriter(path, compressed=compressed, storage=storage) as bag:
        for k, stamp in enumerate(STAMPS_NS):
            log = stamp + LOG_OFFSET_NS
            bag.write_image('/cam/image', smooth_rgb(k), stamp, 'cam_front', log_time_ns=log)
            bag.write_compressed_image('/cam/image/compressed', smooth_rgb(k), stamp,
                                       'cam_front', log_time_ns=log)
            bag.write_labels('/gt/labels', label_map(k), stamp, 'cam_front', log_time_ns=log)
            bag.write_objects('/sap/objects', [make_object(k)], stamp, 'cam_front')


def make_object(k: int) -> ObjectRecord:
    return ObjectRecord(id=k + 1, bearing=np.array([1.0, 0.0, 0.0]), lon_deg=float(k),
                         lat_deg=0.0, width_deg=10.0, height_deg=5.0, solid_angle_sr=0.01,
                         area_px=100, score=0.9, age_frames=k, frames_since_seen=0)


@pytest.mark.parametrize('storage, compressed',
                         [('mcap', False), ('mcap', True), ('sqlite3', False)])
def test_round_trip_images_labels_and_objects(tmp_path, storage, compressed):
    bag_path = tmp_path / 'bag'
    write_demo_bag(bag_path, storage, compressed)
    assert bag_topics(bag_path) == {
        '/cam/image': ('sensor_msgs/msg/Image', 3),
        '/cam/image/compressed': ('sensor_msgs/msg/CompressedImage', 3),
        '/gt/labels': ('sensor_msgs/msg/Image', 3),
        '/sap/objects': ('sensor_msgs/msg/PointCloud2', 3)}
    assert count_messages(bag_path, '/gt/labels') == 3

    with open_image_stream(bag_path, '/cam/image') as stream:
        assert len(stream) == 3
        frames = list(stream)
    assert [f.header_stamp_ns for f in frames] == STAMPS_NS
    assert [f.timestamp_ns for f in frames] == [s + LOG_OFFSET_NS for s in STAMPS_NS]
    assert {f.frame_id for f in frames} == {'cam_front'}
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.rgb, smooth_rgb(k))  # rgb8 is lossless

    jpeg = list(open_image_stream(bag_path, '/cam/image/compressed'))
    assert [f.header_stamp_ns for f in jpeg] == STAMPS_NS
    for k, frame in enumerate(jpeg):
        assert frame.rgb.shape == (64, 128, 3)
        assert np.abs(frame.rgb.astype(int) - smooth_rgb(k)).mean() < 3.0  # lossy but close

    labels = list(open_label_stream(bag_path, '/gt/labels'))
    assert [t for t, _ in labels] == [s + LOG_OFFSET_NS for s in STAMPS_NS]
    by_header = list(open_label_stream(bag_path, '/gt/labels', use_header_stamp=True))
    assert [t for t, _ in by_header] == STAMPS_NS
    for k, (_, lab) in enumerate(labels):
        assert lab.dtype == np.uint16
        np.testing.assert_array_equal(lab, label_map(k))

    clouds = list(iter_messages(bag_path, '/sap/objects'))
    assert [t for t, _ in clouds] == STAMPS_NS  # log time defaults to the header stamp
    points = cloud_to_objects_array(clouds[2][1].fields, clouds[2][1].point_step,
                                    clouds[2][1].width, clouds[2][1].data)
    assert points['id'].tolist() == [3]
    assert points['lon_deg'].tolist() == [2.0]


def test_sqlite3_file_and_mcap_file_paths_are_accepted(tmp_path):
    for storage in ('sqlite3', 'mcap'):
        bag_path = tmp_path / storage
        write_demo_bag(bag_path, storage)
        storage_file = next(p for p in bag_path.iterdir() if p.suffix in ('.db3', '.mcap'))
        assert len(list(open_label_stream(storage_file, '/gt/labels'))) == 3


def test_wrong_topic_lists_the_topics_and_types(tmp_path):
    bag_path = tmp_path / 'bag'
    write_demo_bag(bag_path, 'mcap')
    with pytest.raises(BagError) as info:
        open_image_stream(bag_path, '/camera/image')
    message = str(info.value)
    assert "'/camera/image'" in message
    for topic, msgtype in (('/cam/image', 'sensor_msgs/msg/Image'),
                           ('/cam/image/compressed', 'sensor_msgs/msg/CompressedImage'),
                           ('/sap/objects', 'sensor_msgs/msg/PointCloud2')):
        assert f'{topic} ({msgtype}, 3 msgs)' in message
    with pytest.raises(BagError, match='/cam/image'):
        count_messages(bag_path, '/nope')


def test_unsupported_type_is_named(tmp_path):
    bag_path = tmp_path / 'bag'
    write_demo_bag(bag_path, 'sqlite3')
    with pytest.raises(BagError, match=r'has type sensor_msgs/msg/PointCloud2, expected '
                                       r'sensor_msgs/msg/Image or .*CompressedImage.*/gt/labels'):
        open_image_stream(bag_path, '/sap/objects')
    with pytest.raises(BagError, match='CompressedImage, expected sensor_msgs/msg/Image'):
        open_label_stream(bag_path, '/cam/image/compressed')


def test_missing_bag_and_empty_topic(tmp_path):
    with pytest.raises(BagError, match='not found'):
        open_image_stream(tmp_path / 'nothing_here', '/cam/image')
    bag_path = tmp_path / 'empty'
    with BagWriter(bag_path) as bag:
        bag.add_topic('/cam/image', 'sensor_msgs/msg/Image')
    with pytest.raises(BagError, match=r'no messages; .*/cam/image \(sensor_msgs/msg/Image, 0'):
        open_image_stream(bag_path, '/cam/image')
    bare = tmp_path / 'bare'
    with BagWriter(bare):
        pass
    with pytest.raises(BagError, match='the bag has no topics'):
        open_image_stream(bare, '/cam/image')


def test_corrupt_frame_raises_or_is_skipped(tmp_path):
    bag_path = tmp_path / 'bag'
    compressed = TYPESTORE.types['sensor_msgs/msg/CompressedImage']
    header = TYPESTORE.types['std_msgs/msg/Header']
    time = TYPESTORE.types['builtin_interfaces/msg/Time']
    with BagWriter(bag_path) as bag:
        bag.write_compressed_image('/img', smooth_rgb(0), STAMPS_NS[0])
        bad = compressed(header=header(stamp=time(sec=1, nanosec=1), frame_id='camera'),
                         format='jpeg', data=np.frombuffer(b'garbage', np.uint8))
        bag.write_message('/img', bad, STAMPS_NS[1])
        bag.write_compressed_image('/img', smooth_rgb(2), STAMPS_NS[2])
    with pytest.raises(BagError, match=r'/img message 1 .*cannot decode'):
        list(open_image_stream(bag_path, '/img'))
    stream = open_image_stream(bag_path, '/img', skip_invalid=True)
    assert [f.header_stamp_ns for f in stream] == [STAMPS_NS[0], STAMPS_NS[2]]
    assert stream.skipped == 1


def test_writer_refuses_existing_path(tmp_path):
    with pytest.raises(BagError, match='exists'):
        BagWriter(tmp_path)
