"""ANN baseline cells that follow the spiking cells' contract, so :class:`~stcsnn.models.SpikingPredictor`
stacks them unchanged (same patching, scheduled sampling, loop and metrics) and a table holds SNN and ANN rows
measured the same way.

:class:`ConvLSTMCell` is the ConvLSTM of Shi et al. (2015) as OpenSTL implements it
(``openstl/modules/convlstm_modules.py``, no layer norm, which is OpenSTL's Moving MNIST setting)::

    [i, f, g, o] = W_x * X[t] + W_h * H[t-1]            # two k x k convolutions to 4C channels, no bias
    C[t] = sigmoid(f + b_f) C[t-1] + sigmoid(i) tanh(g)
    H[t] = sigmoid(o) tanh(C[t])

OpenSTL defines ``_forget_bias = 1.0`` but never adds it, so its effective forget bias is 0: ``forget_bias``
defaults to 0.0 to match it (set ``neuron_options.forget_bias=1.0`` for the usual LSTM initialisation).
OpenSTL's ConvLSTM model is the same stack as the predictor (cells fed layer by layer, a 1x1 readout without
bias, scheduled sampling over patches), so only the cell differs.

Mapping onto the cell contract: ``synapse`` is ``W_x`` (the input current is the 4C gate pre-activations),
``update`` adds ``W_h * H[t-1]`` and applies the gates, the state is :class:`LSTMState` ``(s, c)`` with
``s = H[t]`` the output passed to the next layer.

PredRNN's ST-LSTM is *not* provided: its spatio-temporal memory M zigzags from the top layer at step t-1 to
the bottom layer at step t, a state shared across layers that the per-layer state contract cannot express
without changing the predictor.

Registered as ``convlstm``, so configs, the CLI and the tests that sweep
the registry treat it like any neuron.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from stcsnn.errors import StcsnnError
from stcsnn.neurons.base import Cell
from stcsnn.neurons.registry import register_neuron


class LSTMState(NamedTuple):
    """``s``: hidden state H[t] (the cell's output, read by the next layer); ``c``: memory C[t]."""

    s: Tensor
    c: Tensor


@register_neuron("convlstm", "ANN baseline: ConvLSTM (Shi et al. 2015, as in OpenSTL), not spiking")
class ConvLSTMCell(Cell):
    """ConvLSTM cell (ANN baseline): ``h, state = cell(x, state)``; see the module docstring."""

    State = LSTMState
    options = ("forget_bias",)
    #: Not a spiking neuron: real-valued outputs, no surrogate (the analyses and energy counter check this).
    is_ann = True
    membrane = "c"

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 5, surrogate: str | None = None,
                 alpha: float | None = None, forget_bias: float = 0.0) -> None:
        super().__init__()
        if surrogate is not None or alpha is not None:
            raise StcsnnError("convlstm is an ANN baseline without spikes: it takes no surrogate or alpha option")
        if hidden_channels < 1:
            raise StcsnnError(f"hidden_channels must be positive, got {hidden_channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise StcsnnError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.forget_bias = float(forget_bias)
        pad = kernel_size // 2
        self.synapse = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, padding=pad, bias=False)
        self.recurrent = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=pad, bias=False)

    def init_state(self, current: Tensor) -> LSTMState:
        """Zero ``(s, c)`` of shape (B, hidden, H, W) for a gate current of shape (B, 4 hidden, H, W)."""
        b, _, h, w = current.shape
        zero = current.new_zeros(b, self.hidden_channels, h, w)
        return LSTMState(zero, zero)

    def update(self, current: Tensor, state: LSTMState, temporal_gain: Tensor | None = None,
               spatial_gain: Tensor | None = None) -> tuple[Tensor, LSTMState]:
        if temporal_gain is not None or spatial_gain is not None:
            raise StcsnnError("convlstm has no membrane for STC gains (it cannot be wrapped by STC)")
        gates = current + self.recurrent(state.s)
        i, f, g, o = torch.split(gates, self.hidden_channels, dim=1)
        c = torch.sigmoid(f + self.forget_bias) * state.c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, LSTMState(h, c)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, " \
               f"forget_bias={self.forget_bias}"


__all__ = ["ConvLSTMCell", "LSTMState"]
