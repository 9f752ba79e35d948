"""``sap_replay`` on a sqlite3 bag with 8-bit label PNGs: ``--gt-ignore``, ``--max-frames``.

The ground truth carries a large blob of the ignore value 255. Ignored, it is
"unknown" to the metrics and to the oracle baseline alike: no ground-truth object, and no object
the oracle could invent from it. Not ignored (``--gt-ignore none``), it is one more object.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from sap_ros.eval.bags import BagWriter, bag_topics, open_image_stream, open_label_stream
from sap_ros.eval.replay import MASKS_TOPIC, main
from sap_ros.synth import cli as synth

SMALL = ['--set', 'model.device=cpu',
         '--set', 'model.image_size=128', '--set', 'patches.size_px=128',
         '--set', 'patches.fov_deg=120', '--set', 'discovery.every_n_frames=1', '--quiet']
TOPIC = '/camera/image'


@pytest.fixture(scope='module')
def sqlite_clip(tmp_path_factory) -> Path:
    """3 synthetic frames in a sqlite3 bag and ``labels/`` of 8-bit PNGs with a 255 blob."""
    root = tmp_path_factory.mktemp('clip')
    assert synth.main([str(root / 'synth'), '--frames', '3', '--width', '256', '--quiet']) == 0
    frames = list(open_image_stream(root / 'synth', synth.IMAGE_TOPIC))
    labels = [f.labels for f in open_label_stream(root / 'synth', synth.LABEL_TOPIC)]
    with BagWriter(root / 'bag', storage='sqlite3') as writer:
        for frame in frames:
            writer.write_image(TOPIC, frame.rgb, frame.header_stamp_ns)
    (root / 'labels').mkdir()
    for k, gt in enumerate(labels):
        assert gt.max() < 255
        gt8 = gt.astype(np.uint8)
        gt8[BLOB] = 255
        cv2.imwrite(str(root / 'labels' / f'{k:04d}.png'), gt8)
    assert (root / 'bag' / 'bag.db3').is_file()
    return root


BLOB = (slice(90, 120), slice(20, 80))  # rows, columns of the 255 blob in the 128 x 256 labels


def _blob_ids(out: Path) -> List[int]:
    """Predicted ids (output bag, label map at half size) lying mostly inside the blob."""
    ids = set()
    for frame in open_label_stream(out / 'sap.mcap', MASKS_TOPIC, use_header_stamp=True):
        labels = cv2.resize(frame.labels, (256, 128), interpolation=cv2.INTER_NEAREST)
        inside = np.zeros(labels.shape, bool)
        inside[BLOB] = True
        for value in np.unique(labels[inside]):
            if value and (inside & (labels == value)).sum() > 0.5 * (labels == value).sum():
                ids.add(int(value))
    return sorted(ids)


def _replay(capsys, clip: Path, out: Path, *extra: str) -> dict:
    code = main([str(clip / 'bag'), '--image-topic', TOPIC, '--out', str(out), '--gt-dir',
                 str(clip / 'labels'), '--skip-ours', '--baseline', 'oracle', *SMALL, *extra])
    assert code == 0, capsys.readouterr().err
    return json.loads((out / 'report.json').read_text())


def test_ignored_pixels_are_neither_scored_nor_segmented_by_the_oracle(sqlite_clip, tmp_path,
                                                                       capsys):
    ignored = _replay(capsys, sqlite_clip, tmp_path / 'ignored', '--max-frames', '2')
    counted = _replay(capsys, sqlite_clip, tmp_path / 'counted', '--max-frames', '2',
                      '--gt-ignore', 'none')
    assert ignored['ground_truth']['ignore'] == 255 and counted['ground_truth']['ignore'] is None
    with_ignore, without = ignored['baselines']['oracle'], counted['baselines']['oracle']
    assert without['gt_objects'] == with_ignore['gt_objects'] + 1  # the blob as an object
    # The oracle segments the blob only when it is an object (at 128 px it misses some small
    # synthetic objects either way; the blob is large).
    assert without['pred_objects'] == with_ignore['pred_objects'] + 1
    assert len(_blob_ids(tmp_path / 'counted')) == 1 and _blob_ids(tmp_path / 'ignored') == []


def test_max_frames_replays_and_writes_only_the_first_frames(sqlite_clip, tmp_path, capsys):
    report = _replay(capsys, sqlite_clip, tmp_path / 'two', '--max-frames', '2')
    assert report['baselines']['oracle']['frames'] == 2
    assert report['bag']['frames_replayed'] == 2
    stamps: List[int] = [f.header_stamp_ns for f in open_image_stream(sqlite_clip / 'bag', TOPIC)]
    masks = list(open_label_stream(tmp_path / 'two' / 'sap.mcap', MASKS_TOPIC,
                                   use_header_stamp=True))
    assert [m.timestamp_ns for m in masks] == stamps[:2]
    assert bag_topics(tmp_path / 'two' / 'sap.mcap')[MASKS_TOPIC][1] == 2
