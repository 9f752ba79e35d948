"""The pipeline's class stage: sightings from tensors the engine already has, fused per object.

Built only when a classifier is configured (``classifier.kind``, or one given to
:class:`~sap_ros.engine.pipeline.SapPipeline`); otherwise the pipeline has no class stage and
nothing of this runs. Per patch, after its objects are decoded (tracking, prompts, discovery),
:meth:`ClassStage.observe` builds one :class:`~sap_ros.engine.classify.Sightings` batch on the
model's device, with no second encoder pass and no host read:

* ``features``: the patch's image embedding (SAM2's lowest-resolution backbone level, the one its
  mask decoder reads, as encoded for this frame) pooled under each object's mask: the mask
  (logits > 0 at the decoder's resolution) area-averaged down to the feature grid, then the
  weighted mean of the feature vectors. ``(N, 0)`` for segmenters without features (the oracle);
* ``pointers``: SAM2's object pointers (``(N, 0)`` without);
* ``mask_logits``: the decoder-resolution logits the engine fuses;
* ``weights``: the sighting's score (predicted IoU x object score, as the records use) times the
  view's distortion weight at the mask: the mean over the mask of ``cos^3`` of the angle to the
  patch axis (the angle ``least_distortion`` fusion ranks views by; ``cos^3`` is the solid angle
  of a patch pixel relative to the centre one), 1 at the centre of the patch.

The classifier's probabilities go into :class:`~sap_ros.engine.class_fusion.ClassFusion`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from sap_ros.config import PipelineConfig
from sap_ros.engine.class_fusion import ClassFrame, ClassFusion, moved
from sap_ros.engine.class_head import Sam2HeadClassifier, load_head
from sap_ros.engine.classify import Classifier, Sightings
from sap_ros.engine.segmenter import SegmentOutput
from sap_ros.engine.types import ObjectRecord
from sap_ros.errors import InvalidInputError
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.torch_device import canonical_device, to_device

Decoded = Tuple[int, SegmentOutput]


def distortion_weights(layout: PatchLayout, size_px: int) -> np.ndarray:
    """``(size_px, size_px)`` float32 ``cos^3`` of the angle to the axis at each pixel centre.

    Every view of a layout has the same field of view, so one table serves them all (cached in
    the layout).
    """
    def build() -> np.ndarray:
        view = layout.views[0]
        centres = (np.arange(size_px) + 0.5) * (view.size_px / size_px) - 0.5
        u, v = np.meshgrid(centres, centres)
        cos = view.pixel_to_bearing(u, v) @ view.axis
        table = (np.clip(cos, 0.0, 1.0) ** 3).astype(np.float32)
        table.setflags(write=False)
        return table

    return layout.cached(('class_stage.distortion', int(size_px)), build)


def pool_under_masks(embedding: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` the mean of a ``(C, hf, wf)`` embedding under each of ``N`` masks.

    ``inside``: ``(N, h, w)`` float masks (1 inside) at the decoder's resolution, area-averaged
    down to the feature grid; each feature vector weighs the share of its cell the mask covers.
    The one pooling of sightings: the class stage calls it, and ``sap_train classify`` too.
    """
    grid = (int(embedding.shape[1]), int(embedding.shape[2]))
    cover = F.adaptive_avg_pool2d(inside[:, None], grid)[:, 0]
    sums = torch.einsum('nhw,chw->nc', cover, embedding.to(cover.dtype))
    return sums / cover.sum(dim=(1, 2)).clamp(min=1e-12)[:, None]


def segmenter_dims(segmenter: Any) -> Optional[Tuple[int, int]]:
    """``(feature_dim, pointer_dim)`` of a segmenter's sightings; None when it does not say."""
    dims = getattr(segmenter, 'feature_dims', None)
    return None if dims is None else (int(dims[0]), int(dims[1]))


