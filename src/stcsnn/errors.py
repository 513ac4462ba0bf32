"""Exceptions for expected failures (bad input, missing files).

The command line prints these as one line, ``error: <message>``, and exits with status 2; anything else is a
bug and keeps its traceback. They subclass ValueError / TypeError so library users can catch them naturally.
"""

from __future__ import annotations


class StcsnnError(ValueError):
    """An expected failure whose message says what was expected, what was found and how to fix it."""


class StcsnnTypeError(StcsnnError, TypeError):
    """A value of the wrong type (e.g. an integer tensor where floating point is required)."""


class ConfigError(StcsnnError):
    """An invalid configuration: unknown key, wrong type, impossible combination."""


class DataError(StcsnnError):
    """A dataset file that is missing, truncated, corrupt or of the wrong shape/dtype/range."""


class CheckpointError(StcsnnError):
    """A checkpoint that is missing, truncated, or from another model."""


class RunLockedError(StcsnnError):
    """A run folder is in use by another command (``stcsnn train``, ``stcsnn import-official``) right now."""
