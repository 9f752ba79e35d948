"""The clips of a ``sap_eval`` dataset: accepted layouts, readers, and one clip's evaluation.

Accepted layouts of ``DATASET`` (every clip is evaluated on its own, its frames in order):

* **rosbag2 clips**: every sub-folder holding ``metadata.yaml`` is a rosbag2 (mcap or sqlite3)
  read exactly as ``sap_replay`` reads one: the camera topic (``--image-topic``, or the one
  Image/CompressedImage topic that is not a ground-truth topic) and, when the bag has it, the
  ground-truth topic (``--gt-topic``, default ``/gt/labels``: mono16 or mono8 label Images, one
  per camera frame, matched in order) and, when asked for, the semantic one
  (``--gt-semantic-topic``, e.g. ``/gt/semantic``, with its class names,
  :mod:`sap_ros.eval.semantic_gt`).
* **frame-folder clips**: every sub-folder ``CLIP/`` with ``frames/`` (or ``JPEGImages/``) holding
  ``*.jpg``/``*.jpeg``/``*.png`` ERP frames and ``labels/`` (or ``Annotations/``) holding one
  ``*.png`` label map per frame with the same file stem (``frames/00005.jpg`` <->
  ``labels/00005.png``; label PNGs without a frame are ignored); frames are taken in sorted
  file-name order. Label PNGs are single-channel 8- or 16-bit or palette images (the palette
  index is the label value, as in DAVIS-style annotations); values follow ``--gt-background``
  / ``--gt-ignore``.
* **DAVIS-style datasets**: ``DATASET/JPEGImages/<clip>/`` and ``DATASET/Annotations/<clip>/``:
  one frame-folder clip per sub-folder of ``JPEGImages``.

Any other sub-folder is reported as a bad clip; files directly under ``DATASET`` are ignored.
With ``--gt-class-map``, every clip's semantic ground truth is its instance ground truth through
that id -> class map (frame-folder clips too).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import enum
import hashlib
import json
from pathlib import Path
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from sap_ros.config import PipelineConfig
from sap_ros.engine.segmenter import Segmenter
from sap_ros.eval.bags import (
    IMAGE_TYPES,
    ImageFrame,
    bag_topics,
    describe_topics,
    open_image_stream,
)
from sap_ros.eval.matching import erp_pixel_weights, present_ids, weighted_label_areas
from sap_ros.eval.replay_gt import (
    AUTO_IGNORE,
    GroundTruth,
    GtDir,
    GtTopic,
    ReplayError,
    resolve_ignore,
)
from sap_ros.eval.replay_methods import (
    Method,
    MethodName,
    build_method,
    close_all,
    step_methods,
)
from sap_ros.eval.replay_timeline import MethodScores
from sap_ros.eval.semantic_gt import (
    DEFAULT_SEMANTIC_TOPIC,
    ClassMap,
    SemanticTruth,
    open_semantic_truth,
    scored_classes,
)

FRAME_DIRS = ('frames', 'JPEGImages')
LABEL_DIRS = ('labels', 'Annotations')
FRAME_SUFFIXES = ('.jpg', '.jpeg', '.png')
DEFAULT_GT_TOPIC = '/gt/labels'


class ClipKind(str, enum.Enum):
    """How a clip is stored."""

    BAG = 'rosbag2'
    FRAMES = 'frames'
    UNKNOWN = 'unknown'


@dataclass(frozen=True)
class Clip:
    """One clip of the dataset (``problem``: why it is not usable, found while listing)."""

    name: str
    kind: ClipKind
    path: Path
    frames_dir: Optional[Path] = None
    labels_dir: Optional[Path] = None
    problem: Optional[str] = None


def _first_dir(folder: Path, names: Tuple[str, ...]) -> Optional[Path]:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def _folder_clip(name: str, frames_dir: Path, labels_dir: Optional[Path], path: Path) -> Clip:
    problem = None if labels_dir is not None else (
        f'missing labels: no {" or ".join(LABEL_DIRS)} folder beside {frames_dir}')
    return Clip(name, ClipKind.FRAMES, path, frames_dir, labels_dir, problem)


def find_clips(dataset: Path) -> List[Clip]:
    """Every clip of ``dataset`` (see the module docstring), sorted by name."""
    dataset = Path(dataset).absolute()  # workers may run in another directory
    if not dataset.is_dir():
        raise ReplayError(f'dataset {dataset} is not a directory')
    davis_frames, davis_labels = dataset / 'JPEGImages', dataset / 'Annotations'
    if davis_frames.is_dir():
        return [_folder_clip(d.name, d, (davis_labels / d.name) if (davis_labels / d.name)
                             .is_dir() else None, d)
                for d in sorted(p for p in davis_frames.iterdir() if p.is_dir())]
    clips = []
    for folder in sorted(p for p in dataset.iterdir() if p.is_dir()):
        frames_dir = _first_dir(folder, FRAME_DIRS)
        if (folder / 'metadata.yaml').is_file():
            clips.append(Clip(folder.name, ClipKind.BAG, folder))
        elif frames_dir is not None:
            clips.append(_folder_clip(folder.name, frames_dir, _first_dir(folder, LABEL_DIRS),
                                      folder))
        else:
            clips.append(Clip(folder.name, ClipKind.UNKNOWN, folder, problem=(
                f'not a clip: {folder} holds neither metadata.yaml (rosbag2) nor a '
                f'{" or ".join(FRAME_DIRS)} folder')))
    if not clips:
        raise ReplayError(f'dataset {dataset} holds no clip folders (see sap_eval --help)')
    return clips


# ---------------------------------------------------------------------- frame folders
class FolderFrames:
    """ERP frames of a folder (sorted by file name), as the ``ImageFrame`` of a bag.

    Stamps are the frame index (there is no clock); ``frame_id`` is empty.
    """

    msgtype = 'image files'

    def __init__(self, files: List[Path]) -> None:
        """Read nothing yet: frames are decoded while iterating."""
        self.files = files

    def __len__(self) -> int:
        """Number of frames."""
        return len(self.files)

    def __iter__(self) -> Iterator[ImageFrame]:
        """Decoded RGB frames in order."""
        for index, path in enumerate(self.files):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ReplayError(f'cannot read the frame {path}')
            yield ImageFrame(index, index, '', cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        """Nothing to close."""


class FolderLabels(GtDir):
    """The label PNGs paired with the frames by file stem; palette PNGs read as indices."""

    def __init__(self, folder: Path, frame_files: List[Path]) -> None:
        """Pair every frame with ``folder/<stem>.png``; ReplayError naming what is missing."""
        super().__init__(folder)
        by_stem = {p.stem: p for p in self.files}
        missing = [f.name for f in frame_files if f.stem not in by_stem]
        if missing:
            raise ReplayError(f'missing labels: {len(missing)} of {len(frame_files)} frames have '
                              f'no label PNG with the same name in {folder} (first: '
                              f'{missing[0]})')
        self.files = [by_stem[f.stem] for f in frame_files]
        self.description = f'{len(self.files)} label PNGs in {self.folder}'

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(path) as image:
                mode = image.mode
                labels = np.array(image)
        except (OSError, UnidentifiedImageError) as err:
            raise ReplayError(f'cannot read the label map {path}: {err}') from err
        if labels.ndim != 2 or mode not in ('1', 'L', 'P', 'I', 'I;16', 'I;16B', 'I;16L'):
            raise ReplayError(f'{path} must be a single-channel 8- or 16-bit or palette label '
                              f'PNG (one integer id per pixel), got mode {mode} '
                              f'{"x".join(str(s) for s in labels.shape)}')
        if labels.dtype in (np.bool_, np.uint8):
            return labels.astype(np.uint8)
        if labels.min(initial=0) < 0 or labels.max(initial=0) > np.iinfo(np.uint16).max:
            raise ReplayError(f'{path}: label values must lie in 0..65535')
        return labels.astype(np.uint16)


def _frame_files(folder: Path) -> List[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise ReplayError(f'{folder} holds no {"/".join(FRAME_SUFFIXES)} frames')
    return files


# ---------------------------------------------------------------------- what runs
@dataclass(frozen=True)
class MethodSpec:
    """One column of the report: a method run with optional parameter overrides (a variant)."""

    label: str
    method: MethodName
    overrides: Tuple[Tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class EvalSpec:
    """Everything that decides a clip's figures (its digest keys the stored clip results)."""

    config: PipelineConfig
    methods: Tuple[MethodSpec, ...]
    image_topic: Optional[str] = None
    gt_topic: str = DEFAULT_GT_TOPIC
    gt_background: Optional[int] = 0
    gt_ignore: Optional[int] = AUTO_IGNORE
    max_frames: Optional[int] = None
    gt_semantic_topic: Optional[str] = None
    class_names: Optional[str] = None
    gt_class_map: Optional[str] = None
    semantic_classes: Optional[str] = None

    def method_config(self, spec: MethodSpec) -> PipelineConfig:
        """The pipeline configuration of one method: the common one plus its overrides."""
        if not spec.overrides:
            return self.config
        return PipelineConfig.from_flat({**self.config.to_flat(), **dict(spec.overrides)})

    def to_dict(self) -> dict:
        """JSON-ready description (also what :meth:`digest` hashes)."""
        return {'config': self.config.to_flat(),
                'methods': [{'label': m.label, 'method': m.method.value,
                             'overrides': dict(m.overrides)} for m in self.methods],
                'image_topic': self.image_topic, 'gt_topic': self.gt_topic,
                'gt_background': self.gt_background, 'gt_ignore': self.gt_ignore,
                'max_frames': self.max_frames, **self._semantic_dict()}

    def _semantic_dict(self) -> dict:
        """The semantic options, only where they differ from the defaults (stable digests)."""
        items = {'gt_semantic_topic': (self.gt_semantic_topic, None),
                 'class_names': (self.class_names, None),
                 'gt_class_map': (self.gt_class_map, None),
                 'semantic_classes': (self.semantic_classes, None)}
        out: dict = {k: v for k, (v, default) in items.items() if v != default}
        if self.gt_class_map is not None:  # the map's content decides the scores
            out['gt_class_map_sha256'] = hashlib.sha256(
                Path(self.gt_class_map).read_bytes()).hexdigest()
        return out

    def semantic_truth(self, clip: 'Clip', n_frames: int, gt_ignore: Optional[int]
                       ) -> Optional[SemanticTruth]:
        """The clip's semantic ground truth: the class map, else the bag's class-map topic."""
        if self.gt_class_map is not None:
            mapping = ClassMap.load(Path(self.gt_class_map))
            return SemanticTruth(mapping.class_names,
                                 f'instance ground truth through {self.gt_class_map}',
                                 class_map=mapping, gt_ignore=gt_ignore)
        if (self.gt_semantic_topic is None or clip.kind != ClipKind.BAG
                or self.gt_semantic_topic not in bag_topics(clip.path)):
            return None
        return open_semantic_truth(clip.path, self.gt_semantic_topic, None, None,
                                   self.class_names, n_frames, gt_ignore)

    def digest(self) -> str:
        """16 hex digits of SHA-256 over :meth:`to_dict` (sorted keys)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ClipResult:
    """One evaluated clip: a ``sap_replay`` block per method label and the object sizes."""

    clip: str
    kind: str
    path: str
    frames: int
    wall_s: float
    blocks: Dict[str, dict]
    latencies_ms: Dict[str, List[float]]
    object_sizes: Dict[str, float]
    gt_source: Optional[str]
    gt_ignore: Optional[int]
    worker: str = ''
    attempt: int = 1
    semantic_source: Optional[str] = None

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> 'ClipResult':
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class ClipFailure:
    """A clip that could not be evaluated, and why."""

    clip: str
    kind: str
    path: str
    error: str
    worker: str = ''
    attempt: int = 1


@dataclass
class ObjectSizes:
    """Per ground-truth object, the mean share of the sphere it covers over its frames."""

    gt_background: Optional[int]
    gt_ignore: Optional[int]
    _sum: Dict[int, float] = field(default_factory=dict, init=False)
    _count: Dict[int, int] = field(default_factory=dict, init=False)

    def add(self, gt: np.ndarray) -> None:
        """One frame of ground truth."""
        weights = erp_pixel_weights(gt.shape[0], gt.shape[1])
        areas = weighted_label_areas(gt, weights) / weights.sum()
        for gt_id in present_ids(areas, (self.gt_background, self.gt_ignore)).tolist():
            self._sum[gt_id] = self._sum.get(gt_id, 0.0) + float(areas[gt_id])
            self._count[gt_id] = self._count.get(gt_id, 0) + 1

    def fractions(self) -> Dict[str, float]:
        """``str(gt id) -> mean solid-angle fraction`` (0..1) over the frames it is present."""
        return {str(k): self._sum[k] / self._count[k] for k in sorted(self._sum)}


# ---------------------------------------------------------------------- one clip
SegmenterFor = Callable[[PipelineConfig], Segmenter]


def _auto_image_topic(bag: Path, gt_topic: str, semantic_topic: Optional[str] = None) -> str:
    topics = bag_topics(bag)
    truth = (gt_topic, semantic_topic or DEFAULT_SEMANTIC_TOPIC)
    images = [t for t, (kind, _) in topics.items() if kind in IMAGE_TYPES and t not in truth]
    if len(images) != 1:
        raise ReplayError(f'{bag}: cannot tell the camera topic ({len(images)} image topics '
                          f'besides {" and ".join(truth)}); pass --image-topic. '
                          f'{describe_topics(topics)}')
    return images[0]


def open_clip(clip: Clip, spec: EvalSpec) -> Tuple[Any, Optional[GroundTruth]]:
    """The frame stream and the ground truth of a clip (ReplayError / BagError when unusable)."""
    if clip.problem is not None:
        raise ReplayError(clip.problem)
    if clip.kind == ClipKind.FRAMES:
        assert clip.frames_dir is not None and clip.labels_dir is not None
        files = _frame_files(clip.frames_dir)
        return FolderFrames(files), FolderLabels(clip.labels_dir, files)
    topic = spec.image_topic or _auto_image_topic(clip.path, spec.gt_topic,
                                                  spec.gt_semantic_topic)
    frames = open_image_stream(clip.path, topic)
    try:
        gt: Optional[GroundTruth] = None
        if spec.gt_topic in bag_topics(clip.path):
            gt = GtTopic(clip.path, spec.gt_topic)
            if len(gt) != len(frames):
                gt.close()
                raise ReplayError(f'ground truth count mismatch: {gt.description} has {len(gt)} '
                                  f'label maps but {topic} has {len(frames)} frames')
    except BaseException:
        frames.close()
        raise
    return frames, gt


def evaluate_clip(clip: Clip, spec: EvalSpec, segmenter_for: Optional[SegmenterFor] = None,
                  on_frame: Optional[Callable[[int], None]] = None) -> ClipResult:
    """Run every method of ``spec`` over the clip's frames and score them as ``sap_replay`` does.

    ``segmenter_for(config)`` lends a loaded SAM2 segmenter to the SAM2 methods (a worker keeps
    one per model configuration across clips); without it each method loads its own.
    ``on_frame(n_frames)`` is called after every frame. Raises SapError for an unusable clip.
    """
    t_start = time.perf_counter()
    frames, gt_source = open_clip(clip, spec)
    methods: List[Method] = []
    semantic: Optional[SemanticTruth] = None
    try:
        n_frames = min(len(frames), spec.max_frames or len(frames))
        ignore = resolve_ignore(spec.gt_ignore, gt_source)
        if gt_source is None and any(m.method.needs_ground_truth for m in spec.methods):
            raise ReplayError(f'missing labels: {clip.path} has no {spec.gt_topic} topic, and '
                              'the oracle and naive baselines are built from ground truth')
        semantic = spec.semantic_truth(clip, len(frames), ignore)
        if semantic is not None and gt_source is None and spec.gt_class_map is not None:
            raise ReplayError(f'missing labels: {clip.path} has no {spec.gt_topic} topic for '
                              '--gt-class-map to map')
        names = () if semantic is None else semantic.class_names
        scored = None if semantic is None else scored_classes(spec.semantic_classes, names)
        for m in spec.methods:
            config = spec.method_config(m)
            lent = segmenter_for(config) if segmenter_for and m.method.runs_sam2 else None
            methods.append(build_method(m.method, config, spec.gt_background, ignore, lent,
                                        semantic=semantic))
        scores = [MethodScores(spec.gt_background, ignore, class_names=names,
                               scored_classes=scored) for _ in methods]
        sizes = ObjectSizes(spec.gt_background, ignore)
        for step in step_methods(frames, gt_source, methods, scores, n_frames, semantic):
            if step.gt is not None:
                sizes.add(step.gt.labels)
            if on_frame is not None:
                on_frame(n_frames)
    finally:
        close_all(methods, frames, gt_source, semantic)
    return ClipResult(
        clip=clip.name, kind=clip.kind.value, path=str(clip.path), frames=n_frames,
        wall_s=time.perf_counter() - t_start,
        blocks={m.label: s.block() for m, s in zip(spec.methods, scores)},
        latencies_ms={m.label: list(s.latencies_ms) for m, s in zip(spec.methods, scores)},
        object_sizes=sizes.fractions(),
        gt_source=None if gt_source is None else gt_source.description, gt_ignore=ignore,
        semantic_source=None if semantic is None else semantic.description)
