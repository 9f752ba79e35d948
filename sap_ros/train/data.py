"""``sap_train data``: ERP frames with instance labels -> patch videos along the runtime's path.

A *video* is the path of one panorama through the runtime's own :class:`PatchLayout` (zigzag by
default, ``raster`` for SAP's ablation), its patches cut by the runtime's sampler (images
bilinear, label maps nearest). With ``frames_per_video > 1`` the paths of consecutive camera
frames are chained, each frame in the direction the runtime runs it (alternating), so memory is
trained across frames too, as the node uses it.

Output, upstream's VOS layout (sam2's ``training.dataset.vos_raw_dataset.PNGRawDataset`` reads
it)::

    OUT/JPEGImages/<video>/00000.jpg ...   patches in path order
    OUT/Annotations/<video>/00000.png ...  palette PNGs, 0 = background, 1..K = objects
    OUT/videos.txt                          the file list (one video name a line)
    OUT/videos.json                         per video: source, camera frames, view index of
                                            every patch, object id -> source id; the layout
    OUT/classes.json                        the objects' classes, where the sources have them
                                            (:mod:`sap_ros.train.classes`)

Object ids are consistent through a whole video (a palette index per source id). An object
covering fewer than ``min_area_px`` pixels of a patch is left out of that patch (its pixels
become background there): SAM2 cannot be asked to find a few pixels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
import json
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from sap_ros.config import PipelineConfig
from sap_ros.errors import InvalidInputError
from sap_ros.eval.dataset_clips import Clip, ClipKind, EvalSpec, find_clips, open_clip
from sap_ros.eval.metrics import j_score
from sap_ros.eval.semantic_gt import ClassMap
from sap_ros.sphere.fusion import fuse_labels
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import extract_patches
from sap_ros.train.classes import (
    SemanticSource,
    VideoClasses,
    class_votes,
    same_names,
    video_classes,
    write_classes,
)

MAX_OBJECTS_PER_VIDEO = 255  # palette PNG indices 1..255
JPEG_QUALITY = 95
META_FILE = 'videos.json'
LIST_FILE = 'videos.txt'


@dataclass(frozen=True)
class ExportSpec:
    """How panoramas become patch videos (defaults: the runtime's layout, SAP's recipe)."""

    fov_deg: float = 90.0
    overlap: float = 0.5
    size_px: int = 128           # patch side = the model's image_size when training
    trajectory: str = 'zigzag'   # 'zigzag' | 'raster' (SAP's ablation)
    frames_per_video: int = 1    # > 1 chains the paths of consecutive camera frames
    every: int = 1               # take every n-th camera frame
    max_frames: Optional[int] = None  # per source, after ``every``
    min_area_px: int = 16        # smaller objects are left out of a patch

    def __post_init__(self) -> None:
        """Reject values that cannot make videos, naming the option."""
        if self.trajectory not in ('zigzag', 'raster'):
            raise InvalidInputError(f"--trajectory must be 'zigzag' or 'raster', got "
                                    f'{self.trajectory!r}')
        for name in ('size_px', 'frames_per_video', 'every'):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.min_area_px < 0:
            raise InvalidInputError(f'min_area_px must be >= 0, got {self.min_area_px}')

    def layout(self) -> PatchLayout:
        """The runtime's layout for these settings."""
        return PatchLayout.build(self.fov_deg, self.size_px, self.trajectory, self.overlap)


@dataclass(frozen=True)
class VideoRecord:
    """What ``videos.json`` says about one exported video."""

    name: str
    source: str
    camera_frames: Tuple[int, ...]   # source frame index of each chained panorama
    views: Tuple[int, ...]           # layout view index of every patch, in path order
    object_ids: Dict[int, int]       # palette index -> source label id
    erp_hw: Tuple[int, int]


# ---------------------------------------------------------------------- sources
def _sources(path: Path) -> List[Clip]:
    """A rosbag2, one frame folder clip, or a dataset folder of them (as ``sap_eval`` reads)."""
    path = Path(path).absolute()
    if (path / 'metadata.yaml').is_file():
        return [Clip(path.name, ClipKind.BAG, path)]
    for frames in ('frames', 'JPEGImages'):
        if (path / frames).is_dir() and not (path / 'Annotations').is_dir():
            labels = next((path / n for n in ('labels', 'Annotations') if (path / n).is_dir()),
                          None)
            return [Clip(path.name, ClipKind.FRAMES, path, path / frames, labels,
                         None if labels else f'{path}: no labels folder beside {frames}')]
    return find_clips(path)


