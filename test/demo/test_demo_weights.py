"""``make demo``: the official checkpoint, fetched once; random weights only when it cannot be."""
from __future__ import annotations

from pathlib import Path
import sys

import pytest

from sap_ros.demo import demo
from sap_ros.engine import weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))
from test_weights import ENTRY, TINY, FakeHub  # noqa: E402  (the hub and its tiny state dict)


@pytest.fixture
def tiny_official(monkeypatch, tmp_path):
    """The demo's model.config resolves to the tiny file; empty cache of this test."""
    monkeypatch.setattr(weights, 'WEIGHT_FILES', {demo.DEMO_MODEL: ENTRY})
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / 'cache'))
    monkeypatch.delenv('SAP_CHECKPOINT', raising=False)


def test_demo_fetches_the_checkpoint_into_the_cache(tiny_official, tmp_path, monkeypatch):
    hub = FakeHub({ENTRY.file_name: TINY})
    monkeypatch.setenv(weights.URL_ENV, hub.url)
    try:
        checkpoint, reason = demo._choose_checkpoint()
    finally:
        hub.stop()
    assert (checkpoint, reason) == (str(tmp_path / 'cache' / 'tiny_t.pt'), '')
    assert Path(checkpoint).read_bytes() == TINY


def test_demo_falls_back_to_random_weights_only_when_the_download_fails(tiny_official, capsys):
    # test/conftest.py points downloads at a port nothing listens on
    checkpoint, reason = demo._choose_checkpoint()
    assert checkpoint is None and 'could not be downloaded from' in reason
    assert 'model.checkpoint=auto' in capsys.readouterr().err  # the full error is shown
    banner = demo._banner(reason)
    assert 'RANDOM WEIGHTS' in banner and 'could not be downloaded from' in banner
    assert all(len(line) <= 78 or line.startswith('*  http') for line in banner.splitlines())


def test_demo_honours_sap_checkpoint(tiny_official, monkeypatch):
    monkeypatch.setenv('SAP_CHECKPOINT', 'none')
    checkpoint, reason = demo._choose_checkpoint()
    assert checkpoint is None and 'SAP_CHECKPOINT=none' in reason
    monkeypatch.setenv('SAP_CHECKPOINT', '/models/mine.pt')
    assert demo._choose_checkpoint() == ('/models/mine.pt', '')
