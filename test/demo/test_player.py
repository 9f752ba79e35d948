"""The lockstep player feeds a bag to the real ``sap_node`` process and records every answer."""
from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow
rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (see README: ROS wheels)')

REPO = Path(__file__).resolve().parents[2]
TINY = ['model.allow_random_weights:=true', 'model.device:=cpu', 'model.image_size:=128',
        'patches.size_px:=128', 'patches.fov_deg:=150.0', 'discovery.every_n_frames:=20',
        'discovery.uncovered_fraction:=1.0', 'discovery.points_per_side:=4',
        'output.scale:=0.5']


def test_every_frame_of_the_bag_comes_back_with_its_stamp(tmp_path):
    from sap_ros.demo.player import LockstepPlayer, make_executor, play_lockstep
    from sap_ros.eval.bags import open_image_stream
    from sap_ros.synth import cli as synth

    bag = tmp_path / 'bag'
    assert synth.main([str(bag), '--frames', '3', '--width', '256', '--quiet']) == 0
    frames = list(open_image_stream(bag, synth.IMAGE_TOPIC))
    env = dict(os.environ, ROS_DOMAIN_ID=str(200 + os.getpid() % 30),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    os.environ.update(ROS_DOMAIN_ID=env['ROS_DOMAIN_ID'],
                      ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    log = open(tmp_path / 'node.log', 'wb')
    node = subprocess.Popen(
        [sys.executable, '-m', 'sap_ros.ros.node', '--ros-args', '-r', '__ns:=/sap',
         '--params-file', str(REPO / 'config' / 'sap.yaml'), '-r', 'image:=/camera/image',
         *[a for p in TINY for a in ('-p', p)]],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        player = LockstepPlayer(context=context)
        recording = play_lockstep(frames, player, make_executor(player, context),
                                  timeout_s=120.0, alive=lambda: node.poll() is None)
    finally:
        node.terminate()
        node.wait(30)
        log.close()
        rclpy.try_shutdown(context=context)
    assert recording.order == [f.header_stamp_ns for f in frames]
    for stamp in recording.order:
        entry = recording.frames[stamp]
        assert entry.labels.shape == (64, 128)
        # The objects recorded for a frame are the objects of its label map.
        assert set(entry.objects['id'].tolist()) == set(
            np.unique(entry.labels[entry.labels > 0]).tolist())
        assert entry.latency_ms > 0
