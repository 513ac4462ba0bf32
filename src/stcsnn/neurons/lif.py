"""Integrate-and-fire family: IF, LIF (tau = 2) and PLIF (learnable time constant).

One equation serves the family, :func:`membrane_charge`; the modules differ only in its two coefficients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd import Function

from stcsnn.errors import StcsnnError
from stcsnn.neurons import fusion
from stcsnn.neurons.base import SpikingCell, gain
from stcsnn.neurons.registry import register_neuron


class MembraneState(NamedTuple):
    """``v``: membrane after reset V[t]; ``s``: spikes S[t]."""

    v: Tensor
    s: Tensor


def membrane_charge(current: Tensor, v: Tensor, leak=None, input_gain=None, temporal_gain: Tensor | None = None,
                    spatial_gain: Tensor | None = None) -> Tensor:
    r"""The membrane before firing, :math:`H[t] = k_v\,(V[t-1]\,G_A) + k_i\,(I[t]\,G_B)`.

    ``leak`` (k_v) and ``input_gain`` (k_i) are numbers or 0-dim tensors, ``None`` meaning no factor; the STC
    gains G_A, G_B likewise (``None``: a plain neuron)."""
    return fusion.coef(leak, gain(v, temporal_gain)) + fusion.coef(input_gain, gain(current, spatial_gain))


def fire_soft_reset(h: Tensor, spike_fn: nn.Module, v_th: float = 1.0) -> tuple[Tensor, MembraneState]:
    """``S = Heaviside(H - V_th)``, ``V = H - S`` (soft reset, gradient flows through the reset)."""
    s = spike_fn(h - v_th)
    return s, MembraneState(h - s, s)


def membrane_step(current: Tensor, state: MembraneState, spike_fn: nn.Module, leak=None, input_gain=None,
                  temporal_gain: Tensor | None = None, spatial_gain: Tensor | None = None
                  ) -> tuple[Tensor, MembraneState]:
    r"""One step of the IF family: :func:`membrane_charge`, then
    :math:`S[t] = \Theta(H[t] - 1)`, :math:`V[t] = H[t] - S[t]`."""
    h = membrane_charge(current, state.v, leak, input_gain, temporal_gain, spatial_gain)
    return fire_soft_reset(h, spike_fn)


class MembraneUpdate(Function):
    """:func:`membrane_step` as one autograd node. Forward ``(current, v, pathways, kv, ki, spike_fn) -> (S, V)``
    (pathways: the autapse output before tanh, or None); backward by hand."""

    @staticmethod
    def forward(ctx, current, v, pathways, kv, ki, spike_fn):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        g, _, _ = fusion.gains(pathways)
        h = fusion.charge_grouped(membrane_charge, g, current, current, v, kv, ki)
        s = fusion.heaviside(h, 1.0, spike_fn.strict)
        ctx.spike_fn = spike_fn
        ctx.kv, ctx.ki = (None if isinstance(kv, Tensor) else kv), (None if isinstance(ki, Tensor) else ki)
        ctx.save_for_backward(current, v, g, h, *(k if isinstance(k, Tensor) else None for k in (kv, ki)))
        return s, h - s

    @staticmethod
    def backward(ctx, g_s, g_v):  # type: ignore[override]
        current, v, g, h, kv_t, ki_t = ctx.saved_tensors
        kv = kv_t if kv_t is not None else ctx.kv
        ki = ki_t if ki_t is not None else ctx.ki
        dh = fusion.through_reset(fusion.surrogate_grad(ctx.spike_fn, h, 1.0), g_s, g_v)
        if dh is None:
            return (None,) * 6
        ga, gb = fusion.halves(g) if g is not None else (None, None)
        need = ctx.needs_input_grad
        dhv, dhi = fusion.coef(kv, dh), fusion.coef(ki, dh)
        d_current = fusion.mul_gain(dhi, gb) if need[0] else None
        d_v = fusion.mul_gain(dhv, ga) if need[1] else None
        d_path = fusion.pathway_grad(g, dhv, v, dhi, current) if (g is not None and need[2]) else None
        d_kv = fusion.sum_like(dh * fusion.mul_gain(v, ga), kv_t) if need[3] else None
        d_ki = fusion.sum_like(dh * fusion.mul_gain(current, gb), ki_t) if need[4] else None
        return d_current, d_v, d_path, d_kv, d_ki, None


class _MembraneCell(SpikingCell):
    """IF-family module: ``update`` is :func:`membrane_step` with :meth:`coefficients`."""

    State = MembraneState

    def coefficients(self) -> tuple:
        """``(k_v, k_i)`` of :func:`membrane_charge` (``None``: no factor)."""
        return None, None

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        kv, ki = self.coefficients()
        return membrane_step(current, state, self.spike_fn, kv, ki, temporal_gain, spatial_gain)

    def fused_update(self, current, state, pathways):
        kv, ki = self.coefficients()
        s, v = MembraneUpdate.apply(current, state.v, pathways, kv, ki, self.spike_fn)
        return s, MembraneState(v, s)


@register_neuron("if", "integrate-and-fire: H = V[t-1] + I[t], soft reset")
class IF(_MembraneCell):
    r"""Integrate-and-fire.

    .. math::
        I[t] = \mathrm{GN}(W_x * X[t]),\quad H[t] = V[t-1] + I[t],\quad
        S[t] = \Theta(H[t] - 1),\quad V[t] = H[t] - S[t]

    State: :class:`MembraneState` ``(v, s)``, zeros at t = 0. Parameters: the synapse only.
    STC contract: the temporal gain scales ``V[t-1]``, the spatial gain scales ``I[t]``; ``STC(IF)`` is the
    paper's STC-LIF.
    """


@register_neuron("lif", "leaky integrate-and-fire, tau = 2: H = 0.5 V[t-1] + 0.5 I[t]")
class LIF(_MembraneCell):
    r"""Leaky integrate-and-fire with fixed time constant tau = 2.

    .. math::
        H[t] = \tfrac12 V[t-1] + \tfrac12 I[t],\quad S[t] = \Theta(H[t] - 1),\quad V[t] = H[t] - S[t]

    State: :class:`MembraneState` ``(v, s)``, zeros at t = 0. Parameters: the synapse only.
    STC contract: the temporal gain scales ``V[t-1]``, the spatial gain scales ``I[t]``.
    """

    def coefficients(self):
        return 0.5, 0.5


@register_neuron("plif", "parametric LIF: learnable scalar time constant sigmoid(w)")
class PLIF(_MembraneCell):
    r"""Parametric LIF (Fang et al., 2021): a learnable scalar time constant.

    .. math::
        k = \sigma(w),\quad H[t] = k\,V[t-1] + g_{in}\,I[t],\quad
        S[t] = \Theta(H[t] - 1),\quad V[t] = H[t] - S[t]

    with ``g_in = 1 - sigmoid(w)`` (``input_gain="sigmoid"``, the PLIF paper) or ``g_in = 1 - w``
    (``input_gain="raw"``, what the STC paper's reference code computes for its plain PLIF; chosen when
    importing its checkpoints). Under STC the reference uses ``1 - sigmoid(w)``.

    State: :class:`MembraneState` ``(v, s)``. Parameters: synapse, scalar ``w`` (init 0, so k = 0.5).
    """

    options = ("input_gain",)

    def __init__(self, *args, input_gain: str = "sigmoid", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if input_gain not in ("sigmoid", "raw"):
            raise StcsnnError(f"input_gain must be 'sigmoid' or 'raw', got {input_gain!r}")
        self.input_gain = input_gain
        self.w = nn.Parameter(torch.zeros(()))

    def input_coefficient(self) -> Tensor:
        return 1.0 - (torch.sigmoid(self.w) if self.input_gain == "sigmoid" else self.w)

    def coefficients(self):
        return torch.sigmoid(self.w), self.input_coefficient()
