"""What ``sap_replay`` runs on every frame: our pipeline and the baselines beside it.

* ``ours``: :class:`~sap_ros.engine.pipeline.SapPipeline` with SAM2 (``model.*``).
* ``raster``: the same pipeline with ``patches.order=raster`` (ablation of the zigzag path).
* ``oracle``: the same pipeline with the geometric oracle instead of SAM2: ground-truth masks
  cut into each patch at SAM2's decoder resolution, with random local ids, so the score measures
  everything but the network (projection, association, fusion, seam, poles, ids). The oracle
  cuts its patches at ``min(patches.size_px, model.image_size)`` pixels: what SAM2 really sees.
* ``naive``: the *upper bound* of SAM2 run on the whole ERP squeezed to ``model.image_size``
  squared (:func:`~sap_ros.eval.oracle.naive_upper_bound`): ground truth through that
  resolution with perfect identities. Not a model run; a real naive run can only score lower.
* ``sam2-erp``: that real naive run, SAM2 with its memory on the whole squeezed ERP
  (:class:`~sap_ros.eval.erp_baseline.Sam2ErpBaseline`, same ``model.*``, ``memory.*`` and
  ``discovery.*`` as ours).

Every method turns ``(rgb, gt)`` into a :class:`MethodOutput` whose labels follow the evaluation
convention (0 = no object); with dense ground truth (no background value), the naive bound shifts
its ground-truth ids by one so that segment 0 stays an object. With semantic ground truth
(:mod:`sap_ros.eval.semantic_gt`), the oracle also gets the oracle classifier
(:class:`~sap_ros.eval.oracle_classifier.OracleClassifier`): the upper bound of class fusion.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import enum
import time
from typing import Any, Iterable, Iterator, List, Optional, Protocol, Sequence, Tuple
import warnings

import numpy as np

from sap_ros.config import PipelineConfig
from sap_ros.engine.interface import Engine
from sap_ros.engine.pipeline import SapPipeline
from sap_ros.engine.segmenter import Segmenter
from sap_ros.engine.types import ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.eval.bags import ImageFrame, MessageStream
from sap_ros.eval.erp_baseline import Sam2ErpBaseline
from sap_ros.eval.oracle import naive_upper_bound
from sap_ros.eval.oracle_classifier import OracleClassifier
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.eval.replay_gt import GroundTruth, GtFrame
from sap_ros.eval.replay_timeline import MethodScores
from sap_ros.eval.semantic_gt import SemanticTruth
from sap_ros.eval.semantic_metrics import ClassAligner
from sap_ros.sphere.layout import PatchLayout


class MethodName(str, enum.Enum):
    """The methods ``sap_replay`` can run (``ours`` plus the ``--baseline`` choices)."""

    OURS = 'ours'
    RASTER = 'raster'
    ORACLE = 'oracle'
    NAIVE = 'naive'
    SAM2_ERP = 'sam2-erp'

    @property
    def needs_ground_truth(self) -> bool:
        """The oracle and the naive upper bound are built from the ground truth."""
        return self in (MethodName.ORACLE, MethodName.NAIVE)

    @property
    def runs_sam2(self) -> bool:
        """Whether the method loads a SAM2 model (``model.*``)."""
        return self in (MethodName.OURS, MethodName.RASTER, MethodName.SAM2_ERP)


BASELINES = (MethodName.NAIVE, MethodName.SAM2_ERP, MethodName.RASTER, MethodName.ORACLE)

#: One line per method for the report.
DESCRIPTIONS = {
    MethodName.OURS: 'SapPipeline with SAM2 on zigzag perspective patches',
    MethodName.RASTER: 'the same pipeline with patches.order=raster',
    MethodName.ORACLE: 'the same pipeline with the geometric oracle in place of SAM2 '
                       '(ground-truth masks at decoder resolution): everything but the network',
    MethodName.NAIVE: 'UPPER BOUND of SAM2 on the whole ERP resized to image_size squared '
                      '(ground truth through that resolution, perfect ids); not a model run',
    MethodName.SAM2_ERP: 'SAM2 with its memory on the whole ERP resized to image_size squared '
                         '(the naive approach, same model, memory and discovery parameters)',
}


@dataclass(frozen=True)
class Variant:
    """Our pipeline with some parameters changed (``sap_replay --variant NAME:key=value,...``).

    Attributes:
        name: its column in the report (letters, digits, ``_`` and ``-``; not a method name).
        overrides: dotted parameter name -> value, applied on top of the run's configuration.

    """

    name: str
    overrides: Tuple[Tuple[str, Any], ...]

    def describe(self) -> str:
        """``NAME: key=value, ...`` for the report."""
        return f'{self.name}: ' + ', '.join(f'{k}={v!r}' for k, v in self.overrides)

    def apply(self, config: PipelineConfig) -> PipelineConfig:
        """``config`` with the overrides (validated: ConfigError names a bad parameter)."""
        return PipelineConfig.from_flat({**config.to_flat(), **dict(self.overrides)})


@dataclass
class MethodOutput:
    """One method's answer for one frame.

    Attributes:
        labels: ``(h, w)`` uint16 ERP label map, 0 = no object.
        objects: object pointers (empty for the naive upper bound).
        latency_ms: wall time of the step, or None when the method is not a model run.
        semantic: ``(h, w)`` uint16 class map (``FrameResult.semantic``), None when the
            method publishes no classes.

    """

    labels: np.ndarray
    objects: List[ObjectRecord]
    latency_ms: Optional[float]
    semantic: Optional[np.ndarray] = None


class Method(Protocol):
    """A method run frame by frame."""

    name: MethodName
    description: str

    def step(self, rgb: np.ndarray, gt: Optional[np.ndarray],
             semantic_gt: Optional[np.ndarray] = None) -> MethodOutput:
        """Segment one ERP frame (``gt``/``semantic_gt``: its ground truth, or None)."""

    def close(self) -> None:
        """Free the model."""


class PipelineMethod:
    """``ours``, ``raster``, ``oracle`` or ``sam2-erp``: an engine stepped on every frame.

    ``sam2-erp`` steps :class:`~sap_ros.eval.erp_baseline.Sam2ErpBaseline`, the others a
    :class:`SapPipeline`. A ``segmenter`` given by the caller (a SAM2 model kept loaded across
    clips by ``sap_eval``) is used instead of loading one, and :meth:`close` leaves it open.
    """

    def __init__(self, name: MethodName, config: PipelineConfig,
                 gt_background: Optional[int] = 0, gt_ignore: Optional[int] = 255,
                 segmenter: Optional[Segmenter] = None,
                 semantic: Optional[SemanticTruth] = None) -> None:
        """Build the engine (loads SAM2 unless ``name`` is the oracle or ``segmenter`` given).

        The oracle takes ``gt_ignore`` pixels as unknown, as the metrics do; given ``semantic``
        ground truth, it also classifies with the oracle classifier (its classes and unknown
        value).
        """
        self.name = name
        self._oracle: Optional[OracleSegmenter] = None
        self._classifier: Optional[OracleClassifier] = None
        self._owns_segmenter = segmenter is None or name == MethodName.ORACLE
        self.pipeline: Engine
        if name == MethodName.RASTER:
            config = replace(config, patches=replace(config.patches, order='raster'))
        if name == MethodName.ORACLE:
            layout = PatchLayout.from_config(config.patches)
            size_px = min(config.patches.size_px, config.model.image_size)
            self._oracle = OracleSegmenter(layout, gt_background, size_px=size_px,
                                           ignore=gt_ignore)
            if semantic is None:
                self.pipeline = SapPipeline(config, segmenter=self._oracle)
            else:
                self._classifier = OracleClassifier(layout, size_px, semantic.class_names,
                                                    ignore=semantic.ignore)
                self.pipeline = SapPipeline(config, segmenter=self._oracle,
                                            classifier=self._classifier)
        elif name == MethodName.SAM2_ERP:
            self.pipeline = Sam2ErpBaseline(config, segmenter=segmenter)
        elif name.runs_sam2:
            self.pipeline = SapPipeline(config, segmenter=segmenter)
        else:
            raise ValueError(f'{name.value} is not a pipeline method')
        self.config = config
        self.description = self.pipeline.description

    def step(self, rgb: np.ndarray, gt: Optional[np.ndarray],
             semantic_gt: Optional[np.ndarray] = None) -> MethodOutput:
        """One pipeline step (the oracle first receives the frame's ground truth)."""
        t_start = time.perf_counter()
        if self._oracle is not None:
            if gt is None:
                raise InvalidInputError('the oracle baseline needs ground truth for every frame')
            self._oracle.set_ground_truth(gt)
        if self._classifier is not None:
            if semantic_gt is None:
                raise InvalidInputError('the oracle classifier needs semantic ground truth for '
                                        'every frame')
            self._classifier.set_ground_truth(semantic_gt)
        result = self.pipeline.step(rgb)
        return MethodOutput(result.labels, result.objects,
                            (time.perf_counter() - t_start) * 1000.0,
                            getattr(result, 'semantic', None))

    @property
    def class_names(self) -> Tuple[str, ...]:
        """The engine's class names (its class ids index them); () without a classifier."""
        return tuple(self.pipeline.class_names)

    def close(self) -> None:
        """Free the model (unless the caller lent it)."""
        if self._owns_segmenter:
            self.pipeline.close()


class NaiveUpperBound:
    """The naive approach's best case, computed from the ground truth (see module docstring)."""

    def __init__(self, config: PipelineConfig, gt_background: Optional[int] = 0,
                 gt_ignore: Optional[int] = 255) -> None:
        """Square size = ``model.image_size`` (what SAM2 resizes any input to)."""
        self.name = MethodName.NAIVE
        self.square_px = config.model.image_size
        self.gt_background = gt_background
        self.gt_ignore = gt_ignore
        self.description = (f'upper bound: ground truth through {self.square_px}x'
                            f'{self.square_px} (decoder {self.square_px // 4} px), no model run')

    def step(self, rgb: np.ndarray, gt: Optional[np.ndarray],
             semantic_gt: Optional[np.ndarray] = None) -> MethodOutput:
        """Ground truth -> what a perfect SAM2 on the squeezed ERP could give back."""
        if gt is None:
            raise InvalidInputError('the naive upper bound needs ground truth for every frame')
        labels = naive_upper_bound(np.asarray(gt, dtype=np.uint16), self.square_px,
                                   self.gt_background).astype(np.int64)
        if self.gt_ignore is not None:
            ignored = labels == self.gt_ignore
        if self.gt_background is None:
            labels += 1  # dense ground truth: segment 0 is an object, 0 means "no object"
        if self.gt_ignore is not None:
            labels[ignored] = 0
        if labels.max(initial=0) > np.iinfo(np.uint16).max:
            raise InvalidInputError(f'ground-truth id {int(labels.max()) - 1} leaves no room '
                                    'for the id shift of dense annotations (uint16)')
        return MethodOutput(labels.astype(np.uint16), [], None)

    def close(self) -> None:
        """Nothing to free."""


def build_method(name: MethodName, config: PipelineConfig, gt_background: Optional[int] = 0,
                 gt_ignore: Optional[int] = 255, segmenter: Optional[Segmenter] = None,
                 variant: Optional[Variant] = None,
                 semantic: Optional[SemanticTruth] = None) -> Method:
    """The runner of ``name`` (SAM2 methods load the model here: CheckpointError on failure).

    ``segmenter``: a loaded SAM2 segmenter for the SAM2 methods to use instead (kept open).
    A ``variant`` runs ``ours`` with its overrides applied to ``config``. ``semantic`` ground
    truth gives the oracle the oracle classifier.
    """
    if variant is not None:
        return PipelineMethod(MethodName.OURS, variant.apply(config), gt_background, gt_ignore,
                              segmenter)
    if name == MethodName.NAIVE:
        return NaiveUpperBound(config, gt_background, gt_ignore)
    return PipelineMethod(name, config, gt_background, gt_ignore, segmenter,
                          semantic if name == MethodName.ORACLE else None)


def _aligner(method: Method, gt_names: Sequence[str]) -> ClassAligner:
    """Class ids of ``method`` -> ground-truth ids by name, warning about unknown names."""
    names = tuple(getattr(method, 'class_names', ())) or tuple(gt_names)
    aligner = ClassAligner(names, gt_names)
    if aligner.missing:
        warnings.warn(f'{method.name.value}: classes {", ".join(aligner.missing)} are not in '
                      "the ground truth's class names: scored as no class", stacklevel=2)
    return aligner


@dataclass
class FrameStep:
    """What every method gave for one frame (:func:`step_methods`)."""

    index: int
    frame: ImageFrame
    gt: Optional[GtFrame]
    outputs: List[MethodOutput]
    semantic_gt: Optional[np.ndarray] = None


def step_methods(frames: Iterable[ImageFrame], gt_source: Optional[GroundTruth],
                 methods: Sequence[Method], scores: Sequence[MethodScores], n_frames: int,
                 semantic: Optional[SemanticTruth] = None) -> Iterator[FrameStep]:
    """Every method on each of the first ``n_frames`` frames, scored against the ground truth.

    The loop ``sap_replay`` and ``sap_eval`` share: ground truth matched in order, each method's
    output added to its :class:`MethodScores` (its class map too, when the method publishes one
    and ``semantic`` ground truth is given); the caller adds what it keeps (bags, overlays,
    object sizes).
    """
    gt_iter = iter(gt_source) if gt_source is not None else None
    aligners = ([_aligner(m, semantic.class_names) for m in methods] if semantic is not None
                else [])
    for index, frame in zip(range(n_frames), frames):
        gt = next(gt_iter) if gt_iter is not None else None
        labels = None if gt is None else gt.labels
        semantic_gt, ignore = None, None
        if semantic is not None:
            semantic_gt = semantic.next_map(labels)
            ignore = semantic.ignore_mask(semantic_gt)
        outputs = []
        for i, (method, score) in enumerate(zip(methods, scores)):
            out = method.step(frame.rgb, labels, semantic_gt)
            score.add(out.labels, out.latency_ms, labels)
            if semantic_gt is not None and out.semantic is not None:
                score.add_semantic(aligners[i].map_ids(out.semantic), semantic_gt,
                                   aligners[i].map_objects(out.objects), ignore, out.labels)
            outputs.append(out)
        yield FrameStep(index, frame, gt, outputs, semantic_gt)


def close_all(methods: Sequence[Method], frames: MessageStream,
              gt_source: Optional[GroundTruth],
              semantic: Optional[SemanticTruth] = None) -> None:
    """Free the methods' models and close the input streams."""
    for method in methods:
        method.close()
    frames.close()
    if gt_source is not None:
        gt_source.close()
    if semantic is not None:
        semantic.close()
