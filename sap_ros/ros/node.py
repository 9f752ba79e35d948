"""``sap_node``: lifecycle node segmenting 360-degree ERP frames with SAM2 (ARCHITECTURE §7, §10).

States map to resources: configure reads and validates parameters and creates publishers,
activate loads the model and subscribes, deactivate unsubscribes and frees the model (and GPU
memory). With ``autostart`` (default) the node walks configure + activate itself and the process
exits non-zero when either fails.

Threads: the executor thread runs subscription, service and timer callbacks; one worker thread
owns the pipeline and runs it on the newest frame only (:mod:`sap_ros.ros.worker`). Nothing on the
executor thread waits for a frame: ``reset`` is queued to the worker (applied after the frame in
flight, before the next one), and deactivation stops the worker, which closes the pipeline after
its frame; the transition waits at most ``FREE_WAIT_S`` for that, so services, transitions and
``/diagnostics`` keep answering during a long frame.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
import functools
import gc
import logging
import sys
import threading
import time
from typing import Callable, List, Optional, Union

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle.publisher import LifecyclePublisher
from rclpy.publisher import Publisher
from rclpy.qos import HistoryPolicy, QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from sap_ros.config import PipelineConfig
from sap_ros.engine.interface import Engine
from sap_ros.engine.types import FrameResult, Prompt
from sap_ros.errors import ErpShapeError, InvalidInputError, SapError
from sap_ros.io.overlay import overlay_rgb
from sap_ros.ros import conversions
from sap_ros.ros.class_outputs import ClassOutputs
from sap_ros.ros.diagnostics import NodeStats, RejectKind, Throttle, diagnostic_array
from sap_ros.ros.log_bridge import RosLogHandler
from sap_ros.ros.params import NodeOptions, declare_parameters, read_parameters
from sap_ros.ros.worker import FrameWorker
from sap_ros.sphere.geometry import validate_erp_shape

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
# Sensor data in: the newest frame is the only one worth having. Subscriptions get a copy: rclpy
# writes `qos_overrides.*` into the profile it is given, which must not leak to later nodes.
INPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=QoSReliabilityPolicy.BEST_EFFORT,
                       durability=QoSDurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                        reliability=QoSReliabilityPolicy.RELIABLE)
PROMPT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                        reliability=QoSReliabilityPolicy.RELIABLE)
DIAGNOSTICS_PERIOD_S = 1.0
LOG_THROTTLE_S = 5.0
MAX_PENDING_PROMPTS = 32
#: Longest a deactivate (or shutdown) waits for the worker to close the pipeline; a frame still
#: in flight then finishes on its own and the model is freed right after it.
FREE_WAIT_S = 1.0


PipelineFactory = Callable[[PipelineConfig], Engine]


def default_pipeline_factory(config: PipelineConfig) -> Engine:
    """Build the real pipeline (imported here so that the node module loads without torch)."""
    from sap_ros.engine.pipeline import SapPipeline
    return SapPipeline(config)


@dataclass(frozen=True)
class _Outputs:
    """The lifecycle publishers created on configure."""

    masks: LifecyclePublisher
    objects: LifecyclePublisher
    overlay: LifecyclePublisher
    markers: LifecyclePublisher


@dataclass(frozen=True)
class _Frame:
    msg: Union[Image, CompressedImage]
    compressed: bool
    received_s: float


class SapNode(LifecycleNode):
    """The ``sap_node`` lifecycle node; ``pipeline_factory`` is injectable for tests."""

    def __init__(self, pipeline_factory: PipelineFactory = default_pipeline_factory,
                 node_name: str = 'sap_node', clock: Callable[[], float] = time.monotonic,
                 **kwargs) -> None:
        """``clock`` (seconds) times latency, fps and the log throttle; tests inject one."""
        super().__init__(node_name, **kwargs)
        self._factory = pipeline_factory
        self._time_s = clock
        self._config: Optional[PipelineConfig] = None
        self._options = NodeOptions()
        self._state = 'unconfigured'
        self._stats = NodeStats(clock=clock)
        self._throttle = Throttle(LOG_THROTTLE_S, clock=clock)
        self._worker: Optional[FrameWorker[_Frame]] = None
        self._pipeline: Optional[Engine] = None  # only the worker thread calls it
        self._prompts: List[Prompt] = []
        self._prompts_lock = threading.Lock()
        self._camera_frame_id = ''
        self._outputs: Optional[_Outputs] = None
        self._classes = ClassOutputs(self, OUTPUT_QOS)  # publishers created on first use
        self._diagnostics_pub: Optional[Publisher] = None
        self._diagnostics_timer: Optional[Timer] = None
        self._reset_srv: Optional[Service] = None
        self._image_sub: Optional[Subscription] = None
        self._prompt_sub: Optional[Subscription] = None
        # Declared here too, so `ros2 param set` works before configure (autostart:=false).
        declare_parameters(self)
        self._log_bridge = RosLogHandler(self.get_logger())
        logging.getLogger('sap_ros').addHandler(self._log_bridge)

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Declare, read and validate parameters; create publishers, service and timer."""
        try:
            declare_parameters(self)
            self._config, self._options = read_parameters(self)
        except SapError as error:
            self.get_logger().error(f'configure failed: {error}')
            return FAILURE
        lifecycle_pub = self.create_lifecycle_publisher
        self._outputs = _Outputs(masks=lifecycle_pub(Image, 'masks', OUTPUT_QOS),
                                 objects=lifecycle_pub(PointCloud2, 'objects', OUTPUT_QOS),
                                 overlay=lifecycle_pub(Image, 'overlay', OUTPUT_QOS),
                                 markers=lifecycle_pub(MarkerArray, 'markers', OUTPUT_QOS))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S,
                                                    self._publish_diagnostics)
        self._reset_srv = self.create_service(Trigger, 'reset', self._on_reset)
        self._state = 'inactive'
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model, start the worker, subscribe."""
        assert self._config is not None
        model = self._config.model
        try:
            pipeline = self._factory(self._config)
        except Exception as error:  # noqa: BLE001 - CheckpointError, ConfigError, CUDA, sam2
            self.get_logger().error(
                f'activate failed: could not build the pipeline (model.config={model.config!r}, '
                f'model.checkpoint={model.checkpoint!r}): {type(error).__name__}: {error}')
            return FAILURE
        if model.random_weights:
            self.get_logger().warning('model.allow_random_weights is set and no model.checkpoint '
                                      'is given: RANDOM WEIGHTS, the masks are meaningless')
        result = super().on_activate(state)
        self._pipeline = pipeline
        # The engine's whole class list when it exposes one (SapPipeline with a classifier).
        self._classes.start(getattr(pipeline, 'class_names', ()))
        self._worker = FrameWorker(functools.partial(self._process, pipeline),
                                   self._on_worker_crash)
        if self._options.compressed:
            self._image_sub = self.create_subscription(
                CompressedImage, 'image/compressed', self._on_compressed, copy.copy(INPUT_QOS),
                qos_overriding_options=QoSOverridingOptions.with_default_policies())
        else:
            self._image_sub = self.create_subscription(
                Image, 'image', self._on_image, copy.copy(INPUT_QOS),
                qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self._prompt_sub = self.create_subscription(PointStamped, 'prompts', self._on_prompt,
                                                    PROMPT_QOS)
        self._state = 'active'
        self.get_logger().info(
            f'active: subscribed to {self._image_sub.topic_name}; '
            f'{pipeline.description}, image_size {model.image_size}')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop the worker, free the model and GPU memory.

        Returns within ``FREE_WAIT_S``: a frame still in flight then finishes on the worker
        thread, which frees the model right after it (logged).
        """
        self._stop_processing()
        self._state = 'inactive'
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy publishers, the service and the timer; forget the configuration."""
        self._destroy_outputs()
        self._state = 'unconfigured'
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, whatever the state."""
        self.release()
        self._state = 'finalized'
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything and go back to unconfigured."""
        self.release()
        self._state = 'unconfigured'
        return SUCCESS

    def destroy_node(self) -> None:
        """Stop forwarding the core's log records, then destroy the node."""
        logging.getLogger('sap_ros').removeHandler(self._log_bridge)
        super().destroy_node()

    def release(self) -> None:
        """Stop processing and destroy the outputs (idempotent; also used by ``main``)."""
        self._stop_processing()
        self._destroy_outputs()

    def _stop_processing(self) -> None:
        for sub in (self._image_sub, self._prompt_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        self._image_sub = self._prompt_sub = None
        worker, self._worker = self._worker, None
        pipeline, self._pipeline = self._pipeline, None
        if worker is not None and pipeline is not None:
            close = functools.partial(self._close_pipeline, pipeline)
            if worker.stop(last=close, timeout_s=FREE_WAIT_S):
                self._stats.count_dropped()
            if worker.alive:
                self.get_logger().info(
                    'a frame is in flight: the model is freed as soon as it ends')
        with self._prompts_lock:
            self._prompts.clear()

    def _destroy_outputs(self) -> None:
        outputs = self._outputs
        if outputs is not None:
            for pub in (outputs.masks, outputs.objects, outputs.overlay, outputs.markers):
                self.destroy_lifecycle_publisher(pub)
        self._classes.destroy()
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        if self._reset_srv is not None:
            self.destroy_service(self._reset_srv)
        self._outputs = None
        self._diagnostics_pub = self._diagnostics_timer = self._reset_srv = None
        self._config = None

    # -- callbacks (executor thread) ---------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self._submit(_Frame(msg, False, self._time_s()))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._submit(_Frame(msg, True, self._time_s()))

    def _submit(self, frame: _Frame) -> None:
        worker = self._worker
        if worker is None:
            return
        self._camera_frame_id = frame.msg.header.frame_id
        self._stats.count_received(replaced_unprocessed=worker.submit(frame))

    def _on_prompt(self, msg: PointStamped) -> None:
        frame_id = msg.header.frame_id
        try:
            if frame_id and self._camera_frame_id and frame_id != self._camera_frame_id:
                raise InvalidInputError(f'prompt frame {frame_id!r} is not the camera frame '
                                        f'{self._camera_frame_id!r} (no TF lookup here)')
            prompt = conversions.point_msg_to_prompt(msg)
        except InvalidInputError as error:
            self._reject(RejectKind.PROMPT, str(error))
            return
        with self._prompts_lock:
            self._prompts = (self._prompts + [prompt])[-MAX_PENDING_PROMPTS:]

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        """Queue the reset to the worker (never waits for a frame in flight)."""
        worker, pipeline = self._worker, self._pipeline
        if worker is None or pipeline is None:
            response.success = False
            response.message = f'node is {self._state}: nothing to reset'
            return response
        with self._prompts_lock:
            self._prompts.clear()
        worker.between_frames(functools.partial(self._reset_pipeline, pipeline))
        response.success = True
        response.message = ('reset queued: all objects and memory are forgotten before the next '
                            'frame (a frame in flight still publishes what it found)')
        return response

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is not None:
            self._diagnostics_pub.publish(diagnostic_array(
                self._stats.snapshot(), f'{self.get_fully_qualified_name()}: pipeline',
                self._state, self.get_clock().now().to_msg()))

    # -- worker thread -----------------------------------------------------------------------
    def _reset_pipeline(self, pipeline: Engine) -> None:
        pipeline.reset()
        self._stats.clear_memory()
        self.get_logger().info('reset: all objects and memory forgotten')

    def _close_pipeline(self, pipeline: Engine) -> None:
        pipeline.close()
        self._stats.clear_memory()
        gc.collect()
        _free_accelerator_cache()

    def _process(self, pipeline: Engine, frame: _Frame) -> None:
        try:
            if frame.compressed:
                rgb = conversions.compressed_msg_to_rgb(frame.msg)
            else:
                rgb = conversions.image_msg_to_rgb(frame.msg)
            validate_erp_shape(rgb.shape)
        except ErpShapeError as error:
            self._reject(RejectKind.SHAPE, str(error))
            return
        except InvalidInputError as error:
            kind = RejectKind.COMPRESSED if frame.compressed else RejectKind.IMAGE
            self._reject(kind, str(error))
            return
        with self._prompts_lock:
            prompts, self._prompts = self._prompts, []
        try:
            result = pipeline.step(rgb, prompts)
            memory = pipeline.memory_stats()
            ids_left = pipeline.ids_left
        except InvalidInputError as error:
            self._reject(RejectKind.SHAPE if isinstance(error, ErpShapeError)
                         else RejectKind.IMAGE, str(error))
            return
        except Exception as error:  # noqa: BLE001 - e.g. CUDA OOM: skip frame, keep going
            self._reject(RejectKind.PIPELINE, f'{type(error).__name__}: {error}')
            _free_accelerator_cache()
            return
        if pipeline is not self._pipeline:  # deactivated while this frame ran: outputs are off
            self._stats.count_dropped()
            return
        self._publish(frame, rgb, result)
        self._stats.count_processed(
            latency_ms=(self._time_s() - frame.received_s) * 1e3,
            pipeline_ms=float(result.timings_ms.get('total', 0.0)), objects=len(result.objects),
            memory_objects=memory.objects, memory_entries=memory.entries,
            memory_bytes=memory.bytes, ids_left=ids_left)

    def _publish(self, frame: _Frame, rgb: np.ndarray, result: FrameResult) -> None:
        header = frame.msg.header
        outputs = self._outputs
        if outputs is None:  # cleaned up meanwhile
            return
        embeddings = self._config.output.embeddings if self._config else True
        outputs.masks.publish(conversions.labels_to_image_msg(result.labels, header))
        self._classes.publish(result, header)  # semantic + class_names, with a classifier only
        outputs.objects.publish(
            conversions.objects_to_cloud_msg(result.objects, header, embeddings))
        if outputs.overlay.get_subscription_count() > 0:
            preview = overlay_rgb(rgb, result.labels, result.objects)
            outputs.overlay.publish(conversions.rgb_to_image_msg(preview, header))
        if outputs.markers.get_subscription_count() > 0:
            outputs.markers.publish(conversions.objects_to_marker_array(result.objects, header))

    def _reject(self, kind: RejectKind, message: str) -> None:
        self._stats.count_rejected(kind, message)
        held = self._throttle.allow(kind)
        if held is not None:
            more = f' ({held} more {kind.value} rejections since the last report)' if held else ''
            self.get_logger().error(f'rejected {kind.value} input: {message}{more}')

    def _on_worker_crash(self, error: BaseException) -> None:
        self._reject(RejectKind.PIPELINE, f'unexpected {type(error).__name__}: {error}')

    def stats(self) -> NodeStats:
        """A copy of the counters that ``/diagnostics`` reports."""
        return self._stats.snapshot()

    # -- autostart ---------------------------------------------------------------------------
    def autostart(self) -> bool:
        """Configure and activate when the ``autostart`` parameter is true; False on failure."""
        if not self.get_parameter('autostart').value:
            self.get_logger().info('autostart is false: waiting for lifecycle transitions')
            return True
        for name, transition in (('configure', self.trigger_configure),
                                 ('activate', self.trigger_activate)):
            if transition() != SUCCESS:
                self.get_logger().fatal(f'autostart: {name} failed, exiting (see the error above)')
                return False
        return True


def _free_accelerator_cache() -> None:
    """Return cached CUDA memory to the driver, if torch was loaded by the pipeline."""
    torch = sys.modules.get('torch')
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(args: Optional[List[str]] = None,
         pipeline_factory: PipelineFactory = default_pipeline_factory) -> int:
    """Entry point of ``sap_node``; returns the process exit status."""
    rclpy.init(args=args)
    node = SapNode(pipeline_factory)
    status = 0
    try:
        if node.autostart():
            rclpy.spin(node)
        else:
            status = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.release()
        node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == '__main__':
    sys.exit(main())
