"""The straightforward path: the predictor's equations written out plainly, one time step at a time.

This is the readable reference of what :class:`~stcsnn.models.predictor.SpikingPredictor` computes, with the
structure of the paper's reference implementation: for every time step, for every layer, the synaptic
convolution, then -- for STC neurons -- the temporal and the spatial pathway as two *separate* grouped
convolutions (16 groups) each followed by GroupNorm(16), then the neuron's equations as plain torch ops (the
spike is :func:`stcsnn.neurons.surrogate.spike`). No fusion, no batching over time, default memory format.
It reads the model's own parameters (the separate pathway weights come from
:func:`stcsnn.neurons.stc.split_pathways`, a differentiable view of the fused ones), so gradients flow to the
model's parameters exactly as through the fast path.

The test ``tests/test_fast_path.py`` checks the fast path against this one, outputs and parameter gradients,
for every registered neuron; ``stcsnn bench`` times both. Cells without equations here (the ConvLSTM
baseline, user-defined neurons) run their own ``update`` -- for a generic ``STC(base)`` with the pathway
gains computed here.

>>> out = reference_rollout(model, frames, input_frames=10, n_future=10)   # same Rollout as model.rollout
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stcsnn.errors import StcsnnError
from stcsnn.models.patch import from_patches, to_patches
from stcsnn.models.predictor import Rollout
from stcsnn.neurons.base import GROUPS, Synapse
from stcsnn.neurons.glif import GLIF
from stcsnn.neurons.lif import IF, LIF, PLIF
from stcsnn.neurons.lmh import LMH
from stcsnn.neurons.stc import STC, STCLIF, STCLMH, STCPLIF, split_pathways
from stcsnn.neurons.surrogate import spike
from stcsnn.neurons.tclif import TCLIF

# ------------------------------------------------------------------------------------------------ synapses


def synaptic_current(cell: nn.Module, x: Tensor) -> Tensor:
    """``I[t] = GN16(W_x * X[t])`` (k x k, same padding, no bias)."""
    syn = cell.synapse
    if type(syn) is not Synapse:
        return syn(x)
    conv, norm = syn.conv, syn.norm
    y = F.conv2d(x, conv.weight, padding=conv.padding)
    return F.group_norm(y, norm.num_groups, norm.weight, norm.bias, norm.eps)


def pathway_gains(autapse: nn.Module, prev_spike: Tensor) -> tuple[Tensor, Tensor]:
    """``(1 + tanh A[t], 1 + tanh B[t])``, ``A = GN16(W_h * S[t-1])``, ``B = GN16(W_v * S[t-1])``: two
    separate grouped convolutions (16 groups), as the reference implementation computes them."""
    if autapse.gradient_detach:
        prev_spike = prev_spike.detach()
    w = split_pathways(autapse)
    pad = autapse.conv.padding
    eps = autapse.norm.eps
    a = F.group_norm(F.conv2d(prev_spike, w["w_h"], padding=pad, groups=GROUPS), GROUPS,
                     w["norm_h_weight"], w["norm_h_bias"], eps)
    b = F.group_norm(F.conv2d(prev_spike, w["w_v"], padding=pad, groups=GROUPS), GROUPS,
                     w["norm_v_weight"], w["norm_v_bias"], eps)
    return 1.0 + torch.tanh(a), 1.0 + torch.tanh(b)


# ------------------------------------------------------------------------------------------------ neurons
# Each equation takes the cell (for its parameters and surrogate), I[t], the previous state and the pathway
# gains (None for a plain neuron: no factor), and returns (S[t], new state).


def _mul(x: Tensor, g: Tensor | None) -> Tensor:
    return x if g is None else x * g


def _fire(cell, x: Tensor) -> Tensor:
    """S = Theta(x) with the cell's surrogate derivative (x = membrane - threshold)."""
    f = cell.spike_fn
    return spike(x, f.name, f.alpha, f.strict)


def eq_if(cell, current, state, ga, gb):
    """H = V[t-1] Ga + I[t] Gb; S = Theta(H - 1); V = H - S."""
    h = _mul(state.v, ga) + _mul(current, gb)
    s = _fire(cell, h - 1.0)
    return s, cell.State(h - s, s)


def eq_lif(cell, current, state, ga, gb):
    """H = 0.5 V[t-1] Ga + 0.5 I[t] Gb; S = Theta(H - 1); V = H - S."""
    h = 0.5 * _mul(state.v, ga) + 0.5 * _mul(current, gb)
    s = _fire(cell, h - 1.0)
    return s, cell.State(h - s, s)


def eq_plif(cell, current, state, ga, gb):
    """H = sigmoid(w) V[t-1] Ga + g_in I[t] Gb, g_in = 1 - sigmoid(w) (or 1 - w: ``input_gain='raw'``)."""
    k = torch.sigmoid(cell.w)
    g_in = 1.0 - (k if cell.input_gain == "sigmoid" else cell.w)
    h = k * _mul(state.v, ga) + g_in * _mul(current, gb)
    s = _fire(cell, h - 1.0)
    return s, cell.State(h - s, s)


def eq_lmh(cell, current, state, ga, gb):
    """D = (sig(d_u) - 1/2) D[t-1] + (sig(s_u) - 1/2) V[t-1] + I[t] Gb;
    H = (sig(d_p) + 1/2) D + (sig(s_p) + 1/2) V[t-1] Ga; S = Theta(H - 1); V = H - sg(S)."""
    d = (torch.sigmoid(cell.d_u) - 0.5) * state.d + (torch.sigmoid(cell.s_u) - 0.5) * state.v + _mul(current, gb)
    h = (torch.sigmoid(cell.d_p) + 0.5) * d + (torch.sigmoid(cell.s_p) + 0.5) * _mul(state.v, ga)
    s = _fire(cell, h - 1.0)
    return s, cell.State(d, h - s.detach(), s)