Frame = Tuple[str, int, np.ndarray, np.ndarray]
#: A frame with its class map and class names (both None when the source has no classes).
LabelledFrame = Tuple[str, int, np.ndarray, np.ndarray, Optional[np.ndarray],
                      Optional[Tuple[str, ...]]]


def iter_frames(source: Path, every: int = 1, max_frames: Optional[int] = None
                ) -> Iterator[Frame]:
    """``(clip name, frame index, RGB (H, W, 3) uint8, labels (H, W) uint16)`` of a source.

    8-bit ground truth's 255 (DAVIS' "void") becomes background: upstream's VOS masks have no
    ignore value.
    """
    for clip, index, rgb, labels, _, _ in iter_labelled(source, every, max_frames,
                                                        classes=False):
        yield clip, index, rgb, labels


def iter_labelled(source: Path, every: int = 1, max_frames: Optional[int] = None,
                  class_map: Optional[ClassMap] = None, classes: bool = True
                  ) -> Iterator[LabelledFrame]:
    """:func:`iter_frames` with each frame's class map (:mod:`sap_ros.train.classes`)."""
    spec = EvalSpec(PipelineConfig(), ())
    for clip in _sources(source):
        frames, gt = open_clip(clip, spec)
        if gt is None:
            frames.close()
            raise InvalidInputError(f'{clip.path}: no ground truth (label topic {spec.gt_topic} '
                                    f'or a labels folder) to train on')
        semantic = None
        taken = 0
        try:
            if classes:
                semantic = SemanticSource.open(
                    clip.path if clip.kind == ClipKind.BAG else None, class_map, len(gt))
            for index, (image, truth) in enumerate(zip(frames, gt)):
                labels = truth.labels.astype(np.uint16)
                class_ids = None if semantic is None else semantic.next_map(truth.labels)
                if index % every:
                    continue
                if max_frames is not None and taken >= max_frames:
                    break
                if gt.bits == 8:
                    labels[labels == 255] = 0
                taken += 1
                yield (clip.name, index, image.rgb, labels, class_ids,
                       None if semantic is None else semantic.class_names)
        finally:
            frames.close()
            gt.close()
            if semantic is not None:
                semantic.close()


# ---------------------------------------------------------------------- one video
def patch_labels(layout: PatchLayout, labels: np.ndarray, min_area_px: int) -> np.ndarray:
    """``(N, S, S)`` uint16 label patches (nearest), objects under ``min_area_px`` removed."""
    patches = extract_patches(layout, labels, interpolation=cv2.INTER_NEAREST)
    if min_area_px > 0:
        for patch in patches:
            ids, counts = np.unique(patch, return_counts=True)
            small = ids[(ids != 0) & (counts < min_area_px)]
            if small.size:
                patch[np.isin(patch, small)] = 0
    return patches


def _palette() -> List[int]:
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 256, size=(256, 3))
    colours[0] = 0
    return [int(c) for c in colours.reshape(-1)]


