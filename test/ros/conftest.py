"""ROS test setup: a private DDS domain on localhost, an rclpy context and the probe node."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

# One DDS domain per test session, discovery kept on this machine, so parallel sessions and
# other ROS systems on the network never see our topics. Must be set before any rclpy.init.
os.environ['ROS_DOMAIN_ID'] = str(10 + os.getpid() % 80)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_LOCALHOST_ONLY', None)  # deprecated in Jazzy; the range above replaces it
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')


@pytest.fixture(scope='module')
def ros_context() -> Iterator[object]:
    """An initialised rclpy context of its own for one test module."""
    rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (see README: ROS wheels)')
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)
