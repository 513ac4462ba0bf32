"""GLIF: the gated LIF of Yao et al. (NeurIPS 2022), per channel, as in the STC paper's reference code."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd import Function

from stcsnn.neurons import fusion
from stcsnn.neurons.base import SpikingCell, gain
from stcsnn.neurons.registry import register_neuron


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


def glif_charge(current: Tensor, u: Tensor, s_prev: Tensor, c_in, c_u, gamma, c_l, c_r,
                temporal_gain: Tensor | None = None, spatial_gain: Tensor | None = None) -> Tensor:
    r"""U[t] before firing, from per-channel coefficients (1, C, 1, 1):

    .. math::
        U[t] = \big(c_u U[t-1] (1 - \gamma S[t-1])\big) G_A - c_l + (c_{in} I[t]) G_B - c_r S[t-1]

    with :math:`c_{in} = 1 - \beta(1 - c)`, :math:`c_u = 1 - \alpha(1 - \tau)`, :math:`c_l = (1 - \alpha)\ell`,
    :math:`c_r = (1 - \gamma) V_{reset}`."""
    carried = c_u * u * (1.0 - gamma * s_prev)
    return gain(carried, temporal_gain) - c_l + gain(current * c_in, spatial_gain) - c_r * s_prev


class GLIFUpdate(Function):
    """:func:`glif_charge` + firing (``S = Theta(U - v_th)``) as one autograd node; returns ``(S, U)``."""

    @staticmethod
    def forward(ctx, current, u, s_prev, pathways, c_in, c_u, gamma, c_l, c_r, v_th, spike_fn):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        g, _, _ = fusion.gains(pathways)
        u_new = fusion.charge_grouped(glif_charge, g, current, current, u, s_prev, c_in, c_u, gamma, c_l, c_r)
        s = fusion.heaviside(u_new, v_th, spike_fn.strict)
        ctx.spike_fn = spike_fn
        ctx.save_for_backward(current, u, s_prev, g, u_new, c_in, c_u, gamma, c_r, v_th)
        return s, u_new

    @staticmethod
    def backward(ctx, g_s, g_u):  # type: ignore[override]
        current, u, s_prev, g, u_new, c_in, c_u, gamma, c_r, v_th = ctx.saved_tensors
        need = ctx.needs_input_grad
        red = (0, 2, 3)
        ds = fusion.surrogate_grad(ctx.spike_fn, u_new, v_th).mul_(g_s) if g_s is not None else None
        d_vth = -ds.sum(red, keepdim=True) if (ds is not None and need[9]) else None
        du = fusion.accumulate(ds, g_u)
        if du is None:
            return (None,) * 11
        ga, gb = fusion.halves(g) if g is not None else (None, None)
        keep = 1.0 - gamma * s_prev  # recomputed: cheaper than saving it
        d_carried = fusion.mul_gain(du, ga)
        d_iin = fusion.mul_gain(du, gb)
        cu_u = c_u * u
        d_current = d_iin * c_in if need[0] else None
        d_u = d_carried * c_u * keep if need[1] else None
        d_keep = d_carried * cu_u  # d loss / d (1 - gamma S[t-1])
        d_sprev = -(gamma * d_keep) - c_r * du if need[2] else None
        d_path = fusion.pathway_grad(g, du, cu_u * keep, du, current * c_in) if (g is not None and need[3]) else None
        d_cin = (d_iin * current).sum(red, keepdim=True) if need[4] else None
        d_cu = (d_carried * u * keep).sum(red, keepdim=True) if need[5] else None
        d_gamma = -(d_keep * s_prev).sum(red, keepdim=True) if need[6] else None
        d_cl = -du.sum(red, keepdim=True) if need[7] else None
        d_cr = -(du * s_prev).sum(red, keepdim=True) if need[8] else None
        return d_current, d_u, d_sprev, d_path, d_cin, d_cu, d_gamma, d_cl, d_cr, d_vth, None


@register_neuron("glif", "gated LIF (Yao et al. 2022): per-channel gates, leak, threshold, reset")
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
    membrane = "u"

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

    def coefficients(self) -> tuple[Tensor, ...]:
        """``(c_in, c_u, gamma, c_l, c_r, v_th)`` of :func:`glif_charge` and the threshold."""
        alpha, beta, gamma, tau, v_th, leak, conduct, v_reset = (self.coefficient(n) for n in GLIF_INIT)
        return (1.0 - beta * (1.0 - conduct), 1.0 - alpha * (1.0 - tau), gamma, (1.0 - alpha) * leak,
                (1.0 - gamma) * v_reset, v_th)

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        *c, v_th = self.coefficients()
        u = glif_charge(current, state.u, state.s, *c, temporal_gain, spatial_gain)
        s = self.spike_fn(u - v_th)
        return s, GLIFState(u, s)

    def fused_update(self, current, state, pathways):
        s, u = GLIFUpdate.apply(current, state.u, state.s, pathways, *self.coefficients(), self.spike_fn)
        return s, GLIFState(u, s)
