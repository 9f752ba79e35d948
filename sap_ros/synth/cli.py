"""``sap_synth``: write a rosbag2 of a synthetic 360 degree camera with exact instance labels.

The frames come from ``sap_ros.synth.scene`` (a camera driving through a procedural
room or outdoor scene, with objects on the seam, at both poles, large and close, small and far;
or, with ``--scene small_objects``, a camera turning in place among spheres of 1 to 3 degrees at
both poles, on the seam and on the equator).
The bag (mcap) holds the camera topic, ``/gt/labels`` (``mono16`` instance ids, 0 = no object)
and ``/gt/semantic`` (``mono16`` class ids of ``sap_ros.synth.semantic.SEMANTIC_CLASSES``,
1-based, objects by kind and the room's floor, walls and ceiling or the outdoor ground and sky)
with identical header stamps, spaced ``1 / fps`` apart, plus one ``std_msgs/String`` on
``/gt/class_names`` at the first stamp: ``{"class_names": [...]}`` (JSON; class id k is
``class_names[k - 1]``). Every payload is a function of the arguments only, so the same command
always writes the same messages.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import shutil
import sys
from typing import List, Optional

from tqdm import tqdm

from sap_ros.errors import SapError
from sap_ros.eval.bags import BagWriter
from sap_ros.synth.scene import MAX_WIDTH_PX, SceneSpec, SynthScene
from sap_ros.synth.semantic import SEMANTIC_CLASSES
from sap_ros.synth.spec import SCENES

IMAGE_TOPIC = '/camera/image'
COMPRESSED_TOPIC = '/camera/image/compressed'
LABEL_TOPIC = '/gt/labels'
SEMANTIC_TOPIC = '/gt/semantic'
CLASS_NAMES_TOPIC = '/gt/class_names'
FRAME_ID = 'camera'
START_STAMP_NS = 1_700_000_000 * 1_000_000_000  # fixed start time: stamps are reproducible


def frame_stamps_ns(n_frames: int, fps: float) -> List[int]:
    """Header stamps of ``n_frames`` frames at ``fps``, from ``START_STAMP_NS``.

    >>> [s - START_STAMP_NS for s in frame_stamps_ns(3, 4.0)]
    [0, 250000000, 500000000]
    """
    return [START_STAMP_NS + round(k * 1e9 / fps) for k in range(n_frames)]


def class_names_json() -> str:
    """The ``/gt/class_names`` payload: ``{"class_names": [...]}``, class id k = entry k - 1."""
    return json.dumps({'class_names': list(SEMANTIC_CLASSES)})


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``sap_synth``."""
    parser = argparse.ArgumentParser(
        prog='sap_synth',
        description='Render a synthetic 360 degree (equirectangular) camera clip with exact '
                    'instance labels and write it as a rosbag2 (mcap): the camera on '
                    f'{IMAGE_TOPIC} (rgb8 Image) or {COMPRESSED_TOPIC} (JPEG, --compressed), '
                    f'and the ground truth on {LABEL_TOPIC} (mono16 instance ids, 0 = no '
                    f'object) and {SEMANTIC_TOPIC} (mono16 class ids, 1-based, of '
                    f'{", ".join(SEMANTIC_CLASSES)}), all with the same header stamps and '
                    f'frame_id {FRAME_ID!r}, and the class names once on {CLASS_NAMES_TOPIC} '
                    '(std_msgs/String, JSON {"class_names": [...]}). Deterministic: the same '
                    'arguments write the same messages.',
        epilog='example: sap_synth /tmp/room_bag --frames 60 --width 2048 --seed 3')
    parser.add_argument('out', metavar='OUT', type=Path,
                        help='output bag directory (must not exist, unless --force)')
    parser.add_argument('--frames', type=int, default=30,
                        help='number of frames (default: %(default)s)')
    parser.add_argument('--width', type=int, default=1024,
                        help='ERP width in pixels, even; height = width / 2 '
                             '(default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0,
                        help='scene seed: layout, sizes, textures (default: %(default)s)')
    parser.add_argument('--kind', choices=('room', 'outdoor'), default='room',
                        help='scene kind (default: %(default)s)')
    parser.add_argument('--scene', choices=SCENES, default='mixed',
                        help='mixed: the hard cases of a 360 camera (objects over both poles, '
                             'across the seam, large and close, small and far) among ordinary '
                             'objects, the camera driving and turning; small_objects: only '
                             'spheres of 1, 2 and 3 deg at both poles, on the seam and on the '
                             'equator, the camera turning in place (default: %(default)s)')
    parser.add_argument('--n-small', type=int, default=SceneSpec().n_small, metavar='N',
                        help='mixed scene: number of small far objects (1.5 to 2.5 deg across), '
                             '0..12 (default: %(default)s)')
    parser.add_argument('--fps', type=float, default=10.0,
                        help='frame rate; header stamps are 1/fps apart (default: %(default)s)')
    parser.add_argument('--compressed', action='store_true',
                        help=f'write JPEG sensor_msgs/CompressedImage on {COMPRESSED_TOPIC} '
                             f'instead of rgb8 sensor_msgs/Image on {IMAGE_TOPIC}')
    parser.add_argument('--force', action='store_true',
                        help='replace OUT if it exists (only an existing rosbag2 directory)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.frames < 1:
        parser.error(f'--frames must be >= 1, got {args.frames}')
    if not 8 <= args.width <= MAX_WIDTH_PX or args.width % 2:
        parser.error(f'--width must be an even number in [8, {MAX_WIDTH_PX}], got {args.width}')
    if not 0 <= args.n_small <= 12:
        parser.error(f'--n-small must be in 0..12, got {args.n_small}')
    if not args.fps > 0:
        parser.error(f'--fps must be > 0, got {args.fps}')


def _clear_output(parser: argparse.ArgumentParser, out: Path, force: bool) -> None:
    """Refuse an existing ``out`` unless ``force``; never delete something that is not a bag."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        parser.error(f'{out} already exists; choose another OUT or pass --force to replace it')
    if out.is_dir() and not out.is_symlink() and (out / 'metadata.yaml').is_file():
        shutil.rmtree(out)
    elif out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()
    else:
        parser.error(f'{out} exists and is not a rosbag2 directory (no metadata.yaml): '
                     'not replacing it even with --force')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``sap_synth`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    _clear_output(parser, args.out, args.force)
    try:
        scene = SynthScene(SceneSpec(kind=args.kind, seed=args.seed, scene=args.scene,
                                     n_small=args.n_small))
        poses = scene.trajectory(args.frames)
        stamps = frame_stamps_ns(args.frames, args.fps)
        image_topic = COMPRESSED_TOPIC if args.compressed else IMAGE_TOPIC
        with BagWriter(args.out) as bag, tqdm(total=args.frames, unit='frame', desc='sap_synth',
                                              file=sys.stderr, disable=args.quiet) as progress:
            bag.write_string(CLASS_NAMES_TOPIC, class_names_json(), stamps[0])
            for pose, stamp_ns in zip(poses, stamps):
                rgb, labels = scene.render(pose, args.width)
                if args.compressed:
                    bag.write_compressed_image(image_topic, rgb, stamp_ns, FRAME_ID)
                else:
                    bag.write_image(image_topic, rgb, stamp_ns, FRAME_ID)
                bag.write_labels(LABEL_TOPIC, labels, stamp_ns, FRAME_ID)
                bag.write_labels(SEMANTIC_TOPIC, scene.semantic(pose, labels), stamp_ns,
                                 FRAME_ID)
                progress.update(1)
    except SapError as err:
        print(f'sap_synth: error: {err}', file=sys.stderr)
        if (args.out / 'metadata.yaml').is_file():
            shutil.rmtree(args.out)  # our own partial output
        return 1
    print(f'wrote {args.out}: {args.frames} frames {args.width}x{args.width // 2} '
          f'({args.scene} {args.kind}, seed {args.seed}) on {image_topic}, {LABEL_TOPIC} and '
          f'{SEMANTIC_TOPIC}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
