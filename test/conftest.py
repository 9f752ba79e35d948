"""Shared test setup: helpers importable from any folder; no test can download real weights.

``random_sam2`` (random-weight SAM2 configuration and synthetic frames) lives beside the engine
tests; evaluation tests use it too, also when run on their own.

``model.checkpoint: auto`` is the default, so a test that forgets to set a checkpoint would try
to fetch ~150 MB from the internet and would depend on whatever the developer has cached. Here
``$SAP_ROS_CACHE`` is an empty folder of the session and ``$SAP_ROS_WEIGHTS_URL`` a local port
nothing listens on: such a download fails at once with the documented error. Tests of the
download itself (test/engine/test_weights*.py) set both variables to their own server and cache.
Subprocesses (the node, the demo) inherit the variables.
"""
from __future__ import annotations

import os
from pathlib import Path
import sys
from typing import Iterator

import pytest

_HELPERS = [Path(__file__).parent / 'engine', Path(__file__).parent / 'train']
for _folder in _HELPERS:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

# The training tests' exports (train_export, heldout_export): a plugin, as a second conftest.py
# in a folder beside test/ros would clash with that one's module name.
pytest_plugins = ('train_fixtures',)

UNREACHABLE_URL = 'http://127.0.0.1:9/sap_ros_tests_never_download'  # discard port: refused


@pytest.fixture(autouse=True, scope='session')
def _no_real_weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in ('SAP_ROS_CACHE', 'SAP_ROS_WEIGHTS_URL')}
    os.environ['SAP_ROS_CACHE'] = str(tmp_path_factory.mktemp('weights_cache'))
    os.environ['SAP_ROS_WEIGHTS_URL'] = UNREACHABLE_URL
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
