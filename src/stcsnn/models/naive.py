"""Naive forecasters: the reference rows every comparison table needs.

- :class:`MeanImage` predicts, for every future frame, the pixel-wise mean frame of the training split: the best
  a model can do under summed squared error *without any information about the sequence* (no memory, no
  motion). A learned model that does not beat it clearly has learned nothing usable.
- :class:`LastFrame` predicts that nothing moves: every future frame is a copy of the last observed frame (the
  persistence forecast).

Both have the predictor's ``rollout(frames, input_frames, n_future)`` interface, so the one evaluation loop
(:func:`stcsnn.train.evaluate.evaluate_model`) scores them on the same test sequences with the same metrics.
They spike never: their firing rate is an empty tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stcsnn.models.predictor import Rollout

__all__ = ["LastFrame", "MeanImage", "mean_frame"]


@torch.no_grad()
def mean_frame(dataset, max_sequences: int | None = None) -> Tensor:
    """The pixel-wise mean (C, H, W), float64, over every frame (inputs and targets) of the first
    ``max_sequences`` sequences of ``dataset`` (all when None)."""
    n = len(dataset) if max_sequences is None else min(len(dataset), max_sequences)
    if n < 1:
        raise ValueError("the mean frame needs at least one sequence")
    total, count = None, 0
    for i in range(n):
        inputs, targets = dataset[i]
        seq = torch.cat([inputs, targets]).double()
        total = seq.sum(0) if total is None else total + seq.sum(0)
        count += seq.shape[0]
    return total / count


class _Naive(nn.Module):
    def _frames(self, frames: Tensor, input_frames: int, n_future: int) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def rollout(self, frames: Tensor, input_frames: int, n_future: int, **_: object) -> Rollout:
        """``input_frames + n_future - 1`` outputs, as the predictor's: output t predicts frame t + 1; the
        observed part (outputs 0 .. input_frames - 2) repeats each observed frame (it is never scored)."""
        observed = frames[:, 1:input_frames]
        future = self._frames(frames, input_frames, n_future).to(frames.dtype)
        return Rollout(torch.cat([observed, future], 1), frames.new_zeros(0))

    def forward(self, inputs: Tensor, n_future: int) -> Tensor:
        return self.rollout(inputs, inputs.shape[1], n_future).frames[:, -n_future:]


class MeanImage(_Naive):
    """Every future frame is ``mean`` (C, H, W): see :func:`mean_frame`."""

    def __init__(self, mean: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())

    def _frames(self, frames: Tensor, input_frames: int, n_future: int) -> Tensor:
        b = frames.shape[0]
        return self.mean.to(frames.device).expand(b, n_future, *self.mean.shape)


class LastFrame(_Naive):
    """Every future frame is the last observed one."""

    def _frames(self, frames: Tensor, input_frames: int, n_future: int) -> Tensor:
        last = frames[:, input_frames - 1:input_frames]
        return last.expand(-1, n_future, *last.shape[2:])
