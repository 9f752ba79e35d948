"""The README's promises about ``sap_node``, checked where a user sees them: over DDS.

The node runs in this process with a stand-in pipeline (:mod:`node_fakes`), so every timing is
in the test's hands: a frame lasts until the test releases it, and latency, fps and the log
throttle read a clock the test moves. Nothing here asserts how fast anything is; a deadline on a
service call is far below the stand-in frame, which would otherwise never end.
"""
from __future__ import annotations

import math
import struct
from typing import Dict, Iterator, List

from geometry_msgs.msg import PointStamped
from lifecycle_msgs.srv import GetState
from node_fakes import FakeClock, FakeFactory, Running, marked_frame, run_node, running_node
import numpy as np
import pytest
from ros_probe import image_msg
from std_srvs.srv import Trigger

from sap_ros.ros.conversions import cloud_msg_to_objects_array
from sap_ros.ros.diagnostics import RejectKind
from sap_ros.ros.node import MAX_PENDING_PROMPTS

#: A service deadline: the stand-in frame only ends when the test releases it, so a call that
#: waited for the frame would never answer; generous for a loaded CI machine.
SERVICE_DEADLINE_S = 20.0
REJECT_KEYS = ('rejected_image', 'rejected_compressed', 'rejected_shape', 'rejected_prompt',
               'rejected_pipeline')


@pytest.fixture()
def running(ros_context) -> Iterator[Running]:
    yield from run_node(ros_context)


def _prompt(frame_id: str, x: float, y: float, z: float) -> PointStamped:
    msg = PointStamped()
    msg.header.frame_id = frame_id
    msg.point.x, msg.point.y, msg.point.z = x, y, z
    return msg


def _fence_prompts(running: Running) -> None:
    """Wait until every prompt published so far has reached the node (a rejected marker)."""
    probe = running.probe
    before = running.node.stats().rejected[RejectKind.PROMPT]
    probe.prompt_pub.publish(_prompt('', 0.0, 0.0, 0.0))
    probe.wait(lambda: running.node.stats().rejected[RejectKind.PROMPT] > before, 30.0,
               'the prompt fence to be rejected')


# -- services and transitions while a frame is in flight -------------------------------------
def test_reset_and_diagnostics_answer_while_a_frame_is_in_flight(running: Running) -> None:
    probe, pipeline = running.probe, running.pipeline
    running.factory.gate.clear()  # the frame runs until the end of the test
    probe.image_pub.publish(image_msg(marked_frame(1), 1))
    probe.wait(pipeline.entered.is_set, 30.0, 'the frame to enter the pipeline')
    response = probe.call(probe.reset_client, Trigger.Request(), timeout_s=SERVICE_DEADLINE_S)
    assert response.success and 'before the next frame' in response.message
    values = probe.wait_diagnostics(2, timeout_s=SERVICE_DEADLINE_S)
    assert values['state'] == 'active' and values['frames_processed'] == '0'
    assert pipeline.events == []  # nothing was reset under the running frame
    running.factory.gate.set()
    probe.mask_for(1)
    probe.image_pub.publish(image_msg(marked_frame(2), 2))
    probe.mask_for(2)
    assert pipeline.events == ['step', 'reset', 'step']


def test_deactivate_returns_during_a_frame_and_frees_the_model_after_it(running: Running
                                                                        ) -> None:
    probe, first = running.probe, running.pipeline
    running.factory.gate.clear()
    probe.image_pub.publish(image_msg(marked_frame(1), 1))
    probe.wait(first.entered.is_set, 30.0, 'the frame to enter the pipeline')
    assert probe.transition('deactivate', timeout_s=SERVICE_DEADLINE_S)
    state = probe.call(probe.get_state_client, GetState.Request(), SERVICE_DEADLINE_S)
    assert state.current_state.label == 'inactive'
    assert probe.wait_diagnostics(2, timeout_s=SERVICE_DEADLINE_S)['state'] == 'inactive'
    assert not first.closed  # the model is not pulled from under the running frame
    running.factory.gate.set()
    probe.wait(lambda: first.closed, 30.0, 'the model to be freed after the frame')
    assert first.events == ['step', 'close']
    # The frame ended after deactivate: nothing is published for it and it counts as dropped.
    probe.wait(lambda: running.node.stats().frames_dropped == 1, 30.0, 'the drop to be counted')
    assert probe.masks == []
    assert probe.transition('activate')
    probe.wait_subscribed(probe.image_pub)
    probe.image_pub.publish(image_msg(marked_frame(2), 2))
    probe.mask_for(2)
    assert running.pipeline is not first and running.pipeline.frame_markers == [2]


