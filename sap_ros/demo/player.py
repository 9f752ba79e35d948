"""A small rosbag player + recorder over rclpy, for pip installs without ``ros2 bag``.

``LockstepPlayer`` publishes the frames of a bag (``bagio.open_image_stream``) as
``sensor_msgs/Image`` rgb8 and, in lockstep mode, waits for ``/sap/masks`` with the same stamp
before sending the next frame, so a slow CPU run records every frame. It records ``masks`` and
``objects`` as they arrive. On a ROS install, ``ros2 bag play BAG`` and ``ros2 bag record`` do the
same job (without the lockstep).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2

from sap_ros.eval.bags import ImageFrame
from sap_ros.ros.conversions import (
    cloud_msg_to_objects_array,
    image_msg_to_labels,
    rgb_to_image_msg,
)


@dataclass
class Recorded:
    """What came back for one input frame."""

    stamp_ns: int
    labels: Optional[np.ndarray] = None
    objects: Optional[np.ndarray] = None
    latency_ms: Optional[float] = None


@dataclass
class Recording:
    """Everything recorded, by input stamp, in send order."""

    frames: Dict[int, Recorded] = field(default_factory=dict)
    order: List[int] = field(default_factory=list)


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class LockstepPlayer(Node):
    """Publish bag frames on ``image_topic``; record ``masks_topic`` and ``objects_topic``."""

    def __init__(self, image_topic: str = '/camera/image', masks_topic: str = '/sap/masks',
                 objects_topic: str = '/sap/objects', context=None) -> None:
        """Create the publisher (reliable: large frames survive loopback) and subscriptions."""
        super().__init__('sap_player', context=context)
        reliable = QoSProfile(depth=2, reliability=QoSReliabilityPolicy.RELIABLE)
        self._pub = self.create_publisher(Image, image_topic, reliable)
        self.create_subscription(Image, masks_topic, self._on_masks, reliable)
        self.create_subscription(PointCloud2, objects_topic, self._on_objects, reliable)
        self.recording = Recording()
        self._sent_at: Dict[int, float] = {}
        self._got_mask = threading.Event()
        self._lock = threading.Lock()

    def _entry(self, stamp: int) -> Recorded:
        with self._lock:
            return self.recording.frames.setdefault(stamp, Recorded(stamp))

    def _on_masks(self, msg: Image) -> None:
        stamp = _stamp_ns(msg.header)
        entry = self._entry(stamp)
        entry.labels = image_msg_to_labels(msg)
        if stamp in self._sent_at:
            entry.latency_ms = (time.monotonic() - self._sent_at[stamp]) * 1000.0
        self._got_mask.set()

    def _on_objects(self, msg: PointCloud2) -> None:
        self._entry(_stamp_ns(msg.header)).objects = cloud_msg_to_objects_array(msg)

    def subscribers_ready(self) -> bool:
        """True once the node under test listens to the image topic."""
        return self._pub.get_subscription_count() > 0

    def send(self, frame: ImageFrame) -> int:
        """Publish one frame with its header stamp; returns the stamp used."""
        stamp = frame.header_stamp_ns or frame.timestamp_ns
        from std_msgs.msg import Header
        header = Header()
        header.stamp.sec, header.stamp.nanosec = divmod(int(stamp), 1_000_000_000)
        header.frame_id = frame.frame_id or 'camera'
        self._got_mask.clear()
        self._sent_at[stamp] = time.monotonic()
        self.recording.order.append(stamp)
        self._pub.publish(rgb_to_image_msg(frame.rgb, header))
        return stamp


def play_lockstep(frames: Iterable[ImageFrame], player: LockstepPlayer,
                  executor: SingleThreadedExecutor, timeout_s: float = 300.0,
                  alive: Callable[[], bool] = lambda: True,
                  progress: Callable[[int], None] = lambda i: None) -> Recording:
    """Send each frame, then spin until its mask (and objects) arrive or ``timeout_s`` passes.

    Raises:
        TimeoutError: the node never subscribed, or a frame got no answer in time.
        RuntimeError: ``alive()`` turned False (the node process died).

    """
    deadline = time.monotonic() + 120.0
    while not player.subscribers_ready():
        if not alive():
            raise RuntimeError('sap_node exited before subscribing')
        if time.monotonic() > deadline:
            raise TimeoutError('sap_node did not subscribe to the image topic within 120 s')
        executor.spin_once(timeout_sec=0.2)
    time.sleep(0.5)  # discovery of the reverse direction (our subscriptions) settles
    for i, frame in enumerate(frames):
        stamp = player.send(frame)
        deadline = time.monotonic() + timeout_s
        while True:
            entry = player.recording.frames.get(stamp)
            if entry is not None and entry.labels is not None and entry.objects is not None:
                break
            if not alive():
                raise RuntimeError(f'sap_node exited while processing frame {i}')
            if time.monotonic() > deadline:
                raise TimeoutError(f'no /sap/masks for frame {i} within {timeout_s:.0f} s')
            executor.spin_once(timeout_sec=0.1)
        progress(i)
    return player.recording


def make_executor(player: LockstepPlayer, context) -> SingleThreadedExecutor:
    """An executor bound to ``context`` with the player added."""
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(player)
    return executor



