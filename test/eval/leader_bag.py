"""Test helper: pack the Leader360V beach frames (real 360 video, read-only) into a rosbag2.

The JPEG files go into ``sensor_msgs/CompressedImage`` messages as they are (no re-encoding),
one every ``1 / fps`` seconds, in file-name order, so frame ``k`` of the bag is the ``k``-th
file of ``frames/`` and matches the ``k``-th label map of ``labels/`` (``sap_replay --gt-dir``).
Run it by hand to get a bag for the CLI::

    python test/eval/leader_bag.py ../shared/data/leader360v_beach /tmp/beach_bag
"""
from __future__ import annotations

from pathlib import Path
import sys
from typing import List

import numpy as np

from sap_ros.eval.bags import COMPRESSED_IMAGE, TYPESTORE, BagWriter

#: Where the shared data lies relative to the repository root (absent on a user's machine).
DATA_DIR = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data' / 'leader360v_beach'
TOPIC = '/camera/image/compressed'
FRAME_ID = 'camera'
START_STAMP_NS = 1_700_000_000 * 1_000_000_000
FPS = 5.0  # every 5th frame of a 25 fps clip


def frame_files(data_dir: Path = DATA_DIR) -> List[Path]:
    """The clip's JPEG frames, sorted by file name."""
    return sorted((Path(data_dir) / 'frames').glob('*.jpg'))


def label_dir(data_dir: Path = DATA_DIR) -> Path:
    """The folder of 8-bit label PNGs that match :func:`frame_files` one to one."""
    return Path(data_dir) / 'labels'


def write_leader_bag(out: Path, data_dir: Path = DATA_DIR, topic: str = TOPIC) -> int:
    """Write every frame to the mcap bag ``out`` on ``topic``; return the number written.

    The labels stay where they are: pass :func:`label_dir` to ``sap_replay --gt-dir`` (and
    ``--max-frames`` to evaluate only the first frames).
    """
    files = frame_files(data_dir)
    if not files:
        raise FileNotFoundError(f'no frames/*.jpg under {data_dir}')
    with BagWriter(out) as bag:
        for k, path in enumerate(files):
            stamp_ns = START_STAMP_NS + round(k * 1e9 / FPS)
            time = TYPESTORE.types['builtin_interfaces/msg/Time'](
                sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
            header = TYPESTORE.types['std_msgs/msg/Header'](stamp=time, frame_id=FRAME_ID)
            msg = TYPESTORE.types[COMPRESSED_IMAGE](
                header=header, format='jpeg',
                data=np.frombuffer(path.read_bytes(), dtype=np.uint8))
            bag.write_message(topic, msg, stamp_ns)
    return len(files)


if __name__ == '__main__':
    count = write_leader_bag(Path(sys.argv[2]), Path(sys.argv[1]))
    print(f'wrote {sys.argv[2]}: {count} frames on {TOPIC}')
