"""The Spatio-Temporal Circuit (STC): two autaptic pathways driven by the neuron's own previous spikes.

.. math::
    A[t] = \\mathrm{GN}(W_h * \\tilde S[t-1]),\\qquad B[t] = \\mathrm{GN}(W_v * \\tilde S[t-1])

``W_h`` (temporal pathway) and ``W_v`` (spatial pathway) are k x k convolutions C -> C with 16 groups and no
bias, each followed by GroupNorm(16); ``S~ = sg(S)`` when ``gradient_detach`` is on, else ``S``.
The temporal gain ``1 + tanh A[t]`` scales the membrane carried over from the past, the spatial gain
``1 + tanh B[t]`` scales the input current; both lie in (0, 2).

Both pathways read the same spikes, so they are computed as **one** grouped convolution C -> 2C (16 groups,
group g producing ``[W_h, W_v]``'s outputs of that group) followed by GroupNorm(32): mathematically identical
to the two separate pathways, about twice as fast. :func:`fuse_pathways` / :func:`split_pathways` convert
between the fused parameters and the separate ``(W_h, GN_h, W_v, GN_v)`` of the reference implementation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stcsnn.neurons.base import GROUPS, SpikingCell, check_channels, gain
from stcsnn.neurons.lif import PLIF, MembraneState, fire_soft_reset
from stcsnn.neurons.tclif import TwoCompartmentState


class Autapse(nn.Module):
    """The two STC pathways, fused: ``(1 + tanh A[t], 1 + tanh B[t]) = autapse(S[t-1])``."""

    def __init__(self, channels: int, kernel_size: int = 5, gradient_detach: bool = False) -> None:
        super().__init__()
        check_channels(channels, GROUPS, "hidden_channels")
        self.channels = channels
        self.gradient_detach = gradient_detach
        self.conv = nn.Conv2d(channels, 2 * channels, kernel_size, padding=kernel_size // 2, groups=GROUPS,
                              bias=False)
        self.norm = nn.GroupNorm(2 * GROUPS, 2 * channels)

    def pathways(self, prev_spike: Tensor) -> tuple[Tensor, Tensor]:
        """The normalised pathway signals ``(A[t], B[t])`` (before tanh)."""
        if self.gradient_detach:
            prev_spike = prev_spike.detach()
        out = self.norm(self.conv(prev_spike))
        b, _, h, w = out.shape
        out = out.view(b, GROUPS, 2, self.channels // GROUPS, h, w)
        return out[:, :, 0].reshape(b, self.channels, h, w), out[:, :, 1].reshape(b, self.channels, h, w)

    def forward(self, prev_spike: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.pathways(prev_spike)
        return 1.0 + torch.tanh(a), 1.0 + torch.tanh(b)


def fuse_pathways(w_h: Tensor, w_v: Tensor, norm_h: tuple[Tensor, Tensor], norm_v: tuple[Tensor, Tensor]
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Separate pathway parameters -> ``(conv.weight, norm.weight, norm.bias)`` of :class:`Autapse`."""
    c = w_h.shape[0]
    m = c // GROUPS
    weight = torch.stack([w_h.reshape(GROUPS, m, *w_h.shape[1:]), w_v.reshape(GROUPS, m, *w_v.shape[1:])], 1)
    gn = [torch.stack([h.reshape(GROUPS, m), v.reshape(GROUPS, m)], 1).reshape(2 * c) for h, v in zip(norm_h, norm_v)]
    return weight.reshape(2 * c, *w_h.shape[1:]), gn[0], gn[1]


def split_pathways(autapse: Autapse) -> dict[str, Tensor]:
    """Fused :class:`Autapse` parameters -> ``{w_h, w_v, norm_h_weight, norm_h_bias, norm_v_weight, ...}``."""
    c, m = autapse.channels, autapse.channels // GROUPS
    w = autapse.conv.weight.reshape(GROUPS, 2, m, *autapse.conv.weight.shape[1:])
    out = {"w_h": w[:, 0].reshape(c, *w.shape[3:]), "w_v": w[:, 1].reshape(c, *w.shape[3:])}
    for kind in ("weight", "bias"):
        p = getattr(autapse.norm, kind).reshape(GROUPS, 2, m)
        out[f"norm_h_{kind}"] = p[:, 0].reshape(c)
        out[f"norm_v_{kind}"] = p[:, 1].reshape(c)
    return out


