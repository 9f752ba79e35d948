"""Pipeline configuration: frozen dataclasses, one source for defaults, descriptions and checks.

The ROS node declares one parameter per field under its dotted name (``model.checkpoint``,
``patches.fov_deg`` ...) with the field's description; ``sap_replay --params`` reads the same YAML.
``PipelineConfig.from_flat`` validates values and raises :class:`ConfigError` naming the parameter.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import enum
from typing import Any, Dict, Iterator, Mapping, Tuple

from sap_ros.errors import ConfigError


class PathOrder(str, enum.Enum):
    """Order in which the patches of a frame are visited."""

    ZIGZAG = 'zigzag'
    RASTER = 'raster'


def _param(default: Any, description: str, **checks: Any) -> Any:
    return field(default=default, metadata={'description': description, **checks})


@dataclass(frozen=True)
class ModelConfig:
    """SAM2 model selection (``model.*``)."""

    config: str = _param('sam2.1_hiera_t',
                         'SAM2 config: sam2.1_hiera_t|s|b+|l or sam2_hiera_t|s|b+|l, or the '
                         'path of a SAM2 model .yaml (e.g. one trained with sap_train)')
    checkpoint: str = _param('auto', 'auto (the official file of model.config, downloaded '
                             'once into the cache: sap_weights path CONFIG) or the path to a '
                             'SAM2 checkpoint (.pt) matching model.config')
    allow_random_weights: bool = _param(
        False, 'Run with random weights unless model.checkpoint is a path (tests and demos only)')
    device: str = _param('auto', 'auto | cpu | cuda | cuda:N | mps')
    dtype: str = _param('auto', 'auto | float32 | float16 | bfloat16 (autocast on CUDA)')
    image_size: int = _param(1024, 'SAM2 input size in pixels (multiple of 32); patches are '
                             'resized to it', minimum=64)
    encode_batch: int = _param(8, 'Patches encoded per image-encoder batch', minimum=1)
    seed: int = _param(0, 'Seed of the random weights (model.allow_random_weights); nothing '
                       'else in sap_ros is random', minimum=0)
    compile_image_encoder: bool = _param(
        False, "torch.compile SAM2's image encoder (the first frames are slow while it compiles; "
        'what it saves is measured by make bench-gpu)')

    @property
    def random_weights(self) -> bool:
        """SAM2 runs untrained: allowed, and ``checkpoint`` is empty or ``auto`` (no download)."""
        return self.allow_random_weights and self.checkpoint.strip() in ('', 'auto')


@dataclass(frozen=True)
class PatchConfig:
    """Patch layout (``patches.*``)."""

    fov_deg: float = _param(90.0, 'Field of view of each square patch, degrees',
                            minimum=30.0, maximum=150.0)
    size_px: int = _param(1024, 'Patch side in pixels when sampled from the ERP frame', minimum=16)
    order: str = _param('zigzag', 'Patch path: zigzag (neighbours in a row, closes the ring) '
                        'or raster (ablation baseline)', choices=('zigzag', 'raster'))
    overlap: float = _param(0.5, 'Target overlap between neighbouring patches (fraction of the '
                            'FOV)', minimum=0.1, maximum=0.8)


@dataclass(frozen=True)
class MemoryConfig:
    """Memory bank and object lifecycle (``memory.*``)."""

    short_term: int = _param(6, 'Recent (non-conditioning) memories kept per object: its last K '
                             'unprompted steps (SAM2 attends to num_maskmem - 1 = 6)', minimum=1)
    long_term: int = _param(4, 'Conditioning memories kept per object: its latest prompted steps, '
                            'as SAM2 with max_cond_frames_in_attn = memory.long_term selects '
                            'them (older ones still serve as recent memories while recent)',
                            minimum=1)
    keep_creation_prompt: bool = _param(
        False, 'Departure from SAM2, unmeasured with real weights: past memory.long_term '
        'prompted steps keep the creation prompt among the conditioning memories (SAM2: the '
        'latest ones)')
    max_objects: int = _param(64, 'Most objects tracked at once (oldest missing ones retire '
                              'first)', minimum=1)
    promote_confident: bool = _param(
        False, 'Departure from SAM2, unmeasured with real weights: also store a step scoring '
        'memory.refresh_score or more as a conditioning memory (SAM2: prompted steps only)')
    refresh_score: float = _param(0.7, 'Score from which memory.promote_confident promotes a '
                                  'step', minimum=0.0, maximum=1.0)
    select_by_view_overlap: bool = _param(
        False, 'Departure from SAM2, unmeasured with real weights: give SAM2 the memories whose '
        'views overlap the patch most, at slots by rank (SAM2: the last steps, true distances)')
    retire_after_frames: int = _param(30, 'Frames an object may stay missing before it is '
                                      'retired', minimum=1)
    culling_margin_deg: float = _param(5.0, 'Dilation of an object extent when deciding which '
                                       'patches decode it, degrees, on top of how far the '
                                       'object moved in its last frame', minimum=0.0)


@dataclass(frozen=True)
class EngineConfig:
    """How the engine drives SAM2 beyond upstream's video predictor (``engine.*``).

    The departures from SAM2 are off; ``encode_all_views`` (off) only decides which patches are
    encoded, never what a decoded object's step sees.
    """

    mask_prompt: bool = _param(
        False, 'Departure from SAM2, unmeasured with real weights: on every tracking step give '
        'the decoder the mask re-projected from the patches already visited as a dense prompt')
    click_recovery: bool = _param(
        False, 'Departure from SAM2, unmeasured with real weights: when SAM2 loses an object '
        'that the re-projection puts in the patch, correct it with a click on the re-projected '
        'mask (stored as a corrected, conditioning step)')
    encode_all_views: bool = _param(
        False, 'Encode every patch every frame and run discovery in every patch on discovery '
        'frames. Off: encode only the patches that view culling '
        'decodes live objects in, that hold prompts, and a rotating discovery share that searches '
        'every patch once per discovery.every_n_frames frames (every patch at once on the first '
        'frame and while more than discovery.uncovered_fraction of the sphere is unlabelled)')
    frame_path: str = _param(
        'auto', 'Where the non-network part of a frame runs (sampling the patches, fusion, '
        'extents, records): torch keeps it on the model device with one download per frame, '
        'numpy runs it on the host with cv2; auto picks torch on CUDA and numpy elsewhere (the '
        'faster one on each, see sap_bench engine nonnetwork_ms)',
        choices=('auto', 'numpy', 'torch'))


@dataclass(frozen=True)
class DiscoveryConfig:
    """Automatic discovery of new objects (``discovery.*``)."""

    enabled: bool = _param(True, 'Discover new objects with grid-point prompts')
    every_n_frames: int = _param(
        4, 'Search every patch for new objects once per N frames (1 = every frame): a '
        'rotating 1/N of the patches each frame (all on every Nth frame with '
        'engine.encode_all_views)', minimum=1)
    uncovered_fraction: float = _param(
        0.5, 'Also run discovery when this fraction of the sphere is unlabelled',
        minimum=0.0, maximum=1.0)
    points_per_side: int = _param(
        0, 'Grid points per patch side; 0 = auto: the density of upstream per model input pixel, '
        'round(32 * model.image_size / 1024) (32 at 1024 px, as SAM2AutomaticMaskGenerator). '
        'Only points that no tracked object covers are prompted', minimum=0)
    points_per_batch: int = _param(64, 'Points per mask-decoder call (upstream: 64)', minimum=1)
    pred_iou_thresh: float = _param(0.8, 'Keep masks whose predicted IoU is above this '
                                    '(strictly; 0 = no filter; upstream: 0.8)',
                                    minimum=0.0, maximum=1.0)
    stability_thresh: float = _param(0.95, 'Keep masks whose stability score (IoU of the mask '
                                     'at logit +1 and -1) is at least this (0 = no filter; '
                                     'upstream: 0.95)', minimum=0.0, maximum=1.0)
    nms_iou: float = _param(0.7, 'IoU above which the lower-scoring of two candidates of a patch '
                            'is suppressed (box IoU with discovery.nms box; upstream: 0.7)',
                            minimum=0.0, maximum=1.0)
    multimask: str = _param(
        'all', 'Which of the 3 masks SAM2 gives per point are candidates: all (upstream), or best '
        '(departure, unmeasured with real weights: the highest predicted IoU only)',
        choices=('all', 'best'))
    decide_at: str = _param(
        'patch', 'Resolution of stability, boxes, area and overlap decisions: patch (upstream: '
        'logits upsampled to the patch) or decoder (departure, unmeasured with real weights: '
        'the 1/4-resolution logits; new objects are seeded from those masks)',
        choices=('patch', 'decoder'))
    nms: str = _param(
        'box', 'Duplicate suppression within a patch: box (upstream: greedy NMS on the boxes of '
        'the masks, as torchvision batched_nms) or mask (departure, unmeasured with real weights: '
        'greedy NMS on mask IoU at the decoder resolution)', choices=('box', 'mask'))
    min_area_fraction: float = _param(
        0.0, 'Drop masks smaller than this fraction of a patch (0 = off, as upstream; '
        'departure when > 0, unmeasured with real weights)', minimum=0.0, maximum=1.0)
    max_covered_fraction: float = _param(
        1.0, 'Drop masks with more than this fraction of their pixels on tracked objects (1 = '
        'off, as upstream; departure when < 1, unmeasured with real weights)',
        minimum=0.0, maximum=1.0)
    merge_iou: float = _param(0.5, 'Overlap on the sphere above which two objects are merged',
                              minimum=0.0, maximum=1.0)
    max_new_per_frame: int = _param(
        8, 'Most new objects created per frame, best predicted IoU first within a patch '
        '(departure: upstream keeps every candidate; bounds the SAM2 calls that seed new '
        'objects)', minimum=0)


@dataclass(frozen=True)
class OutputConfig:
    """Published output (``output.*``)."""

    scale: float = _param(0.5, 'Label map size as a fraction of the input ERP size',
                          minimum=0.05, maximum=1.0)
    embeddings: bool = _param(True, 'Publish the 256-d SAM2 object pointer per object')
    fusion: str = _param('least_distortion', 'Patch fusion: least_distortion (each pixel from the '
                         'least-distorted patch that labels it) or blend (density-weighted logit '
                         'blend; best with 1024 px patches on 4K input)',
                         choices=('least_distortion', 'blend'))


@dataclass(frozen=True)
class ClassifierConfig:
    """Semantic classes of the objects (``classifier.*``; README "Classes")."""

    kind: str = _param(
        'none', 'Object classes: none (class-agnostic, no cost) or sam2_head (a small head on '
        "SAM2's mask-pooled image features and object pointer, weights in classifier.head); "
        "each object's class is fused over all its sightings (views and frames)",
        choices=('none', 'sam2_head'))
    head: str = _param('', 'Path of the head file for classifier.kind sam2_head (written by '
                       'sap_train classify; its class names are the published ones)')
    switch_margin: float = _param(
        0.1, "Hysteresis of an object's published class: it changes only when another class's "
        "fused evidence exceeds the current one by this fraction of the object's total "
        'evidence', minimum=0.0, maximum=1.0)


_SECTIONS: Tuple[Tuple[str, type], ...] = (
    ('model', ModelConfig), ('patches', PatchConfig), ('memory', MemoryConfig),
    ('engine', EngineConfig), ('discovery', DiscoveryConfig), ('output', OutputConfig),
    ('classifier', ClassifierConfig))


@dataclass(frozen=True)
class ParamSpec:
    """One flat parameter: dotted name, default and description."""

    name: str
    default: Any
    description: str


@dataclass(frozen=True)
class PipelineConfig:
    """Everything ``SapPipeline`` needs; build it with :meth:`from_flat` to get validation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    @staticmethod
    def param_specs() -> Iterator[ParamSpec]:
        """Every parameter as ``section.field`` with its default and description."""
        for section, cls in _SECTIONS:
            for f in dataclasses.fields(cls):
                yield ParamSpec(f'{section}.{f.name}', f.default, f.metadata['description'])

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> 'PipelineConfig':
        """Build from ``{'model.checkpoint': ..., ...}``; unknown ``section.*`` names are errors.

        Keys outside the sections (e.g. the node's ``autostart``) are ignored.

        >>> PipelineConfig.from_flat({'patches.fov_deg': 75}).patches.fov_deg
        75.0
        >>> PipelineConfig.from_flat({'patches.order': 'spiral'})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sap_ros.errors.ConfigError: patches.order: must be one of (...), got 'spiral'
        """
        by_section: Dict[str, Dict[str, Any]] = {name: {} for name, _ in _SECTIONS}
        known = {spec.name for spec in cls.param_specs()}
        for name, value in values.items():
            section = name.split('.', 1)[0]
            if section not in by_section:
                continue
            if name not in known:
                raise ConfigError(name, f'unknown parameter (known: {sorted(known)})')
            by_section[section][name.split('.', 1)[1]] = value
        parts = {}
        for section, section_cls in _SECTIONS:
            kwargs = {}
            for f in dataclasses.fields(section_cls):
                if f.name in by_section[section]:
                    kwargs[f.name] = _coerce(f'{section}.{f.name}', f,
                                             by_section[section][f.name])
            parts[section] = section_cls(**kwargs)
        config = cls(**parts)
        config.validate()
        return config

    def to_flat(self) -> Dict[str, Any]:
        """Inverse of :meth:`from_flat`."""
        return {f'{section}.{k}': v for section, _ in _SECTIONS
                for k, v in dataclasses.asdict(getattr(self, section)).items()}

    def validate(self) -> None:
        """Check cross-field rules; raises :class:`ConfigError` naming the parameter."""
        if self.model.image_size % 32:
            raise ConfigError('model.image_size',
                              f'must be a multiple of 32, got {self.model.image_size}')
        if self.model.dtype not in ('auto', 'float32', 'float16', 'bfloat16'):
            raise ConfigError('model.dtype', f'must be auto|float32|float16|bfloat16, '
                              f'got {self.model.dtype!r}')
        device = self.model.device
        if not (device in ('auto', 'cpu', 'cuda', 'mps')
                or (device.startswith('cuda:') and device[5:].isdigit())):
            raise ConfigError('model.device', f'must be auto|cpu|cuda|cuda:N|mps, got {device!r}')
        if self.classifier.kind == 'sam2_head' and not self.classifier.head.strip():
            raise ConfigError('classifier.head', 'must name a head file when classifier.kind is '
                              'sam2_head (sap_train classify writes one)')


