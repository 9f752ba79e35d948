"""``model.checkpoint: auto``: download into the cache through a real HTTP server on 127.0.0.1.

The server stands in for the official download site (``$SAP_ROS_WEIGHTS_URL``) and serves a tiny
state dict with its own sha256 table, so no real weights are ever fetched.
"""
from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import io
from pathlib import Path
import socket
import threading
from typing import Dict, Iterator, List, Optional

import pytest
import torch

from sap_ros.engine import weights
from sap_ros.engine.weights_cli import main as sap_weights
from sap_ros.errors import CheckpointError


def _tiny_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({'model': {'w': torch.arange(300, dtype=torch.float32)}}, buffer)
    return buffer.getvalue()


TINY = _tiny_checkpoint()
ENTRY = weights.WeightFile('sam2.1_hiera_t', 'tiny_t.pt', 'https://example.invalid/tiny_t.pt',
                           weights.hashlib.sha256(TINY).hexdigest(), len(TINY))


class FakeHub:
    """A mirror of .pt files on 127.0.0.1 that counts requests and can cut a body short."""

    def __init__(self, files: Dict[str, bytes]) -> None:
        self.files = files
        self.requests: List[str] = []
        self.cut_after_bytes: Optional[int] = None
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hub.requests.append(self.path)
                body = hub.files.get(self.path.rsplit('/', 1)[-1])
                if body is None:
                    self.send_error(404, 'no such file')
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                cut = hub.cut_after_bytes
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()  # HTTP/1.0: the connection closes after the handler

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/mirror/'
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    server = FakeHub({ENTRY.file_name: TINY})
    monkeypatch.setenv(weights.URL_ENV, server.url)
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / 'cache'))
    yield server
    server.stop()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return int(probe.getsockname()[1])  # nothing listens once the socket is closed


def _cache_files(tmp_path: Path) -> List[str]:
    cache = tmp_path / 'cache'
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_first_fetch_downloads_with_progress_verifies_and_keeps_the_file(hub, tmp_path, capsys):
    path = weights.fetch(ENTRY)
    assert path == tmp_path / 'cache' / 'tiny_t.pt'
    assert path.read_bytes() == TINY
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded['model']['w'], torch.arange(300, dtype=torch.float32))
    assert hub.requests == ['/mirror/tiny_t.pt']
    err = capsys.readouterr().err
    assert 'tiny_t.pt: 100%' in err  # the progress bar, filled
    assert _cache_files(tmp_path) == ['tiny_t.pt']  # no temporary file left


def test_cache_hit_needs_no_network(hub, tmp_path, monkeypatch):
    first = weights.fetch(ENTRY, progress=False)
    hub.stop()
    monkeypatch.setenv(weights.URL_ENV, f'http://127.0.0.1:{_closed_port()}/')
    assert weights.fetch(ENTRY, progress=False) == first
    assert len(hub.requests) == 1


def test_sha256_mismatch_keeps_nothing_and_says_so(hub, tmp_path):
    hub.files[ENTRY.file_name] = TINY[:-8] + b'tampered'  # same size, other bytes
    with pytest.raises(CheckpointError) as info:
        weights.fetch(ENTRY, progress=False)
    message = str(info.value)
    assert 'does not have the expected sha256 ' + ENTRY.sha256 in message
    assert hub.url + 'tiny_t.pt' in message and 'nothing was kept' in message
    assert _cache_files(tmp_path) == []
    hub.files[ENTRY.file_name] = TINY  # the next try downloads the right file
    assert weights.fetch(ENTRY, progress=False).read_bytes() == TINY


def test_interrupted_transfer_keeps_nothing(hub, tmp_path):
    hub.cut_after_bytes = len(TINY) // 2
    with pytest.raises(CheckpointError, match='download from .* failed') as info:
        weights.fetch(ENTRY, progress=False)
    assert str(tmp_path / 'cache' / 'tiny_t.pt') in str(info.value)
    assert _cache_files(tmp_path) == []
    with pytest.raises(CheckpointError):  # a second try must not take a partial file either
        weights.fetch(ENTRY, progress=False)
    assert _cache_files(tmp_path) == []


def test_unreachable_server_gives_the_documented_error(tmp_path, monkeypatch):
    url = f'http://127.0.0.1:{_closed_port()}/mirror'
    monkeypatch.setenv(weights.URL_ENV, url)
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / 'cache'))
    with pytest.raises(CheckpointError) as info:
        weights.fetch(ENTRY, progress=False)
    message = str(info.value)
    target = tmp_path / 'cache' / 'tiny_t.pt'
    for text in ('model.checkpoint=auto', url + '/tiny_t.pt', 'ConnectionError',
                 f'not in the cache {target.parent}', f'copy it to {target}',
                 ENTRY.url, f'sap_weights verify {target}', ENTRY.sha256, '$SAP_ROS_CACHE',
                 '$SAP_ROS_WEIGHTS_URL', 'set model.checkpoint to the path'):
        assert text in message, text
    assert _cache_files(tmp_path) == []


