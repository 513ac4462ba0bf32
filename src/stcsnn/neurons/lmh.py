"""LM-H: the learnable multi-hierarchical neuron of Hao et al. (AAAI 2024), as in the STC paper's reference."""

from __future__ import annotations

import torch
from torch import nn

from stcsnn.neurons.base import SpikingCell, gain
from stcsnn.neurons.tclif import TwoCompartmentState


class LMH(SpikingCell):
    r"""Two compartments with learnable couplings; scalars ``d_u``, ``s_u``, ``d_p``, ``s_p`` (all init 0).

    .. math::
        D[t] &= (\sigma(d_u) - \tfrac12)\,D[t-1] + (\sigma(s_u) - \tfrac12)\,V[t-1] + I[t] \\
        H[t] &= (\sigma(d_p) + \tfrac12)\,D[t] + (\sigma(s_p) + \tfrac12)\,V[t-1] \\
        S[t] &= \Theta(H[t] - 1),\qquad V[t] = H[t] - \mathrm{sg}(S[t])

    State: :class:`~stcsnn.neurons.tclif.TwoCompartmentState` ``(d, v, s)``. STC contract: the temporal
    gain scales ``V[t-1]`` in ``H[t]``, the spatial gain scales ``I[t]`` in ``D[t]``.
    """

    State = TwoCompartmentState

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.d_u = nn.Parameter(torch.zeros(()))
        self.s_u = nn.Parameter(torch.zeros(()))
        self.d_p = nn.Parameter(torch.zeros(()))
        self.s_p = nn.Parameter(torch.zeros(()))

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        d = (
            (torch.sigmoid(self.d_u) - 0.5) * state.d
            + (torch.sigmoid(self.s_u) - 0.5) * state.v
            + gain(current, spatial_gain)
        )
        h = (torch.sigmoid(self.d_p) + 0.5) * d + (torch.sigmoid(self.s_p) + 0.5) * gain(state.v, temporal_gain)
        s = self.spike_fn(h - 1.0)
        return s, TwoCompartmentState(d, h - s.detach(), s)
