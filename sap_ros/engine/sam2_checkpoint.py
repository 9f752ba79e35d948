"""Choosing and building a SAM2 model: config names, checkpoint files, device, dtype.

Which file belongs to which ``model.config`` name and where it comes from lives in
:mod:`sap_ros.engine.weights` (re-exported here). This module recognises the official release
files (size first, then sha256), reads a ``.pt`` file safely (``torch.load(weights_only=True)``,
as upstream ``sam2`` does), explains a file that does not fit, and builds the SAM2 video model
from sam2's own yaml configs. Running the model is :mod:`sap_ros.engine.sam2_adapter`'s job;
together they are the only users of ``sam2``.
"""
from __future__ import annotations

import os
from pathlib import Path
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hydra.utils import instantiate
from omegaconf import OmegaConf
import sam2
import torch

from sap_ros.engine.weights import (  # the registry of files lives there (no torch needed)
    DOWNLOAD_SCRIPT,
    MODEL_SPECS,
    OFFICIAL_FILES,
    SAM20_URL,
    SAM21_URL,
    ModelSpec,
    OfficialFile,
    empty_checkpoint_message,
    how_to_get,
    resolve_checkpoint_path,
    sha256_of,
    spec_for,
)
from sap_ros.errors import CheckpointError, ConfigError
from sap_ros.sphere.torch_device import resolve_device

__all__ = ['DOWNLOAD_SCRIPT', 'MODEL_SPECS', 'OFFICIAL_FILES', 'SAM20_URL', 'SAM21_URL',
           'ModelSpec', 'OfficialFile', 'build_sam2_model', 'check_state_dict',
           'empty_checkpoint_message', 'guess_config', 'how_to_get', 'identify_official',
           'place_model', 'read_state_dict', 'resolve_checkpoint_path', 'resolve_device',
           'resolve_dtype', 'sha256_of', 'spec_for']

_TRUNK_KEY = 'image_encoder.trunk.patch_embed.proj.weight'
_BLOCK_KEY = re.compile(r'image_encoder\.trunk\.blocks\.(\d+)\.')
# Parameters that exist in SAM 2.1 models and not in SAM 2.0 ones.
_SAM21_ONLY_KEYS = ('no_obj_embed_spatial', 'obj_ptr_tpos_proj.weight')


