"""The training objective, defined once: used by the trainer, the benchmark and the gradient analysis.

The model runs ``T_in + T_out - 1`` steps and predicts frames 2..T; ``loss: all`` (the reference
implementation) is the MSE over all of them, ``loss: future`` over the predicted frames only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rollout_loss(model: nn.Module, frames: Tensor, cfg, mask: Tensor | None = None, observer=None,
                 fast: bool | None = None) -> tuple[Tensor, Tensor]:
    """``(loss, firing rates per layer)`` of ``model`` on ``frames`` (B, >= T_in + T_out, C, H, W).

    ``mask``: the scheduled-sampling mask (training; ``None`` feeds the model's own predictions after the
    inputs); ``observer`` and ``fast`` go to :meth:`~stcsnn.models.SpikingPredictor.rollout`. The loss is
    computed in float32 whatever the autocast dtype of the rollout (in float64 for a
    ``dtype: float64`` model)."""
    t_in, t_out = cfg.input_frames, cfg.output_frames
    out = model.rollout(frames, t_in, t_out, mask, reverse=cfg.sampling == "reverse", observer=observer,
                        fast=fast)
    pred, target = out.frames, frames[:, 1:t_in + t_out]
    if cfg.loss == "future":
        pred, target = pred[:, t_in - 1:], target[:, t_in - 1:]
    dtype = torch.promote_types(pred.dtype, torch.float32)  # half -> float32, float64 stays float64
    return F.mse_loss(pred.to(dtype), target.to(dtype)), out.rates


class RolloutLoss(nn.Module):
    """:func:`rollout_loss` as a module (what DDP wraps, so gradients are averaged across ranks)."""

    def __init__(self, model: nn.Module, cfg) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, frames: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        return rollout_loss(self.model, frames, self.cfg, mask)
