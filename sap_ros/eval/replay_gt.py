"""Ground truth for ``sap_replay``: a label topic of the bag or a folder of label PNGs.

Either source yields one ``(H, W)`` uint16 label map per camera frame, in order; the number of
label maps must equal the number of camera messages (they are matched one to one). A topic also
gives each map's header stamp, so the replay can count pairs whose stamps differ.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Union

import cv2
import numpy as np

from sap_ros.errors import SapError
from sap_ros.eval.bags import iter_messages, open_label_stream

#: ``--gt-ignore`` default: 255 for 8-bit ground truth (PNG or mono8), none for 16-bit.
AUTO_IGNORE = -1
EIGHT_BIT_IGNORE = 255


class ReplayError(SapError):
    """The replay cannot run as asked (the message says what to change)."""


class GtFrame(NamedTuple):
    """One ground-truth label map and its header stamp (None for PNG files)."""

    stamp_ns: Optional[int]
    labels: np.ndarray


class GtTopic:
    """Label maps (``mono16``/``mono8`` Image) of a topic of the bag."""

    def __init__(self, bag: Path, topic: str) -> None:
        """Open the topic now, so a wrong name fails before any model is loaded."""
        self.description = f'topic {topic} of {bag}'
        self._bag, self._topic = bag, topic
        self._stream = open_label_stream(bag, topic, use_header_stamp=True)
        encodings = iter_messages(bag, topic)
        try:
            _, first = next(encodings)
        finally:
            encodings.close()
        self.bits = 8 if first.encoding in ('mono8', '8UC1') else 16

    def __len__(self) -> int:
        """Number of label messages."""
        return len(self._stream)

    def __iter__(self) -> Iterator[GtFrame]:
        """The label maps in log-time order."""
        for frame in self._stream:
            yield GtFrame(frame.timestamp_ns, frame.labels)

    def close(self) -> None:
        """Close the bag."""
        self._stream.close()


class GtDir:
    """Single-channel label PNGs (8 or 16 bit) of a folder, sorted by file name."""

    def __init__(self, folder: Path) -> None:
        """List the files and read the first one (to know its bit depth)."""
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ReplayError(f'--gt-dir {self.folder} is not a directory')
        self.files: List[Path] = sorted(self.folder.glob('*.png'))
        if not self.files:
            raise ReplayError(f'--gt-dir {self.folder} holds no *.png label maps')
        self.description = f'{len(self.files)} label PNGs in {self.folder}'
        self.bits = 8 if self._read(self.files[0]).dtype == np.uint8 else 16

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise ReplayError(f'cannot read the label map {path}')
        if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
            shape = 'x'.join(str(s) for s in labels.shape)
            raise ReplayError(f'{path} must be a single-channel 8- or 16-bit label PNG (one '
                              f'integer id per pixel), got {shape} {labels.dtype}')
        return labels

    def __len__(self) -> int:
        """Number of PNG files."""
        return len(self.files)

    def __iter__(self) -> Iterator[GtFrame]:
        """The label maps in file-name order, as uint16."""
        for path in self.files:
            yield GtFrame(None, self._read(path).astype(np.uint16))

    def close(self) -> None:
        """Nothing to close."""


GroundTruth = Union[GtTopic, GtDir]


def open_ground_truth(bag: Path, gt_topic: Optional[str], gt_dir: Optional[Path],
                      image_frames: int, image_topic: str) -> Optional[GroundTruth]:
    """The ground-truth source asked for (or None); its count must equal ``image_frames``."""
    if gt_topic is not None and gt_dir is not None:
        raise ReplayError('give either --gt-topic or --gt-dir, not both')
    if gt_topic is None and gt_dir is None:
        return None
    source: GroundTruth = (GtTopic(bag, gt_topic) if gt_topic is not None
                           else GtDir(Path(str(gt_dir))))
    if len(source) != image_frames:
        source.close()
        raise ReplayError(
            f'ground truth count mismatch: {source.description} has {len(source)} label maps '
            f'but {image_topic} has {image_frames} frames; they are matched one to one in '
            f'order, so both must cover the same frames')
    return source


def resolve_ignore(gt_ignore: Optional[int], source: Optional[GroundTruth]) -> Optional[int]:
    """``AUTO_IGNORE`` -> 255 for 8-bit ground truth, None for 16-bit; other values as given."""
    if gt_ignore != AUTO_IGNORE:
        return gt_ignore
    return EIGHT_BIT_IGNORE if source is not None and source.bits == 8 else None
