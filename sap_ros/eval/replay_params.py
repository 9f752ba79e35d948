"""``sap_replay``'s pipeline parameters: the node's params file, ``--set`` and ``--variant``.

The same YAML the node reads (``config/sap.yaml``) configures replay, so an offline run and the
robot run the same pipeline; ``make demo`` writes its node parameters once and reads them back
here for its oracle run.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import re
from typing import Any, Dict, Mapping, Optional, Sequence

import yaml

from sap_ros.config import PipelineConfig, parse_override
from sap_ros.errors import ConfigError
from sap_ros.eval.replay_gt import AUTO_IGNORE, ReplayError
from sap_ros.eval.replay_methods import BASELINES, MethodName, Variant
from sap_ros.eval.semantic_gt import DEFAULT_CLASS_NAMES_TOPIC, DEFAULT_SEMANTIC_TOPIC

#: Node parameters that are not pipeline parameters (ignored when read from --params).
NODE_ONLY = ('autostart', 'input.')


def flatten(tree: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
    """Nested dicts -> dotted names.

    >>> flatten({'model': {'image_size': 256}, 'autostart': True})
    {'model.image_size': 256, 'autostart': True}
    """
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


def load_params_file(path: Path) -> Dict[str, Any]:
    """The node's params YAML (``/**/sap_node: ros__parameters: {...}``) -> flat pipeline params.

    ``autostart`` and ``input.*`` (node options) are dropped.
    """
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ReplayError(f'--params {path}: cannot read it: {err}') from err
    nodes = ({k: v['ros__parameters'] for k, v in doc.items()
              if isinstance(v, dict) and isinstance(v.get('ros__parameters'), dict)}
             if isinstance(doc, dict) else {})
    if not nodes:
        raise ReplayError(f'--params {path}: expected a ROS 2 parameter file '
                          '(<node name>: ros__parameters: {...}), found no ros__parameters')
    ours = [k for k in nodes if str(k).rstrip('/').endswith('sap_node')]
    flat = flatten(nodes[ours[0] if ours else next(iter(nodes))])
    return {k: v for k, v in flat.items() if not k.startswith(NODE_ONLY)}


def parse_variant(text: str) -> Variant:
    """``'NAME:key=value[,key=value...]'`` -> :class:`Variant` (values read as YAML).

    >>> parse_variant('fewer:memory.long_term=2,discovery.enabled=false').overrides
    (('memory.long_term', 2), ('discovery.enabled', False))
    """
    name, sep, body = text.partition(':')
    name = name.strip()
    if not sep or not re.fullmatch(r'[A-Za-z0-9_-]+', name) or not body.strip():
        raise ConfigError(text, 'expected --variant NAME:key=value[,key=value...], NAME of '
                                'letters, digits, _ and -, e.g. --variant '
                                'dense:memory.long_term=2')
    if name in {m.value for m in MethodName}:
        raise ConfigError(text, f'variant name {name!r} is taken by a method; choose another')
    known = {spec.name for spec in PipelineConfig.param_specs()}
    overrides = []
    for item in body.split(','):
        key, value = parse_override(item)
        if key not in known:
            raise ConfigError(key, f'unknown parameter in --variant {name} '
                                   f'(known: {sorted(known)})')
        overrides.append((key, value))
    return Variant(name, tuple(overrides))


def build_config(params: Optional[Path], overrides: Sequence[str] = (),
                 checkpoint: Optional[str] = None,
                 random_weights: bool = False) -> PipelineConfig:
    """Params file, then ``--set`` overrides, then ``--checkpoint`` / ``--random-weights``."""
    flat: Dict[str, Any] = load_params_file(params) if params is not None else {}
    known = {spec.name for spec in PipelineConfig.param_specs()}
    for item in overrides:
        name, value = parse_override(item)
        if name not in known:
            raise ConfigError(name, f'unknown parameter for --set (known: {sorted(known)})')
        flat[name] = value
    if checkpoint is not None:
        flat['model.checkpoint'] = checkpoint
    if random_weights:
        flat['model.allow_random_weights'] = True
    return PipelineConfig.from_flat(flat)


def uses_random_weights(config: PipelineConfig) -> bool:
    """Random weights allowed and no checkpoint path given: SAM2 runs untrained."""
    return config.model.random_weights


def label_value(text: str) -> Optional[int]:
    """A ground-truth label value for the command line: an integer >= 0, or ``none``."""
    if text.strip().lower() == 'none':
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer label value or none, got {text!r}')
    if value < 0:
        raise argparse.ArgumentTypeError(f'label values are >= 0, got {value}')
    return value


def add_label_value_arguments(group: Any) -> None:
    """``--gt-background`` and ``--gt-ignore`` (sap_replay, sap_eval)."""
    group.add_argument('--gt-background', type=label_value, default=0, metavar='V|none',
                    help='ground-truth value meaning "no object"; none when every value is an '
                         'object (dense annotation) (default: 0)')
    group.add_argument('--gt-ignore', type=label_value, default=AUTO_IGNORE, metavar='V|none',
                    help='ground-truth value left out of every score (default: 255 for 8-bit '
                         'ground truth, none for 16-bit)')


def add_semantic_arguments(parser: argparse.ArgumentParser, dataset: bool = False) -> None:
    """Semantic ground truth and what of it is scored (sap_replay; ``dataset``: sap_eval)."""
    group = parser.add_argument_group(
        'semantic ground truth (optional; scores the methods that publish class maps: '
        'sphere-weighted mIoU, per-class IoU, object-level class accuracy, class switches per '
        "track; a method's class ids are matched to the ground truth's by class name)")
    if dataset:
        group.add_argument('--gt-semantic-topic', metavar='TOPIC',
                           help='class-map topic of the bags (mono16/mono8 Image of 1-based '
                                'class ids, 0 = none), used in every bag that has it (sap_synth '
                                f'writes {DEFAULT_SEMANTIC_TOPIC}; default: none, no semantic '
                                'scores)')
    else:
        group.add_argument('--gt-semantic-topic', metavar='TOPIC',
                           help='class-map topic (mono16/mono8 Image of 1-based class ids, '
                                '0 = none), one per camera frame, matched in order (sap_synth: '
                                f'{DEFAULT_SEMANTIC_TOPIC})')
        group.add_argument('--gt-semantic-dir', type=Path, metavar='DIR',
                           help='folder of single-channel class-map PNGs, sorted by name')
    group.add_argument('--gt-class-map', type=Path, metavar='JSON',
                       help='derive the class maps from the instance ground truth: '
                            '{"class_names": [...], "classes": {"<instance id>": "<name>" or '
                            '<class id>}}; unlisted ids are class 0 (none)'
                            + ('; replaces the class-map topic in every clip' if dataset else ''))
    group.add_argument('--class-names', metavar='JSON|TOPIC',
                       help='class names of the class-map topic or folder: a JSON file (a '
                            'list, or {"class_names": [...]}; class id k = entry k-1) or a '
                            'std_msgs/String topic of the bag holding it (default: '
                            f'{DEFAULT_CLASS_NAMES_TOPIC}, as sap_synth writes)')
    group.add_argument('--semantic-classes', metavar='NAME[,NAME...]',
                       help='score only these classes; ground truth of the others counts as '
                            'no class (e.g. box,sphere,cylinder,lamp,rug: the objects of a '
                            'sap_synth clip, not its floor, walls and ceiling) (default: all)')


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> Any:
    """The pipeline parameters and what runs (sap_replay, sap_eval); returns the 'what runs' group.

    ``--params``, ``--set``, ``--checkpoint``, ``--random-weights`` (read by :func:`build_config`),
    ``--baseline``, ``--variant`` (:func:`parse_variant`) and ``--skip-ours``.
    """
    model = parser.add_argument_group('pipeline parameters')
    model.add_argument('--params', type=Path, metavar='YAML',
                       help="the node's parameter file (e.g. config/sap.yaml); autostart and "
                            'input.* are ignored')
    model.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                       dest='overrides', help='override one parameter, repeatable '
                       '(e.g. --set model.image_size=256 --set patches.size_px=512)')
    model.add_argument('--checkpoint', metavar='PATH|auto',
                       help='SAM2 checkpoint (model.checkpoint; default auto: the official file '
                            'of model.config, downloaded once into the cache, see sap_weights)')
    model.add_argument('--random-weights', action='store_true',
                       help='run SAM2 with random weights when no checkpoint is given '
                            '(model.allow_random_weights): tests and demos only, masks are '
                            'meaningless')
    runs = parser.add_argument_group('what runs')
    runs.add_argument('--baseline', action='append', default=[], dest='baselines',
                      choices=[b.value for b in BASELINES],
                      help='run a baseline beside ours on the same frames, repeatable: naive = '
                           'UPPER BOUND of SAM2 on the whole ERP resized to model.image_size '
                           '(from ground truth, not a model run); sam2-erp = that naive '
                           'approach really run: SAM2 with its memory on the whole resized ERP '
                           '(same model, memory and discovery parameters); raster = our '
                           'pipeline with patches.order=raster; oracle = our pipeline with '
                           'ground-truth masks in place of SAM2, cut at min(patches.size_px, '
                           'model.image_size) (everything but the network)')
    runs.add_argument('--variant', action='append', default=[], dest='variants',
                      metavar='NAME:KEY=VALUE[,KEY=VALUE...]',
                      help='also run our pipeline with these parameters changed, on the same '
                           'frames, as its own column NAME in the report; repeatable (e.g. '
                           '--variant dense:engine.mask_prompt=true). The options that '
                           'change what SAM2 receives are off by default and unmeasured with '
                           'real weights: this is how to measure them on your data')
    runs.add_argument('--skip-ours', action='store_true',
                      help='do not run our SAM2 pipeline (baselines only, e.g. an oracle-only '
                           "evaluation without a model); sap_replay's output bag then holds "
                           'the first method run')
    return runs