class STC(SpikingCell):
    """Generic STC: ``STC(base)`` adds the autaptic pathways to any neuron following the cell contract.

    ``base.update(current, state, temporal_gain, spatial_gain)`` must scale its carried-over membrane term by
    ``temporal_gain`` and its input current by ``spatial_gain``, and ``state.s`` must be the previous spikes
    (see :mod:`stcsnn.neurons.base`). ``STC(IF(...))``, ``STC(PLIF(...))`` and ``STC(LMH(...))`` equal
    ``stc_lif``, ``stc_plif`` and ``stc_lmh``; ``STC(GLIF(...))`` and ``STC(TCLIF(...))`` are new neurons.
    State: the base neuron's.
    """

    options = ("gradient_detach",)

    def __init__(self, base: SpikingCell, gradient_detach: bool = False) -> None:
        nn.Module.__init__(self)
        self.base = base
        self.in_channels = base.in_channels
        self.hidden_channels = base.hidden_channels
        self.kernel_size = base.kernel_size
        self.State = base.State
        self.autapse = Autapse(base.hidden_channels, base.kernel_size, gradient_detach)

    @property
    def synapse(self) -> nn.Module:  # type: ignore[override]
        return self.base.synapse

    @property
    def spike_fn(self) -> nn.Module:  # type: ignore[override]
        return self.base.spike_fn

    def init_state(self, current):
        return self.base.init_state(current)

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        g_a, g_b = self.autapse(state.s)
        return self.base.update(current, state, gain(g_a, temporal_gain), gain(g_b, spatial_gain))


class _STCCell(SpikingCell):
    """Shared constructor of the dedicated STC neurons (synapse + fused autapse)."""

    options = ("gradient_detach",)

    def __init__(self, *args, gradient_detach: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.autapse = Autapse(self.hidden_channels, self.kernel_size, gradient_detach)


class STCLIF(_STCCell):
    r"""STC-LIF: the paper's neuron.

    .. math::
        H[t] = V[t-1]\,(1 + \tanh A[t]) + I[t]\,(1 + \tanh B[t]),\quad S[t] = \Theta(H[t] - 1),\quad
        V[t] = H[t] - S[t]

    No fixed leak: the learned, data-dependent temporal gain in (0, 2) is the leak.
    State: :class:`~stcsnn.neurons.lif.MembraneState` ``(v, s)``. Parameters: synapse and autapse.
    """

    State = MembraneState

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        g_a, g_b = self.autapse(state.s)
        h = state.v * gain(g_a, temporal_gain) + current * gain(g_b, spatial_gain)
        return fire_soft_reset(h, self.spike_fn)


class STCPLIF(_STCCell):
    r"""STC-PLIF.

    .. math::
        H[t] = \sigma(w)\,V[t-1]\,(1 + \tanh A[t]) + g_{in}\,I[t]\,(1 + \tanh B[t])

    then fire and soft reset as PLIF; ``g_in`` as in :class:`~stcsnn.neurons.lif.PLIF` (``input_gain``; the
    reference implementation uses ``1 - sigmoid(w)`` here, unlike its plain PLIF).
    State: :class:`~stcsnn.neurons.lif.MembraneState` ``(v, s)``. Parameters: synapse, autapse, scalar ``w``
    (init 0).
    """

    State = MembraneState

    options = ("gradient_detach", "input_gain")

    def __init__(self, *args, input_gain: str = "sigmoid", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        PLIF._check_input_gain(input_gain)
        self.input_gain = input_gain
        self.w = nn.Parameter(torch.zeros(()))

    input_coefficient = PLIF.input_coefficient

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        g_a, g_b = self.autapse(state.s)
        # Same association as PLIF.update under STC (k * (V * gain)), so STC(PLIF) == STCPLIF bit for bit.
        h = (torch.sigmoid(self.w) * (state.v * gain(g_a, temporal_gain))
             + self.input_coefficient() * (current * gain(g_b, spatial_gain)))
        return fire_soft_reset(h, self.spike_fn)


class STCLMH(_STCCell):
    r"""STC-LM-H.

    .. math::
        D[t] &= (\sigma(d_u) - \tfrac12)\,D[t-1] + (\sigma(s_u) - \tfrac12)\,V[t-1] + I[t]\,(1 + \tanh B[t]) \\
        H[t] &= (\sigma(d_p) + \tfrac12)\,D[t] + (\sigma(s_p) + \tfrac12)\,V[t-1]\,(1 + \tanh A[t]) \\
        S[t] &= \Theta(H[t] - 1),\qquad V[t] = H[t] - \mathrm{sg}(S[t])

    State: :class:`~stcsnn.neurons.tclif.TwoCompartmentState`. Parameters: synapse, autapse, scalars
    ``d_u, s_u, d_p, s_p`` (init 0).
    """

    State = TwoCompartmentState

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ("d_u", "s_u", "d_p", "s_p"):
            setattr(self, name, nn.Parameter(torch.zeros(())))

    def update(self, current, state, temporal_gain=None, spatial_gain=None):
        g_a, g_b = self.autapse(state.s)
        d = ((torch.sigmoid(self.d_u) - 0.5) * state.d + (torch.sigmoid(self.s_u) - 0.5) * state.v
             + current * gain(g_b, spatial_gain))
        h = ((torch.sigmoid(self.d_p) + 0.5) * d
             + (torch.sigmoid(self.s_p) + 0.5) * (state.v * gain(g_a, temporal_gain)))  # as LMH under STC
        s = self.spike_fn(h - 1.0)
        return s, TwoCompartmentState(d, h - s.detach(), s)


__all__ = ["Autapse", "STC", "STCLIF", "STCPLIF", "STCLMH", "fuse_pathways", "split_pathways"]
