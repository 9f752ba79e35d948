"""A test-side ROS node that talks to ``sap_node`` like a user would (real rclpy, real DDS)."""
from __future__ import annotations

import array
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
import numpy as np
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

REPO_ROOT = Path(__file__).resolve().parents[2]
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                        reliability=QoSReliabilityPolicy.BEST_EFFORT)
RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                        reliability=QoSReliabilityPolicy.RELIABLE)

TRANSITIONS = {'configure': Transition.TRANSITION_CONFIGURE,
               'activate': Transition.TRANSITION_ACTIVATE,
               'deactivate': Transition.TRANSITION_DEACTIVATE,
               'cleanup': Transition.TRANSITION_CLEANUP}


def erp_frame(height: int = 128, seed: int = 0) -> np.ndarray:
    """A simple 2:1 RGB test frame: a gradient sky, a ground band and a few coloured blocks."""
    width = 2 * height
    rng = np.random.default_rng(seed)
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 2] = np.linspace(220, 120, height, dtype=np.uint8)[:, None]
    frame[height * 2 // 3:] = (90, 70, 40)
    for _ in range(4):
        v, u = rng.integers(height // 4, height * 3 // 4), rng.integers(0, width)
        size = rng.integers(height // 10, height // 4)
        colour = rng.integers(0, 256, 3).astype(np.uint8)
        cols = np.arange(u, u + 2 * size) % width  # blocks may cross the seam
        frame[v:v + size, cols] = colour
    return frame


def image_msg(rgb_or_data: Any, stamp_ns: int, frame_id: str = 'camera_360',
              encoding: str = 'rgb8', height: Optional[int] = None, width: Optional[int] = None,
              step: Optional[int] = None) -> Image:
    """An Image; with raw ``bytes`` every field can be set to something wrong on purpose."""
    msg = Image(encoding=encoding)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    msg.header.frame_id = frame_id
    if isinstance(rgb_or_data, np.ndarray):
        height, width = rgb_or_data.shape[:2]
        step = rgb_or_data.shape[1] * (rgb_or_data.shape[2] if rgb_or_data.ndim == 3 else 1)
        data = np.ascontiguousarray(rgb_or_data).tobytes()
    else:
        data = bytes(rgb_or_data)
    msg.height, msg.width, msg.step = height, width, step
    msg.data = array.array('B', data)
    return msg


def compressed_msg(rgb: Optional[np.ndarray], stamp_ns: int, data: Optional[bytes] = None,
                   frame_id: str = 'camera_360') -> CompressedImage:
    """A jpeg CompressedImage of ``rgb`` (or of the raw ``data`` given)."""
    if data is None:
        ok, encoded = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        data = encoded.tobytes()
    msg = CompressedImage(format='jpeg')
    msg.data = array.array('B', data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    msg.header.frame_id = frame_id
    return msg


def stamp_ns(header: Any) -> int:
    """Header stamp as integer nanoseconds."""
    return header.stamp.sec * 10 ** 9 + header.stamp.nanosec


class Probe:
    """Publishes inputs to, records outputs of, and calls services on ``<namespace>/sap_node``."""

    def __init__(self, context: Context, namespace: str = '/sap', node_name: str = 'sap_node',
                 probe_name: str = 'sap_probe') -> None:
        self.namespace, self.target = namespace, f'{namespace}/{node_name}'
        self.node = rclpy.create_node(probe_name, namespace=namespace, context=context)
        node = self.node
        self.image_pub = node.create_publisher(Image, 'image', SENSOR_QOS)
        self.compressed_pub = node.create_publisher(CompressedImage, 'image/compressed',
                                                    SENSOR_QOS)
        self.prompt_pub = node.create_publisher(PointStamped, 'prompts', 10)
        self.masks: List[Image] = []
        self.objects: List[PointCloud2] = []
        self.overlays: List[Image] = []
        self.markers: List[MarkerArray] = []
        self.diagnostics: Dict[str, str] = {}
        self.diagnostics_received = 0  # messages of the target node so far
        self.diagnostics_stamps_s: List[float] = []  # their header stamps, in arrival order
        self._lock = threading.Lock()
        node.create_subscription(Image, 'masks', self._keep(self.masks), RECORD_QOS)
        node.create_subscription(PointCloud2, 'objects', self._keep(self.objects), RECORD_QOS)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.reset_client = node.create_client(Trigger, 'reset')
        self.change_state_client = node.create_client(ChangeState, f'{node_name}/change_state')
        self.get_state_client = node.create_client(GetState, f'{node_name}/get_state')
        self.set_parameters_client = node.create_client(SetParameters,
                                                        f'{node_name}/set_parameters')
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down at teardown
            pass

    def _keep(self, into: list) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            with self._lock:
                into.append(msg)
                del into[:-200]
        return callback

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f'{self.target}:'):
                with self._lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_received += 1
                    self.diagnostics_stamps_s.append(stamp_ns(msg.header) / 1e9)

    def record_overlay_and_markers(self) -> List[Any]:
        """Subscribe to ``overlay`` and ``markers`` (the node only builds them for subscribers)."""
        return [self.node.create_subscription(Image, 'overlay', self._keep(self.overlays),
                                              RECORD_QOS),
                self.node.create_subscription(MarkerArray, 'markers', self._keep(self.markers),
                                              RECORD_QOS)]

    # -- waiting -----------------------------------------------------------------------------
    @staticmethod
    def wait(predicate: Callable[[], Any], timeout_s: float, what: str,
             alive: Optional[Callable[[], Optional[str]]] = None) -> Any:
        """Poll ``predicate`` until truthy; AssertionError naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if alive is not None and (problem := alive()):
                raise AssertionError(f'while waiting for {what}: {problem}')
            time.sleep(0.02)
        raise AssertionError(f'timed out after {timeout_s} s waiting for {what}')

    def wait_diagnostics(self, count: int = 1, timeout_s: float = 30.0) -> Dict[str, str]:
        """Wait for ``count`` more ``/diagnostics`` messages of the node; the newest values."""
        with self._lock:
            target = self.diagnostics_received + count
        self.wait(lambda: self.diagnostics_received >= target, timeout_s,
                  f'{count} more /diagnostics messages of {self.target}')
        with self._lock:
            return dict(self.diagnostics)

    def counter(self, key: str) -> int:
        """Latest value of an integer ``/diagnostics`` key (0 before the first message)."""
        with self._lock:
            return int(self.diagnostics.get(key, 0))

    def wait_counter(self, key: str, at_least: int, timeout_s: float = 30.0) -> int:
        """Wait until ``/diagnostics`` reports ``key >= at_least``."""
        return self.wait(lambda: self.counter(key) >= at_least and self.counter(key),
                         timeout_s, f'diagnostics {key} >= {at_least} (now {self.counter(key)})')

    def mask_for(self, stamp: int, timeout_s: float = 120.0) -> Image:
        """The ``masks`` message carrying input stamp ``stamp``."""
        def find() -> Optional[Image]:
            with self._lock:
                return next((m for m in self.masks if stamp_ns(m.header) == stamp), None)
        return self.wait(find, timeout_s, f'masks with stamp {stamp}')

    def objects_for(self, stamp: int, timeout_s: float = 60.0) -> PointCloud2:
        """The ``objects`` message carrying input stamp ``stamp``."""
        def find() -> Optional[PointCloud2]:
            with self._lock:
                return next((m for m in self.objects if stamp_ns(m.header) == stamp), None)
        return self.wait(find, timeout_s, f'objects with stamp {stamp}')

    def wait_subscribed(self, publisher: Any, subscribed: bool = True,
                        timeout_s: float = 60.0) -> None:
        """Wait until the node subscribes to (or unsubscribes from) ``publisher``'s topic."""
        self.wait(lambda: (publisher.get_subscription_count() > 0) == subscribed, timeout_s,
                  f'{"a" if subscribed else "no"} subscriber on {publisher.topic_name}')

    # -- services ----------------------------------------------------------------------------
    def call(self, client: Any, request: Any, timeout_s: float = 120.0) -> Any:
        """Call a service and wait for the response."""
        self.wait(lambda: client.service_is_ready(), 30.0, f'service {client.srv_name}')
        future = client.call_async(request)
        self.wait(future.done, timeout_s, f'response of {client.srv_name}')
        return future.result()

    def transition(self, name: str, timeout_s: float = 120.0) -> bool:
        """Ask the node for a lifecycle transition; True on success."""
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[name]
        return self.call(self.change_state_client, request, timeout_s).success

    def state(self) -> str:
        """The node's lifecycle state label."""
        return self.call(self.get_state_client, GetState.Request()).current_state.label

    def set_bool(self, name: str, value: bool) -> bool:
        """Set a boolean parameter on the node; True when accepted."""
        param = Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_BOOL,
                                                          bool_value=value))
        response = self.call(self.set_parameters_client, SetParameters.Request(parameters=[param]))
        return response.results[0].successful

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        self.executor.shutdown()
        self.node.destroy_node()


class NodeProcess:
    """``sap_node`` started as its own process (``python -m sap_ros.ros.node``)."""

    def __init__(self, ros_args: List[str], log_dir: Any, name: str = 'sap_node') -> None:
        self.log_path = log_dir / f'{name}.stderr'
        command = [sys.executable, '-m', 'sap_ros.ros.node', '--ros-args', *ros_args]
        env = dict(os.environ, PYTHONUNBUFFERED='1', RCUTILS_LOGGING_BUFFERED_STREAM='0')
        self._log = open(self.log_path, 'wb')
        self._out = open(log_dir / f'{name}.stdout', 'wb')
        self.proc = subprocess.Popen(command, stdout=self._out, stderr=self._log, env=env,
                                     cwd=REPO_ROOT)

    def log(self) -> str:
        """Everything the node wrote to stderr so far (ROS log lines go there)."""
        return self.log_path.read_text(errors='replace')

    def problem(self) -> Optional[str]:
        """None while running, else the exit status and the end of the log."""
        if self.proc.poll() is None:
            return None
        return f'sap_node exited with {self.proc.returncode}:\n{self.log()[-4000:]}'

    def rss_bytes(self) -> int:
        """Resident memory of the node process (VmRSS of /proc/<pid>/status)."""
        for line in Path(f'/proc/{self.proc.pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
        raise AssertionError('no VmRSS line')

    def wait_exit(self, timeout_s: float) -> int:
        """Exit status, waiting at most ``timeout_s``."""
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._close_files()

    def stop(self) -> Optional[int]:
        """SIGINT (as Ctrl-C would), then kill if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10.0)
        self._close_files()
        return self.proc.returncode

    def _close_files(self) -> None:
        self._log.close()
        self._out.close()
