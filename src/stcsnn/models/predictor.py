"""SpikingPredictor: the PredRNN-style stack of spiking cells used by the paper's reference implementation.

Per time step t (frames already cut into p x p patches, see :mod:`stcsnn.models.patch`)::

    x_0 = input frame t (real valued: direct encoding)          # or the model's own prediction, see below
    s_1, state_1 = cell_1(x_0, state_1)
    s_l, state_l = cell_l(s_{l-1}, state_l)   for l = 2..L      # layer l reads layer l-1's spikes
    prediction of frame t+1 = readout(s_L)                      # 1x1 conv, no bias, to p*p*C channels

The model runs ``T_in + n_future - 1`` steps and outputs frames 2..T_in+n_future. After the ``T_in`` input
frames the input is the model's own previous prediction (fully autoregressive), unless a scheduled-sampling
mask says to feed the true frame (training only).

Speed: the input frames are known before the run, so over that prefix the model is evaluated *layer by
layer* -- each layer's synaptic convolution runs once over all prefix frames as one batch, then only the
cheap elementwise neuron update steps through time. From the first predicted frame on it steps frame by frame,
since each input depends on the previous output. ``fast=False`` steps everything one frame at a time (the
structure of the reference implementation); both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from stcsnn.errors import StcsnnError, StcsnnTypeError
from stcsnn.models.patch import from_patches, to_patches
from stcsnn.neurons.registry import build_neuron, get_spec


class Rollout(NamedTuple):
    """``frames``: (B, steps, C, H, W), output t predicts frame t+1; ``rates``: (L,) mean firing rate per layer."""

    frames: Tensor
    rates: Tensor


class SpikingPredictor(nn.Module):
    def __init__(
        self,
        neuron: str,
        frame_channels: int,
        hidden_channels: list[int] | tuple[int, ...] = (64, 64, 64),
        kernel_size: int = 5,
        patch_size: int = 4,
        gradient_detach: bool = False,
        neuron_options: dict | None = None,
    ) -> None:
        super().__init__()
        self.neuron = neuron
        self.frame_channels = frame_channels
        self.patch_size = patch_size
        self.hidden_channels = list(hidden_channels)
        options = dict(neuron_options or {})
        if get_spec(neuron).is_stc:
            options.setdefault("gradient_detach", gradient_detach)
        patch_channels = patch_size * patch_size * frame_channels
        widths = [patch_channels, *self.hidden_channels]
        self.cells = nn.ModuleList(
            build_neuron(neuron, widths[i], widths[i + 1], kernel_size, **options) for i in range(len(widths) - 1)
        )
        self.readout = nn.Conv2d(self.hidden_channels[-1], patch_channels, 1, bias=False)
        self.fast = True

    # ------------------------------------------------------------------ checks
    def check_frames(self, frames: Tensor, what: str = "frames") -> None:
        if not isinstance(frames, Tensor):
            raise StcsnnTypeError(f"{what} must be a torch.Tensor, got {type(frames).__name__}")
        if not frames.is_floating_point():
            raise StcsnnTypeError(f"{what} must be floating point in [0, 1], got dtype {frames.dtype}")
        if frames.dim() != 5:
            raise StcsnnError(f"{what} must have shape (B, T, C, H, W), got {tuple(frames.shape)}")
        _, _, c, h, w = frames.shape
        if c != self.frame_channels:
            raise StcsnnError(f"{what} must have {self.frame_channels} channels, got {c} (shape {tuple(frames.shape)})")
        if h % self.patch_size or w % self.patch_size:
            raise StcsnnError(f"patch size {self.patch_size} must divide the frame size, got {h}x{w}")

    # ------------------------------------------------------------------ running
    def forward(self, inputs: Tensor, n_future: int) -> Tensor:
        """Predict ``n_future`` frames after ``inputs`` (B, T_in, C, H, W), fully autoregressively."""
        return self.rollout(inputs, inputs.shape[1], n_future).frames[:, -n_future:]

    def rollout(
        self,
        frames: Tensor,
        input_frames: int,
        n_future: int,
        mask: Tensor | None = None,
        reverse: bool = False,
        observer: Callable[[int, int, Tensor, NamedTuple], None] | None = None,
    ) -> Rollout:
        """Run ``input_frames + n_future - 1`` steps.

        ``frames`` (B, T, C, H, W) holds at least the ``input_frames`` observed frames; frames after them are
        read only where ``mask`` (scheduled sampling, training) selects the true frame: ``mask[b, j] = 1`` feeds
        the true frame. Scheduled: ``mask`` is (B, n_future - 1) for the inputs of steps ``input_frames ..``;
        reverse (PredRNN-v2): (B, input_frames + n_future - 2) for the inputs of steps ``1 ..``.
        Without a mask the model never reads a frame after ``input_frames``.
        ``observer(t, layer, spikes, state)``, if given, is called after every neuron update (for analysis:
        e.g. ``state.v.retain_grad()`` to read gradients through time).
        """
        self.check_frames(frames)
        if n_future < 1 or input_frames < 1:
            raise StcsnnError(f"need input_frames >= 1 and n_future >= 1, got {input_frames} and {n_future}")
        if frames.shape[1] < input_frames:
            raise StcsnnError(f"expected at least {input_frames} input frames, got {frames.shape[1]}")
        steps = input_frames + n_future - 1
        if mask is None:
            frames = frames[:, :input_frames]  # no ground truth after the inputs can leak in
        else:
            want = steps - 1 if reverse else n_future - 1
            if tuple(mask.shape[:2]) != (frames.shape[0], want) or frames.shape[1] < steps:
                raise StcsnnError(f"scheduled-sampling mask must be (B, {want}) with {steps} frames, "
                                  f"got mask {tuple(mask.shape)} and {frames.shape[1]} frames")
            mask = mask.to(frames.dtype).view(*mask.shape[:2], 1, 1, 1)
        p = self.patch_size
        x = to_patches(frames, p)
        prefix = (1 if (reverse and mask is not None) else input_frames) if self.fast else 0
        states: list = [None] * len(self.cells)
        rate_sums = torch.zeros(len(self.cells), device=frames.device)
        outputs: list[Tensor] = []
        if prefix:
            spikes = x[:, :prefix]
            for l, cell in enumerate(self.cells):
                currents = _time_batched(cell.synapse, spikes)
                seq = []
                for t in range(prefix):
                    if states[l] is None:
                        states[l] = cell.init_state(currents[:, t])
                    s, states[l] = cell.update(currents[:, t], states[l])
                    if observer is not None:
                        observer(t, l, s, states[l])
                    seq.append(s)
                spikes = torch.stack(seq, 1)
                rate_sums[l] += spikes.detach().mean(dim=(0, 2, 3, 4)).sum()
            outputs.append(_time_batched(self.readout, spikes))
        prev = outputs[-1][:, -1] if outputs else None
        for t in range(prefix, steps):
            if t < input_frames and not (reverse and mask is not None and t > 0):
                net = x[:, t]
            elif mask is None:
                net = prev
            else:
                m = mask[:, t - 1] if reverse else mask[:, t - input_frames]
                net = m * x[:, t] + (1 - m) * prev
            for l, cell in enumerate(self.cells):
                current = cell.synapse(net)
                if states[l] is None:
                    states[l] = cell.init_state(current)
                net, states[l] = cell.update(current, states[l])
                if observer is not None:
                    observer(t, l, net, states[l])
                rate_sums[l] += net.detach().mean()
            prev = self.readout(net)
            outputs.append(prev.unsqueeze(1))
        out = torch.cat(outputs, 1) if len(outputs) > 1 else outputs[0]
        return Rollout(from_patches(out, p), rate_sums / steps)


def _time_batched(module: nn.Module, seq: Tensor) -> Tensor:
    """Apply a per-frame module to (B, T, C, H, W) as one batch of B*T frames."""
    b, t = seq.shape[:2]
    out = module(seq.reshape(b * t, *seq.shape[2:]))
    return out.reshape(b, t, *out.shape[1:])
