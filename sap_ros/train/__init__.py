"""Trajectory-aligned training of SAM2 (``sap_train``): evaluation side, never loaded by the node.

- :mod:`sap_ros.train.data`: ERP frames + instance labels -> patch videos along the runtime's
  own path, written in upstream's VOS layout (``sap_train data``).
- :mod:`sap_ros.train.videos`: those videos -> upstream's ``BatchedVideoDatapoint`` batches.
- :mod:`sap_ros.train.model`: upstream's ``SAM2Train`` and loss built from a SAM2 model yaml,
  with the prompt sampling of upstream's fine-tune config; freezing.
- :mod:`sap_ros.train.fit`: the training loop (``sap_train fit``), checkpoints, resume.
- :mod:`sap_ros.train.evaluate`: held-out patch IoU (``sap_train eval``).
- :mod:`sap_ros.train.ray_fit`: the same loop on Ray Train workers (``--workers N``).

Upstream's ``training`` package (sam2 1.1.0's sdist) is imported lazily, so that this package
can be listed and documented where it is not installed.
"""
from pathlib import Path

#: The nano model shipped for tests and CPU experiments (not a product model).
NANO_CONFIG = Path(__file__).resolve().parent / 'configs' / 'sam2.1_nano.yaml'
