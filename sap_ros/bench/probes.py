"""What ``sap_bench engine`` measures with: timed and shadow segmenters, the cap scene, RSS.

:class:`TimedSegmenter` adds up the time spent inside segmenter calls (the overhead of a frame is
what is left), :class:`ShadowSegmenter` pays SAM2's cost but answers with the ground truth (the
culling part: with random weights every extent would be the whole sphere), :func:`cap_scene`
spreads caps over the sphere.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
import time
from typing import Any, Callable, ContextManager, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from sap_ros.engine.memory import MemoryContext
from sap_ros.engine.segmenter import (
    Candidates,
    Pixels,
    Sam2Segmenter,
    SegmentOutput,
    TrackRequest,
    track_each,
)
from sap_ros.engine.segmenter import session as segmenter_session
from sap_ros.eval.oracle_segmenter import OracleSegmenter
from sap_ros.sphere.geometry import erp_bearings
from sap_ros.sphere.layout import PatchLayout, sphere_points
from sap_ros.sphere.sampler import extract_patches


# ---------------------------------------------------------------------------- segmenters
@dataclass
class CallTimes:
    """Calls of one kind and the wall / CPU (this process, all threads) seconds inside them."""

    calls: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0


class TimedSegmenter:
    """Delegates to a segmenter and adds up the time spent inside its calls, per kind.

    ``sync`` runs after each call before the clocks stop (``torch.cuda.synchronize`` on CUDA),
    unless :attr:`syncing` is False (frames whose engine waits are counted: the benchmark's own
    waits are not the engine's); :attr:`syncs` counts them. :attr:`kind` names the call in
    progress (``encode``, ``track``, ``discover``; empty between calls). CPU time is less
    disturbed than wall time by other processes on a shared machine.
    """

    def __init__(self, inner: Any, sync: Callable[[], None] = lambda: None) -> None:
        """Wrap ``inner``; counters start at zero."""
        self.inner = inner
        self.low_res_px = inner.low_res_px
        self.input_px = int(getattr(inner, 'input_px', 0))  # 0: the layout's patch size
        self._sync = sync
        self.syncing = True
        self.kind = ''
        self.reset_counters()

    @property
    def description(self) -> str:
        """The wrapped segmenter's description."""
        return getattr(self.inner, 'description', type(self.inner).__name__)

    @property
    def wall_s(self) -> float:
        """Wall seconds inside every call since the last reset."""
        return self.encoding.wall_s + self.tracking.wall_s + self.discovery.wall_s

    def reset_counters(self) -> None:
        """Zero every counter."""
        self.encoding, self.tracking, self.discovery = CallTimes(), CallTimes(), CallTimes()
        self.encoded_views = 0
        self.syncs = 0

    def _timed(self, times: CallTimes, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        self.kind = {id(self.encoding): 'encode', id(self.tracking): 'track'}.get(id(times),
                                                                                  'discover')
        try:
            return fn(*args, **kwargs)
        finally:
            self.kind = ''
            if self.syncing:
                self.syncs += 1
                self._sync()
            times.calls += 1
            times.wall_s += time.perf_counter() - wall
            times.cpu_s += time.process_time() - cpu

    def session(self) -> ContextManager[None]:
        """The wrapped segmenter's frame session (:func:`sap_ros.engine.segmenter.session`)."""
        return segmenter_session(self.inner)

    def begin_frame(self, patches: Pixels, erp: np.ndarray,
                    views: Optional[Sequence[int]] = None) -> None:
        """Timed ``begin_frame`` (patch encoding); ``encoded_views`` counts the patches."""
        self.encoded_views += len(patches)
        if views is None:
            self._timed(self.encoding, self.inner.begin_frame, patches, erp)
        else:
            self._timed(self.encoding, self.inner.begin_frame, patches, erp, views=views)

    def track(self, view_index: int, memory: MemoryContext, **kwargs: Any) -> SegmentOutput:
        """Timed ``track``."""
        return self._timed(self.tracking, self.inner.track, view_index, memory, **kwargs)

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """Timed ``track_many``; ``tracking.calls`` counts objects (one per request)."""
        out = self._timed(self.tracking, self.inner.track_many, view_index, requests)
        self.tracking.calls += len(requests) - 1
        return out

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> Iterator[Candidates]:
        """Timed ``discover``, batch by batch: ``discovery.calls`` counts mask-decoder batches.

        The filter's own work between batches is not inside the clocks (it is the engine's).
        """
        batches = iter(self.inner.discover(view_index, points_px, points_per_batch))
        while True:
            wall, cpu = time.perf_counter(), time.process_time()
            batch = next(batches, None)
            self._sync()
            if batch is not None:
                self.discovery.calls += 1
            self.discovery.wall_s += time.perf_counter() - wall
            self.discovery.cpu_s += time.process_time() - cpu
            if batch is None:
                return
            yield batch

    def close(self) -> None:
        """Close the wrapped segmenter."""
        self.inner.close()


@dataclass(frozen=True)
class ShadowMemory:
    """The memory of :class:`ShadowSegmenter`: SAM2's payload and the oracle's."""

    network: Any
    oracle: Any

    @property
    def nbytes(self) -> int:
        """Bytes of the SAM2 payload (the oracle's holds none)."""
        return int(getattr(self.network, 'nbytes', 0) or 0)


class ShadowSegmenter:
    """SAM2's cost with the ground truth's answers (the segmenter of the culling part).

    Every encode and track runs the network on the same inputs; the returned masks and scores
    are the oracle's, the memory carries both. Discovery answers from the ground truth without
    calling the network (the culling part times the decode stage only). ``track_many`` runs the
    network once per object, or batched as the engine's SAM2 segmenter does when ``batched`` is
    set. Call :meth:`set_ground_truth` before each frame.
    """

    def __init__(self, network: Sam2Segmenter, oracle: OracleSegmenter) -> None:
        """Both must work at the same decoder resolution."""
        if network.low_res_px != oracle.low_res_px:
            raise ValueError(f'decoder grids differ: {network.low_res_px} vs '
                             f'{oracle.low_res_px} px')
        self.batched = False
        self.network, self.oracle = network, oracle
        self.low_res_px = network.low_res_px
        self.description = f'{network.description}; masks from the ground truth'

    def set_ground_truth(self, gt_erp: np.ndarray) -> None:
        """The ERP label map of the next frame."""
        self.oracle.set_ground_truth(gt_erp)

    def session(self) -> ContextManager[None]:
        """SAM2's frame session."""
        return self.network.session()

    def begin_frame(self, patches: Pixels, erp: np.ndarray,
                    views: Optional[Sequence[int]] = None) -> None:
        """Encode the patches (of ``views``) with SAM2 and cut the ground truth into them."""
        self.network.begin_frame(patches, erp, views=views)
        self.oracle.begin_frame(patches, erp, views=views)

    def track(self, view_index: int, memory: MemoryContext, **kwargs: Any) -> SegmentOutput:
        """One SAM2 step (cost, memory, object pointer) and the oracle's mask and scores."""
        net = self.network.track(view_index, memory.map(_network), **kwargs)
        truth = self.oracle.track(view_index, memory.map(_oracle), **kwargs)
        return SegmentOutput(truth.logits, truth.iou, truth.object_score, net.obj_ptr,
                             ShadowMemory(net.memory, truth.memory))

    def track_many(self, view_index: int, requests: Sequence[TrackRequest]
                   ) -> List[SegmentOutput]:
        """One :meth:`track` per object, or SAM2 batched (``batched``), the oracle per object."""
        if not self.batched:
            return track_each(self, view_index, requests)
        nets = self.network.track_many(view_index, [
            TrackRequest(r.memory.map(_network), r.mask_prompt) for r in requests])
        truths = self.oracle.track_many(view_index, [
            TrackRequest(r.memory.map(_oracle), r.mask_prompt, r.prior) for r in requests])
        return [SegmentOutput(truth.logits, truth.iou, truth.object_score, net.obj_ptr,
                              ShadowMemory(net.memory, truth.memory))
                for net, truth in zip(nets, truths)]

    def discover(self, view_index: int, points_px: np.ndarray,
                 points_per_batch: int = 64) -> List[Candidates]:
        """Ground-truth segments under the points."""
        return self.oracle.discover(view_index, points_px, points_per_batch)

    def close(self) -> None:
        """Free the model."""
        self.network.close()
        self.oracle.close()


def _network(memory: Any) -> Any:
    return memory.network if isinstance(memory, ShadowMemory) else memory


def _oracle(memory: Any) -> Any:
    return memory.oracle if isinstance(memory, ShadowMemory) else memory


# ---------------------------------------------------------------------------- helpers
def rss_mib() -> Optional[float]:
    """This process's resident set size (VmRSS of /proc/self/status), MiB; None elsewhere."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            for line in status:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cap_scene(n_caps: int, radius_deg: float, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """``n_caps`` spherical caps spread over the sphere: ERP RGB ``(W/2, W, 3)`` and labels.

    Cap ``k`` (label ``k + 1``) is centred on the ``k``-th Fibonacci-lattice point; caps of
    ``radius_deg`` do not overlap for up to ~60 caps of 10 deg.

    >>> rgb, gt = cap_scene(4, 10.0, 64)
    >>> rgb.shape, sorted(np.unique(gt).tolist())
    ((32, 64, 3), [0, 1, 2, 3, 4])
    """
    centres = sphere_points(n_caps).astype(np.float32)
    height = width // 2
    labels = np.zeros((height, width), np.uint16)
    cos_r = np.float32(np.cos(np.radians(radius_deg)))
    bearings = erp_bearings(width, height).astype(np.float32)
    for top in range(0, height, 64):  # row chunks bound the (pixels x caps) matrix
        dots = bearings[top:top + 64] @ centres.T
        best = dots.argmax(axis=-1)
        inside = np.take_along_axis(dots, best[..., None], -1)[..., 0] >= cos_r
        labels[top:top + 64] = np.where(inside, best + 1, 0)
    palette = np.random.default_rng(0).integers(40, 255, (n_caps + 1, 3)).astype(np.uint8)
    palette[0] = 128
    return palette[labels], labels


def view_logits_from_labels(layout: PatchLayout, gt_labels: np.ndarray, low_px: int,
                            logit_clip: float = 8.0
                            ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Per view, the objects of an ERP label map it sees as decoder logits, in view index order.

    ``(ids (K,) uint16, logits (K, low, low) float32)``: the ground truth cut into the view at
    4x the decoder grid (nearest), each object's area fraction per decoder pixel ``f`` mapped to
    ``logit_clip * (2 f - 1)`` (a soft edge, like SAM2's low-res logits). Stands in for the
    network's output when the non-network stages are measured or compared.
    """
    fine = extract_patches(layout, np.ascontiguousarray(gt_labels.astype(np.int32)),
                           4 * low_px, interpolation=cv2.INTER_NEAREST)
    out = []
    for patch in fine:
        ids = np.unique(patch)
        ids = ids[ids > 0]
        maps = [cv2.resize((patch == i).astype(np.float32), (low_px, low_px),
                           interpolation=cv2.INTER_AREA) for i in ids]
        logits = (np.stack(maps) if maps else np.zeros((0, low_px, low_px), np.float32))
        out.append((ids.astype(np.uint16), (logit_clip * (2.0 * logits - 1.0)).astype(
            np.float32)))
    return out


# ---------------------------------------------------------------------------- host syncs
# Tensor methods that read device values on the host (each one waits for the device queue).
SYNC_METHODS = ('cpu', 'item', 'tolist', 'numpy', '__bool__', '__int__', '__float__',
                '__index__', '__array__', 'nonzero')


@dataclass
class SyncCount:
    """Host synchronisations seen inside :func:`count_host_syncs`, by call name.

    ``where`` holds, per call, what the ``where`` callable of :func:`count_host_syncs` said.
    """

    calls: List[str] = field(default_factory=list)
    where: List[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many."""
        return len(self.calls)


@contextlib.contextmanager
def count_host_syncs(where: Callable[[], str] = lambda: '') -> Iterator[SyncCount]:
    """Count calls that bring device values to the host while the block runs.

    ``where()`` is asked at each call (e.g. the stage in progress): :attr:`SyncCount.where`.

    Wraps the ``torch.Tensor`` methods of :data:`SYNC_METHODS` (counted whatever the tensor's
    device, so a run on the CPU shows what would wait on CUDA), ``.to`` the CPU, ``copy_`` into
    a CPU tensor from another device, ``torch.cuda.synchronize`` and CUDA event / stream waits.
    Python-level only: a sync inside a C++ kernel (boolean-mask indexing on CUDA) is invisible
    here; on CUDA, ``torch.cuda.set_sync_debug_mode('error')`` sees those.
    """
    counter = SyncCount()
    patched: List[Tuple[Any, str, Any, bool]] = []

    def wrap(owner: Any, name: str, counts: Callable[..., bool] = lambda *a, **k: True) -> None:
        original = getattr(owner, name)
        own = name in vars(owner)

        def counted(*args: Any, **kwargs: Any) -> Any:
            if counts(*args, **kwargs):
                counter.calls.append(f'{getattr(owner, "__name__", owner)}.{name}')
                counter.where.append(where())
            return original(*args, **kwargs)

        patched.append((owner, name, original, own))
        setattr(owner, name, counted)

    def to_host(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> bool:
        target = kwargs.get('device', args[0] if args else None)
        return (isinstance(target, (str, torch.device))
                and torch.device(target).type == 'cpu')

    def copy_to_host(dst: torch.Tensor, src: torch.Tensor, *args: Any, **kwargs: Any) -> bool:
        return dst.device.type == 'cpu' and src.device.type != 'cpu'

    for name in SYNC_METHODS:
        wrap(torch.Tensor, name)
    wrap(torch.Tensor, 'to', to_host)
    wrap(torch.Tensor, 'copy_', copy_to_host)
    wrap(torch.cuda, 'synchronize')
    wrap(torch.cuda.Event, 'synchronize')
    wrap(torch.cuda.Stream, 'synchronize')
    try:
        yield counter
    finally:
        for owner, name, original, own in reversed(patched):
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)