def write_video(out: Path, record_name: str, images: Sequence[np.ndarray],
                labels: Sequence[np.ndarray]) -> Dict[int, int]:
    """Write one video's JPEGs and palette PNGs; returns palette index -> source id."""
    source_ids = sorted({int(i) for lab in labels for i in np.unique(lab) if i != 0})
    if len(source_ids) > MAX_OBJECTS_PER_VIDEO:
        raise InvalidInputError(f'video {record_name}: {len(source_ids)} objects, but palette '
                                f'PNGs hold at most {MAX_OBJECTS_PER_VIDEO}; use fewer '
                                f'--frames-per-video or a larger --min-area-px')
    lut = np.zeros(int(max(source_ids, default=0)) + 1, np.uint8)
    lut[source_ids] = np.arange(1, len(source_ids) + 1)
    frames_dir = out / 'JPEGImages' / record_name
    masks_dir = out / 'Annotations' / record_name
    frames_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    palette = _palette()
    for t, (rgb, lab) in enumerate(zip(images, labels)):
        cv2.imwrite(str(frames_dir / f'{t:05d}.jpg'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        png = Image.fromarray(lut[lab], mode='P')
        png.putpalette(palette)
        png.save(masks_dir / f'{t:05d}.png')
    return {k + 1: sid for k, sid in enumerate(source_ids)}


def export(sources: Sequence[Path], out: Path, spec: ExportSpec = ExportSpec(),
           on_video: Optional[Callable[[VideoRecord], None]] = None,
           class_map: Optional[ClassMap] = None) -> List[VideoRecord]:
    """Export every source into ``out`` (created; must hold no earlier export).

    Sources with semantic ground truth (or every source, given ``class_map``) also get their
    objects' classes in ``classes.json`` (:mod:`sap_ros.train.classes`).
    """
    out = Path(out)
    if (out / META_FILE).exists():
        raise InvalidInputError(f'{out} already holds an export ({META_FILE}); choose another '
                                f'folder')
    out.mkdir(parents=True, exist_ok=True)
    layout = spec.layout()
    records: List[VideoRecord] = []
    names: Optional[Tuple[str, ...]] = None
    videos: VideoClasses = {}
    for source in sources:
        chain: List[LabelledFrame] = []
        for item in iter_labelled(source, spec.every, spec.max_frames, class_map):
            if chain and item[0] != chain[0][0]:
                chain = []  # never chain across clips
            chain.append(item)
            if len(chain) == spec.frames_per_video:
                record = _export_chain(out, layout, spec, [c[:4] for c in chain])
                records.append(record)
                if chain[0][5] is not None:  # the clip has class maps
                    names = same_names(names, chain[0][5], record.source)
                    votes: Dict[int, Dict[int, int]] = {}
                    for c in chain:
                        class_votes(c[3], c[4], votes)  # type: ignore[arg-type]
                    videos[record.name] = video_classes(record.object_ids, votes, len(names))
                chain = []
                if on_video is not None:
                    on_video(records[-1])
    (out / LIST_FILE).write_text(''.join(r.name + '\n' for r in records))
    meta = {'spec': asdict(spec), 'videos': [asdict(r) for r in records]}
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    write_classes(out, names, videos)
    return records


def _export_chain(out: Path, layout: PatchLayout, spec: ExportSpec,
                  chain: Sequence[Frame]) -> VideoRecord:
    images: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    views: List[int] = []
    for k, (_, _, rgb, lab) in enumerate(chain):
        path = layout.frame_path(k)  # the direction the runtime runs the k-th frame
        rgb_patches = extract_patches(layout, rgb, interpolation=cv2.INTER_LINEAR)
        lab_patches = patch_labels(layout, lab, spec.min_area_px)
        images += [rgb_patches[i] for i in path]
        labels += [lab_patches[i] for i in path]
        views += list(path)
    clip, first = chain[0][0], chain[0][1]
    name = f'{clip}_{first:06d}'
    ids = write_video(out, name, images, labels)
    return VideoRecord(name, clip, tuple(c[1] for c in chain), tuple(views), ids,
                       (int(chain[0][3].shape[0]), int(chain[0][3].shape[1])))


# ---------------------------------------------------------------------- reading back
def load_meta(root: Path) -> Tuple[ExportSpec, List[VideoRecord]]:
    """The spec and video records of an export (InvalidInputError if ``root`` is not one)."""
    path = Path(root) / META_FILE
    if not path.is_file():
        raise InvalidInputError(f'{root} is not a sap_train data export (no {META_FILE}); '
                                f'create one with sap_train data')
    meta = json.loads(path.read_text())
    spec = ExportSpec(**meta['spec'])
    records = [VideoRecord(v['name'], v['source'], tuple(v['camera_frames']), tuple(v['views']),
                           {int(k): int(s) for k, s in v['object_ids'].items()},
                           (int(v['erp_hw'][0]), int(v['erp_hw'][1])))
               for v in meta['videos']]
    return spec, records


def read_masks(root: Path, name: str) -> np.ndarray:
    """``(T, S, S)`` uint8 palette indices of a video, in path order."""
    files = sorted((Path(root) / 'Annotations' / name).glob('*.png'))
    return np.stack([np.array(Image.open(f)) for f in files])


def fused_source_labels(root: Path, record: VideoRecord, spec: ExportSpec,
                        chain_index: int = 0) -> np.ndarray:
    """The exported masks of one panorama fused back onto the sphere, with source ids."""
    layout = spec.layout()
    n = len(layout)
    masks = read_masks(root, record.name)[chain_index * n:(chain_index + 1) * n]
    views = record.views[chain_index * n:(chain_index + 1) * n]
    lut = np.zeros(MAX_OBJECTS_PER_VIDEO + 1, np.uint16)
    for index, source_id in record.object_ids.items():
        lut[index] = source_id
    by_view = np.zeros((n, spec.size_px, spec.size_px), np.uint16)
    for view, mask in zip(views, masks):
        by_view[view] = lut[mask]
    return fuse_labels(layout, by_view, record.erp_hw)


def oracle_j(fused: np.ndarray, source: np.ndarray) -> float:
    """Mean sphere J (as ``sap_eval`` scores) over the objects of the source label map."""
    ids = [int(i) for i in np.unique(source) if i != 0]
    if not ids:
        return 1.0
    return float(np.mean([j_score(fused == i, source == i) for i in ids]))
