"""Upstream's ``SAM2Train`` and loss, built from a SAM2 model yaml; freezing; parameter groups.

Everything numerical comes from sam2 1.1.0's own training code and its fine-tune config
(``sam2/configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml``), read at run time, not
copied: the prompt sampling (points, boxes, masks, correction clicks), the loss and its weights,
gradient clipping and the learning-rate ratios. The model architecture comes from the runtime's
yaml (``model.config`` name or a path, e.g. the nano yaml), so a trained file loads in the node
with the same ``model.config``.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hydra.utils import instantiate
import numpy as np
from omegaconf import DictConfig, OmegaConf
import sam2
import torch
import yaml

from sap_ros.engine.weights import spec_for
from sap_ros.errors import SapError

FINETUNE_YAML = 'configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml'
#: SAP's recipe: the Hiera image encoder frozen, everything else (memory encoder, memory
#: attention, mask decoder, prompt encoder, object-pointer and memory embeddings) trained.
FROZEN_BY_DEFAULT = ('image_encoder',)
INSTALL_HINT = ('install sam2 from its source distribution, which carries the training package: '
                'SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation --no-binary sam2 '
                'sam2==1.1.0, plus pip install tensordict tensorboard')


class TrainingUnavailable(SapError):
    """sam2's ``training`` package (or what it imports) is not installed."""


def upstream() -> Dict[str, Any]:
    """sam2's training classes: ``SAM2Train``, ``BatchedVideoDatapoint``, ... (lazy import)."""
    try:
        from training.model.sam2 import SAM2Train
        from training.utils.data_utils import BatchedVideoDatapoint, BatchedVideoMetaData
    except ImportError as exc:
        raise TrainingUnavailable(f"sam2's training code is not importable ({exc}): "
                                  f'{INSTALL_HINT}') from exc
    return {'SAM2Train': SAM2Train, 'BatchedVideoDatapoint': BatchedVideoDatapoint,
            'BatchedVideoMetaData': BatchedVideoMetaData}


def finetune_config() -> DictConfig:
    """Upstream's fine-tune config, as shipped in the installed sam2 package."""
    cfg = OmegaConf.load(os.path.join(sam2.__path__[0], FINETUNE_YAML))
    assert isinstance(cfg, DictConfig)
    return cfg


def prompt_settings(overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """SAM2Train's prompt-sampling arguments as upstream's fine-tune config sets them.

    ``overrides`` replaces single values (e.g. ``{'prob_to_use_pt_input_for_train': 1.0}``);
    an unknown name raises TrainingUnavailable's sibling SapError naming the valid ones.
    """
    names = [n for n in inspect.signature(upstream()['SAM2Train'].__init__).parameters
             if n not in ('self', 'image_encoder', 'memory_attention', 'memory_encoder',
                          'freeze_image_encoder', 'kwargs')]
    model = OmegaConf.to_container(finetune_config().trainer.model, resolve=False)
    assert isinstance(model, dict)
    settings = {n: model[n] for n in names if n in model}
    for key, value in dict(overrides or {}).items():
        if key not in names:
            raise SapError(f'--prompt {key}: not a prompt-sampling argument of SAM2Train; '
                           f'valid: {", ".join(names)}')
        settings[key] = value
    return settings


def model_yaml(config: str) -> str:
    """Absolute path of the yaml of a ``model.config`` value (a name or a ``.yaml`` path)."""
    return os.path.join(sam2.__path__[0], spec_for(config).yaml)


def build_train_model(config: str, image_size: int, seed: int,
                      prompts: Optional[Mapping[str, Any]] = None,
                      model_overrides: Sequence[str] = ()) -> torch.nn.Module:
    """``SAM2Train`` with the architecture of ``config``, seeded, on the CPU, train mode.

    ``model_overrides`` are OmegaConf dotted ``key=value`` settings under ``model`` (e.g.
    ``memory_attention.layer.dropout=0.0``).
    """
    cfg = OmegaConf.load(model_yaml(config))
    OmegaConf.update(cfg, 'model._target_', 'training.model.sam2.SAM2Train')
    OmegaConf.update(cfg, 'model.image_size', image_size)
    for key, value in prompt_settings(prompts).items():
        OmegaConf.update(cfg, f'model.{key}', value, force_add=True)
    for item in model_overrides:
        key, sep, value = item.partition('=')
        if not sep:
            raise SapError(f'--model-set {item!r}: expected key=value')
        OmegaConf.update(cfg, f'model.{key}', yaml.safe_load(value), force_add=False)
    OmegaConf.resolve(cfg)
    upstream()  # a clear error before hydra's own
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = instantiate(cfg.model, _recursive_=True)
    return model.train()


def build_loss() -> torch.nn.Module:
    """Upstream's ``MultiStepMultiMasksAndIous`` with the fine-tune config's weights."""
    upstream()
    return instantiate(finetune_config().trainer.loss.all)


def set_trainable(model: torch.nn.Module, train: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Freeze every parameter outside ``train``; returns (trained, frozen) top-level names.

    ``train`` holds module prefixes (``memory_attention``, ``sam_mask_decoder.iou_token``), or
    ``default`` (SAP: all but :data:`FROZEN_BY_DEFAULT`) or ``all``.
    """
    names = [n for n, _ in model.named_parameters()]
    if list(train) == ['all']:
        selected = set(names)
    elif list(train) == ['default']:
        selected = {n for n in names if not _under(n, FROZEN_BY_DEFAULT)}
    else:
        unknown = [p for p in train if not any(_under(n, (p,)) for n in names)]
        if unknown:
            tops = sorted({n.split('.')[0] for n in names})
            raise SapError(f'--train {",".join(unknown)}: no parameters under that prefix; '
                           f'top-level modules: {", ".join(tops)} (or default, all)')
        selected = {n for n in names if _under(n, tuple(train))}
    for name, param in model.named_parameters():
        param.requires_grad_(name in selected)
    trained = sorted({n.split('.')[0] for n in selected})
    frozen = sorted({n.split('.')[0] for n in names if n not in selected})
    return trained, frozen


def _under(name: str, prefixes: Tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float
                 ) -> List[Dict[str, Any]]:
    """AdamW parameter groups as in upstream's fine-tune config.

    No weight decay on biases and norms; the image encoder at upstream's ``vision_lr / base_lr``
    times ``lr``.
    """
    scratch = finetune_config().scratch
    vision_scale = float(scratch.vision_lr) / float(scratch.base_lr)
    groups: Dict[Tuple[bool, bool], List[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (name.startswith('image_encoder.'), param.ndim <= 1)
        groups.setdefault(key, []).append(param)
    return [{'params': params, 'lr': lr * (vision_scale if encoder else 1.0),
             'base_lr': lr * (vision_scale if encoder else 1.0),
             'weight_decay': 0.0 if no_decay else weight_decay}
            for (encoder, no_decay), params in sorted(groups.items())]


def upstream_clip_norm() -> float:
    """Gradient clipping max norm of upstream's fine-tune config."""
    return float(finetune_config().trainer.optim.gradient_clip.max_norm)


def prompt_rng(model: torch.nn.Module) -> np.random.Generator:
    """SAM2Train's own generator of prompt choices (seeded 42 upstream, alike on every worker)."""
    rng: np.random.Generator = getattr(model, 'rng')
    return rng


def trained_file_path(path: Path) -> Path:
    """Where ``sap_train fit`` writes the weights-only file next to its checkpoint."""
    return Path(path).with_name('model.pt')
