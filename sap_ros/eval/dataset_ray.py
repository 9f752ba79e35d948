"""The Ray side of ``sap_eval``: workers, the attempt ledger, stored clip results, the run.

Each clip (layouts: :mod:`sap_ros.eval.dataset_clips`) is evaluated as ``sap_replay`` would
evaluate it alone, by long-lived Ray actors (one per GPU, or one per CPU slot) that keep the SAM2
model loaded and take whole clips from a :class:`ray.util.ActorPool`. Each finished clip is
written to ``OUT/clips/<clip>-<digest>.json`` at once (the digest hashes every option that
changes the figures), so a rerun with the same options skips it. A worker process that dies is
restarted by Ray (``max_restarts=-1``) and Ray resubmits the clip it held (``max_task_retries``);
a small ledger actor records every start of a clip, so the report says which clips were retried,
on which worker and process, and a worker refuses a clip already started ``--retries`` + 1 times
(it is then reported as failed). Ray's own retry count is unbounded, because a clip handed to a
worker that is still restarting also counts as a Ray retry although it never started. A clip
that cannot be read is reported, the others go on. At the end ``OUT/report.json`` and
``OUT/report.md`` (:mod:`sap_ros.eval.dataset_report`).

The command line is :mod:`sap_ros.eval.dataset`; this module is the only user of Ray.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import json
import os
from pathlib import Path
import re
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast
import uuid

import cv2
import ray
from ray.util import ActorPool
from tqdm import tqdm

from sap_ros.config import PipelineConfig
from sap_ros.engine.segmenter import Sam2Segmenter, Segmenter
from sap_ros.errors import SapError
from sap_ros.eval.dataset_clips import (
    Clip,
    ClipFailure,
    ClipResult,
    EvalSpec,
    evaluate_clip,
    find_clips,
)
from sap_ros.eval.dataset_report import DEFAULT_SIZE_EDGES, report_dict, write_dataset_report
from sap_ros.eval.replay_gt import ReplayError

POLL_S = 0.2


# ---------------------------------------------------------------------- stored results
class ResultStore:
    """``OUT/clips/<clip>-<digest>.json``: one finished clip each, written atomically.

    A stored result is reused only for a clip of the same name at the same path.
    """

    def __init__(self, out: Path, digest: str) -> None:
        """Results of the configuration ``digest`` under ``out``."""
        self.folder = Path(out) / 'clips'
        self.digest = digest

    def path(self, clip: str) -> Path:
        """Where the result of ``clip`` lives."""
        return self.folder / f"{re.sub(r'[^A-Za-z0-9._-]', '_', clip)}-{self.digest}.json"

    def load(self, clip: Clip) -> Optional[ClipResult]:
        """The stored result of ``clip`` (same name and path), or None."""
        try:
            result = ClipResult.from_dict(json.loads(self.path(clip.name).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return result if (result.clip, result.path) == (clip.name, str(clip.path)) else None

    def save(self, result: ClipResult) -> None:
        """Write one result (temporary file, then rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(result.clip)
        tmp = path.with_suffix('.tmp')
        tmp.write_text(json.dumps(result.to_dict()) + '\n')
        os.replace(tmp, path)


# ---------------------------------------------------------------------- Ray actors
@dataclass(frozen=True)
class Attempt:
    """One start of a clip on a worker process."""

    clip: str
    attempt: int
    worker: str
    pid: int
    node: str


@dataclass(frozen=True)
class Progress:
    """What the ledger knows: attempts per clip, frames done (current attempts), totals."""

    attempts: Dict[str, Tuple[Attempt, ...]]
    frames_done: Dict[str, int]
    frames_total: Dict[str, int]
    finished: Tuple[str, ...]


class Ledger:
    """Ray actor (no resources): every clip start, frame and finish, for progress and retries."""

    def __init__(self) -> None:
        """Empty."""
        self._attempts: Dict[str, List[Attempt]] = {}
        self._done: Dict[str, int] = {}
        self._total: Dict[str, int] = {}
        self._finished: List[str] = []

    def start(self, clip: str, worker: str, pid: int, node: str, max_attempts: int) -> int:
        """Record a start; returns the attempt number (1 for the first).

        Returns 0, recording nothing, when the clip was already started ``max_attempts`` times.
        """
        attempts = self._attempts.setdefault(clip, [])
        if len(attempts) >= max_attempts:
            return 0
        attempts.append(Attempt(clip, len(attempts) + 1, worker, pid, node))
        self._done[clip] = 0
        return len(attempts)

    def frame(self, clip: str, total: int) -> None:
        """One more frame of ``clip`` (of ``total``)."""
        self._done[clip] = self._done.get(clip, 0) + 1
        self._total[clip] = total

    def finish(self, clip: str) -> None:
        """``clip`` is done (result or reported failure)."""
        self._finished.append(clip)

    def snapshot(self) -> Progress:
        """Everything recorded so far."""
        return Progress({k: tuple(v) for k, v in self._attempts.items()}, dict(self._done),
                        dict(self._total), tuple(self._finished))


def _model_key(config: PipelineConfig) -> str:
    return json.dumps({k: v for k, v in config.to_flat().items() if k.startswith('model.')},
                      sort_keys=True, default=str)


class ClipWorker:
    """Ray actor: keeps SAM2 loaded (one per model configuration) and evaluates whole clips."""

    def __init__(self, name: str, ledger_name: str, max_attempts: int, threads: int) -> None:
        """No model yet: it is loaded by the first clip that needs it (errors become reports).

        The ledger is found by name (a handle passed in would live in the object store, which
        Ray warns can break restarts). ``threads``: OpenCV threads, the CPUs reserved for the
        worker (Ray already sets ``OMP_NUM_THREADS``, which torch follows).
        """
        cv2.setNumThreads(threads)
        self.name = name
        self.ledger = ray.get_actor(ledger_name)
        self.max_attempts = max_attempts
        self.node = socket.gethostname()
        self._segmenters: Dict[str, Segmenter] = {}

    def _segmenter_for(self, config: PipelineConfig) -> Segmenter:
        key = _model_key(config)
        if key not in self._segmenters:
            # Host outputs: one segmenter serves the engine on either frame path and the ERP
            # baseline (which reads its logits on the host).
            self._segmenters[key] = Sam2Segmenter(config.model, device_outputs=False)
        return self._segmenters[key]

    def evaluate(self, clip: Clip, spec: EvalSpec) -> Any:
        """ClipResult, or ClipFailure when the clip (or the model) cannot be used."""
        attempt = cast(int, ray.get(self.ledger.start.remote(
            clip.name, self.name, os.getpid(), self.node, self.max_attempts)))
        if not attempt:  # its workers died on every attempt: give up, the report says so
            self.ledger.finish.remote(clip.name)
            return ClipFailure(clip.name, clip.kind.value, str(clip.path),
                               f'the worker died during each of its {self.max_attempts} '
                               'attempts (see retries)', self.name, 0)
        try:
            result: Any = replace(
                evaluate_clip(clip, spec, self._segmenter_for,
                              lambda total: self.ledger.frame.remote(clip.name, total)),
                worker=self.name, attempt=attempt)
        except Exception as err:  # a bad clip must not stop the others: report every error
            kind = '' if isinstance(err, SapError) else f'{type(err).__name__}: '
            result = ClipFailure(clip.name, clip.kind.value, str(clip.path), f'{kind}{err}',
                                 self.name, attempt)
        self.ledger.finish.remote(clip.name)
        return result


# ---------------------------------------------------------------------- the run
@dataclass(frozen=True)
class DatasetOptions:
    """One ``sap_eval`` run."""

    dataset: Path
    out: Path
    spec: EvalSpec
    workers: Optional[int] = None
    cpus_per_worker: float = 1.0
    address: Optional[str] = None
    retries: int = 2
    size_edges: Tuple[float, ...] = DEFAULT_SIZE_EDGES
    force: bool = False
    quiet: bool = False


@dataclass
class RunOutcome:
    """What the Ray part returns."""

    results: List[ClipResult]
    failures: List[ClipFailure]
    retries: List[Dict[str, Any]]
    workers: int
    pool_s: float = 0.0


def _worker_resources(workers: Optional[int], cpus_per_worker: float
                      ) -> Tuple[int, Dict[str, Any]]:
    """How many workers, and the resources of each: a GPU each when the cluster has GPUs."""
    total = ray.cluster_resources()
    gpus, cpus = int(total.get('GPU', 0)), float(total.get('CPU', 0))
    count = workers or (gpus if gpus else max(1, int(cpus // cpus_per_worker)))
    if gpus:
        if count > gpus:
            raise ReplayError(f'--workers {count} needs {count} GPUs (one per worker); the Ray '
                              f'cluster has {gpus}')
        return count, {'num_gpus': 1, 'num_cpus': cpus_per_worker}
    if count * cpus_per_worker > cpus:
        raise ReplayError(f'--workers {count} x --cpus-per-worker {cpus_per_worker} needs '
                          f'{count * cpus_per_worker:g} CPUs; the Ray cluster has {cpus:g}')
    return count, {'num_gpus': 0, 'num_cpus': cpus_per_worker}


def _retries(progress: Progress, results: Sequence[ClipResult],
             failures: Sequence[ClipFailure]) -> List[Dict[str, Any]]:
    """Clips whose worker died at least once: every attempt and how it ended."""
    final = {r.clip: (r.attempt, 'finished') for r in results}
    final.update({f.clip: (f.attempt, f'failed: {f.error}') for f in failures})
    out = []
    for clip, attempts in sorted(progress.attempts.items()):
        last_attempt, last_outcome = final.get(clip, (0, ''))
        rows = [{'attempt': a.attempt, 'worker': a.worker, 'pid': a.pid, 'node': a.node,
                 'outcome': last_outcome if a.attempt == last_attempt else 'worker died'}
                for a in attempts]
        if any(row['outcome'] == 'worker died' for row in rows):
            out.append({'clip': clip, 'attempts': rows})
    return out


class _Bars:
    """Two tqdm bars on stderr: clips and frames."""

    def __init__(self, clips: int, quiet: bool) -> None:
        self.clips = tqdm(total=clips, unit='clip', desc='clips', file=sys.stderr,
                          disable=quiet, position=0)
        self.frames = tqdm(total=0, unit='frame', desc='frames', file=sys.stderr,
                           disable=quiet, position=1)

    def update(self, progress: Progress, finished: int) -> None:
        self.clips.update(finished - self.clips.n)
        self.frames.total = sum(progress.frames_total.values())
        self.frames.update(sum(progress.frames_done.values()) - self.frames.n)

    def close(self) -> None:
        self.frames.close()
        self.clips.close()


def _snapshot(ledger: Any) -> Progress:
    return cast(Progress, ray.get(ledger.snapshot.remote()))


def _run_pool(jobs: Sequence[Clip], options: DatasetOptions, store: ResultStore,
              on_progress: Optional[Callable[[Progress], None]]) -> RunOutcome:
    """Evaluate ``jobs`` on Ray workers; every result is stored as soon as it arrives."""
    t_start = time.perf_counter()
    count, resources = _worker_resources(options.workers, options.cpus_per_worker)
    ledger_name = f'sap_eval_ledger_{uuid.uuid4().hex}'
    ledger: Any = ray.remote(num_cpus=0)(Ledger).options(name=ledger_name).remote()
    worker_class: Any = ray.remote(max_restarts=-1, max_task_retries=-1, **resources)(ClipWorker)
    threads = max(1, int(options.cpus_per_worker))
    actors: List[Any] = [worker_class.remote(f'worker-{k}', ledger_name, options.retries + 1,
                                             threads) for k in range(count)]
    results: List[ClipResult] = []
    failures: List[ClipFailure] = []
    bars = _Bars(len(jobs), options.quiet)
    try:
        pool = ActorPool(actors)
        for clip in jobs:
            pool.submit(lambda actor, c: actor.evaluate.remote(c, options.spec), clip)
        while pool.has_next():
            try:
                outcome = pool.get_next_unordered(timeout=POLL_S)
                if isinstance(outcome, ClipResult):
                    store.save(outcome)
                    results.append(outcome)
                else:
                    failures.append(outcome)
            except TimeoutError:
                pass
            except ray.exceptions.RayActorError as err:  # a worker Ray could not restart
                print(f'sap_eval: a clip lost its worker: {err}', file=sys.stderr)
            progress = _snapshot(ledger)
            bars.update(progress, len(results) + len(failures))
            if on_progress is not None:
                on_progress(progress)
        progress = _snapshot(ledger)
    finally:
        bars.close()
        for actor in actors:
            ray.kill(actor, no_restart=True)
        ray.kill(ledger)
    done = {r.clip for r in results} | {f.clip for f in failures}
    failures += [ClipFailure(c.name, c.kind.value, str(c.path),
                             f'its worker could not be restarted '
                             f'({len(progress.attempts.get(c.name, ()))} attempts)')
                 for c in jobs if c.name not in done]
    return RunOutcome(results, failures, _retries(progress, results, failures), count,
                      time.perf_counter() - t_start)


def run_dataset(options: DatasetOptions,
                on_progress: Optional[Callable[[Progress], None]] = None) -> Dict[str, Any]:
    """Evaluate the dataset (resuming from ``options.out``) and write the report; its content.

    Uses the Ray instance of this process when one is initialised; otherwise joins
    ``options.address`` (or ``RAY_ADDRESS``) or starts a local one, and shuts it down at the end.
    ``on_progress`` is called with the ledger's :class:`Progress` while clips run.
    """
    t_start = time.perf_counter()
    clips = find_clips(options.dataset)
    store = ResultStore(options.out, options.spec.digest())
    reused: List[ClipResult] = []
    jobs: List[Clip] = []
    unusable = [ClipFailure(c.name, c.kind.value, str(c.path), c.problem)
                for c in clips if c.problem is not None]
    for clip in (c for c in clips if c.problem is None):
        stored = None if options.force else store.load(clip)
        (reused.append(stored) if stored is not None else jobs.append(clip))
    outcome = RunOutcome([], [], [], 0)
    if jobs:
        started = not ray.is_initialized()
        if started:
            address = options.address or os.environ.get('RAY_ADDRESS')
            ray.init(address=address, include_dashboard=False if address is None else None,
                     log_to_driver=not options.quiet)
        try:
            outcome = _run_pool(jobs, options, store, on_progress)
        finally:
            if started:
                ray.shutdown()
    failures = unusable + outcome.failures
    run = {'workers': outcome.workers, 'evaluated': len(outcome.results),
           'reused': len(reused), 'failed': len(failures),
           'elapsed_s': time.perf_counter() - t_start, 'pool_s': outcome.pool_s,
           'ray_address': options.address or os.environ.get('RAY_ADDRESS') or 'local'}
    report = report_dict(options.dataset, options.spec, outcome.results, reused, failures,
                         outcome.retries, run, options.size_edges)
    write_dataset_report(options.out, report)
    return report
