"""ROS packaging: package.xml matches the code, and ``colcon build`` installs what ROS users need.

The build runs colcon (Debian packages ``colcon`` and ``python3-colcon-ros``; ``make setup``
installs them as root) on a copy of the repository in a temporary workspace, as a ROS user's
``colcon build`` would, and checks the installed tree: the launch file, ``config/sap.yaml`` and
``package.xml`` under ``share/sap_ros``, every console script of setup.py under ``lib/sap_ros``.
"""
from __future__ import annotations

import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
from typing import Set
import xml.etree.ElementTree as ET

import pytest

REPO = Path(__file__).resolve().parents[1]
# ROS packages whose Python module of the same name the code may import.
ROS_PACKAGES = {'rclpy', 'rcl_interfaces', 'builtin_interfaces', 'lifecycle_msgs', 'sensor_msgs',
                'std_msgs', 'std_srvs', 'geometry_msgs', 'visualization_msgs', 'diagnostic_msgs',
                'launch', 'launch_ros', 'sensor_msgs_py', 'cv_bridge', 'tf2_ros', 'rosbag2_py'}
IGNORED = ('.git', '.venv', 'build', 'install', 'log', 'demo_out', 'bench_out', '__pycache__',
           '*.egg-info', '.pytest_cache', '.ruff_cache', '.mypy_cache', '*.pt', '*.mcap')


def _depends(kind: str) -> Set[str]:
    root = ET.parse(REPO / 'package.xml').getroot()
    return {str(element.text).strip() for element in root.iter(kind)}


def _imported_ros_modules() -> Set[str]:
    pattern = re.compile(r'^\s*(?:from|import) (\w+)', re.MULTILINE)
    found: Set[str] = set()
    for path in [*REPO.glob('sap_ros/**/*.py'), *REPO.glob('launch/*.py')]:
        found.update(m for m in pattern.findall(path.read_text()) if m in ROS_PACKAGES)
    return found


def _console_scripts() -> Set[str]:
    return set(re.findall(r"'(\w+) = sap_ros\.[\w.]+:main'", (REPO / 'setup.py').read_text()))


def test_package_xml_names_every_ros_package_the_code_imports_and_no_fake_key():
    exec_depends = _depends('exec_depend')
    assert _imported_ros_modules() <= exec_depends
    assert 'rclpy_lifecycle' not in exec_depends  # no such package: rclpy.lifecycle is in rclpy
    assert _depends('test_depend') == {'python3-pytest'}  # ruff and mypy lint, not ament
    text = (REPO / 'package.xml').read_text()
    for pip_only in ('torch', 'sam2', 'rosbags', 'hydra-core', 'pooch'):
        assert pip_only in text, f'{pip_only} (pip only) is not documented in package.xml'


@pytest.mark.skipif(shutil.which('colcon') is None,
                    reason='colcon is not installed: apt-get install colcon python3-colcon-ros '
                           '(make setup does it when run as root)')
def test_colcon_build_installs_launch_config_package_xml_and_console_scripts(tmp_path):
    source = tmp_path / 'src' / 'sap_ros'
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*IGNORED))
    env = {k: v for k, v in os.environ.items() if not k.startswith(('VIRTUAL_ENV', 'PYTHON'))}
    result = subprocess.run(
        ['colcon', 'build', '--base-paths', 'src', '--event-handlers', 'console_direct-'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    share = tmp_path / 'install' / 'sap_ros' / 'share' / 'sap_ros'
    assert (share / 'launch' / 'sap.launch.py').is_file()
    assert (share / 'config' / 'sap.yaml').read_text() == (REPO / 'config/sap.yaml').read_text()
    assert (share / 'package.xml').read_text() == (REPO / 'package.xml').read_text()
    index = tmp_path / 'install' / 'sap_ros' / 'share' / 'ament_index' / 'resource_index'
    assert (index / 'packages' / 'sap_ros').is_file()  # ros2 run / launch find the package
    lib = tmp_path / 'install' / 'sap_ros' / 'lib' / 'sap_ros'
    scripts = _console_scripts()
    assert {'sap_node', 'sap_replay', 'sap_weights'} <= scripts
    for name in scripts:
        assert os.access(lib / name, os.X_OK), f'lib/sap_ros/{name} is missing'
    # sap_weights needs no torch: it runs from the installed tree with the system Python
    site = next((tmp_path / 'install' / 'sap_ros' / 'lib').glob('python3*/site-packages'))
    run = subprocess.run([sys.executable if not Path('/usr/bin/python3').exists()
                          else '/usr/bin/python3', str(lib / 'sap_weights'), '--help'],
                         env={**env, 'PYTHONPATH': str(site)}, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and 'fetch' in run.stdout, run.stderr