def parse_override(item: str) -> Tuple[str, Any]:
    """``'model.image_size=256'`` -> ``('model.image_size', 256)`` (value read as YAML).

    The ``--set NAME=VALUE`` of the command-line tools (``sap_replay``, ``sap_eval``, the
    benchmarks); a malformed item is a :class:`ConfigError`.
    """
    import yaml  # only the command-line tools parse overrides: the node never imports it
    name, sep, raw = item.partition('=')
    if not sep or not name.strip():
        raise ConfigError(item, 'expected --set name=value, e.g. --set model.image_size=256')
    value = yaml.safe_load(raw) if raw.strip() else ''
    return name.strip(), value


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    kind = type(f.default)
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError
            out: Any = value
        elif kind is int:
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            out = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise TypeError
            out = float(value)
        else:
            out = str(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f'expected {kind.__name__}, got {value!r}') from None
    meta = f.metadata
    if 'choices' in meta and out not in meta['choices']:
        raise ConfigError(name, f"must be one of {meta['choices']}, got {out!r}")
    if 'minimum' in meta and out < meta['minimum']:
        raise ConfigError(name, f"must be >= {meta['minimum']}, got {out!r}")
    if 'maximum' in meta and out > meta['maximum']:
        raise ConfigError(name, f"must be <= {meta['maximum']}, got {out!r}")
    return out
