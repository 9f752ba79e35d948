"""Per-method evaluation of a replay: clip metrics plus the per-frame J curve for the plots.

:class:`MethodScores` feeds :class:`~sap_ros.eval.metrics.ClipEvaluator` and, beside it, keeps
the small per-frame overlap tables needed to draw J over time *with the clip's matching*: once
the evaluator has matched predicted ids to ground-truth objects (Hungarian over the clip), the
J of frame ``t`` is the mean, over the ground-truth objects present in ``t``, of the weighted IoU
with their matched prediction (0 when unmatched). The clip J additionally scores the frames where
a matched object is absent; the curve shows only what is visible.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from sap_ros.engine.types import ObjectRecord
from sap_ros.eval.matching import (
    compact_index,
    erp_pixel_weights,
    overlap_matrix,
    present_ids,
    weighted_label_areas,
)
from sap_ros.eval.metrics import ClipEvaluator, ClipMetrics, latency_stats, resize_nearest
from sap_ros.eval.semantic_metrics import SemanticEvaluator

#: The metric keys of every block of report.json (ours at the top level, each baseline).
METRIC_KEYS = ('frames', 'j', 'f', 'j_and_f', 'j_poles', 'id_switches', 'fragmentation',
               'seam_consistency', 'latency_ms_mean', 'latency_ms_p95')
#: Semantic keys of a block: None unless the method published class maps and the run had
#: semantic ground truth (``semantic``: frames, miou, class_iou, class_switches, tracks,
#: class_accuracy, tracks_scored, tracks_off_class).
SEMANTIC_KEYS = ('semantic_miou', 'class_accuracy', 'class_switches')


@dataclass(frozen=True)
class _FrameOverlap:
    gt_ids: np.ndarray
    pred_ids: np.ndarray
    inter: np.ndarray
    gt_areas: np.ndarray
    pred_areas: np.ndarray


@dataclass
class MethodScores:
    """Everything measured for one method over the replay.

    Args:
        gt_background: ground-truth "no object" value (None: dense annotation).
        gt_ignore: ground-truth value left out of every statistic (None: none).
        class_names: the semantic ground truth's classes (empty: no semantic scores).
        scored_classes: the class ids scored (None: all; ``sap_ros.eval.semantic_metrics``).

    """

    gt_background: Optional[int] = 0
    gt_ignore: Optional[int] = 255
    latencies_ms: List[float] = field(default_factory=list)
    object_counts: List[int] = field(default_factory=list)
    class_names: Tuple[str, ...] = ()
    scored_classes: Optional[Tuple[int, ...]] = None
    _semantic: Optional[SemanticEvaluator] = field(default=None, init=False, repr=False)
    _evaluator: Optional[ClipEvaluator] = field(default=None, init=False, repr=False)
    _overlaps: List[_FrameOverlap] = field(default_factory=list, init=False, repr=False)
    _metrics: Optional[ClipMetrics] = field(default=None, init=False, repr=False)

    def add(self, labels: np.ndarray, latency_ms: Optional[float],
            gt: Optional[np.ndarray]) -> None:
        """Record one frame (``gt`` None: latency and object count only).

        The object count is the number of ids in ``labels`` (0 excluded), for every method.
        """
        if latency_ms is not None:
            self.latencies_ms.append(float(latency_ms))
        counts = np.bincount(np.asarray(labels).ravel())
        self.object_counts.append(int(np.count_nonzero(counts[1:])))
        if gt is None:
            return
        if self._evaluator is None:
            self._evaluator = ClipEvaluator(self.gt_background, self.gt_ignore)
        self._evaluator.add_frame(labels, gt, latency_ms)
        self._overlaps.append(self._overlap(labels, gt))

    def add_semantic(self, semantic: np.ndarray, gt_semantic: np.ndarray,
                     objects: Sequence[ObjectRecord] = (),
                     ignore: Optional[np.ndarray] = None,
                     labels: Optional[np.ndarray] = None) -> None:
        """Score one frame's class map and published classes (needs ``class_names``).

        ``labels``, the method's instance label map, also scores its tracks' classes.
        """
        if self._semantic is None:
            self._semantic = SemanticEvaluator(self.class_names, self.scored_classes)
        self._semantic.add_frame(semantic, gt_semantic, objects, ignore, labels)

    def _overlap(self, labels: np.ndarray, gt: np.ndarray) -> _FrameOverlap:
        pred = resize_nearest(np.asarray(labels), gt.shape)
        ignore = None if self.gt_ignore is None else gt == self.gt_ignore
        weights = erp_pixel_weights(gt.shape[0], gt.shape[1], ignore)
        gt_ids = present_ids(weighted_label_areas(gt, weights),
                             (self.gt_background, self.gt_ignore))
        pred_ids = present_ids(weighted_label_areas(pred, weights), (0,))
        full = overlap_matrix(compact_index(gt, gt_ids), compact_index(pred, pred_ids), weights,
                              len(gt_ids), len(pred_ids))
        return _FrameOverlap(gt_ids, pred_ids, full[:len(gt_ids), :len(pred_ids)],
                             full[:len(gt_ids)].sum(axis=1), full[:, :len(pred_ids)].sum(axis=0))

    @property
    def has_ground_truth(self) -> bool:
        """Whether any frame came with ground truth."""
        return self._evaluator is not None

    def metrics(self) -> Optional[ClipMetrics]:
        """Clip metrics (computed once); None without ground truth."""
        if self._metrics is None and self._evaluator is not None:
            self._metrics = self._evaluator.result()
        return self._metrics

    def block(self) -> dict:
        """The report.json block: every key of :data:`METRIC_KEYS` (None when undefined)."""
        metrics = self.metrics()
        if metrics is None:
            out: dict = {key: None for key in METRIC_KEYS}
            out.update(frames=len(self.object_counts), id_switches=None,
                       **latency_stats(self.latencies_ms))
        else:
            out = metrics.to_dict()
            out.update(latency_stats(self.latencies_ms))  # same values, also for no-GT frames
        semantic = None if self._semantic is None else self._semantic.result().to_dict()
        out['semantic_miou'] = None if semantic is None else semantic['miou']
        out['class_switches'] = None if semantic is None else semantic['class_switches']
        out['class_accuracy'] = None if semantic is None else semantic['class_accuracy']
        out['semantic'] = semantic
        out['objects_per_frame_mean'] = (float(np.mean(self.object_counts))
                                         if self.object_counts else None)
        return out

    def j_per_frame(self) -> List[Optional[float]]:
        """J of every frame with the clip's matching (None where no object is present)."""
        metrics = self.metrics()
        if metrics is None:
            return []
        match = {o.gt_id: o.pred_id for o in metrics.objects}
        out: List[Optional[float]] = []
        for frame in self._overlaps:
            scores = []
            for g, gt_id in enumerate(frame.gt_ids.tolist()):
                pred_id = match.get(gt_id)
                p = np.flatnonzero(frame.pred_ids == pred_id) if pred_id is not None else None
                if p is None or len(p) == 0:
                    scores.append(0.0)
                    continue
                inter = frame.inter[g, p[0]]
                union = frame.gt_areas[g] + frame.pred_areas[p[0]] - inter
                scores.append(float(inter / union) if union > 0 else 1.0)
            out.append(float(np.mean(scores)) if scores else None)
        return out