def identify_official(path: Path, table: Optional[Sequence[OfficialFile]] = None
                      ) -> Optional[OfficialFile]:
    """The official file ``path`` is, or None; sha256 is computed only when the size matches.

    ``table`` defaults to :data:`OFFICIAL_FILES`.
    """
    size = path.stat().st_size
    table = OFFICIAL_FILES if table is None else table
    candidates = [entry for entry in table if entry.size_bytes == size]
    if not candidates:
        return None
    digest = sha256_of(path)
    for entry in candidates:
        if entry.sha256 == digest:
            return entry
    return None


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Read ``{'model': state_dict}`` (official layout) or a bare state dict, on the CPU.

    Raises CheckpointError when the file is not a checkpoint torch can read safely.
    """
    try:
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # the weights-only unpickler raises anything on garbage
        # (seen: IndexError 'pop from empty list' for a text file); all mean "not a checkpoint".
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
        raise CheckpointError(
            f'{path} is not a PyTorch checkpoint that torch.load(weights_only=True) can read '
            f'({type(exc).__name__}: {first_line[:300]}). Expected a SAM2 .pt file such as '
            f'the official downloads ({SAM21_URL}...).') from exc
    state = loaded.get('model', loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f'{path} holds a {type(loaded).__name__}, not a state dict '
                              f"(expected {{'model': state_dict}} as in the official files, or "
                              f'a bare state dict)')
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f'{path} is not a state dict: {len(bad)} entries are not tensors '
                              f'(e.g. {bad[:3]}); top-level keys: {sorted(map(str, loaded))[:8]}')
    return state


def guess_config(state: Mapping[str, torch.Tensor]) -> Optional[Tuple[str, str]]:
    """Guess ``(model.config, key prefix)`` from a state dict's Hiera trunk, or None.

    The trunk width and block count tell the size, the SAM 2.1-only parameters tell the version.
    The prefix is what precedes the standard key names (e.g. ``'module.'``), usually ``''``.
    """
    trunk_keys = [k for k in state if k.endswith(_TRUNK_KEY)]
    if not trunk_keys:
        return None
    prefix = trunk_keys[0][:-len(_TRUNK_KEY)]
    dim = int(state[trunk_keys[0]].shape[0])
    blocks = {int(m.group(1)) for k in state
              if k.startswith(prefix) and (m := _BLOCK_KEY.match(k[len(prefix):]))}
    n_blocks = max(blocks) + 1 if blocks else 0
    is_21 = any(prefix + k in state for k in _SAM21_ONLY_KEYS)
    version = 'sam2.1' if is_21 else 'sam2'
    for spec in MODEL_SPECS.values():
        if (spec.name.startswith(version + '_') and spec.trunk_dim == dim
                and spec.trunk_blocks == n_blocks):
            return spec.name, prefix
    return None


def _examples(items: List[str], limit: int = 4) -> str:
    shown = ', '.join(items[:limit])
    return shown + (', ...' if len(items) > limit else '')


def check_state_dict(path: Path, state: Mapping[str, torch.Tensor],
                     expected: Mapping[str, torch.Tensor], spec: ModelSpec) -> None:
    """Raise CheckpointError unless ``state`` has exactly the keys and shapes of ``expected``.

    The message lists a few missing and unexpected keys and shape mismatches, and suggests the
    ``model.config`` the file probably belongs to.
    """
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(f'{k} (file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})'
                        for k in expected if k in state and state[k].shape != expected[k].shape)
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing keys ({_examples(missing)})')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys ({_examples(unexpected)})')
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatches ({_examples(mismatched, 3)})')
    guess = guess_config(state)
    if guess is None:
        hint = ('It does not look like a SAM2 checkpoint (no Hiera image-encoder weights '
                f'{_TRUNK_KEY!r}). {how_to_get(spec)}.')
    else:
        name, prefix = guess
        prefix_note = (f' Its keys carry the prefix {prefix!r} (e.g. a DistributedDataParallel '
                       f'save); strip it.' if prefix else '')
        if name != spec.name:
            hint = (f'The file looks like a {name} checkpoint: set model.config={name} (or use '
                    f'{spec.file_name} for {spec.name}).{prefix_note}')
        else:
            hint = (f'It has the layout of {name} but does not match it exactly (a truncated '
                    f'or modified save?).{prefix_note} {how_to_get(spec)}.')
    raise CheckpointError(f'{path} does not fit model.config={spec.name}: '
                          f'{"; ".join(problems)}. {hint}')


# Overrides upstream applies in build_sam2_video_predictor (SAM2Base takes no fill_hole_area: no
# hole filling, so no compiled CUDA extension is needed).
_VIDEO_OVERRIDES = {
    'binarize_mask_from_pts_for_mem_enc': True,
    'sam_mask_decoder_extra_args': {'dynamic_multimask_via_stability': True,
                                    'dynamic_multimask_stability_delta': 0.05,
                                    'dynamic_multimask_stability_thresh': 0.98},
}


def resolve_dtype(name: str, device: torch.device) -> Tuple[torch.dtype, str]:
    """Compute dtype for ``model.dtype`` on ``device`` and a note when the request is changed."""
    table = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
    if name != 'auto' and name not in table:
        raise ConfigError('model.dtype', f'must be auto|float32|float16|bfloat16, got {name!r}')
    if device.type != 'cuda':
        if name in ('auto', 'float32'):
            return torch.float32, ''
        return torch.float32, f'model.dtype={name} runs as float32 on {device.type}'
    # Native bfloat16 on the requested device (Ampere and later); torch.cuda.is_bf16_supported()
    # asks the current device and counts emulation, which is slower than float16.
    bf16_ok = torch.cuda.get_device_capability(device) >= (8, 0)
    if name == 'auto':
        return (torch.bfloat16 if bf16_ok else torch.float16), ''
    if name == 'bfloat16' and not bf16_ok:
        raise ConfigError('model.dtype', f'bfloat16 is not supported on {device}; use float16 '
                          f'or auto')
    return table[name], ''


def build_sam2_model(yaml: str, image_size: int, seed: int) -> torch.nn.Module:
    """Instantiate the SAM2 video model (SAM2Base, with memory) on the CPU, seeded, eval mode."""
    cfg = OmegaConf.load(os.path.join(sam2.__path__[0], yaml))
    OmegaConf.update(cfg, 'model.image_size', image_size)
    for key, value in _VIDEO_OVERRIDES.items():
        OmegaConf.update(cfg, f'model.{key}', value, force_add=True)
    OmegaConf.resolve(cfg)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        model = instantiate(cfg.model, _recursive_=True)
    return model.eval()


def place_model(model: torch.nn.Module, device: torch.device,
                compile_image_encoder: bool = False) -> torch.nn.Module:
    """``model`` on ``device``, ready to run: cached tables moved, TF32, optional compile.

    * Upstream builds its RoPE tables (``freqs_cis``) and sine position-encoding caches on
      ``"cuda"`` whenever CUDA exists, outside the parameters and buffers that ``.to`` moves:
      left there, a model on the CPU or on another GPU copies them across devices on every
      forward. They are moved to ``device``.
    * On CUDA Ampere or later, TF32 for float32 matmuls and convolutions, as upstream's examples
      and benchmark set it (process-wide; autocast ops run in bf16/fp16 anyway).
    * ``compile_image_encoder``: ``torch.compile`` of the image encoder's forward, as upstream's
      ``vos_optimized`` compiles it but without max-autotune (that takes minutes).
    """
    model = model.to(device)
    for module in model.modules():
        freqs = getattr(module, 'freqs_cis', None)
        if isinstance(freqs, torch.Tensor):
            setattr(module, 'freqs_cis', freqs.to(device))
        cache = getattr(module, 'cache', None)
        if isinstance(cache, dict):
            for key, value in list(cache.items()):
                if isinstance(value, torch.Tensor):
                    cache[key] = value.to(device)
    if device.type == 'cuda' and torch.cuda.get_device_capability(device)[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if compile_image_encoder:
        encoder: Any = model.image_encoder
        encoder.forward = torch.compile(encoder.forward, dynamic=False)
    return model