class ClassStage:
    """Sightings -> classifier -> fusion, and the classes on the frame's outputs."""

    def __init__(self, classifier: Classifier, switch_margin: float, layout: PatchLayout,
                 device: Union[str, torch.device]) -> None:
        """Fusion on ``device`` (the model's) for ``classifier``'s classes."""
        self.classifier = classifier
        self.class_names: Tuple[str, ...] = tuple(classifier.class_names)
        self.device = canonical_device(device)
        self.layout = layout
        self.fusion = ClassFusion(len(self.class_names), switch_margin, self.device)
        self._distortion: Dict[int, torch.Tensor] = {}

    @classmethod
    def build(cls, config: PipelineConfig, segmenter: Any, classifier: Optional[Classifier],
              layout: PatchLayout, device: Union[str, torch.device]) -> Optional['ClassStage']:
        """The stage for ``config`` (None: no classifier, nothing to do).

        A given ``classifier`` is used whatever ``classifier.kind`` says; otherwise ``sam2_head``
        loads ``classifier.head`` (checked against the segmenter's feature sizes).
        """
        dims = segmenter_dims(segmenter)
        if classifier is None:
            if config.classifier.kind == 'none':
                return None
            classifier = load_head(config.classifier.head, device, dims)
        elif isinstance(classifier, Sam2HeadClassifier) and dims is not None:
            classifier.check_dims(dims[0], dims[1], 'the segmenter')
        return cls(classifier, config.classifier.switch_margin, layout, device)

    def reset(self) -> None:
        """Forget every object's evidence."""
        self.fusion.reset()

    # ------------------------------------------------------------------ per patch
    def observe(self, view: int, segmenter: Any, results: Sequence[Decoded],
                logits: Any) -> None:
        """Classify the objects decoded in ``view`` and add them to the fusion.

        ``logits``: their ``(N, h, w)`` decoder-resolution logits as the engine fuses them
        (device tensor or host array), in the order of ``results``.
        """
        if not results:
            return
        outs = [out for _, out in results]
        mask_logits = (moved(logits, self.device, torch.float32)
                       if isinstance(logits, torch.Tensor)
                       else to_device(np.asarray(logits), self.device, torch.float32))
        n, h, w = mask_logits.shape
        inside = (mask_logits > 0).float()
        area = inside.sum(dim=(1, 2)).clamp(min=1.0)
        distortion = (inside * self._distortion_table(h)).sum(dim=(1, 2)) / area
        scores = to_device([out.score for out in outs], self.device, torch.float32)
        sightings = Sightings(view, tuple(int(i) for i, _ in results),
                              self._pooled(segmenter, view, inside), self._pointers(outs),
                              mask_logits, scores * distortion)
        probabilities = self.classifier.classify(sightings)
        k = len(self.class_names)
        if tuple(probabilities.shape) != (n, k):
            raise InvalidInputError(f'the classifier gave {tuple(probabilities.shape)} '
                                    f'probabilities for {n} sightings of {k} classes')
        self.fusion.add(sightings.object_ids, probabilities, sightings.weights)

    def _distortion_table(self, size_px: int) -> torch.Tensor:
        table = self._distortion.get(size_px)
        if table is None:
            table = self._distortion[size_px] = to_device(
                np.array(distortion_weights(self.layout, size_px)), self.device, torch.float32)
        return table

    def _pooled(self, segmenter: Any, view: int, inside: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` mask-weighted mean of the patch's image embedding (``(N, 0)`` without)."""
        features_of = getattr(segmenter, 'patch_features', None)
        embedding = features_of(view) if callable(features_of) else None
        if embedding is None:
            return inside.new_zeros((inside.shape[0], 0))
        return pool_under_masks(moved(embedding, self.device, torch.float32), inside)

    def _pointers(self, outs: List[SegmentOutput]) -> torch.Tensor:
        """``(N, C_ptr)`` object pointers, from the device when the segmenter kept them there."""
        if all(isinstance(out.pointer, torch.Tensor) for out in outs):
            return moved(torch.stack([out.pointer.reshape(-1)  # type: ignore[union-attr]
                                      for out in outs]), self.device, torch.float32)
        if all(out.obj_ptr is not None for out in outs):
            return to_device(np.stack([np.asarray(out.obj_ptr).reshape(-1) for out in outs]),
                             self.device, torch.float32)
        return torch.zeros((len(outs), 0), dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------ per frame
    def merged(self, frame: Optional[ClassFrame], pixels: np.ndarray, keep: int,
               drop: int) -> None:
        """``drop`` merged into ``keep``: evidence summed; its ``pixels`` show ``keep``'s class."""
        self.fusion.merge(keep, drop)
        if frame is not None:
            frame.semantic[pixels] = frame.class_of(keep)
            frame.by_id.pop(drop, None)

    @staticmethod
    def cleared(frame: Optional[ClassFrame], pixels: np.ndarray) -> None:
        """Pixels taken off the label map (retired objects) have no class either."""
        if frame is not None:
            frame.semantic[pixels] = 0

    def forget(self, object_id: int) -> None:
        """A retired object's evidence goes."""
        self.fusion.forget(object_id)

    def label(self, records: Sequence[ObjectRecord], frame: Optional[ClassFrame]
              ) -> List[ObjectRecord]:
        """The records with their published class (id, name, score)."""
        by_id = frame.by_id if frame is not None else {}
        out = []
        for record in records:
            class_id, score = by_id.get(record.id, (0, 0.0))
            if not 0 <= class_id <= len(self.class_names):
                raise InvalidInputError(f'class id {class_id} of object {record.id} is outside '
                                        f'1..{len(self.class_names)}')
            out.append(dataclasses.replace(
                record, class_id=class_id,
                class_name=self.class_names[class_id - 1] if class_id else '',
                class_score=float(score) if class_id else 0.0))
        return out