def test_missing_file_on_the_mirror_names_the_http_status(hub, tmp_path):
    del hub.files[ENTRY.file_name]
    with pytest.raises(CheckpointError, match='404'):
        weights.fetch(ENTRY, progress=False)
    assert _cache_files(tmp_path) == []


def test_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / 'mine'))
    assert weights.cache_dir() == tmp_path / 'mine'
    monkeypatch.delenv(weights.CACHE_ENV)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert weights.cache_dir() == tmp_path / 'xdg' / 'sap_ros'
    monkeypatch.delenv(weights.URL_ENV, raising=False)
    assert weights.download_url(ENTRY) == ENTRY.url
    monkeypatch.setenv(weights.URL_ENV, 'http://mirror.local/sam2/')
    assert weights.download_url(ENTRY) == 'http://mirror.local/sam2/tiny_t.pt'


def test_every_official_file_has_a_url_and_a_sha256():
    assert sorted(weights.WEIGHT_FILES) == sorted(weights.MODEL_SPECS)
    for name, entry in weights.WEIGHT_FILES.items():
        assert entry.url == weights.MODEL_SPECS[name].url
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
    assert len({e.sha256 for e in weights.WEIGHT_FILES.values()}) == len(weights.WEIGHT_FILES)


# ---------------------------------------------------------------------- sap_weights
@pytest.fixture
def tiny_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI and ``auto`` see only the tiny file, as model.config sam2.1_hiera_t."""
    monkeypatch.setattr(weights, 'WEIGHT_FILES', {ENTRY.config: ENTRY})


def test_cli_fetch_then_path_list_and_verify(hub, tmp_path, tiny_table, capsys):
    target = tmp_path / 'cache' / 'tiny_t.pt'
    assert sap_weights(['path', 'sam2.1_hiera_t']) == 1
    out, err = capsys.readouterr()
    assert out.strip() == str(target) and 'sap_weights fetch sam2.1_hiera_t' in err
    assert sap_weights(['list']) == 0
    assert 'tiny_t.pt' in capsys.readouterr().out.splitlines()[-1].split()[1:3]
    assert sap_weights(['fetch', 'sam2.1_hiera_t']) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(target) and '100%' in err
    hub.stop()
    assert sap_weights(['fetch', 'sam2.1_hiera_t']) == 0  # cached: no server needed
    assert capsys.readouterr().out.strip() == str(target)
    assert sap_weights(['path', 'sam2.1_hiera_t']) == 0
    assert sap_weights(['list']) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(str(target))
    assert sap_weights(['verify', str(target)]) == 0
    assert 'official tiny_t.pt (model.config=sam2.1_hiera_t)' in capsys.readouterr().out
    assert sap_weights(['verify', str(target), '--config', 'sam2.1_hiera_t']) == 0


def test_cli_verify_rejects_other_files_and_fetch_reports_failures(tmp_path, tiny_table,
                                                                   monkeypatch, capsys):
    other = tmp_path / 'other.pt'
    other.write_bytes(TINY + b'!')
    assert sap_weights(['verify', str(other)]) == 1
    assert 'NOT an official SAM2 checkpoint' in capsys.readouterr().out
    assert sap_weights(['verify', str(tmp_path / 'nowhere.pt')]) == 2
    assert 'no file at' in capsys.readouterr().err
    monkeypatch.setenv(weights.URL_ENV, f'http://127.0.0.1:{_closed_port()}/')
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / 'cache'))
    assert sap_weights(['fetch', 'sam2.1_hiera_t', '--quiet']) == 2
    err = capsys.readouterr().err
    assert err.startswith('sap_weights: error: model.checkpoint=auto') and 'Traceback' not in err
    with pytest.raises(SystemExit):
        sap_weights(['fetch', 'sam3_hiera_t'])


def test_a_cached_file_is_taken_as_is_unless_checked(hub, tmp_path):
    target = tmp_path / 'cache' / 'tiny_t.pt'
    target.parent.mkdir()
    target.write_bytes(b'copied by hand, wrongly')
    assert weights.fetch(ENTRY, progress=False) == target and hub.requests == []
    assert weights.fetch(ENTRY, progress=False, check_cached=True).read_bytes() == TINY
    assert hub.requests == ['/mirror/tiny_t.pt'] and _cache_files(tmp_path) == ['tiny_t.pt']
