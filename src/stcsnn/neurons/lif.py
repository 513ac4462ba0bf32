"""Integrate-and-fire family: IF, LIF (tau = 2) and PLIF (learnable time constant)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from stcsnn.errors import StcsnnError
from stcsnn.neurons.base import SpikingCell, gain


class MembraneState(NamedTuple):
    """``v``: membrane after reset V[t]; ``s``: spikes S[t]."""

    v: Tensor
    s: Tensor


def fire_soft_reset(h: Tensor, spike_fn: nn.Module, v_th: float = 1.0) -> tuple[Tensor, MembraneState]:
    """``S = Heaviside(H - V_th)``, ``V = H - S`` (soft reset, gradient flows through the reset)."""
    s = spike_fn(h - v_th)
    return s, MembraneState(h - s, s)


class IF(SpikingCell):
    r"""Integrate-and-fire.

    .. math::
        I[t] = \mathrm{GN}(W_x * X[t]),\quad H[t] = V[t-1] + I[t],\quad
        S[t] = \Theta(H[t] - 1),\quad V[t] = H[t] - S[t]

    State: :class:`MembraneState` ``(v, s)``, zeros at t = 0. Parameters: the synapse only.
    STC contract: the temporal gain scales ``V[t-1]``, the spatial gain scales ``I[t]``.
    """

    State = MembraneState

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        h = gain(state.v, temporal_gain) + gain(current, spatial_gain)
        return fire_soft_reset(h, self.spike_fn)


class LIF(SpikingCell):
    r"""Leaky integrate-and-fire with fixed time constant tau = 2.

    .. math::
        H[t] = \tfrac12 V[t-1] + \tfrac12 I[t],\quad S[t] = \Theta(H[t] - 1),\quad V[t] = H[t] - S[t]

    State: :class:`MembraneState` ``(v, s)``, zeros at t = 0. Parameters: the synapse only.
    STC contract: the temporal gain scales ``V[t-1]``, the spatial gain scales ``I[t]``.
    """

    State = MembraneState

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        h = 0.5 * gain(state.v, temporal_gain) + 0.5 * gain(current, spatial_gain)
        return fire_soft_reset(h, self.spike_fn)


class PLIF(SpikingCell):
    r"""Parametric LIF (Fang et al., 2021): a learnable scalar time constant.

    .. math::
        k = \sigma(w),\quad H[t] = k\,V[t-1] + g_{in}\,I[t],\quad
        S[t] = \Theta(H[t] - 1),\quad V[t] = H[t] - S[t]

    with ``g_in = 1 - sigmoid(w)`` (``input_gain="sigmoid"``, the PLIF paper) or ``g_in = 1 - w``
    (``input_gain="raw"``, what the STC paper's reference code computes; chosen when importing its checkpoints).

    State: :class:`MembraneState` ``(v, s)``. Parameters: synapse, scalar ``w`` (init 0, so k = 0.5).
    """

    State = MembraneState
    options = ("input_gain",)

    def __init__(self, *args, input_gain: str = "sigmoid", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._check_input_gain(input_gain)
        self.input_gain = input_gain
        self.w = nn.Parameter(torch.zeros(()))

    @staticmethod
    def _check_input_gain(input_gain: str) -> None:
        if input_gain not in ("sigmoid", "raw"):
            raise StcsnnError(f"input_gain must be 'sigmoid' or 'raw', got {input_gain!r}")

    def input_coefficient(self) -> Tensor:
        return 1.0 - (torch.sigmoid(self.w) if self.input_gain == "sigmoid" else self.w)

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        k = torch.sigmoid(self.w)
        h = k * gain(state.v, temporal_gain) + self.input_coefficient() * gain(current, spatial_gain)
        return fire_soft_reset(h, self.spike_fn)
