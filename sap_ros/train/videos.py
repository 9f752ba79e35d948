"""Exported patch videos -> upstream's ``BatchedVideoDatapoint`` batches.

A training sample is a window of ``num_frames`` consecutive patches of one video (consecutive
along the exported path: trajectory-aligned) with up to ``max_objects`` objects visible in its
first patch, as upstream's ``RandomUniformSampler`` picks objects of the first frame. Samples
are a pure function of ``(seed, step, index in the global batch)``, so a global batch is the
same whatever the number of workers, and a resumed run draws what the uninterrupted one drew.
Images are normalised with ImageNet statistics, as upstream's transforms and the runtime do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image
import torch

from sap_ros.errors import InvalidInputError
from sap_ros.train.data import ExportSpec, load_meta, read_masks
from sap_ros.train.model import upstream

PIXEL_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
PIXEL_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise InvalidInputError(f'cannot read the patch image {path}')
    return bgr[..., ::-1]


@dataclass(frozen=True)
class Sample:
    """One training window: video index, first frame, the palette ids of its objects."""

    video: int
    start: int
    objects: Tuple[int, ...]


class PatchVideos:
    """All videos of one ``sap_train data`` export; patches are decoded when a batch needs them.

    Only which objects each patch shows is read up front (from the palette PNGs), so the memory
    used does not grow with the export (a 1024-px video of 26 patches is 80 MB decoded).
    """

    def __init__(self, root: Path) -> None:
        """Read the export at ``root`` (InvalidInputError if it is none or empty)."""
        self.root = Path(root)
        self.spec, self.records = load_meta(self.root)
        if not self.records:
            raise InvalidInputError(f'{root} holds no videos')
        self.frames: List[List[Path]] = []
        self.present: List[List[np.ndarray]] = []  # per video and patch: the palette ids shown
        for record in self.records:
            files = sorted((self.root / 'JPEGImages' / record.name).glob('*.jpg'))
            masks = read_masks(self.root, record.name)
            if len(files) != len(masks):
                raise InvalidInputError(f'{self.root}: video {record.name} has {len(files)} '
                                        f'frames but {len(masks)} masks')
            self.frames.append(files)
            self.present.append([np.unique(m[m > 0]) for m in masks])

    def window_arrays(self, video: int, start: int, num_frames: int
                      ) -> Tuple[np.ndarray, np.ndarray]:
        """``(T, S, S, 3)`` uint8 RGB and ``(T, S, S)`` uint8 palette ids of a window."""
        files = self.frames[video][start:start + num_frames]
        masks_dir = self.root / 'Annotations' / self.records[video].name
        images = np.stack([_read_rgb(f) for f in files])
        masks = np.stack([np.array(Image.open(masks_dir / (f.stem + '.png'))) for f in files])
        return images, masks

    @property
    def export_spec(self) -> ExportSpec:
        """How the videos were made."""
        return self.spec

    def __len__(self) -> int:
        """Number of videos."""
        return len(self.records)

    def windows(self, num_frames: int) -> List[Tuple[int, int]]:
        """Every ``(video, start)`` whose window fits and whose first patch shows an object."""
        out = []
        for v, present in enumerate(self.present):
            for start in range(0, len(present) - num_frames + 1):
                if present[start].size:
                    out.append((v, start))
        if not out:
            raise InvalidInputError(f'{self.root}: no window of {num_frames} patches starts '
                                    f'with a visible object')
        return out

    def sample(self, seed: int, step: int, index: int, num_frames: int, max_objects: int,
               windows: Optional[Sequence[Tuple[int, int]]] = None) -> Sample:
        """The window of global-batch slot ``index`` at ``step`` (deterministic)."""
        rng = np.random.default_rng([seed, step, index])
        windows = self.windows(num_frames) if windows is None else windows
        video, start = windows[int(rng.integers(len(windows)))]
        present = self.present[video][start]
        chosen = rng.choice(present, size=min(max_objects, present.size), replace=False)
        return Sample(video, start, tuple(int(i) for i in sorted(chosen)))

    def batch(self, samples: Sequence[Sample], num_frames: int) -> Any:
        """Upstream's ``BatchedVideoDatapoint`` for ``samples`` (objects of all videos)."""
        classes = upstream()
        images, masks, obj_frame, ids = [], [], [], []
        for b, s in enumerate(samples):
            window, labels = self.window_arrays(s.video, s.start, num_frames)
            images.append((window.astype(np.float32) / 255.0 - PIXEL_MEAN) / PIXEL_STD)
            for obj in s.objects:
                masks.append(labels == obj)
                obj_frame.append(b)
                ids.append((s.video, obj))
        t = num_frames
        img = torch.from_numpy(np.stack(images)).permute(1, 0, 4, 2, 3).contiguous()
        mask = torch.from_numpy(np.stack(masks, axis=1))  # T x O x H x W
        frame_idx = torch.arange(t, dtype=torch.int)[:, None].expand(t, len(obj_frame))
        video_idx = torch.tensor(obj_frame, dtype=torch.int)[None].expand(t, -1)
        identifier = torch.tensor([[v, o, 0] for v, o in ids], dtype=torch.long)
        identifier = identifier[None].repeat(t, 1, 1)
        identifier[..., 2] = torch.arange(t)[:, None]
        size = self.spec.size_px
        return classes['BatchedVideoDatapoint'](
            img_batch=img, obj_to_frame_idx=torch.stack([frame_idx, video_idx], dim=-1),
            masks=mask,
            metadata=classes['BatchedVideoMetaData'](
                unique_objects_identifier=identifier,
                frame_orig_size=torch.tensor([size, size]).expand(t, len(ids), 2).clone(),
                batch_size=[t]),
            dict_key='all', batch_size=[t])
