"""GLIF: the gated LIF of Yao et al. (NeurIPS 2022), per channel, as in the STC paper's reference code."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from stcsnn.neurons.base import SpikingCell, gain


class GLIFState(NamedTuple):
    """``u``: membrane potential U[t]; ``s``: spikes S[t]."""

    u: Tensor
    s: Tensor


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


#: parameter name -> initial value after the sigmoid (the reference's initialisation)
GLIF_INIT = {
    "alpha": 0.55, "beta": 0.65, "gamma": 0.55,  # gates
    "tau": 0.25, "v_th": 0.5, "leak": 0.0625, "conduct": 0.5, "v_reset": 0.5,
}


class GLIF(SpikingCell):
    r"""Gated LIF, per channel; every coefficient is the sigmoid of a learnable raw parameter of shape (C,).

    .. math::
        I'[t] &= I[t]\,(1 - \beta(1 - c)) \\
        U[t] &= (1 - \alpha(1-\tau))\,U[t-1]\,(1 - \gamma S[t-1]) - (1-\alpha)\,\ell + I'[t]
                - (1-\gamma)\,V_{reset}\,S[t-1] \\
        S[t] &= \Theta(U[t] - V_{th})\quad (\text{strict } > 0,\ \text{rectangle surrogate of width 1})

    Initial values: alpha 0.55, beta 0.65, gamma 0.55 (gates), tau 0.25, V_th 0.5, leak 0.0625,
    conductance c 0.5, V_reset 0.5. The reference detaches the gates (alpha, beta, gamma get no gradient):
    that is the default here; ``train_gates=True`` trains them.

    State: :class:`GLIFState` ``(u, s)``. STC contract: the temporal gain scales the carried-over term
    ``(1 - alpha(1-tau)) U[t-1] (1 - gamma S[t-1])``, the spatial gain scales ``I'[t]``.
    """

    State = GLIFState
    options = ("train_gates",)

    def __init__(self, *args, train_gates: bool = False, **kwargs) -> None:
        kwargs.setdefault("surrogate", "rectangle")
        kwargs.setdefault("strict_threshold", True)
        super().__init__(*args, **kwargs)
        self.train_gates = train_gates
        c = self.hidden_channels
        for name, value in GLIF_INIT.items():
            setattr(self, name, nn.Parameter(torch.full((c,), _logit(value))))
        if not train_gates:  # frozen gates are constants: no gradient, no optimizer update, DDP-safe
            for name in ("alpha", "beta", "gamma"):
                getattr(self, name).requires_grad_(False)

    def coefficient(self, name: str) -> Tensor:
        raw = getattr(self, name)
        if name in ("alpha", "beta", "gamma") and not self.train_gates:
            raw = raw.detach()
        return torch.sigmoid(raw).view(1, -1, 1, 1)

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        alpha, beta, gamma = (self.coefficient(n) for n in ("alpha", "beta", "gamma"))
        tau, v_th, leak, conduct, v_reset = (
            self.coefficient(n) for n in ("tau", "v_th", "leak", "conduct", "v_reset")
        )
        current = current * (1.0 - beta * (1.0 - conduct))
        carried = (1.0 - alpha * (1.0 - tau)) * state.u * (1.0 - gamma * state.s)
        u = (
            gain(carried, temporal_gain)
            - (1.0 - alpha) * leak
            + gain(current, spatial_gain)
            - (1.0 - gamma) * v_reset * state.s
        )
        s = self.spike_fn(u - v_th)
        return s, GLIFState(u, s)
