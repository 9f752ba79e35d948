"""``sap_node`` with ``model.checkpoint: auto`` (the default): configure fetches, activate loads.

In-process lifecycle node with the real pipeline factory. The download goes to a real HTTP server
on 127.0.0.1 (``FakeHub`` of test/engine/test_weights.py); the real SAM2 load uses a random-weight
sam2.1_hiera_t state dict placed in the cache under the official file name.
"""
from __future__ import annotations

import itertools
from pathlib import Path
import sys
from typing import Any, Iterator, List

import pytest
import torch

from sap_ros.engine import sam2_checkpoint, weights
from sap_ros.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))
from test_weights import ENTRY, TINY, FakeHub  # noqa: E402  (the hub and its tiny state dict)

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (see README: ROS wheels)')
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from sap_ros.ros.node import SapNode, default_pipeline_factory  # noqa: E402
from sap_ros.ros.params import declare_parameters, read_parameters  # noqa: E402

_names = itertools.count()
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
TINY_MODEL = {'model.device': 'cpu', 'model.image_size': 128, 'model.seed': 5,
              'patches.size_px': 64, 'discovery.enabled': False}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / 'cache'
    monkeypatch.setenv(weights.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    server = FakeHub({ENTRY.file_name: TINY})
    monkeypatch.setenv(weights.URL_ENV, server.url)
    yield server
    server.stop()


def _node(context: Any, built: List[Any]) -> SapNode:
    def factory(config: Any) -> Any:
        built.append(default_pipeline_factory(config))
        return built[-1]
    overrides = [Parameter(name, value=value) for name, value in TINY_MODEL.items()]
    return SapNode(factory, context=context, namespace=f'/weights{next(_names)}',
                   parameter_overrides=overrides)


def test_auto_is_the_default_and_configure_downloads_then_activate_reads_the_cache(
        ros_context, cache, hub, monkeypatch):
    monkeypatch.setattr(weights, 'WEIGHT_FILES', {ENTRY.config: ENTRY})  # tiny stand-in
    built: List[Any] = []
    node = _node(ros_context, built)
    try:
        assert node.get_parameter('model.checkpoint').value == 'auto'
        assert node.get_parameter('model.allow_random_weights').value is False
        assert node.trigger_configure() == SUCCESS
        assert hub.requests == ['/mirror/tiny_t.pt']
        assert (cache / 'tiny_t.pt').read_bytes() == TINY
        hub.stop()  # activate must not need the network: it reads the cached file ...
        assert node.trigger_activate() == FAILURE  # ... which is no SAM2 model
        assert built == []
    finally:
        node.destroy_node()
    with pytest.raises(CheckpointError, match=f'{cache / "tiny_t.pt"} does not fit'):
        default_pipeline_factory(node_config(ros_context))


def node_config(context: Any) -> Any:
    """The config configure reads for TINY_MODEL (the checkpoint stays auto)."""
    node = rclpy.create_node(f'cfg{next(_names)}', context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in TINY_MODEL.items()])
    try:
        declare_parameters(node)
        return read_parameters(node)[0]
    finally:
        node.destroy_node()


def test_configure_fails_clearly_when_auto_cannot_be_fetched(ros_context, cache):
    # test/conftest.py points downloads at a port nothing listens on
    node = rclpy.create_node(f'offline{next(_names)}', context=ros_context)
    try:
        declare_parameters(node)
        with pytest.raises(CheckpointError) as info:
            read_parameters(node)
    finally:
        node.destroy_node()
    message = str(info.value)
    assert message.startswith('model.checkpoint=auto: sam2.1_hiera_tiny.pt')
    assert f'copy it to {cache / "sam2.1_hiera_tiny.pt"}' in message
    assert weights.WEIGHT_FILES['sam2.1_hiera_t'].url in message
    assert list(cache.iterdir()) == []


def test_node_activates_with_the_cached_official_file(ros_context, cache):
    state = sam2_checkpoint.build_sam2_model('configs/sam2.1/sam2.1_hiera_t.yaml', 128,
                                             seed=3).state_dict()
    cache.mkdir()
    torch.save({'model': state}, cache / 'sam2.1_hiera_tiny.pt')
    built: List[Any] = []
    node = _node(ros_context, built)
    try:
        assert node.trigger_configure() == SUCCESS
        assert node.trigger_activate() == SUCCESS
        (pipeline,) = built
        assert str(cache / 'sam2.1_hiera_tiny.pt') in pipeline.description
        loaded = pipeline.segmenter.adapter.model.state_dict()
        key = 'image_encoder.trunk.patch_embed.proj.weight'
        assert torch.equal(loaded[key], state[key])  # the file's weights, not seed 5's
        node.trigger_deactivate()
    finally:
        node.destroy_node()
