"""config/sap.yaml lists every parameter with its default, and ROS applies it under /sap."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Dict

import pytest
import rclpy
from rclpy.parameter import Parameter
import yaml

from sap_ros.config import PipelineConfig
from sap_ros.ros.params import all_param_specs, declare_parameters, read_parameters

PARAMS_FILE = Path(__file__).resolve().parents[2] / 'config' / 'sap.yaml'
NODE_KEY = '/**/sap_node'
_names = itertools.count()


def _flatten(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def _file_values(path: Path = PARAMS_FILE) -> Dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert list(document) == [NODE_KEY]
    return _flatten(document[NODE_KEY]['ros__parameters'])


def test_yaml_lists_every_parameter_with_its_default_and_type() -> None:
    values = _file_values()
    specs = {name: default for name, default, _ in all_param_specs()}
    assert sorted(values) == sorted(specs)
    for name, default in specs.items():
        assert values[name] == default, name
        assert type(values[name]) is type(default), f'{name}: {values[name]!r} vs {default!r}'


def test_every_pipeline_parameter_is_declared_with_a_description(ros_context) -> None:
    node = rclpy.create_node(f'declare{next(_names)}', context=ros_context)
    try:
        declare_parameters(node)
        declare_parameters(node)  # a second configure declares nothing twice
        for spec in PipelineConfig.param_specs():
            assert node.has_parameter(spec.name)
            (descriptor,) = node.describe_parameters([spec.name])
            assert spec.description in descriptor.description
        assert node.get_parameter('autostart').value is True
        assert node.get_parameter('input.compressed').value is False
    finally:
        node.destroy_node()


def test_params_file_applies_to_the_node_in_namespace_sap(tmp_path: Path) -> None:
    edited = tmp_path / 'sap.yaml'
    edited.write_text(PARAMS_FILE.read_text()
                      .replace('fov_deg: 90.0', 'fov_deg: 75')
                      .replace('checkpoint: auto', 'checkpoint: /data/sam2.1_hiera_tiny.pt'))
    context = rclpy.Context()
    rclpy.init(context=context, args=['sap_node', '--ros-args', '-r', '__ns:=/sap',
                                      '--params-file', str(edited)])
    try:
        node = rclpy.create_node('sap_node', context=context)
        declare_parameters(node)
        assert node.get_parameter('model.checkpoint').value == '/data/sam2.1_hiera_tiny.pt'
        assert node.get_parameter('patches.fov_deg').value == 75  # an int is fine here ...
        node.set_parameters([Parameter('model.checkpoint', value='')])
        node.set_parameters([Parameter('model.allow_random_weights',
                                                       value=True)])
        config, options = read_parameters(node)
        assert config.patches.fov_deg == 75.0  # ... and becomes the float the pipeline wants
        assert options.autostart and not options.compressed
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize('name, value', [('patches.order', 'spiral'),
                                         ('model.image_size', 100),
                                         ('output.scale', 'half'),
                                         ('autostart', 'yes')])
def test_invalid_values_name_the_parameter(ros_context, name: str, value: Any) -> None:
    node = rclpy.create_node(f'invalid{next(_names)}', context=ros_context, parameter_overrides=[
        Parameter('model.allow_random_weights', value=True),
        Parameter(name, value=value)])
    try:
        declare_parameters(node)
        with pytest.raises(ValueError, match=name.replace('.', r'\.')):
            read_parameters(node)
    finally:
        node.destroy_node()
