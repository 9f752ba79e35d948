"""Class outputs of the node over DDS: ``semantic``, ``class_names``, class fields and captions.

The stand-in pipeline plays a classifier when given class names (object 1 is a 'door', score
0.75, and results carry the semantic map); without them it has none, as SapPipeline with
``classifier.kind: none``.
"""
from __future__ import annotations

import json
from typing import Iterator, List, Set

from node_fakes import FakeFactory, FakePipeline, Running, marked_frame, run_node, running_node
import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_probe import RECORD_QOS, image_msg, stamp_ns
from sensor_msgs.msg import Image
from std_msgs.msg import String

from sap_ros.io.overlay import overlay_rgb
from sap_ros.ros.conversions import cloud_msg_to_objects_array, image_msg_to_labels

CLASS_NAMES = ('wall', 'door')


@pytest.fixture()
def running(ros_context) -> Iterator[Running]:
    yield from run_node(ros_context)


def _published_topics(running: Running) -> Set[str]:
    node = running.node
    return {name for name, _ in node.get_publisher_names_and_types_by_node(
        node.get_name(), node.get_namespace())}


def test_without_a_classifier_there_is_no_semantic_topic(running: Running) -> None:
    probe = running.probe
    probe.image_pub.publish(image_msg(marked_frame(1), 1))
    probe.mask_for(1)
    cloud = cloud_msg_to_objects_array(probe.objects_for(1))
    assert cloud['class_id'].tolist() == [0] and cloud['class_score'].tolist() == [0.0]
    topics = _published_topics(running)
    ns = running.node.get_namespace()
    assert f'{ns}/masks' in topics
    assert f'{ns}/semantic' not in topics and f'{ns}/class_names' not in topics


def test_a_classifier_adds_semantic_class_names_and_captions(ros_context) -> None:
    with running_node(ros_context, FakeFactory(class_names=CLASS_NAMES)) as running:
        probe, node, ns = running.probe, running.node, running.node.get_namespace()
        semantic: List[Image] = []
        probe.node.create_subscription(Image, 'semantic', semantic.append, RECORD_QOS)
        probe.record_overlay_and_markers()
        for stamp in range(1, 100):  # until DDS has matched the publishers made on frame 1
            probe.image_pub.publish(image_msg(marked_frame(2), stamp, frame_id='cam'))
            probe.mask_for(stamp)
            if semantic and probe.overlays and probe.markers:
                break
        # The semantic map: the stamp, frame and size of its masks; the class id on the object.
        msg = semantic[-1]
        assert 1 <= stamp_ns(msg.header) <= stamp  # the stamp of an input frame
        masks = probe.mask_for(stamp_ns(msg.header))
        assert msg.header.frame_id == 'cam' and msg.encoding == 'mono16'
        assert (msg.height, msg.width) == (masks.height, masks.width) == (32, 64)
        labels = image_msg_to_labels(masks)
        np.testing.assert_array_equal(image_msg_to_labels(msg), np.where(labels == 1, 2, 0))
        assert {f'{ns}/semantic', f'{ns}/class_names'} <= _published_topics(running)
        (masks_info,) = node.get_publishers_info_by_topic(f'{ns}/masks')
        (semantic_info,) = node.get_publishers_info_by_topic(f'{ns}/semantic')
        for policy in ('reliability', 'durability'):
            assert getattr(semantic_info.qos_profile, policy) == getattr(
                masks_info.qos_profile, policy)
        # Class names: latched, so a planner subscribing now still gets them.
        names: List[String] = []
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        probe.node.create_subscription(String, 'class_names', names.append, latched)
        probe.wait(lambda: names, 30.0, 'the latched class_names')
        assert json.loads(names[0].data) == list(CLASS_NAMES)
        cloud = cloud_msg_to_objects_array(probe.objects_for(stamp_ns(msg.header)))
        assert cloud['class_id'].tolist() == [2] and cloud['class_score'].tolist() == [0.75]
        # RViz markers and the overlay name the class.
        assert {m.text for m in probe.markers[-1].markers if m.text} == {'1 door 0.75'}
        overlay = probe.overlays[-1]
        frame = marked_frame(2)
        objects = FakePipeline(0.5, class_names=CLASS_NAMES).step(frame).objects
        got = np.frombuffer(bytes(overlay.data), np.uint8).reshape(32, 64, 3)
        np.testing.assert_array_equal(got, overlay_rgb(frame, labels, objects))
        assert not np.array_equal(got, overlay_rgb(frame, labels))
        # Cleanup destroys them with the other outputs.
        assert probe.transition('deactivate') and probe.transition('cleanup')
        assert not {f'{ns}/semantic', f'{ns}/class_names'} & _published_topics(running)
