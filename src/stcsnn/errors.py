"""Exceptions for expected failures (bad input, missing files).

The command line prints these as one line, ``error: <message>``, and exits with status 2; anything else is a
bug and keeps its traceback. They subclass ValueError / TypeError so library users can catch them naturally.
"""

from __future__ import annotations

import typing
from typing import Any


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


# ------------------------------------------------------------------------------------- values in one-line messages
# Every message quotes a value through these: a hostile value (60,000 characters, a 2**40-fold shared reference,
# a self-containing list) is never printed, nor even repr()'d, in full.

class _Full(Exception):
    """Raised inside :func:`short` once enough text has been built."""


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (``...`` marks a cut).

    Built piece by piece and stopped as soon as the limit is passed, so the repr of a huge, deeply nested or
    self-referencing value is never computed in full."""
    pieces: list[str] = []
    length = 0

    def put(text: str) -> None:
        nonlocal length
        pieces.append(text)
        length += len(text)
        if length > limit:
            raise _Full

    def walk(x: Any) -> None:  # every container writes a bracket before recursing: depth <= limit + 1
        if isinstance(x, dict):
            put("{")
            for i, (k, v) in enumerate(x.items()):
                put(", " if i else "")
                walk(k)
                put(": ")
                walk(v)
            put("}")
        elif isinstance(x, (list, tuple, set, frozenset)):
            if isinstance(x, (set, frozenset)) and not x:
                put(f"{type(x).__name__}()")
                return
            left, right = "[]" if isinstance(x, list) else "()" if isinstance(x, tuple) else "{}"
            put(left)
            for i, v in enumerate(x):
                put(", " if i else "")
                walk(v)
            put("," if isinstance(x, tuple) and len(x) == 1 else "")
            put(right)
        else:
            put(_leaf_repr(x, limit))

    try:
        walk(value)
    except _Full:
        return "".join(pieces)[: max(limit - 3, 0)] + "..."
    return "".join(pieces)


def quoted(value: Any, limit: int = 60) -> str:
    """:func:`short`, plus the length of a string (or bytes) that was cut: ``'aaa...' (60,000 characters)``."""
    text = short(value, limit)
    if isinstance(value, (str, bytes)) and len(repr(value[: limit + 1])) > limit:  # short() cut it
        text += f" ({len(value):,} {'characters' if isinstance(value, str) else 'bytes'})"
    return text


def some(names: typing.Iterable[Any], first: int = 5) -> str:
    """The first few of ``names`` (each :func:`quoted`) and how many there are in all: ``'a', 'b', ... (5,000
    in all)``; a message naming many unknown keys stays one readable line."""
    names = list(names)
    shown = ", ".join(quoted(n, 40) for n in names[:first])
    return shown if len(names) <= first else f"{shown}, ... ({len(names):,} in all)"


def _leaf_repr(x: Any, limit: int) -> str:
    if isinstance(x, (str, bytes)):
        return repr(x[: limit + 1])  # the slice keeps a huge string's repr small; the caller cuts it
    if isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > 128:
        return f"<an integer of {x.bit_length()} bits>"  # str() of a huge int is slow (or refused)
    if hasattr(x, "shape") and hasattr(x, "dtype"):  # tensors, arrays: their size, not their contents
        return f"<{type(x).__name__} {getattr(x, 'dtype', '')} {tuple(x.shape)}>"
    try:
        return repr(x)
    except Exception:  # a broken __repr__ must not hide the real error
        return f"<{type(x).__name__}>"