# -- /diagnostics ----------------------------------------------------------------------------
def test_diagnostics_report_latency_pipeline_time_and_fps(ros_context) -> None:
    clock = FakeClock()
    factory = FakeFactory()
    factory.on_step = lambda: clock.advance(0.25)  # each frame takes 0.25 s on this clock
    factory.pipeline_ms = 123.4
    with running_node(ros_context, factory, clock=clock) as running:
        probe = running.probe
        for stamp in (1, 2, 3):
            probe.image_pub.publish(image_msg(marked_frame(stamp), stamp))
            probe.mask_for(stamp)
        probe.wait(lambda: probe.counter('frames_processed') == 3, 30.0, '3 frames processed')
        values = probe.wait_diagnostics()
        assert values['latency_ms'] == '250.0'  # received -> published, on the node's clock
        assert values['pipeline_ms'] == '123.4'  # what the pipeline reported
        assert values['fps'] == '4.000'  # 3 frames done 0.25 s apart
        clock.advance(10.0)  # no frame for 10 s
        assert probe.wait_diagnostics()['fps'] == '0.000'


def test_each_rejection_counts_under_its_own_kind(running: Running) -> None:
    probe, good = running.probe, marked_frame(7)
    senders = {
        RejectKind.IMAGE: lambda: probe.image_pub.publish(image_msg(
            bytes(64 * 128 * 2), 1, encoding='16UC1', height=64, width=128, step=256)),
        RejectKind.SHAPE: lambda: probe.image_pub.publish(image_msg(good[:, :64], 2)),
        RejectKind.PROMPT: lambda: probe.prompt_pub.publish(_prompt('', math.nan, 0.0, 1.0)),
        RejectKind.PIPELINE: lambda: (setattr(running.pipeline, 'fail_next',
                                              RuntimeError('simulated failure')),
                                      probe.image_pub.publish(image_msg(good, 3))),
    }
    for kind, send in senders.items():
        before = running.node.stats().rejected
        send()
        probe.wait(lambda: running.node.stats().rejected[kind] == before[kind] + 1, 30.0,
                   f'a {kind.value} rejection')
        after = running.node.stats().rejected
        assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {kind: 1}
    values = probe.wait_diagnostics()  # what a user reads
    assert _reject_counts(values) == {'rejected_image': 1, 'rejected_compressed': 0,
                                      'rejected_shape': 1, 'rejected_prompt': 1,
                                      'rejected_pipeline': 1}
    assert values['frames_rejected'] == '3' and values['prompts_rejected'] == '1'
    assert values['frames_received'] == '3' and values['frames_processed'] == '0'


def _reject_counts(values: Dict[str, str]) -> Dict[str, int]:
    return {key: int(values[key]) for key in REJECT_KEYS}


def test_diagnostics_come_once_a_second_of_ros_time(ros_context) -> None:
    """With ``use_sim_time`` the period is measured on /clock, so the test sets the time."""
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock

    with running_node(ros_context, use_sim_time=True) as running:
        probe = running.probe
        clock_pub = probe.node.create_publisher(Clock, '/clock', QoSProfile(depth=10))
        probe.wait(lambda: clock_pub.get_subscription_count() > 0, 30.0, 'a /clock subscriber')

        def set_time(seconds: float) -> None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = int(seconds), int(round(seconds % 1 * 1e9))
            clock_pub.publish(msg)

        def reach(seconds: float) -> None:
            """Set the time; return once the node's clock shows it and its executor ran.

            A service call on the node's executor answers after whatever became due.
            """
            set_time(seconds)
            probe.wait(lambda: running.node.get_clock().now().nanoseconds >= seconds * 1e9,
                       30.0, f'the node clock at {seconds} s')
            probe.state()

        # Half-second steps; after each whole second wait for the message stamped with it
        # (messages of one publisher arrive in order, so any earlier one is in by then).
        for second in range(1000, 1005):
            reach(second - 0.5)
            reach(second)
            probe.wait(lambda: second in probe.diagnostics_stamps_s, 30.0,
                       f'/diagnostics stamped {second} s')
        later = [s for s in probe.diagnostics_stamps_s if s > 1000.0]
        assert later == [1001.0, 1002.0, 1003.0, 1004.0]


