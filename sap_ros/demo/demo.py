"""``make demo``: the main job on an embedded default, end to end through the real node.

1. ``sap_synth``: a short synthetic 360 sequence (moving, turning camera) as an mcap bag with
   exact ground-truth labels.
2. The real ``sap_node`` process (random-weight SAM2 unless ``SAP_CHECKPOINT`` names a
   checkpoint), fed from the bag by a small rclpy player in lockstep, ``/sap/masks`` and
   ``/sap/objects`` recorded into ``demo_out/sap.mcap``.
3. ``demo_out/``: ``contact_sheet.png`` (overlays), ``objects.md`` (the last frame's object
   table), ``report.md`` / ``report.json`` (J, F, ID switches ... of the node's output, with the
   geometric-oracle upper bound of the same pipeline beside it) and ``node.log``.

Environment: ``SAP_CHECKPOINT`` (a SAM2 .pt; default: none = random weights, said loudly),
``SAP_DEMO_FRAMES`` (default 8), ``SAP_DEMO_WIDTH`` (default 1024), ``SAP_IMAGE_SIZE`` (default
256 with random weights, 512 with a checkpoint on CPU), ``SAP_DEMO_OUT`` (default
``demo_out/`` in the repository).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
BANNER = '\n'.join([
    '*' * 78,
    '*  RANDOM WEIGHTS: no SAM2 checkpoint given (SAP_CHECKPOINT). The masks show the',
    '*  pipeline running the real SAM2 architecture, not segmentation quality.',
    '*  Get sam2.1_hiera_tiny.pt (see README), then: SAP_CHECKPOINT=/path/to/it make demo',
    '*' * 78])


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _node_params(checkpoint: Optional[str], image_size: int) -> List[str]:
    params = ['model.device:=cpu', f'model.image_size:={image_size}',
              f'patches.size_px:={image_size}', 'output.scale:=0.5',
              'discovery.every_n_frames:=4', 'discovery.points_per_side:=6',
              'discovery.max_new_per_frame:=6',
              'qos_overrides./camera/image.subscription.reliability:=reliable']
    if checkpoint:
        params.append(f'model.checkpoint:={checkpoint}')
    else:
        # Random weights never pass the quality thresholds: accept their masks so that the
        # tracking, memory and fusion path runs (the report says the masks mean nothing).
        params += ['model.allow_random_weights:=true', 'discovery.pred_iou_thresh:=0.0',
                   'discovery.stability_thresh:=0.0']
    return [arg for p in params for arg in ('-p', p)]


def _flat_config(checkpoint: Optional[str], image_size: int) -> Dict[str, object]:
    flat: Dict[str, object] = {}
    for item in _node_params(checkpoint, image_size)[1::2]:
        key, value = item.split(':=', 1)
        if key.split('.')[0] in ('model', 'patches', 'output', 'discovery'):
            flat[key] = {'true': True, 'false': False}.get(value, value)
    for key in ('discovery.pred_iou_thresh', 'discovery.stability_thresh'):
        if key in flat:
            flat[key] = float(flat[key])  # type: ignore[arg-type]
    for key in ('model.image_size', 'patches.size_px', 'discovery.every_n_frames',
                'discovery.points_per_side', 'discovery.max_new_per_frame'):
        flat[key] = int(flat[key])  # type: ignore[arg-type]
    flat['output.scale'] = float(flat['output.scale'])  # type: ignore[arg-type]
    return flat


def _pointer_rows(objects: np.ndarray) -> List[str]:
    rows = ['| id | lon_deg | lat_deg | width_deg | height_deg | solid_angle_sr | area_px | '
            'score | age |', '|---|---|---|---|---|---|---|---|---|']
    for o in objects:
        rows.append(f"| {o['id']} | {o['lon_deg']:.1f} | {o['lat_deg']:.1f} | "
                    f"{o['width_deg']:.1f} | {o['height_deg']:.1f} | {o['solid_angle_sr']:.4f} | "
                    f"{o['area_px']} | {o['score']:.2f} | {o['age_frames']} |")
    return rows


def _pointers_from_array(objects: np.ndarray) -> list:
    from sap_ros.engine.types import ObjectPointer
    names = objects.dtype.names or ()
    return [ObjectPointer(
        id=int(o['id']), bearing=np.array([o['x'], o['y'], o['z']], np.float64),
        lon_deg=float(o['lon_deg']), lat_deg=float(o['lat_deg']),
        width_deg=float(o['width_deg']), height_deg=float(o['height_deg']),
        solid_angle_sr=float(o['solid_angle_sr']), area_px=int(o['area_px']),
        score=float(o['score']), age_frames=int(o['age_frames']),
        frames_since_seen=int(o['frames_since_seen']),
        embedding=(np.asarray(o['embedding'], np.float32) if 'embedding' in names
                   else np.zeros(256, np.float32))) for o in objects]


def _contact_sheet(tiles: List[np.ndarray], path: Path, columns: int = 2) -> None:
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (h + 4), columns * (w + 4), 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * (h + 4):r * (h + 4) + h, c * (w + 4):c * (w + 4) + w] = tile
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def main(argv: Optional[List[str]] = None) -> int:
    """Run the demo; returns 0 on success."""
    import rclpy

    from sap_ros.config import PipelineConfig
    from sap_ros.demo.player import LockstepPlayer, make_executor, play_lockstep
    from sap_ros.engine.pipeline import SapPipeline
    from sap_ros.eval.bags import BagWriter, open_image_stream, open_label_stream
    from sap_ros.eval.metrics import ClipEvaluator
    from sap_ros.eval.oracle_segmenter import OracleSegmenter
    from sap_ros.io.overlay import overlay_rgb
    from sap_ros.sphere.layout import PatchLayout
    from sap_ros.synth import cli as synth

    checkpoint = os.environ.get('SAP_CHECKPOINT') or None
    frames = int(os.environ.get('SAP_DEMO_FRAMES', '8'))
    width = int(os.environ.get('SAP_DEMO_WIDTH', '1024'))
    image_size = int(os.environ.get('SAP_IMAGE_SIZE', '512' if checkpoint else '256'))
    out = Path(os.environ.get('SAP_DEMO_OUT') or REPO / 'demo_out')
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    if not checkpoint:
        _say(BANNER)
    _say(f'[demo] 1/4 synthetic sequence: {frames} frames at {width}x{width // 2}')
    bag = out / 'input'
    synth.main([str(bag), '--frames', str(frames), '--width', str(width), '--quiet'])
    rgb_frames = list(open_image_stream(bag, synth.IMAGE_TOPIC))
    gt_frames = [f.labels for f in open_label_stream(bag, synth.LABEL_TOPIC)]

    _say('[demo] 2/4 starting sap_node (real process, real DDS) and playing the bag')
    os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    log = open(out / 'node.log', 'wb')
    node = subprocess.Popen(
        [sys.executable, '-m', 'sap_ros.ros.node', '--ros-args', '-r', '__ns:=/sap',
         '--params-file', str(REPO / 'config' / 'sap.yaml'), '-r', 'image:=/camera/image',
         *_node_params(checkpoint, image_size)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        player = LockstepPlayer(context=context)
        executor = make_executor(player, context)
        recording = play_lockstep(rgb_frames, player, executor,
                                  alive=lambda: node.poll() is None,
                                  progress=lambda i: _say(f'[demo]     frame {i + 1}/{frames}'))
    finally:
        node.terminate()
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
        log.close()
        rclpy.try_shutdown(context=context)

    _say('[demo] 3/4 recording /sap/masks and /sap/objects, overlays')
    ours = ClipEvaluator(gt_background=0, gt_ignore=None)
    tiles = []
    with BagWriter(out / 'sap.mcap') as writer:
        writer.add_topic('/sap/masks', 'sensor_msgs/msg/Image')
        writer.add_topic('/sap/objects', 'sensor_msgs/msg/PointCloud2')
        for frame, gt, stamp in zip(rgb_frames, gt_frames, recording.order):
            rec = recording.frames[stamp]
            writer.write_labels('/sap/masks', rec.labels, stamp)
            writer.write_objects('/sap/objects', _pointers_from_array(rec.objects), stamp)
            ours.add_frame(rec.labels, gt, rec.latency_ms)
            small = cv2.resize(frame.rgb, rec.labels.shape[::-1], interpolation=cv2.INTER_AREA)
            tiles.append(overlay_rgb(small, rec.labels))
    _contact_sheet(tiles, out / 'contact_sheet.png')
    last = recording.frames[recording.order[-1]].objects
    (out / 'objects.md').write_text('\n'.join(
        [f'# Objects in the last frame ({len(last)})', ''] + _pointer_rows(last)) + '\n')

    _say('[demo] 4/4 geometric-oracle upper bound of the same pipeline, report')
    # The same pipeline and layout; discovery on every frame so every object is found at once.
    config = PipelineConfig.from_flat({**_flat_config(checkpoint, image_size),
                                       'discovery.every_n_frames': 1,
                                       'discovery.points_per_side': 16,
                                       'discovery.max_new_per_frame': 64,
                                       'discovery.min_area_fraction': 0.0005})
    oracle = OracleSegmenter(PatchLayout.from_config(config.patches))
    pipeline = SapPipeline(config, segmenter=oracle)
    upper = ClipEvaluator(gt_background=0, gt_ignore=None)
    for frame, gt in zip(rgb_frames, gt_frames):
        oracle.set_ground_truth(gt)
        upper.add_frame(pipeline.step(frame.rgb).labels, gt)
    metrics = {'sap_node': ours.result().to_dict(), 'oracle_upper_bound': upper.result().to_dict()}
    for block in metrics.values():
        block.pop('objects', None)
    weights = checkpoint or 'RANDOM WEIGHTS (no checkpoint)'
    report = {'frames': frames, 'erp': [width // 2, width], 'image_size': image_size,
              'weights': weights, **metrics}
    (out / 'report.json').write_text(json.dumps(report, indent=2))
    keys = ['j', 'f', 'j_and_f', 'j_poles', 'id_switches', 'fragmentation', 'seam_consistency',
            'latency_ms_mean', 'latency_ms_p95']

    def fmt(v: object) -> str:
        return 'n/a' if v is None else (f'{v:.3f}' if isinstance(v, float) else str(v))

    lines = ['# sap_ros demo', '', f'Weights: **{weights}**. {frames} synthetic frames '
             f'({width}x{width // 2}), SAM2 input {image_size} px, 26 zigzag patches.', '']
    if not checkpoint:
        lines += ['> Random weights: the node ran the real SAM2 architecture end to end, but '
                  'its masks carry no meaning (discovery thresholds relaxed so that objects '
                  'exist and are tracked). The oracle column is what the same pipeline gives '
                  "with perfect masks at SAM2's decoder resolution (discovery on every "
                  'frame).', '']
    lines += ['| metric | sap_node | oracle upper bound |', '|---|---|---|']
    lines += [f'| {k} | {fmt(metrics["sap_node"][k])} | {fmt(metrics["oracle_upper_bound"][k])} |'
              for k in keys]
    lines += ['', '![contact sheet](contact_sheet.png)', '', 'Objects: [objects.md](objects.md)']
    (out / 'report.md').write_text('\n'.join(lines) + '\n')
    _say((out / 'report.md').read_text())
    if not checkpoint:
        _say(BANNER)
    _say(f'[demo] wrote {out}/: report.md report.json contact_sheet.png objects.md sap.mcap '
         'node.log input/')
    return 0


if __name__ == '__main__':
    sys.exit(main())
