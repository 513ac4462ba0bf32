"""TC-LIF: the two-compartment LIF of Zhang et al. (AAAI 2024), as in the STC paper's reference code."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from stcsnn.neurons.base import SpikingCell, gain


class TwoCompartmentState(NamedTuple):
    """``d``: dendritic compartment D[t]; ``v``: somatic membrane V[t]; ``s``: spikes S[t]."""

    d: Tensor
    v: Tensor
    s: Tensor


class TCLIF(SpikingCell):
    r"""Two-compartment LIF; learnable scalars ``gamma``, ``s_u``, ``s_p`` (all init 0).

    .. math::
        D[t] &= D[t-1] - \sigma(s_u)\,V[t-1] + I[t] - \gamma\,\mathrm{sg}(S[t-1]) \\
        V[t] &= V[t-1] + \sigma(s_p)\,D[t] - \mathrm{sg}(S[t-1]) \\
        S[t] &= \Theta(V[t] - 1)

    (sg = stop-gradient; the reset is the subtraction of the previous spike.)
    State: :class:`TwoCompartmentState` ``(d, v, s)``. STC contract: the temporal gain scales ``V[t-1]``
    in the somatic update, the spatial gain scales ``I[t]``.
    """

    State = TwoCompartmentState

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.s_u = nn.Parameter(torch.zeros(()))
        self.s_p = nn.Parameter(torch.zeros(()))

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        prev_s = state.s.detach()
        d = state.d - torch.sigmoid(self.s_u) * state.v + gain(current, spatial_gain) - self.gamma * prev_s
        v = gain(state.v, temporal_gain) + torch.sigmoid(self.s_p) * d - prev_s
        s = self.spike_fn(v - 1.0)
        return s, TwoCompartmentState(d, v, s)
