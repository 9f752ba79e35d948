"""Patch label maps -> one ERP label map, and consistent ids for per-patch local labels.

Two fusion rules (ARCHITECTURE §6), both evaluated on the sphere through the per-view pixel lists
of :class:`~sap_ros.sphere.sampler.PatchToErpTables`, so the 0/360 seam needs no special case:

* ``least_distortion`` (default): each ERP pixel takes its label from the patch that sees it
  closest to its axis among the patches that label it with an object; a patch that says "no
  object" defers to the next one. Cheap, and exactly incremental.
* ``blend``: every patch that sees a pixel votes with its (clipped) logit for every object,
  weighted by how many decoder pixels per steradian it spends there (``1 / cos^3`` of the angle
  to its axis: gnomonic patches are sharper away from the axis) times a window that falls
  smoothly to 0 at its border (where objects are cut off and where seams between patches would
  show); logits are sampled bicubically (less blur than bilinear: small objects keep their size).
  A pixel takes the object with the highest weighted mean, if that mean is > 0; a patch that sees
  the pixel but does not report an object counts as ``-logit_clip`` for it.

Which is better, measured with the geometric oracle (J, sphere-area-weighted):

* 4096 x 2048 ERP, 1024 px patches (``sap_bench geometry``), the two bench frames: least
  distortion 0.988 / 0.985, unweighted bilinear blend 0.984 / 0.983, blend weighted towards the
  axis (``cos^2``) 0.982 / 0.983, this blend 0.992 / 0.991 (small objects 0.973 / 0.964 ->
  0.979 / 0.978); three other scenes 0.988 / 0.974 / 0.981 -> 0.990 / 0.984 / 0.987. Small
  objects (~5 decoder pixels across) shrink in every patch (a blurred convex blob crosses 0
  inside its outline); least distortion hides that by taking the union of the patches, which
  also grows large objects. The blend is less biased but needs sound ids: one object split
  into two ids by association loses up to half its area (the union keeps it).
* Fused at 2048 x 1024 and scored at 4096 x 2048: both 0.962 / 0.955.
* Objects of 1-3 decoder pixels (512 or 256 px patches on 1024 or 2048 px ERPs): least
  distortion is better (0.93 vs 0.90 at 1024 / 512): a patch where such an object wins no
  decoder pixel has no id for it and votes against it.

So ``least_distortion`` stays the default; the blend is for 1024 px patches on 4K input.

Association: when each patch names its segments with local ids (a segmenter without memory, the
geometric oracle, discovery), segments of two overlapping patches are the same object when their
IoU *inside the region both patches see* is high; a union-find over those links gives global ids.
"""
from __future__ import annotations

from enum import Enum
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

from sap_ros.errors import InvalidInputError
from sap_ros.sphere.geometry import erp_row_weights
from sap_ros.sphere.layout import PatchLayout
from sap_ros.sphere.sampler import PatchToErpTables, patch_to_erp_tables

BLEND_BORDER_FRACTION = 0.1   # blend window: rises from 0 to 1 over this fraction of the side
BLEND_MIN_WEIGHT = 1e-6       # a pixel seen only at some patch's very border still gets a vote
DEFAULT_LOGIT_CLIP = 8.0      # SAM2 logits saturate far from boundaries (sigmoid(8) = 0.9997)
_CUBIC_SUPPORT_PX = 2         # bicubic reads two low-res pixels on each side of a point
_MAX_CHUNKS = 8               # per-object evidence chunks kept before they are merged


class FusionMode(Enum):
    """How the patches that see an ERP pixel decide its label (see the module docstring)."""

    LEAST_DISTORTION = 'least_distortion'
    BLEND = 'blend'