# -- log throttle -----------------------------------------------------------------------------
def test_rejections_are_logged_once_per_kind_every_5_s_with_the_count_held_back(
        ros_context, capfd) -> None:
    clock = FakeClock()
    with running_node(ros_context, clock=clock) as running:
        probe = running.probe
        bad_encoding = image_msg(bytes(64 * 128 * 2), 1, encoding='16UC1', height=64, width=128,
                                 step=256)

        def reject(msg, key: str, total: int) -> None:
            probe.image_pub.publish(msg)
            probe.wait(lambda: running.node.stats().frames_rejected == total, 30.0, key)

        for total in (1, 2, 3):  # t = 100, 101, 102: one line, two held back
            reject(bad_encoding, 'image', total)
            clock.advance(1.0)
        reject(image_msg(marked_frame(1)[:, :64], 2), 'shape', 4)  # another kind: its own line
        clock.advance(3.0)  # t = 106: 6 s after the first image line
        reject(bad_encoding, 'image', 5)
        err = capfd.readouterr().err
    image_lines = [line for line in err.splitlines() if 'rejected image input' in line]
    shape_lines = [line for line in err.splitlines() if 'rejected shape input' in line]
    assert len(image_lines) == 2 and len(shape_lines) == 1
    assert 'more' not in image_lines[0]
    assert image_lines[1].endswith('(2 more image rejections since the last report)')


# -- prompts ----------------------------------------------------------------------------------
def test_prompts_in_another_frame_than_the_cameras_are_rejected(running: Running) -> None:
    probe = running.probe
    probe.image_pub.publish(image_msg(marked_frame(1), 1, frame_id='cam'))
    probe.mask_for(1)
    probe.prompt_pub.publish(_prompt('base_link', 1.0, 0.0, 0.0))  # another frame
    probe.prompt_pub.publish(_prompt('cam', 0.0, 1.0, 0.0))  # the camera's frame
    probe.prompt_pub.publish(_prompt('', 0.0, 0.0, 1.0))  # no frame: taken as the camera's
    _fence_prompts(running)
    assert running.node.stats().rejected[RejectKind.PROMPT] == 2  # base_link and the fence
    probe.image_pub.publish(image_msg(marked_frame(2), 2, frame_id='cam'))
    probe.mask_for(2)
    bearings = [p.bearing.tolist() for p in running.pipeline.prompts[-1]]
    assert bearings == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_pending_prompts_are_capped_to_the_newest(running: Running) -> None:
    probe = running.probe
    total = MAX_PENDING_PROMPTS + 8
    angles = np.radians(np.arange(total, dtype=np.float64))
    for chunk in range(0, total, 8):  # the prompt topic keeps 10: fence every 8
        for angle in angles[chunk:chunk + 8]:
            probe.prompt_pub.publish(_prompt('', math.cos(angle), math.sin(angle), 0.0))
        _fence_prompts(running)
    probe.image_pub.publish(image_msg(marked_frame(1), 1))
    probe.mask_for(1)
    given = np.array([p.bearing for p in running.pipeline.prompts[-1]])
    assert len(given) == MAX_PENDING_PROMPTS
    expected = np.stack([np.cos(angles), np.sin(angles), np.zeros(total)], axis=1)[-32:]
    np.testing.assert_allclose(given, expected, atol=1e-9)


