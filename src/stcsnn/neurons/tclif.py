"""TC-LIF: the two-compartment LIF of Zhang et al. (AAAI 2024), as in the STC paper's reference code."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd import Function

from stcsnn.neurons import fusion
from stcsnn.neurons.base import SpikingCell, bool_option, gain
from stcsnn.neurons.registry import register_neuron


class TwoCompartmentState(NamedTuple):
    """``d``: dendritic compartment D[t]; ``v``: somatic membrane V[t]; ``s``: spikes S[t]."""

    d: Tensor
    v: Tensor
    s: Tensor


def tclif_charge(current: Tensor, d: Tensor, v: Tensor, s_prev: Tensor, k_u, k_p, gamma,
                 temporal_gain: Tensor | None = None, spatial_gain: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""``(D[t], V[t])`` before firing, with ``s_prev`` = sg(S[t-1]), ``k_u = sigma(s_u)``, ``k_p = sigma(s_p)``:

    .. math::
        D[t] = D[t-1] - k_u V[t-1] + I[t] G_B - \gamma\,S[t-1],\qquad V[t] = V[t-1] G_A + k_p D[t] - S[t-1]
    """
    d_new = d - k_u * v + gain(current, spatial_gain) - gamma * s_prev
    v_new = gain(v, temporal_gain) + k_p * d_new - s_prev
    return d_new, v_new


class TCLIFUpdate(Function):
    """:func:`tclif_charge` + firing as one autograd node; returns ``(S, D, V)``. ``s_prev`` gets a gradient where
    it requires one (``detach_reset=False``): ``dL/dS[t-1] = -gamma dL/dD[t] - dL/dV[t]`` (through the charge)."""

    @staticmethod
    def forward(ctx, current, d_prev, v, s_prev, pathways, k1, k2, gamma, spike_fn):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        g, _, _ = fusion.gains(pathways)
        d, v_new = fusion.charge_grouped(tclif_charge, g, current, current, d_prev, v, s_prev, k1, k2, gamma)
        s = fusion.heaviside(v_new, 1.0, spike_fn.strict)
        ctx.spike_fn = spike_fn
        ctx.save_for_backward(current, v, s_prev, g, d, v_new, k1, k2, gamma)
        return s, d, v_new

    @staticmethod
    def backward(ctx, g_s, g_d, g_v):  # type: ignore[override]
        current, v, s_prev, g, d, v_new, k1, k2, gamma = ctx.saved_tensors
        ds = fusion.surrogate_grad(ctx.spike_fn, v_new, 1.0).mul_(g_s) if g_s is not None else None
        dv = fusion.accumulate(ds, g_v)
        dd = fusion.accumulate(k2 * dv if dv is not None else None, g_d)
        if dd is None:
            return (None,) * 9
        if dv is None:
            dv = torch.zeros_like(dd)
        ga, gb = fusion.halves(g) if g is not None else (None, None)
        need = ctx.needs_input_grad
        d_current = fusion.mul_gain(dd, gb) if need[0] else None
        d_dprev = dd if need[1] else None
        d_v = (fusion.mul_gain(dv, ga) - k1 * dd) if need[2] else None
        d_path = fusion.pathway_grad(g, dv, v, dd, current) if (g is not None and need[4]) else None
        d_k1 = -(dd * v).sum() if need[5] else None
        d_k2 = (dv * d).sum() if need[6] else None
        d_gamma = -(dd * s_prev).sum() if need[7] else None
        d_sprev = torch.mul(dd, gamma).add_(dv).neg_() if need[3] else None
        return d_current, d_dprev, d_v, d_sprev, d_path, d_k1, d_k2, d_gamma, None


@register_neuron("tclif", "two-compartment LIF (Zhang et al. 2024): dendrite + soma")
class TCLIF(SpikingCell):
    r"""Two-compartment LIF; learnable scalars ``gamma``, ``s_u``, ``s_p`` (all init 0).

    .. math::
        D[t] &= D[t-1] - \sigma(s_u)\,V[t-1] + I[t] - \gamma\,\mathrm{sg}(S[t-1]) \\
        V[t] &= V[t-1] + \sigma(s_p)\,D[t] - \mathrm{sg}(S[t-1]) \\
        S[t] &= \Theta(V[t] - 1)

    (sg = stop-gradient; the reset is the subtraction of the previous spike, detached as in the reference.)
    ``detach_reset=False`` (option) lets the gradient through that reset (S[t-1] for sg(S[t-1])): the same
    forward, another backward, as LM-H's option of the same name and the IF family's reset.
    State: :class:`TwoCompartmentState` ``(d, v, s)``. STC contract: the temporal gain scales ``V[t-1]``
    in the somatic update, the spatial gain scales ``I[t]``.
    """

    State = TwoCompartmentState
    options = ("detach_reset",)

    def __init__(self, *args, detach_reset: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.detach_reset = bool_option("detach_reset", detach_reset)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.s_u = nn.Parameter(torch.zeros(()))
        self.s_p = nn.Parameter(torch.zeros(()))

    def previous_spikes(self, state: TwoCompartmentState) -> Tensor:
        """S[t-1] as the reset reads it: sg(S[t-1]), or S[t-1] without ``detach_reset``."""
        return state.s.detach() if self.detach_reset else state.s

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        d, v = tclif_charge(current, state.d, state.v, self.previous_spikes(state), torch.sigmoid(self.s_u),
                            torch.sigmoid(self.s_p), self.gamma, temporal_gain, spatial_gain)
        s = self.spike_fn(v - 1.0)
        return s, TwoCompartmentState(d, v, s)

    def fused_update(self, current, state, pathways):
        s, d, v = TCLIFUpdate.apply(current, state.d, state.v, self.previous_spikes(state), pathways,
                                    torch.sigmoid(self.s_u), torch.sigmoid(self.s_p), self.gamma, self.spike_fn)
        return s, TwoCompartmentState(d, v, s)
