"""The training loop around upstream's ``SAM2Train`` and loss (``sap_train fit``).

Upstream's ``Trainer`` assumes CUDA (``torch.cuda.amp``, nccl, ``set_device``), so the loop is
ours: AdamW with upstream's parameter groups, gradient clipping at upstream's norm, a cosine
schedule from ``lr`` to ``lr / 10`` (as upstream's ``CosineParamScheduler`` settings) after an
optional linear warm-up, bf16 autocast on CUDA and float32 on the CPU, torch threads set
explicitly. One loop serves a local run and every Ray Train worker (:class:`World`).

Checkpoints follow upstream's format, ``{'model': state_dict}``, plus ``optimizer``, ``step``
and the random generators' states of every worker (``rng``: torch's, which drives dropout, and
SAM2Train's prompt sampler, one pair per rank), so a run killed and started again with the same
``--out``, or a Ray Train worker group restarted after a failure, continues from its last
checkpoint and draws what the uninterrupted run would have drawn.
``model.pt`` (weights only) is what the node loads with ``model.checkpoint``.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
import json
import math
import os
from pathlib import Path
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from tqdm import tqdm

from sap_ros.engine.sam2_checkpoint import read_state_dict
from sap_ros.errors import SapError
from sap_ros.sphere.torch_device import resolve_device
from sap_ros.train import NANO_CONFIG
from sap_ros.train.evaluate import EvalSpec, evaluate
from sap_ros.train.model import (
    build_loss,
    build_train_model,
    param_groups,
    prompt_rng,
    set_trainable,
    upstream_clip_norm,
)
from sap_ros.train.videos import PatchVideos
from sap_ros.train.weighting import distortion_weighted

CHECKPOINT = 'checkpoint.pt'
WEIGHTS = 'model.pt'
METRICS = 'metrics.jsonl'


@dataclass(frozen=True)
class FitConfig:
    """Everything a run depends on (stored in the checkpoint; a resume must match it)."""

    data: str
    out: str
    val: Optional[str] = None
    model_config: str = str(NANO_CONFIG)
    init: Optional[str] = None           # weights to start from (default: random init)
    train: Tuple[str, ...] = ('default',)  # SAP: all but the image encoder
    steps: int = 200
    batch_size: int = 1                  # videos per step, all workers together
    num_frames: int = 4
    max_objects: int = 3
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup_steps: int = 0
    clip: Optional[float] = None         # None: upstream's fine-tune max norm
    seed: int = 0
    threads: int = 1
    device: str = 'auto'
    prompts: Tuple[Tuple[str, Any], ...] = ()
    model_set: Tuple[str, ...] = ()
    loss_weights: str = 'uniform'        # 'uniform' | 'distortion'
    checkpoint_every: int = 50
    eval_every: int = 0                  # 0: only before and after
    eval: EvalSpec = field(default_factory=EvalSpec)
    minutes: Optional[float] = None      # stop (with a checkpoint) after this long
    overfit: int = 0                     # > 0: train on the first N windows only (a check)

    def check(self) -> None:
        """Reject settings that cannot run, naming the option."""
        if self.steps < 1 or self.batch_size < 1 or self.num_frames < 1:
            raise SapError('--steps, --batch-size and --num-frames must be >= 1')
        if self.loss_weights not in ('uniform', 'distortion'):
            raise SapError(f'--loss-weights must be uniform or distortion, got '
                           f'{self.loss_weights!r}')


@dataclass
class World:
    """Where the loop runs: one process (default) or one Ray Train worker of ``size``."""

    rank: int = 0
    size: int = 1
    wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model
    save: Optional[Callable[[Dict[str, Any], int], None]] = None  # None: to cfg.out
    load: Optional[Callable[[], Optional[Dict[str, Any]]]] = None
    report: Callable[[Dict[str, Any]], None] = lambda metrics: None

    def mean(self, values: Dict[str, float]) -> Dict[str, float]:
        """Average scalars over the workers (identity for one)."""
        if self.size == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.size for k, v in zip(keys, t)}

    def gather(self, value: Any) -> List[Any]:
        """``value`` of every worker, by rank (``[value]`` for one)."""
        if self.size == 1:
            return [value]
        values: List[Any] = [None] * self.size
        torch.distributed.all_gather_object(values, value)
        return values

    def any(self, flag: bool) -> bool:
        """True on every worker when it is True on one (so all stop at the same step)."""
        if self.size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(t)
        return bool(t.item() > 0)


def lr_at(step: int, cfg: FitConfig) -> float:
    """Learning-rate factor at ``step``: linear warm-up, then cosine from 1 to 0.1."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))


def _save_local(out: Path) -> Callable[[Dict[str, Any], int], None]:
    def save(state: Dict[str, Any], step: int) -> None:
        tmp = out / (CHECKPOINT + '.tmp')
        torch.save(state, tmp)
        os.replace(tmp, out / CHECKPOINT)  # a kill mid-write leaves the previous one
    return save


def _load_local(out: Path) -> Callable[[], Optional[Dict[str, Any]]]:
    def load() -> Optional[Dict[str, Any]]:
        path = out / CHECKPOINT
        return torch.load(path, map_location='cpu', weights_only=True) if path.is_file() else None
    return load


