"""File helpers every layer may use: atomic writes, writability checks, safe (weights-only) loading.

This module sits at the bottom of the package (it imports only :mod:`stcsnn.errors`), so that configs, figures,
models and the trainer can all write files without importing each other. Every write goes to a temporary file in
the same folder, is flushed and fsync'ed, then renamed over the target: a crash mid-write leaves the previous
file intact. Loading uses ``torch.load(..., weights_only=True)``: opening a file never runs code from it.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from stcsnn.errors import CheckpointError


def _atomic_write(path: str | os.PathLike, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the result the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def check_writable(path: str | os.PathLike) -> None:
    """Fail early (before hours of work) when ``path``'s folder cannot be created or written."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CheckpointError(f"cannot write to {str(folder)!r}: {exc.strerror or exc}") from None


def load_reason(exc: Exception) -> str:
    """The informative part of torch.load's (long, multi-line) error message."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    unsupported = re.search(r"Unsupported global: GLOBAL \S+", text)
    if unsupported:
        return f"it holds a Python object that weights_only loading refuses ({unsupported.group(0)})"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0][:200]


def safe_load(path: str | os.PathLike, what: str, hint: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (never runs code from the file), with one clear error
    line for a missing, truncated or foreign file: ``{what} 'path' ... ({hint})``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} not found")
    data = path.read_bytes()
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a pickle holding code or foreign classes, not a torch file
        raise CheckpointError(
            f"{what} {str(path)!r} cannot be read with weights_only=True ({len(data)} bytes): "
            f"{load_reason(exc)} ({hint})"
        ) from None
