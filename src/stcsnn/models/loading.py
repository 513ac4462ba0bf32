"""Checkpoint files of stcsnn models: the format, reading one safely, and model + config round trips.

A checkpoint is a plain dict of tensors and Python scalars (``format: stcsnn-checkpoint``), loaded with
``torch.load(..., weights_only=True)`` through :func:`stcsnn.io.safe_load`: opening one never runs code from it.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from stcsnn.errors import CheckpointError
from stcsnn.io import safe_load

FORMAT = "stcsnn-checkpoint"
VERSION = 1


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
