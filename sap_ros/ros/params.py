"""The node's ROS parameters: every ``PipelineConfig`` field plus the node's own.

Parameters are declared with ``dynamic_typing`` so that ``fov_deg: 90`` in a YAML file is not a
type error; :meth:`PipelineConfig.from_flat` then coerces and validates every value and raises a
``ConfigError`` that names the parameter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, Tuple

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from sap_ros.config import PipelineConfig
from sap_ros.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class NodeOptions:
    """Parameters of the node itself (not of the pipeline)."""

    autostart: bool = True
    compressed: bool = False


#: The node's own parameters: (name, default, description).
NODE_PARAMS: Tuple[Tuple[str, Any, str], ...] = (
    ('autostart', True, 'Configure and activate at start-up (false: wait for lifecycle '
     'transitions); the process exits non-zero when either fails'),
    ('input.compressed', False, 'Subscribe to image/compressed (sensor_msgs/CompressedImage, '
     'jpeg/png) instead of image (sensor_msgs/Image)'),
)

def all_param_specs() -> Iterator[Tuple[str, Any, str]]:
    """Every parameter the node declares: (dotted name, default, description)."""
    yield from NODE_PARAMS
    for spec in PipelineConfig.param_specs():
        yield spec.name, spec.default, spec.description


def declare_parameters(node: Node) -> None:
    """Declare every parameter once (again on a later configure is a no-op)."""
    for name, default, description in all_param_specs():
        if not node.has_parameter(name):
            node.declare_parameter(name, default, ParameterDescriptor(
                description=f'{description} (default: {default!r})', dynamic_typing=True))


def read_parameters(node: Node) -> Tuple[PipelineConfig, NodeOptions]:
    """Current values -> validated config; ConfigError / CheckpointError name the parameter."""
    values: Dict[str, Any] = {name: node.get_parameter(name).value
                              for name, _, _ in all_param_specs()}
    for name, default, _ in NODE_PARAMS:
        if not isinstance(values[name], bool):
            raise ConfigError(name, f'expected bool, got {values[name]!r}')
    config = PipelineConfig.from_flat(values)
    check_checkpoint(config)
    return config, NodeOptions(autostart=values['autostart'],
                               compressed=values['input.compressed'])


def check_checkpoint(config: PipelineConfig) -> None:
    """Fail at configure, before a model is built, when the checkpoint cannot be loaded.

    Uses :mod:`sap_ros.engine.weights` (no torch needed): ``auto`` resolves the official file of
    ``model.config`` from the cache and downloads it there on first use; an unknown
    ``model.config``, a missing file or directory, a failed download, or an empty
    ``model.checkpoint`` without ``model.allow_random_weights`` raise an error that names the
    parameter, the path (and URL) and how to get the checkpoint.
    """
    from sap_ros.engine import weights
    spec = weights.spec_for(config.model.config)
    if config.model.random_weights:
        return
    if config.model.checkpoint:
        weights.resolve_checkpoint_path(config.model.checkpoint, spec)
    else:
        raise CheckpointError(weights.empty_checkpoint_message(spec))
