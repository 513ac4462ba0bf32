"""Checkpoints that lose nothing: atomic writes, safe loading, and model + config round trips.

A checkpoint is a plain dict of tensors and Python scalars, loaded with ``torch.load(..., weights_only=True)``:
opening one never runs code from it. Every write goes to a temporary file in the same folder, is flushed and
fsync'ed, then renamed over the target, so a crash mid-write leaves the previous file intact.
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

FORMAT = "stcsnn-checkpoint"
VERSION = 1


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


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict safely; clear errors for missing, truncated or foreign files."""
    ckpt = safe_load(path, "checkpoint", "truncated or not a checkpoint saved by stcsnn?")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{str(path)!r} is not an stcsnn checkpoint (format {found!r}); "
            "for the paper's reference checkpoints use `stcsnn import-official`"
        )
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """``model, cfg = load_model("runs/x/best.pt")``: the model (eval mode) and its config."""
    from stcsnn.config import make_config
    from stcsnn.models import build_model

    ckpt = read_checkpoint(path)
    cfg = make_config(ckpt["config"])
    model = build_model(cfg)
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as exc:  # same keys, other shapes
        sizes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match its model ({cfg.neuron}, hidden {cfg.hidden_channels}): "
            f"{'; '.join(sizes[:3]) or str(exc).splitlines()[0]}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match its model ({cfg.neuron}, hidden {cfg.hidden_channels}): "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model.to(device).eval(), cfg


def model_checkpoint(model: torch.nn.Module, cfg, **extra: Any) -> dict[str, Any]:
    """A minimal checkpoint (weights + config) that :func:`load_model` reads."""
    return {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "model": model.state_dict(), **extra}
