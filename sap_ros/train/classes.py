"""The class of every exported object: ``classes.json`` of a ``sap_train data`` export.

Where a source has semantic ground truth (a ``sap_synth`` bag's ``/gt/semantic`` class maps with
their names on ``/gt/class_names``), or a per-dataset instance id -> class map is given
(``--class-map``, the JSON of ``sap_replay --gt-class-map``), each exported object gets the
majority class of the pixels under its instance, over every panorama of its video (class 0,
"none", never wins while another class is there; an object with only class-0 pixels gets no
class). The export then holds::

    OUT/classes.json   {"class_names": [...],
                        "videos": {"<video>": {"<palette index>": "<class name>", ...}, ...}}

Videos whose source had no class information are not listed; an export without any has no
``classes.json`` (and stays a valid export for ``sap_train fit``). ``sap_train classify`` reads
it (:func:`load_classes`), or maps the export's source ids with ``--class-map`` itself.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from sap_ros.errors import InvalidInputError, SapError
from sap_ros.eval.bags import bag_topics
from sap_ros.eval.replay_gt import GtTopic
from sap_ros.eval.semantic_gt import (
    DEFAULT_CLASS_NAMES_TOPIC,
    DEFAULT_SEMANTIC_TOPIC,
    ClassMap,
    read_class_names,
)

CLASSES_FILE = 'classes.json'

#: Per video: palette index -> 1-based class id (in the export's class names).
VideoClasses = Dict[str, Dict[int, int]]


class SemanticSource:
    """Class maps of one clip, frame by frame: a bag's topic, or instance labels mapped."""

    def __init__(self, class_names: Sequence[str], topic: Optional[GtTopic] = None,
                 class_map: Optional[ClassMap] = None) -> None:
        """A ``topic`` of class maps, or a ``class_map`` applied to the instance labels."""
        self.class_names = tuple(class_names)
        self._topic, self._class_map = topic, class_map
        self._iter = iter(topic) if topic is not None else None

    @classmethod
    def open(cls, bag: Optional[Path], class_map: Optional[ClassMap], frames: int
             ) -> Optional['SemanticSource']:
        """The class maps of a clip (None when it has none); a bag's count must be ``frames``."""
        if class_map is not None:
            return cls(class_map.class_names, class_map=class_map)
        if bag is None:
            return None
        topics = bag_topics(bag)
        if DEFAULT_SEMANTIC_TOPIC not in topics:
            return None
        if DEFAULT_CLASS_NAMES_TOPIC not in topics:
            raise InvalidInputError(f'{bag}: {DEFAULT_SEMANTIC_TOPIC} without its class names '
                                    f'({DEFAULT_CLASS_NAMES_TOPIC}); give --class-map instead')
        names = read_class_names(DEFAULT_CLASS_NAMES_TOPIC, bag)
        topic = GtTopic(bag, DEFAULT_SEMANTIC_TOPIC)
        if len(topic) != frames:
            topic.close()
            raise InvalidInputError(f'{bag}: {len(topic)} class maps on '
                                    f'{DEFAULT_SEMANTIC_TOPIC} for {frames} camera frames')
        return cls(names, topic=topic)

    def next_map(self, instances: np.ndarray) -> np.ndarray:
        """The class map of the next frame (``instances``: its instance labels)."""
        if self._class_map is not None:
            return self._class_map.apply(instances)
        assert self._iter is not None
        return np.asarray(next(self._iter).labels)

    def close(self) -> None:
        """Close the topic."""
        if self._topic is not None:
            self._topic.close()


def class_votes(instances: np.ndarray, semantic: np.ndarray,
                votes: Dict[int, Dict[int, int]]) -> None:
    """Add one panorama's pixel counts of (instance id, class id) to ``votes``."""
    if semantic.shape != instances.shape:
        raise InvalidInputError(f'class map {semantic.shape} and instance labels '
                                f'{instances.shape} differ in size')
    inside = instances != 0
    pairs, counts = np.unique(np.stack([instances[inside].astype(np.int64),
                                        semantic[inside].astype(np.int64)]),
                              axis=1, return_counts=True)
    for (instance, cls), count in zip(pairs.T, counts):
        per = votes.setdefault(int(instance), {})
        per[int(cls)] = per.get(int(cls), 0) + int(count)


def majority(votes: Dict[int, int], n_classes: int) -> int:
    """The class with most pixels (lowest id on ties), 0 when only class 0 (or unknown) voted."""
    real = {c: n for c, n in votes.items() if 1 <= c <= n_classes}
    return min(real, key=lambda c: (-real[c], c)) if real else 0


def video_classes(object_ids: Dict[int, int], votes: Dict[int, Dict[int, int]],
                  n_classes: int) -> Dict[int, int]:
    """Palette index -> class id of one video (objects without a class left out)."""
    out = {}
    for index, source_id in object_ids.items():
        cls = majority(votes.get(source_id, {}), n_classes)
        if cls:
            out[index] = cls
    return out


def write_classes(root: Path, class_names: Optional[Sequence[str]],
                  videos: VideoClasses) -> Optional[Path]:
    """Write ``classes.json`` (nothing when no video has classes); returns its path."""
    if class_names is None or not videos:
        return None
    names = list(class_names)
    path = Path(root) / CLASSES_FILE
    path.write_text(json.dumps({'class_names': names, 'videos': {
        video: {str(k): names[c - 1] for k, c in sorted(ids.items())}
        for video, ids in videos.items()}}, indent=1))
    return path


def load_classes(root: Path) -> Tuple[Tuple[str, ...], VideoClasses]:
    """The class names and per-video classes of an export (SapError when it has none)."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        raise SapError(f'{root} has no class information ({CLASSES_FILE}): export it from '
                       f'sources with semantic ground truth ({DEFAULT_SEMANTIC_TOPIC}, as '
                       f'sap_synth writes), with sap_train data --class-map, or give '
                       f'sap_train classify --class-map')
    try:
        data = json.loads(path.read_text())
        names = tuple(str(n) for n in data['class_names'])
        videos = {str(v): {int(k): names.index(c) + 1 for k, c in ids.items()}
                  for v, ids in data['videos'].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise SapError(f'{path} is not a classes file of sap_train data: {err}') from None
    return names, videos


def mapped_classes(class_map: ClassMap, object_ids: Dict[str, Dict[int, int]]) -> VideoClasses:
    """Per video palette index -> class id through an instance id -> class map."""
    return {video: {k: class_map.classes[s] for k, s in ids.items() if s in class_map.classes}
            for video, ids in object_ids.items()}


def same_names(current: Optional[Tuple[str, ...]], names: Sequence[str], where: str
               ) -> Tuple[str, ...]:
    """The export's one class list: every source must name the same classes."""
    names = tuple(names)
    if current is not None and current != names:
        raise InvalidInputError(f'{where}: class names {list(names)} differ from the other '
                                f"sources' {list(current)}; one export holds one class list")
    return names
