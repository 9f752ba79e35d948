"""Typed exceptions raised by the ROS-free core.

Every exception carries the offending value in its message, so a node can log it as is.
"""
from __future__ import annotations


class SapError(Exception):
    """Base class of all errors raised by ``sap_ros``."""


class InvalidInputError(SapError, ValueError):
    """An input frame, prompt or array is unusable (wrong shape, dtype, encoding, empty, NaN)."""


class ErpShapeError(InvalidInputError):
    """An equirectangular frame is not 2:1 (within 1 px) or is empty."""


class ConfigError(SapError, ValueError):
    """A configuration value is invalid; the message names the parameter."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f'{parameter}: {message}')
        self.parameter = parameter


class CheckpointError(SapError):
    """A SAM2 checkpoint is missing, unreadable or does not fit the model config."""