def _rng_state(model: torch.nn.Module) -> Dict[str, Any]:
    return {'torch': torch.get_rng_state(),
            'prompt': json.dumps(prompt_rng(model).bit_generator.state)}


def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
           cfg: FitConfig, rngs: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {'model': {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            'optimizer': optimizer.state_dict(), 'step': step, 'rng': rngs,
            'config': json.dumps(asdict(cfg), default=str)}


def _restore_rng(model: torch.nn.Module, state: Dict[str, Any], world: World) -> None:
    """This worker's generators as saved; a rank the checkpoint lacks keeps its fresh seed."""
    if 'rng' in state:
        rngs = state['rng']
    else:  # a checkpoint of one process written before per-rank states
        rngs = [{'torch': state['torch_rng'], 'prompt': state['prompt_rng']}]
    if world.rank < len(rngs):
        torch.set_rng_state(rngs[world.rank]['torch'])
        prompt_rng(model).bit_generator.state = json.loads(rngs[world.rank]['prompt'])


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run(cfg: FitConfig, world: Optional[World] = None,
        progress: bool = True) -> Dict[str, Any]:
    """Train; returns the last step's losses and the held-out scores before and after."""
    cfg.check()
    world = world or World()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save = world.save or _save_local(out)
    load = world.load or _load_local(out)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.batch_size % world.size:
        raise SapError(f'--batch-size {cfg.batch_size} must be a multiple of --workers '
                       f'{world.size} (the global batch is kept when workers change)')
    videos = PatchVideos(Path(cfg.data))
    val = PatchVideos(Path(cfg.val)) if cfg.val and world.rank == 0 else None
    model = build_train_model(cfg.model_config, videos.spec.size_px, cfg.seed,
                              dict(cfg.prompts), cfg.model_set)
    if cfg.init:
        model.load_state_dict(read_state_dict(Path(cfg.init)), strict=True)
    trained, frozen = set_trainable(model, cfg.train)
    model.to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.weight_decay), lr=cfg.lr)
    torch.manual_seed(cfg.seed + world.rank)
    start = 0
    state = load()
    if state is not None:
        model.load_state_dict(state['model'], strict=True)
        optimizer.load_state_dict(state['optimizer'])
        start = int(state['step'])
        _restore_rng(model, state, world)
    net = world.wrap(model)
    loss_fn = build_loss()
    clip = upstream_clip_norm() if cfg.clip is None else cfg.clip
    params = [p for p in model.parameters() if p.requires_grad]
    windows = videos.windows(cfg.num_frames)
    if cfg.overfit > 0:
        windows = windows[:cfg.overfit]
    per_worker = cfg.batch_size // world.size
    log = open(out / METRICS, 'a') if world.rank == 0 else None
    result: Dict[str, Any] = {'trained': trained, 'frozen': frozen, 'start_step': start}

    def record(entry: Dict[str, Any]) -> None:
        world.report(entry)
        if log is not None:
            log.write(json.dumps(entry) + '\n')
            log.flush()

    def held_out(step: int) -> None:
        if val is not None:
            scores = evaluate(model, val, cfg.eval, device)
            record({'step': step, 'eval': scores, 'time': time.time()})
            result.setdefault('eval', {})[step] = scores

    if start == 0:
        held_out(0)
    began = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=start, unit='step', desc='sap_train fit',
               disable=not progress or world.rank != 0)
    step = start
    for step in range(start, cfg.steps):
        tick = time.monotonic()
        for group in optimizer.param_groups:
            group['lr'] = group['base_lr'] * lr_at(step, cfg)
        first = world.rank * per_worker
        samples = [videos.sample(cfg.seed, step, j, cfg.num_frames, cfg.max_objects, windows)
                   for j in range(first, first + per_worker)]
        batch = videos.batch(samples, cfg.num_frames).to(device)
        with _autocast(device):
            outputs = net(batch)
            if cfg.loss_weights == 'distortion':
                with distortion_weighted(videos.spec, device):
                    losses = loss_fn(outputs, batch.masks)
            else:
                losses = loss_fn(outputs, batch.masks)
        optimizer.zero_grad(set_to_none=True)
        losses['core_loss'].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        parts = world.mean({k: float(v.detach()) if torch.is_tensor(v) else float(v)
                            for k, v in losses.items()})
        record({'step': step + 1, **parts, 'grad_norm': float(grad_norm),
                'lr': optimizer.param_groups[0]['lr'], 's': time.monotonic() - tick})
        bar.update(1)
        bar.set_postfix(loss=f'{parts["core_loss"]:.3f}')
        result['losses'] = parts
        done = step + 1 == cfg.steps
        out_of_time = world.any(cfg.minutes is not None
                                and time.monotonic() - began > 60 * cfg.minutes)
        if done or out_of_time or (step + 1) % cfg.checkpoint_every == 0:
            rngs = world.gather(_rng_state(model))  # every rank takes part
            save(_state(model, optimizer, step + 1, cfg, rngs), step + 1)
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and not done:
            held_out(step + 1)
        if out_of_time:
            break
    bar.close()
    result['steps'] = step + 1 if cfg.steps > start else start
    if result['steps'] > start:  # the weights reached (all steps, or where --minutes stopped)
        held_out(result['steps'])
        if world.rank == 0:
            torch.save({'model': model.state_dict()}, out / WEIGHTS)
    if log is not None:
        log.close()
    return result
