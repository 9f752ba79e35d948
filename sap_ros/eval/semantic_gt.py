"""Semantic ground truth for ``sap_replay`` and ``sap_eval``: class maps and their class names.

Three sources, one per run (class ids 1-based, 0 = none, as everywhere in sap_ros):

* a class-map topic of the bag (``--gt-semantic-topic``, mono16/mono8 Image, one per camera
  frame, matched in order; ``sap_synth`` writes ``/gt/semantic``);
* a folder of single-channel class-map PNGs (``--gt-semantic-dir``, sorted by file name);
* the instance ground truth through an id -> class map (``--gt-class-map FILE.json``)::

      {"class_names": ["person", "door"], "classes": {"1": "person", "7": "door", "9": 2}}

  ``classes`` maps an instance id (a JSON key) to a class name or a 1-based class id; ids it
  does not list (the background included) are class 0 (none).

Class names: the class map's own; for a topic or a folder, ``--class-names`` (a JSON file
holding a list of names or ``{"class_names": [...]}``, or a ``std_msgs/String`` topic of the bag
holding that JSON), by default the bag's ``/gt/class_names`` topic (``sap_synth`` writes it).
Unknown pixels: 255 in 8-bit class maps (when there are fewer than 255 classes) and the pixels
whose instance ground truth is ``--gt-ignore`` are left out of the semantic scores.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from sap_ros.eval.bags import STRING, bag_topics, iter_messages
from sap_ros.eval.replay_gt import GroundTruth, GtDir, GtTopic, ReplayError

DEFAULT_SEMANTIC_TOPIC = '/gt/semantic'
DEFAULT_CLASS_NAMES_TOPIC = '/gt/class_names'
#: The value an instance-derived class map carries where the instance ground truth is ignored.
MAPPED_IGNORE = 65535


def parse_class_names(data: Any, where: str) -> Tuple[str, ...]:
    """A JSON list of names, or ``{"class_names": [...]}`` -> the names (checked)."""
    names = data.get('class_names') if isinstance(data, dict) else data
    if (not isinstance(names, list) or not names
            or not all(isinstance(n, str) and n for n in names)):
        raise ReplayError(f'{where}: expected a non-empty JSON list of class names, or '
                          '{"class_names": [...]}')
    if len(set(names)) != len(names):
        raise ReplayError(f'{where}: class names must be unique, got {names}')
    if len(names) >= MAPPED_IGNORE:
        raise ReplayError(f'{where}: at most {MAPPED_IGNORE - 1} classes')
    return tuple(names)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ReplayError(f'{what} {path}: cannot read it as JSON: {err}') from err


def read_class_names(source: str, bag: Optional[Path]) -> Tuple[str, ...]:
    """Class names from a JSON file, or from a ``std_msgs/String`` topic of ``bag``."""
    topics = bag_topics(bag) if bag is not None and source.startswith('/') else {}
    if source in topics:
        if topics[source][0] != STRING:
            raise ReplayError(f'--class-names topic {source} has type {topics[source][0]}, '
                              f'expected {STRING} holding JSON class names')
        stream = iter_messages(bag, source)  # type: ignore[arg-type]
        try:
            _, msg = next(stream)
        finally:
            stream.close()
        try:
            data = json.loads(msg.data)
        except ValueError as err:
            raise ReplayError(f'--class-names topic {source}: not JSON: {err}') from err
        return parse_class_names(data, f'--class-names topic {source}')
    path = Path(source)
    if not path.is_file():
        raise ReplayError(f'--class-names {source}: neither a JSON file nor a topic of the bag')
    return parse_class_names(_read_json(path, '--class-names'), f'--class-names {source}')


class ClassMap:
    """Instance id -> class id, with the class names (``--gt-class-map``, module docstring)."""

    def __init__(self, class_names: Sequence[str], classes: Dict[int, int],
                 description: str = 'class map') -> None:
        """Check every class id against the names."""
        self.class_names = tuple(class_names)
        self.description = description
        for instance, cls in classes.items():
            if not 1 <= cls <= len(self.class_names) or instance < 0:
                raise ReplayError(f'{description}: instance {instance} -> class {cls}: class '
                                  f'ids are 1..{len(self.class_names)}, instance ids >= 0')
        self.classes = dict(classes)

    @classmethod
    def load(cls, path: Path) -> 'ClassMap':
        """Read ``{"class_names": [...], "classes": {"<instance id>": name | id}}``."""
        where = f'--gt-class-map {path}'
        data = _read_json(path, '--gt-class-map')
        if not isinstance(data, dict) or not isinstance(data.get('classes'), dict):
            raise ReplayError(f'{where}: expected {{"class_names": [...], "classes": '
                              '{"<instance id>": "<class name>" or <class id>, ...}}')
        names = parse_class_names(data, where)
        classes: Dict[int, int] = {}
        for key, value in data['classes'].items():
            try:
                instance = int(key)
            except ValueError:
                raise ReplayError(f'{where}: {key!r} is not an instance id (an integer)')
            if isinstance(value, str):
                if value not in names:
                    raise ReplayError(f'{where}: instance {key} -> unknown class {value!r} '
                                      f'(classes: {list(names)})')
                classes[instance] = names.index(value) + 1
            elif isinstance(value, int) and not isinstance(value, bool):
                classes[instance] = value
            else:
                raise ReplayError(f'{where}: instance {key} -> {value!r}: expected a class '
                                  'name or a 1-based class id')
        return cls(names, classes, where)

    def apply(self, instances: np.ndarray, ignore: Optional[int] = None) -> np.ndarray:
        """Instance label map -> uint16 class map (:data:`MAPPED_IGNORE` on ``ignore`` pixels)."""
        labels = np.asarray(instances)
        lut = np.zeros(max(int(labels.max(initial=0)), max(self.classes, default=0)) + 1,
                       dtype=np.uint16)
        for instance, cls in self.classes.items():
            lut[instance] = cls
        out = lut[labels]
        if ignore is not None:
            out[labels == ignore] = MAPPED_IGNORE
        return out


class SemanticTruth:
    """One run's semantic ground truth: a class map per frame, in order, and the class names.

    ``ignore``: the class-map value that means "unknown" (None: none).
    """

    def __init__(self, class_names: Sequence[str], description: str,
                 source: Optional[GroundTruth] = None, class_map: Optional[ClassMap] = None,
                 gt_ignore: Optional[int] = None) -> None:
        """A topic/folder ``source`` or an instance ``class_map``, exactly one."""
        self.class_names = tuple(class_names)
        self.description = description
        self._source, self._class_map, self._gt_ignore = source, class_map, gt_ignore
        self._iter: Optional[Iterator[Any]] = None
        if class_map is not None:
            self.ignore: Optional[int] = MAPPED_IGNORE if gt_ignore is not None else None
        else:
            eight_bit = source is not None and source.bits == 8
            self.ignore = 255 if eight_bit and len(self.class_names) < 255 else None

    def __len__(self) -> int:
        """Number of class maps (the source's; that of the instance ground truth otherwise)."""
        return len(self._source) if self._source is not None else 0

    def next_map(self, instances: Optional[np.ndarray]) -> np.ndarray:
        """The class map of the next frame (``instances``: that frame's instance labels)."""
        if self._class_map is not None:
            if instances is None:
                raise ReplayError('--gt-class-map maps the instance ground truth: add '
                                  '--gt-topic or --gt-dir')
            return self._class_map.apply(instances, self._gt_ignore)
        assert self._source is not None
        if self._iter is None:
            self._iter = iter(self._source)
        return np.asarray(next(self._iter).labels)

    def ignore_mask(self, semantic: np.ndarray) -> Optional[np.ndarray]:
        """Pixels left out of the semantic scores (None when nothing is)."""
        return None if self.ignore is None else semantic == self.ignore

    def close(self) -> None:
        """Close the topic or folder."""
        if self._source is not None:
            self._source.close()


def open_semantic_truth(bag: Optional[Path], topic: Optional[str], folder: Optional[Path],
                        class_map: Optional[Path], class_names: Optional[str],
                        image_frames: int, gt_ignore: Optional[int] = None
                        ) -> Optional[SemanticTruth]:
    """The semantic ground truth asked for (None when none is); counts checked like labels."""
    given = [name for name, value in (('--gt-semantic-topic', topic),
                                      ('--gt-semantic-dir', folder),
                                      ('--gt-class-map', class_map)) if value is not None]
    if len(given) > 1:
        raise ReplayError(f'give one semantic ground truth, not {" and ".join(given)}')
    if not given:
        if class_names is not None:
            raise ReplayError('--class-names names the classes of --gt-semantic-topic or '
                              '--gt-semantic-dir; give one of them')
        return None
    if class_map is not None:
        if class_names is not None:
            raise ReplayError('--gt-class-map holds its own class names; drop --class-names')
        mapping = ClassMap.load(Path(class_map))
        return SemanticTruth(mapping.class_names, f'instance ground truth through {class_map}',
                             class_map=mapping, gt_ignore=gt_ignore)
    if class_names is None:
        if bag is None or DEFAULT_CLASS_NAMES_TOPIC not in bag_topics(bag):
            raise ReplayError('semantic ground truth needs its class names: add --class-names '
                              f'(a JSON file or a topic; default: {DEFAULT_CLASS_NAMES_TOPIC} '
                              'of the bag, which this bag does not have)')
        class_names = DEFAULT_CLASS_NAMES_TOPIC
    if folder is not None and not Path(folder).is_dir():
        raise ReplayError(f'--gt-semantic-dir {folder} is not a directory')
    names = read_class_names(class_names, bag)
    source: GroundTruth = (GtTopic(bag, topic) if topic is not None and bag is not None
                           else GtDir(Path(str(folder))))
    if len(source) != image_frames:
        source.close()
        raise ReplayError(f'semantic ground truth count mismatch: {source.description} has '
                          f'{len(source)} class maps but the camera has {image_frames} frames; '
                          'they are matched one to one in order')
    return SemanticTruth(names, f'{source.description}, classes from {class_names}', source)


def scored_classes(text: Optional[str], class_names: Sequence[str]) -> Optional[Tuple[int, ...]]:
    """``--semantic-classes a,b`` -> their 1-based ids (None: every class)."""
    if text is None:
        return None
    wanted = [t.strip() for t in text.split(',') if t.strip()]
    unknown = [t for t in wanted if t not in class_names]
    if not wanted or unknown:
        raise ReplayError(f'--semantic-classes {text!r}: unknown class {unknown[:1] or text!r} '
                          f'(classes: {", ".join(class_names)})')
    return tuple(sorted({list(class_names).index(t) + 1 for t in wanted}))