# -- outputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize('embeddings, point_step', [(True, 1084), (False, 60)])
def test_output_embeddings_parameter_sets_the_published_point_size(ros_context, embeddings,
                                                                   point_step) -> None:
    with running_node(ros_context, **{'output.embeddings': embeddings}) as running:
        probe = running.probe
        probe.image_pub.publish(image_msg(marked_frame(1), 1))
        cloud = probe.objects_for(1)
    assert cloud.point_step == point_step and cloud.width == 1
    assert len(cloud.data) == cloud.row_step == point_step
    assert ('embedding' in [f.name for f in cloud.fields]) is embeddings
    # The README offsets, read straight from the bytes: id at 12, score at 36, area_px at 40.
    data = bytes(cloud.data)
    assert struct.unpack_from('<I', data, 12) == (1,)
    assert struct.unpack_from('<f', data, 36)[0] == pytest.approx(0.9)
    assert struct.unpack_from('<I', data, 40) == (32 * 64 // 8,)  # the stand-in's block


def test_cuda_out_of_memory_skips_the_frame_empties_the_cache_and_counts(running: Running,
                                                                         monkeypatch) -> None:
    torch = pytest.importorskip('torch')
    emptied: List[int] = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: emptied.append(1))
    probe = running.probe
    running.pipeline.fail_next = torch.cuda.OutOfMemoryError(
        'CUDA out of memory. Tried to allocate 2.00 GiB')
    probe.image_pub.publish(image_msg(marked_frame(1), 1))
    probe.wait(lambda: probe.counter('rejected_pipeline') == 1, 30.0, 'rejected_pipeline 1')
    assert emptied == [1]
    assert 'OutOfMemoryError' in probe.diagnostics['last_error']
    probe.image_pub.publish(image_msg(marked_frame(2), 2))
    probe.mask_for(2)
    assert running.pipeline.frame_markers == [2] and emptied == [1]
    assert [m.header.stamp.nanosec for m in probe.masks] == [2]  # frame 1 was skipped


def test_cleanup_destroys_the_publishers_and_the_reset_service(running: Running) -> None:
    probe, node = running.probe, running.node
    namespace = node.get_namespace()
    topics = [f'{namespace}/{name}' for name in ('masks', 'objects', 'overlay', 'markers')]

    def ours(topic: str) -> list:
        return [info for info in probe.node.get_publishers_info_by_topic(topic)
                if info.node_name == node.get_name() and info.node_namespace == namespace]

    assert all(ours(topic) for topic in [*topics, '/diagnostics'])
    assert probe.transition('deactivate') and probe.transition('cleanup')
    assert probe.state() == 'unconfigured'
    for topic in [*topics, '/diagnostics']:
        probe.wait(lambda: not ours(topic), 30.0, f'no publisher of ours on {topic}')
    probe.wait(lambda: not probe.reset_client.service_is_ready(), 30.0, 'reset to disappear')


def test_reset_through_the_node_forgets_objects_and_memory(ros_context) -> None:
    """The real pipeline (geometric oracle in place of SAM2) behind the real node."""
    from oracle_engine import oracle_engine_factory
    params = {'patches.size_px': 64, 'model.image_size': 64, 'discovery.every_n_frames': 1,
              'discovery.points_per_side': 16, 'discovery.min_area_fraction': 0.0,
              'output.scale': 1.0}
    factory, frame = oracle_engine_factory(caps=6, width=256)
    with running_node(ros_context, factory, **params) as running:
        probe = running.probe
        ages = []
        for stamp in (1, 2):
            probe.image_pub.publish(image_msg(frame, stamp))
            ages.append(cloud_msg_to_objects_array(probe.objects_for(stamp))['age_frames'])
        assert len(ages[0]) == 6 and ages[0].tolist() == [0] * 6 and ages[1].tolist() == [1] * 6
        probe.wait(lambda: probe.counter('memory_entries') > 0, 30.0, 'memory in use')
        assert probe.call(probe.reset_client, Trigger.Request()).success
        probe.wait(lambda: probe.counter('memory_entries') == 0 and probe.counter('objects') == 0
                   and probe.diagnostics.get('ids_left') == '', 30.0, 'memory forgotten')
        probe.image_pub.publish(image_msg(frame, 3))
        objects = cloud_msg_to_objects_array(probe.objects_for(3))
    # Everything is new again: the ids restart at 1 and no object is older than this frame.
    assert objects['age_frames'].tolist() == [0] * 6
    assert sorted(objects['id'].tolist()) == [1, 2, 3, 4, 5, 6]
