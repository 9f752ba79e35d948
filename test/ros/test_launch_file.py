"""launch/sap.launch.py: its arguments, and the node it builds from them.

The pip-installed ROS wheels ship neither ``launch`` nor ``launch_ros``; where they are installed
(a ROS install) the real launch description is checked, elsewhere the same logic runs against
minimal stand-ins of the few launch classes the file uses.
"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
import sys
import types
from typing import Any, Dict, List

import pytest

LAUNCH_FILE = Path(__file__).resolve().parents[2] / 'launch' / 'sap.launch.py'
ARGUMENTS = {'namespace', 'params_file', 'image_topic', 'compressed', 'checkpoint', 'device'}


def _have_launch() -> bool:
    # find_spec('launch') is not enough: this repo's launch/ folder is a namespace package.
    try:
        from launch import LaunchDescription  # noqa: F401, I001
        import launch_ros.actions  # noqa: F401
    except ImportError:
        return False
    return True


HAVE_LAUNCH = _have_launch()


def _load(module_name: str = 'sap_launch_under_test') -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_parses_and_declares_the_arguments() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in functions
    (arguments,) = [n.value for n in tree.body if isinstance(n, ast.Assign)
                    and getattr(n.targets[0], 'id', '') == 'ARGUMENTS']
    names = {entry.elts[0].value: entry.elts[1] for entry in arguments.elts}
    assert set(names) == ARGUMENTS
    assert ast.literal_eval(names['namespace']) == 'sap'
    params_default = ast.unparse(names['params_file'])
    assert "FindPackageShare('sap_ros')" in params_default
    assert "'config'" in params_default and "'sap.yaml'" in params_default


class _Stand:
    """Records its constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: Dict[str, str]) -> str:
        return context[self.name]


def _stand_in_modules() -> Dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in (
        'launch', 'launch.actions', 'launch.substitutions', 'launch_ros', 'launch_ros.actions',
        'launch_ros.substitutions')}
    modules['launch'].LaunchDescription = _Stand
    modules['launch.actions'].DeclareLaunchArgument = _Stand
    modules['launch.actions'].OpaqueFunction = _Stand
    modules['launch.substitutions'].LaunchConfiguration = _LaunchConfiguration
    modules['launch.substitutions'].PathJoinSubstitution = _Stand
    modules['launch_ros.actions'].LifecycleNode = _Stand
    modules['launch_ros.substitutions'].FindPackageShare = _Stand
    return modules


def _node_for(module: types.ModuleType, **given: str) -> _Stand:
    defaults = {name: default for name, default, _ in module.ARGUMENTS}
    context = {**{k: v if isinstance(v, str) else '/share/sap_ros/config/sap.yaml'
                  for k, v in defaults.items()}, **given}
    (node,) = module._node(context)
    return node


@pytest.mark.parametrize('compressed', ['false', 'true'])
def test_launch_builds_the_node_from_the_arguments(monkeypatch, compressed: str) -> None:
    for name, module in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    launch = _load()
    description = launch.generate_launch_description()
    entities: List[_Stand] = description.args[0]
    declared = {e.args[0]: e.kwargs['default_value'] for e in entities if e.args}
    assert set(declared) == ARGUMENTS
    node = _node_for(launch, image_topic='/equirectangular/image', compressed=compressed)
    kwargs = node.kwargs
    assert (kwargs['executable'], kwargs['name'], kwargs['namespace']) == (
        'sap_node', 'sap_node', 'sap')
    params_file, overrides = kwargs['parameters']
    assert params_file == '/share/sap_ros/config/sap.yaml'
    # Empty checkpoint / device keep the params file's values.
    assert overrides == {'input.compressed': compressed == 'true'}
    if compressed == 'true':
        assert kwargs['remappings'] == [('image/compressed', '/equirectangular/image/compressed')]
    else:
        assert kwargs['remappings'] == [('image', '/equirectangular/image')]
    node = _node_for(launch, checkpoint='/m/sam2.1_hiera_tiny.pt', device='cuda:1')
    assert node.kwargs['parameters'][1] == {'input.compressed': False, 'model.device': 'cuda:1',
                                            'model.checkpoint': '/m/sam2.1_hiera_tiny.pt'}


@pytest.mark.skipif(not HAVE_LAUNCH, reason='launch / launch_ros are not installed (the pip '
                    'ROS wheels do not ship them; a ROS 2 install does)')
def test_real_launch_description() -> None:
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument

    description = _load('sap_launch_real').generate_launch_description()
    arguments = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert {a.name for a in arguments} == ARGUMENTS
    context = LaunchContext()
    defaults = {a.name: ''.join(s.perform(context) for s in a.default_value)
                for a in arguments}
    assert defaults['namespace'] == 'sap'
    assert defaults['params_file'].endswith('config/sap.yaml')
