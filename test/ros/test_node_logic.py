"""Node logic with a fake pipeline: lifecycle, newest-frame processing, rejections, services.

The node runs in this process (its own executor thread) and is reached over real DDS through the
probe; the pipeline is injected, so these tests need no model. The real node process with the real
pipeline is tested in ``test_node_process.py``.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from typing import Iterator

from geometry_msgs.msg import PointStamped
from node_fakes import SUCCESS, FakeFactory, Running, make_node, marked_frame, run_node
import numpy as np
import pytest
from rclpy.qos import ReliabilityPolicy
from ros_probe import Probe, image_msg, stamp_ns
from std_srvs.srv import Trigger

from sap_ros.errors import CheckpointError
from sap_ros.ros import node as node_module
from sap_ros.ros.conversions import cloud_msg_to_objects_array, image_msg_to_labels
from sap_ros.ros.node import SapNode

_namespaces = itertools.count()


@pytest.fixture()
def running(ros_context) -> Iterator[Running]:
    yield from run_node(ros_context)


def _make_node(context, factory: FakeFactory, namespace: str = '', **params) -> SapNode:
    return make_node(context, factory, namespace, **params)


def _frame(marker: int) -> np.ndarray:
    return marked_frame(marker)


def test_invalid_parameter_fails_configure_naming_it(ros_context, capfd) -> None:
    node = _make_node(ros_context, FakeFactory(), **{'patches.fov_deg': 500.0})
    try:
        assert node.trigger_configure() != SUCCESS
        assert 'patches.fov_deg' in capfd.readouterr().err
    finally:
        node.destroy_node()


def test_missing_checkpoint_fails_configure_with_how_to_get_one(ros_context, capfd) -> None:
    node = _make_node(ros_context, FakeFactory(), **{'model.allow_random_weights': False})
    try:
        assert node.trigger_configure() != SUCCESS
        err = capfd.readouterr().err
        assert 'model.checkpoint' in err and 'download' in err
    finally:
        node.destroy_node()


def test_checkpoint_error_when_loading_fails_activate(ros_context, capfd) -> None:
    factory = FakeFactory(CheckpointError('/x/sam2.1_hiera_tiny.pt is corrupt'))
    node = _make_node(ros_context, factory)
    try:
        assert node.trigger_configure() == SUCCESS
        assert node.trigger_activate() != SUCCESS
        err = capfd.readouterr().err
        assert 'model.checkpoint' in err and 'corrupt' in err
    finally:
        node.release()
        node.destroy_node()


def test_core_log_records_reach_the_ros_log_until_the_node_is_destroyed(ros_context,
                                                                          capfd) -> None:
    core_log = logging.getLogger('sap_ros.engine.pipeline')
    node = _make_node(ros_context, FakeFactory())
    name = node.get_name()
    try:
        core_log.error('object ids exhausted: test line')
        core_log.debug('too fine to forward')
    finally:
        node.destroy_node()
    err = capfd.readouterr().err
    line = next(line for line in err.splitlines() if 'object ids exhausted: test line' in line)
    assert 'ERROR' in line and name in line and 'sap_ros.engine.pipeline' in line
    assert 'too fine to forward' not in err
    core_log.error('after destroy')
    assert '[ERROR]' not in capfd.readouterr().err


def test_outputs_copy_the_header_and_the_configured_size(running: Running) -> None:
    probe = running.probe
    probe.image_pub.publish(image_msg(_frame(1), 5_000_000_123, frame_id='cam'))
    masks = probe.mask_for(5_000_000_123)
    assert masks.header.frame_id == 'cam' and masks.encoding == 'mono16'
    assert (masks.height, masks.width) == (32, 64)  # 64 x 128 input, output.scale 0.5
    labels = image_msg_to_labels(masks)
    objects = cloud_msg_to_objects_array(probe.objects_for(5_000_000_123))
    assert set(np.unique(labels[labels > 0]).tolist()) == set(objects['id'].tolist()) == {1}
    assert objects['embedding'].shape == (1, 256)


def test_slow_pipeline_processes_the_newest_frame_and_counts_drops(running: Running) -> None:
    probe, gate = running.probe, running.factory.gate
    gate.clear()  # the model is "busy" until we say so
    probe.image_pub.publish(image_msg(_frame(1), 1))
    probe.wait(running.pipeline.entered.is_set, 30.0, 'the first frame to reach the model')
    for marker in range(2, 11):
        probe.image_pub.publish(image_msg(_frame(marker), marker))
        probe.wait(lambda: running.node.stats().frames_received >= marker, 30.0,
                   f'frame {marker} to be received')
    gate.set()
    probe.mask_for(10)
    assert running.pipeline.frame_markers == [1, 10]
    stats = running.node.stats()
    assert stats.frames_dropped == 8
    assert [stamp_ns(m.header) for m in probe.masks] == [1, 10]


@pytest.mark.parametrize('bad', ['16UC1', 'bayer_rggb8', 'square', 'empty', 'short'])
def test_bad_frames_are_rejected_and_the_next_good_one_is_processed(running: Running,
                                                                    bad: str) -> None:
    probe = running.probe
    good = _frame(7)
    messages = {
        '16UC1': image_msg(bytes(64 * 128 * 2), 1, encoding='16UC1', height=64, width=128,
                           step=256),
        'bayer_rggb8': image_msg(bytes(64 * 128), 1, encoding='bayer_rggb8', height=64,
                                 width=128, step=128),
        'square': image_msg(good[:, :64], 1),
        'empty': image_msg(b'', 1, height=0, width=0, step=0),
        'short': image_msg(good.tobytes()[:-10], 1, height=64, width=128, step=384),
    }
    probe.image_pub.publish(messages[bad])
    probe.wait(lambda: running.node.stats().frames_rejected == 1, 30.0, 'the rejection')
    probe.image_pub.publish(image_msg(good, 2))
    probe.mask_for(2)
    assert running.pipeline.frame_markers == [7]


def test_prompts_reach_the_pipeline_and_bad_ones_are_counted(running: Running) -> None:
    probe = running.probe
    for x, y, z in [(0.0, 0.0, 0.0), (math.nan, 1.0, 0.0), (0.0, 2.0, 0.0)]:
        msg = PointStamped()
        msg.header.frame_id = 'camera_360'
        msg.point.x, msg.point.y, msg.point.z = x, y, z
        probe.prompt_pub.publish(msg)
    probe.wait(lambda: running.node.stats().rejected[node_module.RejectKind.PROMPT] == 2, 30.0,
               'two prompt rejections')
    probe.image_pub.publish(image_msg(_frame(1), 3))
    probe.mask_for(3)
    (prompts,) = running.pipeline.prompts
    assert len(prompts) == 1 and np.allclose(prompts[0].bearing, [0.0, 1.0, 0.0])


def test_pipeline_failure_skips_the_frame_and_the_node_goes_on(running: Running) -> None:
    probe = running.probe
    running.pipeline.fail_next = RuntimeError('CUDA out of memory (simulated)')
    probe.image_pub.publish(image_msg(_frame(1), 1))
    probe.wait(lambda: running.node.stats().rejected[node_module.RejectKind.PIPELINE] == 1,
               30.0, 'the pipeline failure to be counted')
    assert 'out of memory' in running.node.stats().last_error
    probe.image_pub.publish(image_msg(_frame(2), 2))
    probe.mask_for(2)


def test_reset_service_resets_the_pipeline_before_the_next_frame(running: Running) -> None:
    probe = running.probe
    probe.image_pub.publish(image_msg(_frame(1), 1))
    probe.mask_for(1)
    response = probe.call(probe.reset_client, Trigger.Request())
    assert response.success and 'before the next frame' in response.message
    probe.image_pub.publish(image_msg(_frame(2), 2))
    probe.mask_for(2)
    assert running.pipeline.events == ['step', 'reset', 'step']


def test_deactivate_frees_the_pipeline_and_activate_builds_a_new_one(running: Running) -> None:
    probe = running.probe
    first = running.pipeline
    assert probe.transition('deactivate')
    assert probe.state() == 'inactive'
    probe.wait(lambda: first.closed, 30.0, 'the worker to close the idle pipeline')
    probe.wait_subscribed(probe.image_pub, subscribed=False)
    response = probe.call(probe.reset_client, Trigger.Request())
    assert not response.success and 'inactive' in response.message
    assert probe.transition('activate')
    assert len(running.factory.built) == 2 and not running.pipeline.closed
    probe.wait_subscribed(probe.image_pub)
    probe.image_pub.publish(image_msg(_frame(4), 4))
    probe.mask_for(4)
    assert running.pipeline.frame_markers == [4]


def test_overlay_and_markers_only_while_someone_listens(running: Running, monkeypatch) -> None:
    probe = running.probe
    calls = []
    real_overlay = node_module.overlay_rgb
    monkeypatch.setattr(node_module, 'overlay_rgb',
                        lambda *a: calls.append(1) or real_overlay(*a))
    probe.image_pub.publish(image_msg(_frame(1), 1))
    probe.mask_for(1)
    assert calls == []
    probe.record_overlay_and_markers()
    for stamp in range(2, 100):  # until DDS has matched the new subscribers
        probe.image_pub.publish(image_msg(_frame(2), stamp))
        probe.mask_for(stamp)
        if probe.overlays and probe.markers:
            break
    assert probe.overlays and probe.markers and calls
    overlay, markers = probe.overlays[-1], probe.markers[-1]
    assert overlay.encoding == 'rgb8' and (overlay.height, overlay.width) == (32, 64)
    assert 2 <= stamp_ns(overlay.header) <= stamp  # the header of an input frame
    ids = {m.text for m in markers.markers if m.text}
    assert ids == {'1'}


# In this order: the third case fails when one node's override leaks into the next node.
@pytest.mark.parametrize('override, expected', [(None, ReliabilityPolicy.BEST_EFFORT),
                                                ('reliable', ReliabilityPolicy.RELIABLE),
                                                (None, ReliabilityPolicy.BEST_EFFORT)],
                         ids=['default', 'reliable', 'default-after-override'])
def test_input_is_best_effort_unless_overridden(ros_context, override, expected) -> None:
    namespace = f'/unit{os.getpid()}_q{next(_namespaces)}'
    params = {f'qos_overrides.{namespace}/image.subscription.reliability': override}
    node = _make_node(ros_context, FakeFactory(), namespace,
                      **{k: v for k, v in params.items() if v is not None})
    probe = Probe(ros_context, namespace=namespace, probe_name=f'probe{next(_namespaces)}')
    try:
        assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
        (info,) = probe.wait(lambda: probe.node.get_subscriptions_info_by_topic(
            f'{namespace}/image'), 30.0, 'the image subscription')
        assert info.qos_profile.reliability == expected
    finally:
        probe.close()
        node.release()
        node.destroy_node()
