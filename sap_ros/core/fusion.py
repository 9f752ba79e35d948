"""Patch label maps -> one ERP label map, and consistent ids for per-patch local labels.

Fusion rule (DESIGN §6): each ERP pixel takes its label from the patch that sees it closest to
its axis (least gnomonic distortion) among the patches that label it with an object; a patch that
says "no object" defers to the next one. It is evaluated on the sphere through the per-view pixel
lists of :class:`~sap_ros.core.sampler.PatchToErpTables`, so the 0/360 seam needs no special case.

Association: when each patch names its segments with local ids (a segmenter without memory, the
geometric oracle, discovery), segments of two overlapping patches are the same object when their
IoU *inside the region both patches see* is high; a union-find over those links gives global ids.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from sap_ros.core.errors import InvalidInputError
from sap_ros.core.geometry import erp_row_weights
from sap_ros.core.layout import PatchLayout
from sap_ros.core.sampler import patch_to_erp_tables


def sample_bilinear(maps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sample ``(K, h, w)`` float32 maps at ``(M, 2)`` x, y pixel coordinates -> ``(K, M)``.

    Bilinear, edges replicated (cv2.remap on the points laid out as a 2-D image, since cv2
    limits map sides to 32767).
    """
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
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[k] = sampled.reshape(-1)[:m]
    return out


class LabelCanvas:
    """An ERP label map painted patch by patch, least-distortion patch first.

    Args:
        layout: the patch layout.
        erp_hw: (H, W) of the canvas (any 2:1 size; the published map or a low-res work grid).

    """

    def __init__(self, layout: PatchLayout, erp_hw: Tuple[int, int]) -> None:
        """Build (or fetch from the layout's cache) the tables; start empty."""
        self.layout = layout
        self.erp_hw = (int(erp_hw[0]), int(erp_hw[1]))
        self.tables = patch_to_erp_tables(layout, self.erp_hw)
        n_pix = self.erp_hw[0] * self.erp_hw[1]
        self._labels = np.zeros(n_pix, dtype=np.uint16)
        self._angle = np.full(n_pix, np.inf, dtype=np.float32)

    def clear(self) -> None:
        """Forget everything painted."""
        self._labels[:] = 0
        self._angle[:] = np.inf

    def _paint_values(self, view_index: int, lab: np.ndarray) -> None:
        has = np.nonzero(lab)[0]
        erp_idx = self.tables.erp_index[view_index][has]
        angle = self.tables.angle_deg[view_index][has]
        better = angle < self._angle[erp_idx]
        erp_idx = erp_idx[better]
        self._labels[erp_idx] = lab[has][better]
        self._angle[erp_idx] = angle[better]

    def paint(self, view_index: int, patch_labels: np.ndarray) -> None:
        """Paint one patch's ``(S, S)`` uint16 labels (0 = no object), nearest patch pixel."""
        size = patch_labels.shape[0]
        if patch_labels.ndim != 2 or patch_labels.shape[1] != size:
            raise InvalidInputError(f'patch labels must be square, got shape {patch_labels.shape}')
        index = self.tables.nearest_index(view_index, size)
        self._paint_values(view_index, patch_labels.reshape(-1)[index])

    def paint_logits(self, view_index: int, logits: np.ndarray, ids: np.ndarray) -> None:
        """Paint from per-object low-res logits ``(K, h, w)`` (> 0 = inside) with ``ids`` (K,).

        Each canvas pixel samples every object's logits bilinearly at its exact position in the
        patch (as SAM2 upsamples its low-res logits), takes the object with the highest logit
        if that is > 0, then the least-distortion rule applies as in :meth:`paint`.
        """
        ids = np.asarray(ids, dtype=np.uint16)
        if logits.ndim != 3 or len(logits) != len(ids):
            raise InvalidInputError(f'logits must be (K, h, w) with K = {len(ids)} ids, '
                                    f'got shape {logits.shape}')
        if len(ids) == 0:
            return
        coords = self.tables.pixel_coords(view_index, logits.shape[1])
        if logits.shape[1] != logits.shape[2]:
            coords = coords.copy()
            coords[:, 0] = self.tables.patch_uv[view_index][:, 0] * logits.shape[2] - 0.5
        scores = sample_bilinear(logits, coords)
        best = np.argmax(scores, axis=0)
        inside = scores[best, np.arange(scores.shape[1])] > 0
        self._paint_values(view_index, np.where(inside, ids[best], 0).astype(np.uint16))

    def erase(self, label: int) -> None:
        """Remove one label from the canvas (e.g. after a merge or a negative prompt)."""
        gone = self._labels == label
        self._labels[gone] = 0
        self._angle[gone] = np.inf

    def relabel(self, mapping: np.ndarray) -> None:
        """Apply a lookup table ``new = mapping[old]`` (uint16, length > max label)."""
        self._labels[:] = mapping[self._labels]
        self._angle[self._labels == 0] = np.inf

    @property
    def labels(self) -> np.ndarray:
        """The painted ``(H, W)`` uint16 label map (a view; copy before keeping it)."""
        return self._labels.reshape(self.erp_hw)


def fuse_labels(layout: PatchLayout, patch_labels: np.ndarray,
                erp_hw: Tuple[int, int]) -> np.ndarray:
    """Fuse ``(N, S, S)`` patch label maps with global ids into one ``(H, W)`` uint16 ERP map.

    >>> layout = PatchLayout.build(120.0, 16)
    >>> labels = np.zeros((len(layout), 16, 16), np.uint16); labels[:] = 7
    >>> np.unique(fuse_labels(layout, labels, (32, 64))).tolist()
    [7]
    """
    if patch_labels.ndim != 3 or patch_labels.shape[0] != len(layout):
        raise InvalidInputError(f'expected ({len(layout)}, S, S) patch labels, '
                                f'got shape {patch_labels.shape}')
    canvas = LabelCanvas(layout, erp_hw)
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
