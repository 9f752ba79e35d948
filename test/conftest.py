"""Test helpers shared across folders are importable by name from any test file.

``random_sam2`` (random-weight SAM2 configuration and synthetic frames) lives beside the engine
tests; evaluation tests use it too, also when run on their own.
"""
from __future__ import annotations

from pathlib import Path
import sys

_HELPERS = [Path(__file__).parent / 'engine']
for _folder in _HELPERS:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
