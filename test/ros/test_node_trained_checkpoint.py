"""A file trained by ``sap_train fit`` runs in the real ``sap_node`` process over DDS.

The node is given the model yaml the file was trained from (``model.config``: its path) and
the file (``model.checkpoint``), as README "Training along the trajectory" says.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ros_probe import NodeProcess, Probe, erp_frame, image_msg

from sap_ros.ros.conversions import cloud_msg_to_objects_array, image_msg_to_labels

pytestmark = pytest.mark.slow
pytest.importorskip('training.model.sam2', reason="sam2's training package is not installed: "
                    'SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation --no-binary '
                    'sam2 sam2==1.1.0 (make setup)')

NANO = Path(__file__).resolve().parents[2] / 'sap_ros' / 'train' / 'configs' / 'sam2.1_nano.yaml'


def _trained_file(root: Path) -> Path:
    import cv2

    from sap_ros.synth.scene import SynthScene
    from sap_ros.synth.spec import SceneSpec
    from sap_ros.train.cli import main
    scene = SynthScene(SceneSpec(seed=3))
    (root / 'clip' / 'frames').mkdir(parents=True)
    (root / 'clip' / 'labels').mkdir()
    rgb, labels = scene.render(scene.start_pose, 256)
    cv2.imwrite(str(root / 'clip' / 'frames' / '0000.png'), rgb[..., ::-1])
    cv2.imwrite(str(root / 'clip' / 'labels' / '0000.png'), labels)
    assert main(['data', str(root / 'clip'), '--out', str(root / 'data'), '--size', '64']) == 0
    assert main(['fit', '--data', str(root / 'data'), '--out', str(root / 'run'),
                 '--steps', '2', '--model-config', str(NANO)]) == 0
    return root / 'run' / 'model.pt'


def test_the_node_runs_a_trained_nano_file(ros_context, tmp_path):
    weights = _trained_file(tmp_path)
    args = ['-r', '__ns:=/sap', '-p', f'model.config:={NANO}', '-p',
            f'model.checkpoint:={weights}', '-p', 'model.device:=cpu', '-p',
            'model.image_size:=64', '-p', 'patches.size_px:=64', '-p', 'patches.fov_deg:=120.0',
            '-p', 'discovery.points_per_side:=4', '-p', 'discovery.pred_iou_thresh:=0.0',
            '-p', 'discovery.stability_thresh:=0.0', '-p', 'discovery.max_new_per_frame:=3']
    node = NodeProcess(args, tmp_path)
    probe = Probe(ros_context)
    try:
        probe.wait(lambda: probe.image_pub.get_subscription_count() > 0, 180.0,
                   'sap_node to activate with the trained file', alive=node.problem)
        stamp = 2_000_000_000
        probe.image_pub.publish(image_msg(erp_frame(128, seed=4), stamp))
        labels = image_msg_to_labels(probe.mask_for(stamp))
        objects = cloud_msg_to_objects_array(probe.objects_for(stamp))
        assert set(objects['id'].tolist()) == set(np.unique(labels[labels > 0]).tolist())
        assert str(weights) in node.log()  # the node says which file it loaded
    finally:
        probe.close()
        status = node.stop()
    assert status == 0, node.log()[-3000:]
