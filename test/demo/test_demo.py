"""``make demo`` end to end at a tiny size: the files it promises exist and hold what they say."""
from __future__ import annotations

import json
import os

import cv2
import pytest

from sap_ros.eval.bags import bag_topics

pytestmark = pytest.mark.slow
pytest.importorskip('rclpy', reason='rclpy is not installed (see README: ROS wheels)')


def test_demo_writes_the_report_sheet_objects_and_bag(tmp_path, monkeypatch, capsys):
    from sap_ros.demo import demo

    out = tmp_path / 'demo_out'
    for key, value in {'SAP_DEMO_OUT': str(out), 'SAP_DEMO_FRAMES': '2',
                       'SAP_DEMO_WIDTH': '256', 'SAP_IMAGE_SIZE': '64'}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv('SAP_CHECKPOINT', raising=False)
    monkeypatch.setenv('ROS_DOMAIN_ID', str(150 + os.getpid() % 50))
    assert demo.main() == 0
    err = capsys.readouterr().err
    assert 'RANDOM WEIGHTS' in err
    report = json.loads((out / 'report.json').read_text())
    # The replay report: the node's output as `ours`, the oracle upper bound beside it.
    assert report['frames'] == 2 and report['bag']['frames_replayed'] == 2
    assert report['config']['model.image_size'] == 64
    assert report['model']['random_weights'] is True
    assert 'RANDOM WEIGHTS' in report['model']['description']
    oracle = report['baselines']['oracle']
    assert oracle['frames'] == 2
    assert oracle['j'] > 0.5  # perfect masks: the oracle column means it
    md = (out / 'report.md').read_text()
    assert '| metric | ours | oracle |' in md
    assert f"| j | {report['j']:.3f} | {oracle['j']:.3f} |" in md
    assert 'RANDOM WEIGHTS' in md
    sheet = cv2.imread(str(out / 'contact_sheet.png'))
    assert sheet is not None and sheet.shape[0] >= 64 and sheet.shape[1] >= 2 * 128
    objects_md = (out / 'objects.md').read_text()
    assert objects_md.startswith('# Objects in the last frame (')
    assert bag_topics(out / 'sap.mcap') == {'/sap/masks': ('sensor_msgs/msg/Image', 2),
                                            '/sap/objects': ('sensor_msgs/msg/PointCloud2', 2)}
    assert 'RANDOM WEIGHTS' in (out / 'node.log').read_text()
