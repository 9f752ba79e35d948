"""``sap_replay``'s pipeline parameters: the node's params file, ``--set`` and ``--variant``.

The same YAML the node reads (``config/sap.yaml``) configures replay, so an offline run and the
robot run the same pipeline; ``make demo`` writes its node parameters once and reads them back
here for its oracle run.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import yaml

from sap_ros.config import PipelineConfig
from sap_ros.errors import ConfigError
from sap_ros.eval.replay_gt import ReplayError
from sap_ros.eval.replay_methods import MethodName, Variant

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


def parse_override(item: str) -> Tuple[str, Any]:
    """``'model.image_size=256'`` -> ``('model.image_size', 256)`` (value read as YAML)."""
    name, sep, raw = item.partition('=')
    if not sep or not name.strip():
        raise ConfigError(item, 'expected --set name=value, e.g. --set model.image_size=256')
    value = yaml.safe_load(raw) if raw.strip() else ''
    return name.strip(), value


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
