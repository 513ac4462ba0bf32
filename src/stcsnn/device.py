"""Choosing the torch device from a config value or a ``--device`` flag."""

from __future__ import annotations

import torch

from stcsnn.errors import ConfigError


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` (this process's local rank) or ``cuda:N``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
        return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    if name != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device("cpu")
