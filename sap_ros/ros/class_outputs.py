"""The node's class outputs, ``semantic`` and ``class_names``, created only when there are classes.

A pipeline says whether it classifies through its results: ``FrameResult.semantic`` is None
without a classifier. Both publishers are therefore created on the first frame that carries a
semantic map (on the worker thread), not on configure, so a node without a classifier never
advertises them. They are plain publishers, not lifecycle-managed ones: the node only publishes
from the active pipeline, and cleanup destroys them with the other outputs.

- ``semantic``: ``mono16`` class-id map, 0 = no object or no class, the same size, stamp and
  ``frame_id`` as ``masks`` and the same QoS.
- ``class_names``: ``std_msgs/String`` holding a JSON list, entry ``k - 1`` naming class id ``k``
  (the ``class_id`` of ``objects`` and the values of ``semantic``); reliable and transient-local
  (depth 1), so a planner that subscribes late still gets it. Published before the first
  ``semantic`` map and again whenever the list grows.
"""
from __future__ import annotations

import json
import threading
from typing import List, Optional, Sequence

from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import HistoryPolicy, QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from sap_ros.engine.types import FrameResult, ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.ros import conversions

CLASS_NAMES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


class ClassNameTable:
    """The names a planner decodes class ids with: ``names[k - 1]`` names class id ``k``.

    Seeded with the engine's whole list when it exposes one; completed from the records, so every
    class id published so far has its name even when the engine exposes no list ('' marks an id
    not seen yet).

    >>> table = ClassNameTable()
    >>> table.update([ObjectRecord(1, [1.0, 0, 0], 0, 0, 1, 1, 0.1, 4, 0.9, 0, 0, class_id=3,
    ...                            class_name='door', class_score=0.8)]), table.names
    (True, ['', '', 'door'])
    """

    def __init__(self, names: Sequence[str] = ()) -> None:
        """Start from ``names`` (the engine's class names, or none)."""
        self.names: List[str] = [str(name) for name in names]

    def update(self, objects: Sequence[ObjectRecord]) -> bool:
        """Add the ids and names the records carry; True when the list changed."""
        before = list(self.names)
        for obj in objects:
            if obj.class_id <= 0:
                continue
            index = obj.class_id - 1
            if index >= len(self.names):
                self.names.extend([''] * (index + 1 - len(self.names)))
            if not self.names[index]:
                self.names[index] = obj.class_name
        return self.names != before

    def to_json(self) -> str:
        """The list as the ``class_names`` message carries it."""
        return json.dumps(self.names)


class ClassOutputs:
    """``semantic`` and ``class_names`` of one node.

    Thread-safe: the worker thread publishes, the executor thread starts and destroys.
    """

    def __init__(self, node: Node, qos: QoSProfile) -> None:
        """``qos`` is the one of ``masks``, for ``semantic``."""
        self._node = node
        self._qos = qos
        self._lock = threading.Lock()
        self._semantic: Optional[Publisher] = None
        self._names: Optional[Publisher] = None
        self._table = ClassNameTable()
        self._sent: Optional[List[str]] = None
        self._open = False  # between start() and destroy(): a frame may create the publishers

    @property
    def advertised(self) -> bool:
        """True once the publishers exist (a frame with a semantic map was published)."""
        return self._semantic is not None

    def start(self, class_names: Sequence[str] = ()) -> None:
        """A new pipeline: forget the previous one's names, start from ``class_names``."""
        with self._lock:
            self._table = ClassNameTable(class_names)
            self._sent = None
            self._open = True

    def publish(self, result: FrameResult, header: Header) -> None:
        """Publish the frame's class-id map and, when new, the names; nothing without a map."""
        semantic = result.semantic
        if semantic is None:
            return
        if semantic.shape != result.labels.shape:
            raise InvalidInputError(f'semantic map {semantic.shape} is not the size of the label '
                                    f'map {result.labels.shape}')
        with self._lock:
            if not self._open:  # cleaned up while this frame ran
                return
            if self._semantic is None or self._names is None:
                self._semantic = self._node.create_publisher(Image, 'semantic', self._qos)
                self._names = self._node.create_publisher(String, 'class_names', CLASS_NAMES_QOS)
            self._table.update(result.objects)
            if self._table.names != self._sent:
                self._names.publish(String(data=self._table.to_json()))
                self._sent = list(self._table.names)
            self._semantic.publish(conversions.labels_to_image_msg(semantic, header))

    def destroy(self) -> None:
        """Destroy both publishers (idempotent); none is created again before :meth:`start`."""
        with self._lock:
            self._open = False
            for pub in (self._semantic, self._names):
                if pub is not None:
                    self._node.destroy_publisher(pub)
            self._semantic = self._names = None
            self._sent = None