def eq_tclif(cell, current, state, ga, gb):
    """D = D[t-1] - sig(s_u) V[t-1] + I[t] Gb - gamma sg(S[t-1]); V = V[t-1] Ga + sig(s_p) D - sg(S[t-1]);
    S = Theta(V - 1)."""
    prev = state.s.detach()
    d = state.d - torch.sigmoid(cell.s_u) * state.v + _mul(current, gb) - cell.gamma * prev
    v = _mul(state.v, ga) + torch.sigmoid(cell.s_p) * d - prev
    s = _fire(cell, v - 1.0)
    return s, cell.State(d, v, s)


def eq_glif(cell, current, state, ga, gb):
    """Per-channel sigmoid coefficients (gates alpha, beta, gamma detached unless ``train_gates``):
    U = (1 - a(1 - tau)) U[t-1] (1 - gamma S[t-1]) Ga - (1 - a) leak + I (1 - beta(1 - c)) Gb
    - (1 - gamma) V_reset S[t-1];  S = Theta(U - V_th) (strict)."""

    def c(name):
        raw = getattr(cell, name)
        if name in ("alpha", "beta", "gamma") and not cell.train_gates:
            raw = raw.detach()
        return torch.sigmoid(raw).view(1, -1, 1, 1)

    alpha, beta, gamma, tau = c("alpha"), c("beta"), c("gamma"), c("tau")
    v_th, leak, conduct, v_reset = c("v_th"), c("leak"), c("conduct"), c("v_reset")
    i_in = current * (1.0 - beta * (1.0 - conduct))
    carried = (1.0 - alpha * (1.0 - tau)) * state.u * (1.0 - gamma * state.s)
    u = _mul(carried, ga) - (1.0 - alpha) * leak + _mul(i_in, gb) - (1.0 - gamma) * v_reset * state.s
    s = _fire(cell, u - v_th)
    return s, cell.State(u, s)


#: neuron class -> its equations (STC versions: the base neuron's equations with the pathway gains)
EQUATIONS: dict[type, Callable] = {IF: eq_if, STCLIF: eq_if, LIF: eq_lif, PLIF: eq_plif, STCPLIF: eq_plif,
                                   LMH: eq_lmh, STCLMH: eq_lmh, TCLIF: eq_tclif, GLIF: eq_glif}


def reference_step(cell: nn.Module, x: Tensor, state) -> tuple[Tensor, object]:
    """One layer, one time step: ``(S[t], state[t]) `` from the layer's input ``x`` and ``state[t-1]``."""
    core = cell.base if type(cell) is STC else cell
    current = synaptic_current(core, x)
    if state is None:
        state = cell.init_state(current)
    autapse = getattr(cell, "autapse", None)
    ga = gb = None
    if autapse is not None:
        ga, gb = pathway_gains(autapse, state.s)
    equation = EQUATIONS.get(type(core))
    if equation is not None:
        return equation(core, current, state, ga, gb)
    if autapse is not None:  # generic STC over a neuron without equations here: its update with the gains
        return core.update(current, state, ga, gb)
    return cell.update(current, state)


# ------------------------------------------------------------------------------------------------ rollout


def reference_rollout(model, frames: Tensor, input_frames: int, n_future: int, mask: Tensor | None = None,
                      reverse: bool = False) -> Rollout:
    """:meth:`SpikingPredictor.rollout <stcsnn.models.predictor.SpikingPredictor.rollout>`, computed the
    straightforward way (same arguments, same :class:`Rollout`)."""
    model.check_frames(frames)
    if n_future < 1 or input_frames < 1:
        raise StcsnnError(f"need input_frames >= 1 and n_future >= 1, got {input_frames} and {n_future}")
    if frames.shape[1] < input_frames:
        raise StcsnnError(f"expected at least {input_frames} input frames, got {frames.shape[1]}")
    steps = input_frames + n_future - 1
    if mask is not None:
        want = steps - 1 if reverse else n_future - 1
        if tuple(mask.shape[:2]) != (frames.shape[0], want) or frames.shape[1] < steps:
            raise StcsnnError(f"scheduled-sampling mask must be (B, {want}) with {steps} frames, "
                              f"got mask {tuple(mask.shape)} and {frames.shape[1]} frames")
        mask = mask.to(frames.dtype).view(*mask.shape[:2], 1, 1, 1)
    p = model.patch_size
    x = to_patches(frames[:, :input_frames] if mask is None else frames, p)
    states: list = [None] * len(model.cells)
    rate_sums = torch.zeros(len(model.cells), device=frames.device)
    outputs: list[Tensor] = []
    prev = None
    for t in range(steps):
        # the input: an observed frame, the previous prediction, or (scheduled sampling) a mix of both
        if t < input_frames and not (reverse and mask is not None and t > 0):
            net = x[:, t]
        elif mask is None:
            net = prev
        else:
            m = mask[:, t - 1] if reverse else mask[:, t - input_frames]
            net = m * x[:, t] + (1 - m) * prev
        for l, cell in enumerate(model.cells):
            net, states[l] = reference_step(cell, net, states[l])
            rate_sums[l] += net.detach().mean()
        prev = F.conv2d(net, model.readout.weight)  # 1x1 readout, no bias
        outputs.append(prev)
    return Rollout(from_patches(torch.stack(outputs, 1), p), rate_sums / steps)


__all__ = ["EQUATIONS", "pathway_gains", "reference_rollout", "reference_step", "synaptic_current"]