def _sample_maps(maps: np.ndarray, coords: np.ndarray, interpolation: int) -> np.ndarray:
    """Sample ``(K, h, w)`` float32 maps at ``(M, 2)`` x, y pixel coordinates -> ``(K, M)``."""
    m = len(coords)
    cols = 4096
    rows = max(1, -(-m // cols))
    padded = np.zeros((rows * cols, 2), dtype=np.float32)
    padded[:m] = coords
    map_x = padded[:, 0].reshape(rows, cols)
    map_y = padded[:, 1].reshape(rows, cols)
    out = np.empty((len(maps), m), dtype=np.float32)
    for k, logit_map in enumerate(maps):
        sampled = cv2.remap(np.ascontiguousarray(logit_map, dtype=np.float32), map_x, map_y,
                            interpolation, borderMode=cv2.BORDER_REPLICATE)
        out[k] = sampled.reshape(-1)[:m]
    return out


def sample_bilinear(maps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sample ``(K, h, w)`` float32 maps at ``(M, 2)`` x, y pixel coordinates -> ``(K, M)``.

    Bilinear, edges replicated (cv2.remap on the points laid out as a 2-D image, since cv2
    limits map sides to 32767).
    """
    return _sample_maps(maps, coords, cv2.INTER_LINEAR)


def blend_weights(tables: PatchToErpTables, view_index: int) -> np.ndarray:
    """Vote weight of a view at each of its ERP pixels, ``(M,)`` float32 (blend mode).

    ``window / cos^3(angle)``: a gnomonic pixel at ``angle`` from the axis covers ``cos^3``
    times the solid angle of the central one; the window is a smoothstep from 0 at the patch
    border to 1 at ``BLEND_BORDER_FRACTION`` of the side inside it.
    """
    uv = tables.patch_uv[view_index]
    edge = np.minimum(np.minimum(uv[:, 0], 1.0 - uv[:, 0]), np.minimum(uv[:, 1], 1.0 - uv[:, 1]))
    ramp = np.clip(edge / np.float32(BLEND_BORDER_FRACTION), 0.0, 1.0)
    window = ramp * ramp * (3.0 - 2.0 * ramp)
    cos = np.cos(np.radians(tables.angle_deg[view_index]))
    return (window / (cos * cos * cos) + np.float32(BLEND_MIN_WEIGHT)).astype(np.float32)


def checked_fusion_settings(mode: Union[FusionMode, str], logit_clip: float
                            ) -> Tuple[FusionMode, float]:
    """A canvas's fusion mode and logit clip, validated (host and device canvases alike)."""
    try:
        checked = FusionMode(mode)
    except ValueError:
        raise InvalidInputError(f'fusion mode must be one of '
                                f'{[m.value for m in FusionMode]}, got {mode!r}') from None
    if not (np.isfinite(logit_clip) and logit_clip > 0.0):
        raise InvalidInputError(f'logit_clip must be finite and > 0, got {logit_clip}')
    return checked, float(logit_clip)


class LabelCanvas:
    """An ERP label map painted patch by patch.

    Args:
        layout: the patch layout.
        erp_hw: (H, W) of the canvas (any 2:1 size; the published map or a low-res work grid).
        mode: :class:`FusionMode` (or its value): ``least_distortion`` (default) or ``blend``.
        logit_clip: blend mode: logits are clipped to ``[-logit_clip, logit_clip]`` before they
            are averaged (one confident view cannot outvote all others; the scale of the
            segmenter's logits: 8 for SAM2, 1 for the geometric oracle's soft masks). Evidence
            is only stored where a clipped logit is above ``-logit_clip``, so memory grows with
            the objects' areas (and a small margin), not with objects x canvas.

    :attr:`labels` may be read between paints (blend mode recomputes it from the evidence when
    something was painted since the last read).

    """

    def __init__(self, layout: PatchLayout, erp_hw: Tuple[int, int],
                 mode: Union[FusionMode, str] = FusionMode.LEAST_DISTORTION,
                 logit_clip: float = DEFAULT_LOGIT_CLIP) -> None:
        """Build (or fetch from the layout's cache) the tables; start empty."""
        self.mode, self.logit_clip = checked_fusion_settings(mode, logit_clip)
        self.layout = layout
        self.erp_hw = (int(erp_hw[0]), int(erp_hw[1]))
        self.tables = patch_to_erp_tables(layout, self.erp_hw)
        n_pix = self.erp_hw[0] * self.erp_hw[1]
        self._labels = np.zeros(n_pix, dtype=np.uint16)
        blend = self.mode is FusionMode.BLEND
        # least_distortion: angle of the view each label came from; blend: summed view weights.
        # (the array a mode does not use is empty)
        self._angle = np.full(0 if blend else n_pix, np.inf, dtype=np.float32)
        self._weight = np.zeros(n_pix if blend else 0, dtype=np.float32)
        # blend: per object id, chunks of (ERP index, weight x (clipped logit + clip)) > 0.
        self._evidence: Dict[int, List[Tuple[np.ndarray, np.ndarray]]] = {}
        self._scratch: Optional[np.ndarray] = None
        self._stale = False

    def clear(self) -> None:
        """Forget everything painted."""
        self._labels[:] = 0
        if self.mode is FusionMode.BLEND:
            self._weight[:] = 0.0
            self._evidence.clear()
            self._stale = False
        else:
            self._angle[:] = np.inf

    # ------------------------------------------------------------------ painting
    def _paint_values(self, view_index: int, lab: np.ndarray) -> None:
        has = np.nonzero(lab)[0]
        erp_idx = self.tables.erp_index[view_index][has]
        angle = self.tables.angle_deg[view_index][has]
        better = angle < self._angle[erp_idx]
        erp_idx = erp_idx[better]
        self._labels[erp_idx] = lab[has][better]
        self._angle[erp_idx] = angle[better]

    def _add_evidence(self, object_id: int, erp_idx: np.ndarray, values: np.ndarray) -> None:
        chunks = self._evidence.setdefault(object_id, [])
        chunks.append((erp_idx.astype(np.int32, copy=False), values.astype(np.float32)))
        if len(chunks) > _MAX_CHUNKS:
            self._evidence[object_id] = [self._merged(chunks)]

    def _scratch_buffer(self) -> np.ndarray:
        if self._scratch is None:
            self._scratch = np.zeros(len(self._labels), dtype=np.float32)
        return self._scratch

    def _merged(self, chunks: List[Tuple[np.ndarray, np.ndarray]]
                ) -> Tuple[np.ndarray, np.ndarray]:
        """One chunk with unique indices (values summed) for several."""
        scratch = self._scratch_buffer()
        for idx, val in chunks:
            scratch[idx] += val  # indices are unique within a chunk
        every = np.concatenate([idx for idx, _ in chunks])
        uniq = (np.flatnonzero(scratch) if 4 * len(every) > len(scratch)
                else np.unique(every)).astype(np.int32)
        values = scratch[uniq]
        scratch[uniq] = 0.0
        return uniq, values

    def paint(self, view_index: int, patch_labels: np.ndarray) -> None:
        """Paint one patch's ``(S, S)`` uint16 labels (0 = no object), nearest patch pixel.

        In blend mode a label votes ``+logit_clip`` for its object where it is, so a pixel takes
        the object most of the (weighted) views that see it agree on.
        """
        size = patch_labels.shape[0]
        if patch_labels.ndim != 2 or patch_labels.shape[1] != size:
            raise InvalidInputError(f'patch labels must be square, got shape {patch_labels.shape}')
        index = self.tables.nearest_index(view_index, size)
        lab = patch_labels.reshape(-1)[index]
        if self.mode is FusionMode.LEAST_DISTORTION:
            self._paint_values(view_index, lab)
            return
        erp_index = self.tables.erp_index[view_index]
        weights = blend_weights(self.tables, view_index)
        self._weight[erp_index] += weights
        has = np.nonzero(lab)[0]
        order = has[np.argsort(lab[has], kind='stable')]
        ids, starts = np.unique(lab[order], return_index=True)
        for object_id, part in zip(ids, np.split(order, starts[1:])):
            self._add_evidence(int(object_id), erp_index[part],
                               weights[part] * np.float32(2.0 * self.logit_clip))
        self._stale = True

    def paint_logits(self, view_index: int, logits: np.ndarray, ids: np.ndarray) -> None:
        """Paint from per-object low-res logits ``(K, h, w)`` (> 0 = inside) with ``ids`` (K,).

        least_distortion: each canvas pixel samples every object's logits bilinearly at its
        exact position in the patch (as SAM2 upsamples its low-res logits), takes the object
        with the highest logit if that is > 0, then the least-distortion rule applies as in
        :meth:`paint`. blend: the view's weight and each object's clipped, bicubically sampled
        logits are added to the evidence. In blend mode a view with no object (``K = 0``)
        still counts: it votes "no object" wherever it sees.
        """
        ids = np.asarray(ids, dtype=np.uint16)
        if logits.ndim != 3 or len(logits) != len(ids):
            raise InvalidInputError(f'logits must be (K, h, w) with K = {len(ids)} ids, '
                                    f'got shape {logits.shape}')
        if self.mode is FusionMode.BLEND:
            self._blend_logits(view_index, logits, ids)
            return
        if len(ids) == 0:
            return
        coords = self._coords(view_index, logits.shape[1:])
        scores = sample_bilinear(logits, coords)
        best = np.argmax(scores, axis=0)
        inside = scores[best, np.arange(scores.shape[1])] > 0
        self._paint_values(view_index, np.where(inside, ids[best], 0).astype(np.uint16))

    def _coords(self, view_index: int, hw: Tuple[int, int]) -> np.ndarray:
        coords = self.tables.pixel_coords(view_index, hw[0])
        if hw[0] != hw[1]:
            coords = coords.copy()
            coords[:, 0] = self.tables.patch_uv[view_index][:, 0] * hw[1] - 0.5
        return coords

    def _blend_logits(self, view_index: int, logits: np.ndarray, ids: np.ndarray) -> None:
        erp_index = self.tables.erp_index[view_index]
        weights = blend_weights(self.tables, view_index)
        self._weight[erp_index] += weights
        self._stale = True
        if len(ids) == 0:
            return
        clip = np.float32(self.logit_clip)
        coords = self._coords(view_index, logits.shape[1:])
        h, w = logits.shape[1:]
        for object_id, logit_map in zip(ids, logits):
            clipped = np.clip(np.asarray(logit_map, dtype=np.float32), -clip, clip)
            rows, cols = np.nonzero(clipped > -clip)
            if len(rows) == 0:
                continue
            # Only the ERP pixels whose bicubic taps reach the object's bounding box.
            x0, x1 = cols.min() - _CUBIC_SUPPORT_PX, cols.max() + _CUBIC_SUPPORT_PX
            y0, y1 = rows.min() - _CUBIC_SUPPORT_PX, rows.max() + _CUBIC_SUPPORT_PX
            if x0 <= -1 and y0 <= -1 and x1 >= w and y1 >= h:  # coords lie in [-0.5, w - 0.5]
                near = np.arange(len(coords))
            else:
                x, y = coords[:, 0], coords[:, 1]
                near = np.nonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))[0]
            score = _sample_maps(clipped[None], coords[near], cv2.INTER_CUBIC)[0]
            value = np.clip(score, -clip, clip) + clip
            keep = value > clip * np.float32(1e-6)
            self._add_evidence(int(object_id), erp_index[near[keep]],
                               weights[near[keep]] * value[keep])

    # ------------------------------------------------------------------ editing
    def relabel(self, mapping: np.ndarray) -> None:
        """Apply a lookup table ``new = mapping[old]`` (uint16, length > max label).

        In blend mode objects mapped to one id pool their evidence; mapped to 0, they are erased.
        """
        if self.mode is FusionMode.BLEND:
            pooled: Dict[int, List[Tuple[np.ndarray, np.ndarray]]] = {}
            for object_id, chunks in self._evidence.items():
                new = int(mapping[object_id])
                if new:
                    pooled.setdefault(new, []).extend(chunks)
            self._evidence = {k: [self._merged(c)] if len(c) > _MAX_CHUNKS else c
                              for k, c in pooled.items()}
            self._stale = True
            return
        self._labels[:] = mapping[self._labels]
        self._angle[self._labels == 0] = np.inf

    # ------------------------------------------------------------------ reading
    def _resolve(self) -> None:
        """Blend mode: per pixel, the object with the highest mean vote > 0 (ties: lower id)."""
        self._labels[:] = 0
        best = np.zeros(len(self._labels), dtype=np.float32)
        clip = np.float32(self.logit_clip)
        for object_id in sorted(self._evidence):
            chunks = self._evidence[object_id]
            if len(chunks) > 1:
                chunks = self._evidence[object_id] = [self._merged(chunks)]
            idx, val = chunks[0]
            score = val / self._weight[idx] - clip
            win = score > best[idx]
            best[idx[win]] = score[win]
            self._labels[idx[win]] = object_id
        self._stale = False

    @property
    def labels(self) -> np.ndarray:
        """The painted ``(H, W)`` uint16 label map (a view; copy before keeping it)."""
        if self._stale:
            self._resolve()
        return self._labels.reshape(self.erp_hw)

    @property
    def nbytes(self) -> int:
        """Memory held by the canvas's state (the shared tables not included)."""
        held: List[Optional[np.ndarray]] = [self._labels, self._angle, self._weight,
                                            self._scratch]
        held += [a for chunks in self._evidence.values() for pair in chunks for a in pair]
        return sum(a.nbytes for a in held if a is not None)


def fuse_labels(layout: PatchLayout, patch_labels: np.ndarray, erp_hw: Tuple[int, int],
                mode: Union[FusionMode, str] = FusionMode.LEAST_DISTORTION) -> np.ndarray:
    """Fuse ``(N, S, S)`` patch label maps with global ids into one ``(H, W)`` uint16 ERP map.

    >>> layout = PatchLayout.build(120.0, 16)
    >>> labels = np.zeros((len(layout), 16, 16), np.uint16); labels[:] = 7
    >>> np.unique(fuse_labels(layout, labels, (32, 64))).tolist()
    [7]
    """
    if patch_labels.ndim != 3 or patch_labels.shape[0] != len(layout):
        raise InvalidInputError(f'expected ({len(layout)}, S, S) patch labels, '
                                f'got shape {patch_labels.shape}')
    canvas = LabelCanvas(layout, erp_hw, mode)
    for i in range(len(layout)):
        canvas.paint(i, patch_labels[i])
    return canvas.labels.copy()


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def associate_patch_labels(layout: PatchLayout, local_labels: np.ndarray,
                           erp_hw: Tuple[int, int] = (256, 512),
                           min_iou: float = 0.5) -> Tuple[np.ndarray, int]:
    """Give segments that are the same object in different patches one global id.

    Args:
        local_labels: ``(N, S, S)`` uint16, per-patch local ids (0 = nothing); the same local id
            in two patches means nothing.
        erp_hw: the grid on the sphere where overlaps are measured (area-weighted).
        min_iou: segments ``a`` (view i) and ``b`` (view j) are linked when the IoU of their
            parts inside the region both views see is at least this.

    Returns:
        ``(global_labels (N, S, S) uint16, number of objects)``, ids ``1..K`` in order of first
        appearance along the view index.

    """
    n, size = local_labels.shape[0], local_labels.shape[1]
    if n != len(layout):
        raise InvalidInputError(f'expected {len(layout)} patches, got {n}')
    tables = patch_to_erp_tables(layout, erp_hw)
    n_local = int(local_labels.max()) + 1
    weights = np.repeat(erp_row_weights(erp_hw[0]), erp_hw[1])
    pix = np.concatenate(tables.erp_index).astype(np.int64)
    view = np.concatenate([np.full(len(e), i, np.int64) for i, e in enumerate(tables.erp_index)])
    lab = np.concatenate([local_labels[i].reshape(-1)[tables.nearest_index(i, size)]
                          for i in range(n)]).astype(np.int64)
    order = np.argsort(pix, kind='stable')
    pix, view, lab = pix[order], view[order], lab[order]
    node = view * n_local + lab
    n_nodes = n * n_local
    a_idx, b_idx = [], []
    for d in range(1, n):
        same = np.nonzero(pix[:-d] == pix[d:])[0]
        if len(same) == 0:
            break
        a_idx += [same, same + d]
        b_idx += [same + d, same]
    a_e = np.concatenate(a_idx) if a_idx else np.zeros(0, np.int64)
    b_e = np.concatenate(b_idx) if b_idx else np.zeros(0, np.int64)
    w = weights[pix[a_e]]
    a_has = lab[a_e] != 0
    # area[a, v]: weight of segment a inside view v; inter[a, b]: weight of a and b together.
    area = np.bincount(node[a_e][a_has] * n + view[b_e][a_has], weights=w[a_has],
                       minlength=n_nodes * n)
    both = a_has & (lab[b_e] != 0)
    keys = node[a_e][both] * n_nodes + node[b_e][both]
    uniq, inv = np.unique(keys, return_inverse=True)
    inter = np.bincount(inv, weights=w[both])
    na, nb = uniq // n_nodes, uniq % n_nodes
    union = area[na * n + nb // n_local] + area[nb * n + na // n_local] - inter
    iou = inter / np.maximum(union, 1e-12)
    uf = _UnionFind(n_nodes)
    for x, y in zip(na[iou >= min_iou], nb[iou >= min_iou]):
        uf.union(int(x), int(y))
    present = np.zeros(n_nodes, dtype=bool)
    for i in range(n):
        present[i * n_local + np.unique(local_labels[i])] = True
    present[np.arange(n) * n_local] = False
    lut = np.zeros(n_nodes, dtype=np.int64)
    root_id: dict[int, int] = {}
    for nd in np.nonzero(present)[0]:
        root = uf.find(int(nd))
        if root not in root_id:
            root_id[root] = len(root_id) + 1
        lut[nd] = root_id[root]
    if len(root_id) > np.iinfo(np.uint16).max:
        raise InvalidInputError(f'too many objects for uint16 labels: {len(root_id)}')
    global_labels = np.empty_like(local_labels, dtype=np.uint16)
    for i in range(n):
        global_labels[i] = lut[i * n_local + local_labels[i].astype(np.int64)]
    return global_labels, len(root_id)
