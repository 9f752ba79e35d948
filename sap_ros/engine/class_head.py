"""``classifier.kind: sam2_head``: a small head on SAM2's own features, and its file.

The head reads one vector per sighting: the patch's image embedding (SAM2's lowest-resolution
backbone level, the one its mask decoder reads) pooled under the object's mask, concatenated with
SAM2's object pointer, each L2-normalised (:func:`head_inputs`), and gives ``K`` class logits:
one linear layer, or one hidden layer with ReLU (``hidden_dim > 0``). SAM2 stays frozen; the head
is trained by ``sap_train classify`` on the same inputs (it calls :func:`head_inputs` too).

The head file (``classifier.head``, beside the SAM2 checkpoint) is a ``torch.save`` of a dict::

    {'format': 'sap_ros.class_head', 'version': 1, 'class_names': [str, ...],
     'feature_dim': int, 'pointer_dim': int, 'hidden_dim': int, 'state_dict': {...}}

read back with ``weights_only=True`` (no code runs on load). :func:`save_head` writes it,
:func:`load_head` reads and checks it; every problem is a :class:`ConfigError` naming
``classifier.head``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn
import torch.nn.functional as F

from sap_ros.engine.classify import Sightings
from sap_ros.errors import ConfigError

HEAD_FORMAT = 'sap_ros.class_head'
HEAD_VERSION = 1
_PARAM = 'classifier.head'
_KEYS = ('class_names', 'feature_dim', 'pointer_dim', 'hidden_dim', 'state_dict')


def head_inputs(features: torch.Tensor, pointers: torch.Tensor) -> torch.Tensor:
    """``(N, C + C_ptr)``: L2-normalised pooled features and pointers, side by side."""
    return torch.cat([F.normalize(features.float(), dim=1),
                      F.normalize(pointers.float(), dim=1)], dim=1)


class Sam2Head(nn.Module):
    """Class logits from :func:`head_inputs`: linear, or one ReLU hidden layer."""

    def __init__(self, feature_dim: int, pointer_dim: int, n_classes: int,
                 hidden_dim: int = 0) -> None:
        """Layers for ``feature_dim + pointer_dim`` inputs and ``n_classes`` outputs."""
        super().__init__()
        if feature_dim < 0 or pointer_dim < 0 or feature_dim + pointer_dim < 1:
            raise ConfigError(_PARAM, f'a head needs inputs, got feature_dim {feature_dim} and '
                              f'pointer_dim {pointer_dim}')
        if n_classes < 1 or hidden_dim < 0:
            raise ConfigError(_PARAM, f'a head needs >= 1 class and hidden_dim >= 0, got '
                              f'{n_classes} classes, hidden_dim {hidden_dim}')
        self.feature_dim, self.pointer_dim = int(feature_dim), int(pointer_dim)
        self.hidden_dim, self.n_classes = int(hidden_dim), int(n_classes)
        width = self.feature_dim + self.pointer_dim
        self.layers: nn.Module = (
            nn.Linear(width, n_classes) if hidden_dim == 0 else
            nn.Sequential(nn.Linear(width, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, n_classes)))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, n_classes)`` logits of ``(N, feature_dim + pointer_dim)`` inputs."""
        return self.layers(inputs)


