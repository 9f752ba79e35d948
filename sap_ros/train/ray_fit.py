"""``sap_train fit --workers N``: the same loop on Ray Train workers, DDP through Ray's torch.

Ray is already the evaluation engine of ``sap_eval``. Each worker runs :func:`fit.run` with its
rank: the model is wrapped by ``ray.train.torch.prepare_model`` (DistributedDataParallel, gloo
on CPUs, nccl on GPUs), each worker draws its share of the global batch (the same windows
whatever N is, see :mod:`sap_ros.train.videos`), and upstream's loss normalises by the objects
of all workers, so N workers compute the gradient one worker would. Checkpoints go through
``ray.train.report`` (rank 0 writes, every rank reports) into Ray's storage under ``--out``;
Ray restarts failed workers from the latest one (``FailureConfig``). Metrics, curves and
``model.pt`` are written by rank 0 into ``--out`` (a folder every worker can reach).
After the run every worker writes a digest of its parameters under ``--out/replicas``: after
an all-reduced step the replicas must agree.
"""
from __future__ import annotations

from dataclasses import replace
import hashlib
from pathlib import Path
import tempfile
from typing import Any, Callable, Dict, Optional

import torch

from sap_ros.train.fit import CHECKPOINT, METRICS, FitConfig, World, run
from sap_ros.train.plots import read_metrics

REPLICAS = 'replicas'


def parameter_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes, in name order."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_worker(config: Dict[str, Any]) -> None:
    """What each Ray Train worker runs: :func:`fit.run` with its rank (``config['cfg']``)."""
    import ray.train
    import ray.train.torch

    cfg: FitConfig = config['cfg']
    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    models = []

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        models.append(model)
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={'find_unused_parameters': True})

    def save(state: Dict[str, Any], step: int) -> None:
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                torch.save(state, Path(folder) / CHECKPOINT)
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report({'step': step}, checkpoint=checkpoint)

    def load() -> Optional[Dict[str, Any]]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return torch.load(Path(folder) / CHECKPOINT, map_location='cpu', weights_only=True)

    run(cfg, World(rank=rank, size=size, wrap=wrap, save=save, load=load), progress=rank == 0)
    replicas = Path(cfg.out) / REPLICAS
    replicas.mkdir(parents=True, exist_ok=True)
    (replicas / f'rank{rank}.sha256').write_text(parameter_digest(models[0]) + '\n')


def run_on_ray(cfg: FitConfig, workers: int, gpus_per_worker: float = 0.0,
               address: Optional[str] = None, max_failures: int = 2,
               loop: Callable[[Dict[str, Any]], None] = train_worker) -> Dict[str, Any]:
    """Train on ``workers`` Ray Train workers; returns the held-out scores by step.

    ``loop`` is what each worker runs (:func:`train_worker`, or a function around it).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(cfg.out).absolute()
    cfg = replace(cfg, out=str(out), data=str(Path(cfg.data).absolute()),
                  val=str(Path(cfg.val).absolute()) if cfg.val else None)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    use_gpu = gpus_per_worker > 0
    trainer = TorchTrainer(
        loop, train_loop_config={'cfg': cfg},
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu,
            resources_per_worker={'CPU': max(1, cfg.threads), 'GPU': gpus_per_worker}
            if use_gpu else {'CPU': max(1, cfg.threads)}),
        torch_config=TorchConfig(backend='nccl' if use_gpu else 'gloo'),
        run_config=RunConfig(name='ray', storage_path=str(out),
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    trainer.fit()
    result: Dict[str, Any] = {'steps': cfg.steps}
    if (out / METRICS).is_file():
        steps, evals = read_metrics(out / METRICS)
        result['steps'] = steps[-1]['step'] if steps else 0
        result['losses'] = steps[-1] if steps else {}
        result['eval'] = {e['step']: e['eval'] for e in evals}
    return result
