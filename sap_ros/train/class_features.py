"""The sightings of an export, as the runtime's class stage sees them: ``sap_train classify``.

For every exported patch and every object in it, the features the runtime pools when that
object is decoded there, computed with the runtime's own code (SAM2 frozen):

* the patch through :class:`~sap_ros.engine.segmenter.Sam2Segmenter` (same preprocessing, same
  image encoder, same ``patch_features`` level);
* the object as a new object's first step there: SAM2 with the object's mask as its
  conditioning output (``track(..., mask_prompt=mask, as_conditioning=True)``, the path
  :meth:`~sap_ros.engine.tracking.Tracker.create` takes for a mask); its object pointer and its
  decoder-resolution logits;
* the embedding pooled under ``logits > 0`` with
  :func:`~sap_ros.engine.class_stage.pool_under_masks`, and the sighting's fusion weight
  (score x the view's mean ``cos^3`` under the mask), as :class:`ClassStage` computes them.

Classes are not stored: each sighting keeps its video and palette index, so another
``--classes`` or ``--class-map`` reuses the cache. The cache (``features.pt`` / ``features_val.pt``
in the run folder) is reused when its key (model, checkpoint, seed, image size and the export's
``videos.json``) matches, and recomputed otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from sap_ros.config import ModelConfig
from sap_ros.engine.class_stage import distortion_weights, pool_under_masks
from sap_ros.engine.memory import MemoryContext
from sap_ros.errors import SapError
from sap_ros.train.data import META_FILE, load_meta, read_masks
from sap_ros.train.videos import _read_rgb

CACHE_VERSION = 1


@dataclass
class SightingSet:
    """``M`` sightings of an export (tensors on the CPU, float32 unless said).

    Attributes:
        features: ``(M, C)`` pooled image embedding.
        pointers: ``(M, C_ptr)`` object pointers.
        weights: ``(M,)`` fusion weights (score x distortion weight).
        video: ``(M,)`` int64 video index (in the export's ``videos.json`` order).
        obj: ``(M,)`` int64 palette index of the object in its video.
        patch: ``(M,)`` int64 patch index along the video's path.
        videos: the video names.
        patches_per_frame: patches of one panorama (the layout's view count).

    """

    features: torch.Tensor
    pointers: torch.Tensor
    weights: torch.Tensor
    video: torch.Tensor
    obj: torch.Tensor
    patch: torch.Tensor
    videos: List[str]
    patches_per_frame: int

    def __len__(self) -> int:
        """Number of sightings."""
        return int(self.video.shape[0])

    def to_dict(self) -> Dict[str, Any]:
        """For ``torch.save``."""
        return dict(vars(self))


def model_config(config: str, checkpoint: Optional[str], size_px: int, seed: int,
                 device: str) -> ModelConfig:
    """The runtime's model settings: ``checkpoint`` None means random weights of ``seed``."""
    return ModelConfig(config=config, checkpoint=checkpoint or '',
                       allow_random_weights=checkpoint is None, device=device,
                       image_size=size_px, seed=seed)


def cache_key(root: Path, config: ModelConfig) -> Dict[str, Any]:
    """What the features depend on: model settings and the export's ``videos.json``."""
    checkpoint = ''
    if config.checkpoint:
        path = Path(config.checkpoint).expanduser()
        stat = path.stat() if path.is_file() else None
        checkpoint = f'{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}' if stat else str(path)
    meta = hashlib.sha256((Path(root) / META_FILE).read_bytes()).hexdigest()
    return {'version': CACHE_VERSION, 'model': str(config.config), 'checkpoint': checkpoint,
            'seed': int(config.seed), 'image_size': int(config.image_size), 'export': meta}


def _segmenter(config: ModelConfig) -> Any:
    from sap_ros.engine.segmenter import Sam2Segmenter
    return Sam2Segmenter(config)


def extract(root: Path, config: ModelConfig, segmenter: Any = None,
            on_video: Optional[Callable[[int], None]] = None, chunk: int = 8) -> SightingSet:
    """Every (patch, object) sighting of the export at ``root``.

    ``segmenter``: one already built from ``config`` (tests); ``chunk``: patches encoded at once.
    """
    spec, records = load_meta(Path(root))
    if int(config.image_size) != spec.size_px:
        raise SapError(f'{root}: patches of {spec.size_px} px, but the model runs at '
                       f'{config.image_size} px (export with --size {config.image_size})')
    seg = segmenter if segmenter is not None else _segmenter(config)
    layout = spec.layout()
    feats: List[torch.Tensor] = []
    ptrs: List[torch.Tensor] = []
    rows: List[List[float]] = []
    for v, record in enumerate(records):
        files = sorted((Path(root) / 'JPEGImages' / record.name).glob('*.jpg'))
        masks = read_masks(Path(root), record.name)
        for start in range(0, len(files), chunk):
            images = np.stack([_read_rgb(f) for f in files[start:start + chunk]])
            seg.begin_frame(np.ascontiguousarray(images), np.zeros((1, 2, 3), np.uint8))
            for k in range(len(images)):
                t = start + k
                for obj in (int(i) for i in np.unique(masks[t]) if i != 0):
                    found = sighting(seg, k, masks[t] == obj, layout)
                    if found is not None:
                        feats.append(found[0])
                        ptrs.append(found[1])
                        rows.append([found[2], v, obj, t])
        if on_video is not None:
            on_video(v)
    if not rows:
        raise SapError(f'{root}: no object was found in any patch')
    table = torch.tensor(rows, dtype=torch.float64)
    return SightingSet(torch.stack(feats), torch.stack(ptrs), table[:, 0].float(),
                       table[:, 1].long(), table[:, 2].long(), table[:, 3].long(),
                       [r.name for r in records], len(layout))


def sighting(segmenter: Any, row: int, mask: np.ndarray, layout: Any
             ) -> Optional[tuple]:
    """``(pooled (C,), pointer (C_ptr,), weight)`` of a new object from ``mask`` in patch ``row``.

    None when SAM2 finds nothing under the mask (the runtime would not create the object).
    """
    with torch.no_grad():
        out = segmenter.track(row, MemoryContext(), mask_prompt=mask.astype(np.uint8),
                              as_conditioning=True)
        if not out.present:
            return None
        logits = torch.as_tensor(out.logits, dtype=torch.float32).cpu()
        inside = (logits > 0).float()[None]
        embedding = torch.as_tensor(segmenter.patch_features(row)).float().cpu()
        pooled = pool_under_masks(embedding, inside)[0]
        pointer = (out.pointer if isinstance(out.pointer, torch.Tensor)
                   else torch.as_tensor(np.asarray(out.obj_ptr)))
        table = torch.from_numpy(np.array(distortion_weights(layout, int(logits.shape[-1]))))
        distortion = float((inside[0] * table).sum() / inside[0].sum().clamp(min=1.0))
        return pooled, pointer.reshape(-1).float().cpu(), out.score * distortion


def load_or_extract(root: Path, cache: Path, config: ModelConfig,
                    on_video: Optional[Callable[[int], None]] = None,
                    log: Callable[[str], None] = print) -> SightingSet:
    """The export's sightings from ``cache`` when its key matches, else computed and cached."""
    key = cache_key(root, config)
    if cache.is_file():
        data = torch.load(cache, map_location='cpu', weights_only=True)
        if isinstance(data, dict) and data.get('key') == key:
            log(f'features: reusing {cache}')
            return SightingSet(**data['sightings'])
        log(f'features: {cache} was made for other settings; computing them again')
    sightings = extract(root, config, on_video=on_video)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'key': key, 'sightings': sightings.to_dict()}, cache)
    return sightings