class Sam2HeadClassifier:
    """The :class:`~sap_ros.engine.classify.Classifier` of a :class:`Sam2Head`."""

    def __init__(self, head: Sam2Head, class_names: Sequence[str]) -> None:
        """Wrap ``head`` (put on its device, in eval mode) with its ``class_names``."""
        names = tuple(str(n) for n in class_names)
        if len(names) != head.n_classes or not all(names) or len(set(names)) != len(names):
            raise ConfigError(_PARAM, f'{head.n_classes} outputs need as many distinct, '
                              f'non-empty class names, got {list(names)}')
        self.head = head.eval()
        self._names = names

    @property
    def class_names(self) -> Tuple[str, ...]:
        """The ``K`` class names (class id k is ``class_names[k - 1]``)."""
        return self._names

    @property
    def dims(self) -> Tuple[int, int]:
        """``(feature_dim, pointer_dim)`` the head reads."""
        return self.head.feature_dim, self.head.pointer_dim

    def check_dims(self, feature_dim: int, pointer_dim: int, source: str) -> None:
        """A clear error when ``source``'s features do not fit the head."""
        if (feature_dim, pointer_dim) != self.dims:
            raise ConfigError(_PARAM, f'the head reads {self.dims[0]}-d features and '
                              f'{self.dims[1]}-d object pointers, {source} gives {feature_dim}'
                              f' and {pointer_dim}: train a head for this model')

    def classify(self, sightings: Sightings) -> torch.Tensor:
        """``(N, K)`` softmax probabilities on the sightings' device (no host read)."""
        self.check_dims(int(sightings.features.shape[1]), int(sightings.pointers.shape[1]),
                        'the segmenter')
        param = next(self.head.parameters())
        if param.device != sightings.features.device:
            self.head.to(sightings.features.device)
        # float32 even inside the frame's autocast: a trained head's first layer holds the
        # folded z-scoring (large weights and a bias that cancels them), which bf16 would ruin.
        device_type = sightings.features.device.type
        with torch.no_grad(), torch.autocast(device_type=device_type, enabled=False):
            inputs = head_inputs(sightings.features, sightings.pointers)
            return torch.softmax(self.head(inputs).float(), dim=1)


def save_head(path: Union[str, Path], head: Sam2Head, class_names: Sequence[str]) -> Path:
    """Write ``head`` and its class names as a head file (module docstring); returns the path."""
    Sam2HeadClassifier(head, class_names)  # the same checks as on load
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'format': HEAD_FORMAT, 'version': HEAD_VERSION,
                'class_names': [str(n) for n in class_names],
                'feature_dim': head.feature_dim, 'pointer_dim': head.pointer_dim,
                'hidden_dim': head.hidden_dim,
                'state_dict': {k: v.detach().cpu() for k, v in head.state_dict().items()}},
               target)
    return target


def load_head(path: Union[str, Path], device: Union[str, torch.device] = 'cpu',
              dims: Optional[Tuple[int, int]] = None) -> Sam2HeadClassifier:
    """Read a head file onto ``device``; ``dims`` (feature, pointer): the model's, checked."""
    source = Path(path).expanduser()
    if not str(path).strip() or not source.is_file():
        raise ConfigError(_PARAM, f'head file {str(path)!r} does not exist (sap_train classify '
                          'writes one)')
    try:
        data: Any = torch.load(source, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise ConfigError(_PARAM, f'{source} is not a readable head file: {err}') from None
    if not isinstance(data, dict) or data.get('format') != HEAD_FORMAT:
        raise ConfigError(_PARAM, f'{source} is not a sap_ros head file (no format '
                          f'{HEAD_FORMAT!r}; a SAM2 checkpoint goes in model.checkpoint)')
    if data.get('version') != HEAD_VERSION or any(k not in data for k in _KEYS):
        raise ConfigError(_PARAM, f'{source}: head file version {data.get("version")!r} with '
                          f'keys {sorted(data)}; this sap_ros reads version {HEAD_VERSION} '
                          f'with {list(_KEYS)}')
    names = list(data['class_names'])
    head = Sam2Head(int(data['feature_dim']), int(data['pointer_dim']), len(names),
                    int(data['hidden_dim']))
    state: Dict[str, torch.Tensor] = data['state_dict']
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(_PARAM, f'{source}: weights do not match the dims it states: '
                          f'{err}') from None
    classifier = Sam2HeadClassifier(head.to(device), names)
    if dims is not None:
        classifier.check_dims(dims[0], dims[1], 'the SAM2 model (model.config)')
    return classifier
