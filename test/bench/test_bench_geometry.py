"""``sap_bench geometry``: the report a user reads (keys, ranges, help, errors, the seam)."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import pytest

from sap_ros.bench.cli import main
from sap_ros.bench.geometry import result_keys

SHARED_DATA = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data'
REAL_SEAM_MASK = SHARED_DATA / '360vot' / '0117_000211_0.png'
WIDTH = 512
SMALL_RUN = ['--erp-width', str(WIDTH), '--patch-size', '128', '--frames', '1', '--repeats', '1',
             '--quiet']
J_KEYS = ('oracle_j', 'oracle_j_poles', 'oracle_j_small', 'naive_j', 'naive_j_poles',
          'naive_j_small', 'seam_mask_j')


def _write_seam_blob(path: Path, width: int = WIDTH) -> None:
    """An elliptic object centred on the 0/360 seam: it touches column 0 and column W-1."""
    height = width // 2
    mask = np.zeros((height, width), np.uint8)
    for centre_u in (0, width):
        cv2.ellipse(mask, (centre_u, height // 2 + 20), (50, 30), 0, 0, 360, 255, -1)
    assert mask[:, 0].any() and mask[:, -1].any()
    cv2.imwrite(str(path), mask)


def _run(argv: List[str]) -> Tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(argv)
    return status, stdout.getvalue()


@pytest.fixture(scope='module')
def small_run(tmp_path_factory) -> Tuple[dict, str]:
    """One small run with a synthetic seam mask: (JSON report, printed table)."""
    tmp = tmp_path_factory.mktemp('bench_geometry')
    _write_seam_blob(tmp / 'seam.png')
    status, table = _run(['geometry', *SMALL_RUN, '--seam-mask', str(tmp / 'seam.png'),
                          '--json', str(tmp / 'geom.json')])
    assert status == 0
    return json.loads((tmp / 'geom.json').read_text()), table


def test_json_has_every_documented_key_with_sane_values(small_run):
    report, _ = small_run
    assert list(report) == [name for name, _ in result_keys()]
    assert report['erp_width'] == WIDTH and report['patch_size'] == 128
    assert report['patches'] > 0
    assert report['coverage'] == pytest.approx(1.0)
    assert 0.0 < report['min_pair_overlap'] <= report['mean_pair_overlap'] < 1.0
    assert report['extract_ms'] > 0.0 and report['fuse_ms'] > 0.0
    for key in J_KEYS:
        assert report[key] is not None and 0.0 <= report[key] <= 1.0, key
    assert report['objects'] >= 3  # the scene holds at least the lamp, the rug and the seam object
    assert report['machine']['cpu_count'] >= 1 and report['machine']['cv2']


def test_table_shows_the_reported_numbers(small_run):
    report, table = small_run
    for key in ('extract_ms', 'fuse_ms'):
        assert f'{report[key]:.1f} ms' in table, key
    for key in ('oracle_j', 'naive_j', 'seam_mask_j'):
        assert f'{report[key]:.3f}' in table, key


def test_py360convert_is_timed_and_its_patches_look_like_ours(small_run):
    """Same yaw / pitch conventions: each view from e2p matches ours, the caps included."""
    pytest.importorskip('py360convert', reason='py360convert (benchmark baseline) not installed')
    report, table = small_run
    for key in ('py360convert_ms', 'py360convert_cached_ms'):
        assert report[key] > 0.0, key
        assert f'{report[key]:.1f} ms' in table, key
    assert report['py360convert_centre_corr'] > 0.9
    assert report['py360convert_min_corr'] > 0.9
    assert 'same conventions' in table


def test_object_across_the_seam_keeps_one_id(small_run):
    report, _ = small_run
    assert report['seam_mask_ids'] == 1
    assert report['seam_mask_j'] > 0.8


def test_help_explains_every_key(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['geometry', '--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, _ in result_keys():
        assert f'  {name}: ' in out, name
    for option in ('--erp-width', '--seam-mask', '--json', '--frames', '--repeats', '--fov-deg'):
        assert option in out


def test_top_level_help_lists_geometry(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code == 0
    assert 'geometry' in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code != 0


def test_missing_seam_mask_is_named(tmp_path, capsys):
    missing = tmp_path / 'no_such_mask.png'
    with pytest.raises(SystemExit) as exit_info:
        main(['geometry', *SMALL_RUN, '--seam-mask', str(missing)])
    assert exit_info.value.code != 0
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize('content', ['not an image', 'square'])
def test_unusable_seam_mask_is_named(tmp_path, capsys, content):
    path = tmp_path / 'mask.png'
    if content == 'square':
        cv2.imwrite(str(path), np.full((64, 64), 255, np.uint8))
    else:
        path.write_text(content)
    status, _ = _run(['geometry', *SMALL_RUN, '--seam-mask', str(path)])
    assert status != 0
    assert str(path) in capsys.readouterr().err


@pytest.mark.skipif(not REAL_SEAM_MASK.is_file(),
                    reason=f'real 360VOT seam mask not available at {REAL_SEAM_MASK}')
def test_real_wingsuit_mask_keeps_one_id_across_the_seam(tmp_path):
    status, _ = _run(['geometry', *SMALL_RUN, '--seam-mask', str(REAL_SEAM_MASK),
                      '--json', str(tmp_path / 'geom.json')])
    assert status == 0
    report = json.loads((tmp_path / 'geom.json').read_text())
    assert report['seam_mask'] == str(REAL_SEAM_MASK)
    assert report['seam_mask_ids'] == 1
    assert 0.5 < report['seam_mask_j'] <= 1.0


def test_speedup_is_the_ratio_of_the_two_measured_times(tmp_path, monkeypatch):
    """On a clock the test controls: our extraction costs 2 ms a call, e2p 0.5 ms a view."""
    py360convert = pytest.importorskip('py360convert', reason='py360convert not installed')
    from types import SimpleNamespace

    from sap_ros.bench import common, geometry

    now = [0.0]

    def costs(seconds: float, fn):
        def timed(*args, **kwargs):
            now[0] += seconds
            return fn(*args, **kwargs)
        return timed

    # median_ms (bench.common) reads the clock for both sides
    monkeypatch.setattr(common, 'time', SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(geometry, 'extract_patches', costs(2e-3, geometry.extract_patches))
    monkeypatch.setattr(py360convert, 'e2p', costs(0.5e-3, py360convert.e2p))
    status, table = _run(['geometry', *SMALL_RUN, '--json', str(tmp_path / 'geom.json')])
    assert status == 0
    report = json.loads((tmp_path / 'geom.json').read_text())
    assert report['extract_ms'] == pytest.approx(2.0)
    assert report['py360convert_ms'] == pytest.approx(0.5 * report['patches'])
    assert report['speedup_vs_py360convert'] == pytest.approx(report['patches'] / 4.0)
    assert f"(x{report['patches'] / 4.0:.1f})" in table
