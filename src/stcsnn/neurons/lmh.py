"""LM-H: the learnable multi-hierarchical neuron of Hao, Shi, Huang, Bu, Yu and Zhou, "A Progressive Training
Framework for Spiking Neural Networks with Learnable Multi-hierarchical Model" (ICLR 2024), as in the STC paper's
reference."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function

from stcsnn.neurons import fusion
from stcsnn.neurons.base import SpikingCell, bool_option, gain
from stcsnn.neurons.registry import register_neuron
from stcsnn.neurons.tclif import TwoCompartmentState


def lmh_charge(current: Tensor, d: Tensor, v: Tensor, a1, a2, a3, a4, temporal_gain: Tensor | None = None,
               spatial_gain: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""``(D[t], H[t])`` before firing:

    .. math::
        D[t] = a_1 D[t-1] + a_2 V[t-1] + I[t] G_B,\qquad H[t] = a_3 D[t] + a_4 (V[t-1] G_A)

    with :math:`a_1 = \sigma(d_u) - \tfrac12`, :math:`a_2 = \sigma(s_u) - \tfrac12`,
    :math:`a_3 = \sigma(d_p) + \tfrac12`, :math:`a_4 = \sigma(s_p) + \tfrac12`."""
    d_new = a1 * d + a2 * v + gain(current, spatial_gain)
    h = a3 * d_new + a4 * gain(v, temporal_gain)
    return d_new, h


class LMHUpdate(Function):
    """:func:`lmh_charge` + firing (``V = H - sg(S)``, or ``V = H - S`` when ``detach_reset`` is False) as one
    autograd node; returns ``(S, D, V)``."""

    @staticmethod
    def forward(ctx, current, d_prev, v, pathways, a1, a2, a3, a4, spike_fn, detach_reset):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        g, _, _ = fusion.gains(pathways)
        d, h = fusion.charge_grouped(lmh_charge, g, current, current, d_prev, v, a1, a2, a3, a4)
        s = fusion.heaviside(h, 1.0, spike_fn.strict)
        ctx.spike_fn = spike_fn
        ctx.detach_reset = detach_reset
        ctx.save_for_backward(current, d_prev, v, g, d, h, a1, a2, a3, a4)
        return s, d, h - s

    @staticmethod
    def backward(ctx, g_s, g_d, g_v):  # type: ignore[override]
        current, d_prev, v, g, d, h, a1, a2, a3, a4 = ctx.saved_tensors
        if ctx.detach_reset:  # the reset subtracts sg(S): no gradient through it
            ds = fusion.surrogate_grad(ctx.spike_fn, h, 1.0).mul_(g_s) if g_s is not None else None
            dh = fusion.accumulate(ds, g_v)
        elif g_s is None and g_v is None:
            dh = None
        else:  # V = H - S: the reset's gradient too, as in the IF family
            dh = fusion.through_reset(fusion.surrogate_grad(ctx.spike_fn, h, 1.0), g_s, g_v)
        dd = fusion.accumulate(a3 * dh if dh is not None else None, g_d)
        if dd is None:
            return (None,) * 10
        if dh is None:
            dh = torch.zeros_like(dd)
        ga, gb = fusion.halves(g) if g is not None else (None, None)
        need = ctx.needs_input_grad
        dh4 = a4 * dh
        d_current = fusion.mul_gain(dd, gb) if need[0] else None
        d_dprev = a1 * dd if need[1] else None
        d_v = (a2 * dd + fusion.mul_gain(dh4, ga)) if need[2] else None
        d_path = fusion.pathway_grad(g, dh4, v, dd, current) if (g is not None and need[3]) else None
        grads = [
            (dd * d_prev).sum() if need[4] else None,
            (dd * v).sum() if need[5] else None,
            (dh * d).sum() if need[6] else None,
            (dh * fusion.mul_gain(v, ga)).sum() if need[7] else None,
        ]
        return d_current, d_dprev, d_v, d_path, *grads, None, None


@register_neuron("lmh", "learnable multi-hierarchical neuron (Hao et al. 2024)")
class LMH(SpikingCell):
    r"""Two compartments with learnable couplings; scalars ``d_u``, ``s_u``, ``d_p``, ``s_p`` (all init 0).

    .. math::
        D[t] &= (\sigma(d_u) - \tfrac12)\,D[t-1] + (\sigma(s_u) - \tfrac12)\,V[t-1] + I[t] \\
        H[t] &= (\sigma(d_p) + \tfrac12)\,D[t] + (\sigma(s_p) + \tfrac12)\,V[t-1] \\
        S[t] &= \Theta(H[t] - 1),\qquad V[t] = H[t] - \mathrm{sg}(S[t])

    ``sg`` stops the gradient: the reference detaches LM-H's reset (its IF-family neurons do not).
    ``detach_reset=False`` (option) lets the gradient through the reset, ``V[t] = H[t] - S[t]``: the same
    forward, another backward. At the initial couplings (0, 0, 1, 1) LM-H's forward is IF's; with the reset
    detached its training differs from IF's by that backward alone (README, "LM-H's reset").

    State: :class:`~stcsnn.neurons.tclif.TwoCompartmentState` ``(d, v, s)``. STC contract: the temporal
    gain scales ``V[t-1]`` in ``H[t]``, the spatial gain scales ``I[t]`` in ``D[t]`` (``STC(LMH)`` is the
    paper's STC-LM-H).
    """

    State = TwoCompartmentState
    options = ("detach_reset",)

    def __init__(self, *args, detach_reset: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.detach_reset = bool_option("detach_reset", detach_reset)
        self.d_u = nn.Parameter(torch.zeros(()))
        self.s_u = nn.Parameter(torch.zeros(()))
        self.d_p = nn.Parameter(torch.zeros(()))
        self.s_p = nn.Parameter(torch.zeros(()))

    def coefficients(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (torch.sigmoid(self.d_u) - 0.5, torch.sigmoid(self.s_u) - 0.5,
                torch.sigmoid(self.d_p) + 0.5, torch.sigmoid(self.s_p) + 0.5)

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        d, h = lmh_charge(current, state.d, state.v, *self.coefficients(), temporal_gain, spatial_gain)
        s = self.spike_fn(h - 1.0)
        return s, TwoCompartmentState(d, h - (s.detach() if self.detach_reset else s), s)

    def fused_update(self, current, state, pathways):
        s, d, v = LMHUpdate.apply(current, state.d, state.v, pathways, *self.coefficients(), self.spike_fn,
                                  self.detach_reset)
        return s, TwoCompartmentState(d, v, s)
