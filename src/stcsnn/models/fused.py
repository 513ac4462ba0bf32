"""Fused neuron updates for the predictor's fast path: one autograd node per neuron step.

The neuron modules (:mod:`stcsnn.neurons`) define each update as a chain of small elementwise torch ops; under
autograd every op is a node that saves its inputs, and the STC gains are sliced out of the fused pathway
output (whose backward zero-fills and adds two full-size buffers). Here each neuron family's step is one
``torch.autograd.Function``:

* the **forward** runs the same ops in the same order as the module's ``update`` -- the spikes and states are
  bit for bit the module's (the Heaviside is written as ``h >= 1`` into a float buffer, which equals
  ``(h - 1 >= 0).to(dtype)`` exactly);
* the **backward** is written out by hand: only the tensors the derivatives need are saved (the input
  current, the previous state, the gains ``G = 1 + tanh``, the membrane before firing), the cheap terms are
  recomputed from them (the surrogate derivative; ``tanh' = G (2 - G)``), temporaries are updated in place,
  and the pathway gradient is written straight into the fused ``(B, 2C, H, W)`` layout. Gradients equal
  autograd's up to float rounding (``tests/test_fast_path.py`` checks the fast path against
  :mod:`stcsnn.models.reference`: 1e-5 in float32, 1e-9 in float64).

On a 2-core CPU this takes an STC-LIF step's elementwise work (forward + backward) from about 1.75 ms to
about 1 ms per layer and time step (batch 4, 64 channels, 16x16); what remains is bound by memory traffic.

``fused_update(cell, current, state, pathways)`` dispatches on the cell's exact type (IF, LIF, PLIF, LM-H,
TC-LIF, GLIF, their STC versions and the generic ``STC(...)`` of them). ``pathways`` is the autapse's
normalised output ``GN(W * S[t-1])`` (before tanh) for STC cells, else ``None``. Anything else -- a
user-defined neuron, a subclass, a cell whose ``update`` was replaced on the instance (``torch.compile``) --
returns ``None`` and the caller runs ``cell.update``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from stcsnn.neurons.base import GROUPS, SpikingCell
from stcsnn.neurons.glif import GLIF, GLIFState
from stcsnn.neurons.lif import IF, LIF, PLIF, MembraneState
from stcsnn.neurons.lmh import LMH
from stcsnn.neurons.stc import STC, STCLIF, STCLMH, STCPLIF
from stcsnn.neurons.surrogate import SURROGATES
from stcsnn.neurons.tclif import TCLIF, TwoCompartmentState

# ---------------------------------------------------------------------------------------------------- helpers


def _grouped(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 16, C/16, H, W), the layout in which a channel meets its pathway gains."""
    b, c, h, w = x.shape
    return x.reshape(b, GROUPS, c // GROUPS, h, w)


def _halves(p: Tensor) -> tuple[Tensor, Tensor]:
    """Fused pathway tensor (B, 2C, H, W) -> views (A, B), each (B, 16, C/16, H, W) (conv group g holds
    ``[A of group g, B of group g]``, see :class:`stcsnn.neurons.stc.Autapse`)."""
    b, c2, h, w = p.shape
    p6 = p.view(b, GROUPS, 2, c2 // (2 * GROUPS), h, w)
    return p6[:, :, 0], p6[:, :, 1]


def _mul_gain(x: Tensor, g: Tensor | None) -> Tensor:
    """``x * g`` in the grouped layout (``x`` itself when ``g`` is None), as a (B, C, H, W) tensor."""
    return x if g is None else (_grouped(x) * g).reshape(x.shape)


def _gain_grad(grad: Tensor, g: Tensor | None) -> Tensor:
    return grad if g is None else (_grouped(grad) * g).reshape(grad.shape)


def _pathway_grad(g: Tensor, dh_a: Tensor, x_a: Tensor, dh_b: Tensor, x_b: Tensor) -> Tensor:
    """d loss / d pathways (before tanh), written straight into the fused layout from the gains
    ``g = 1 + tanh``: ``[dh_a x_a, dh_b x_b] * g (2 - g)`` (``tanh' = 1 - tanh^2 = g (2 - g)``)."""
    out = torch.empty_like(g)
    oa, ob = _halves(out)
    torch.mul(_grouped(dh_a), _grouped(x_a), out=oa)
    torch.mul(_grouped(dh_b), _grouped(x_b), out=ob)
    return out.mul_(torch.rsub(g, 2.0).mul_(g))


def _gains(pathways: Tensor | None) -> Tensor | None:
    """``1 + tanh(pathways)`` (bit for bit the modules' ``1.0 + torch.tanh(a)``)."""
    return None if pathways is None else torch.tanh(pathways).add_(1.0)


def _heaviside(h: Tensor, threshold, strict: bool) -> Tensor:
    """``Theta(h - threshold)`` as h's dtype; equals ``((h - threshold) >= 0).to(h.dtype)`` (``>`` if strict)."""
    out = torch.empty_like(h)
    return (torch.gt if strict else torch.ge)(h, threshold, out=out)


def _surrogate_grad(spike_fn, h: Tensor, threshold) -> Tensor:
    """The surrogate derivative at ``h - threshold`` (a fresh tensor the caller may overwrite)."""
    if spike_fn.name == "sigmoid":  # alpha sig(alpha x) (1 - sig(alpha x)), in place on one buffer
        alpha = spike_fn.alpha
        sig = torch.sub(h, threshold).mul_(alpha).sigmoid_()
        return torch.rsub(sig, 1.0).mul_(sig).mul_(alpha)
    return SURROGATES[spike_fn.name][0](h - threshold, spike_fn.alpha)


def _through_reset(sg: Tensor, g_s: Tensor | None, g_v: Tensor | None) -> Tensor | None:
    """d loss / dH for ``S = Theta(H - th)``, ``V = H - S``: ``g_v + (g_s - g_v) sg`` (``sg`` is consumed)."""
    if g_v is None:
        return None if g_s is None else sg.mul_(g_s)
    if g_s is None:
        return sg.neg_().add_(1.0).mul_(g_v)
    return sg.mul_(g_s - g_v).add_(g_v)


def _coef(k, x: Tensor) -> Tensor:
    return x if k is None else k * x


def _sum_like(grad: Tensor, like) -> Tensor | None:
    """Reduce ``grad`` to the shape of a coefficient (0-dim or (1, C, 1, 1))."""
    if not isinstance(like, Tensor):
        return None
    if like.dim() == 0:
        return grad.sum()
    return grad.sum((0, 2, 3), keepdim=True)


def _needs(ctx, i: int) -> bool:
    return ctx.needs_input_grad[i]


# ------------------------------------------------------------------------------------- IF / LIF / PLIF family


class _MembraneUpdate(Function):
    """``H = kv * (V[t-1] Ga) + ki * (I[t] Gb)``, ``S = Theta(H - 1)``, ``V = H - S`` (kv, ki: None, float or
    0-dim tensor; Ga = 1 + tanh A, Gb = 1 + tanh B when ``pathways`` is given). Returns ``(S, V)``."""

    @staticmethod
    def forward(ctx, current, v, pathways, kv, ki, spike_fn):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        g = _gains(pathways)
        if g is None:
            a = v if kv is None else kv * v
            b = current if ki is None else ki * current
            h = a + b
        else:
            ga, gb = _halves(g)
            a, b = _mul_gain(v, ga), _mul_gain(current, gb)  # fresh tensors: scaled in place
            if kv is not None:
                a.mul_(kv)
            if ki is not None:
                b.mul_(ki)
            h = a.add_(b)
        s = _heaviside(h, 1.0, spike_fn.strict)
        ctx.spike_fn = spike_fn
        ctx.kv, ctx.ki = (None if isinstance(kv, Tensor) else kv), (None if isinstance(ki, Tensor) else ki)
        ctx.save_for_backward(current, v, g, h, *(k if isinstance(k, Tensor) else None for k in (kv, ki)))
        return s, h - s

    @staticmethod
    def backward(ctx, g_s, g_v):  # type: ignore[override]
        current, v, g, h, kv_t, ki_t = ctx.saved_tensors
        kv = kv_t if kv_t is not None else ctx.kv
        ki = ki_t if ki_t is not None else ctx.ki
        dh = _through_reset(_surrogate_grad(ctx.spike_fn, h, 1.0), g_s, g_v)
        if dh is None:
            return (None,) * 6
        ga = gb = None
        if g is not None:
            ga, gb = _halves(g)
        dhv, dhi = _coef(kv, dh), _coef(ki, dh)
        d_current = _gain_grad(dhi, gb) if _needs(ctx, 0) else None
        d_v = _gain_grad(dhv, ga) if _needs(ctx, 1) else None
        d_path = _pathway_grad(g, dhv, v, dhi, current) if (g is not None and _needs(ctx, 2)) else None
        d_kv = _sum_like(dh * _mul_gain(v, ga), kv_t) if _needs(ctx, 3) else None
        d_ki = _sum_like(dh * _mul_gain(current, gb), ki_t) if _needs(ctx, 4) else None
        return d_current, d_v, d_path, d_kv, d_ki, None


def _membrane(cell, current, state, pathways, kv, ki):
    s, v = _MembraneUpdate.apply(current, state.v, pathways, kv, ki, cell.spike_fn)
    return s, MembraneState(v, s)


def _if(cell, current, state, pathways):
    return _membrane(cell, current, state, pathways, None, None)


def _lif(cell, current, state, pathways):
    return _membrane(cell, current, state, pathways, 0.5, 0.5)


def _plif(cell, current, state, pathways):
    return _membrane(cell, current, state, pathways, torch.sigmoid(cell.w), cell.input_coefficient())


# -------------------------------------------------------------------------------------------------- LM-H


class _LMHUpdate(Function):
    """``D = (a1 D[t-1] + a2 V[t-1]) + I Gb``, ``H = a3 D + a4 (V[t-1] Ga)``, ``S = Theta(H - 1)``,
    ``V = H - sg(S)``. Returns ``(S, D, V)``."""

    @staticmethod
    def forward(ctx, current, d_prev, v, pathways, a1, a2, a3, a4, spike_fn):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        g = _gains(pathways)
        ga, gb = _halves(g) if g is not None else (None, None)
        d = a1 * d_prev + a2 * v + _mul_gain(current, gb)
        h = a3 * d + a4 * _mul_gain(v, ga)
        s = _heaviside(h, 1.0, spike_fn.strict)
        ctx.spike_fn = spike_fn
        ctx.save_for_backward(current, d_prev, v, g, d, h, a1, a2, a3, a4)
        return s, d, h - s

    @staticmethod
    def backward(ctx, g_s, g_d, g_v):  # type: ignore[override]
        current, d_prev, v, g, d, h, a1, a2, a3, a4 = ctx.saved_tensors
        dh = None
        if g_s is not None:
            dh = _surrogate_grad(ctx.spike_fn, h, 1.0).mul_(g_s)
        if g_v is not None:
            dh = g_v if dh is None else dh + g_v
        dd = None
        if dh is not None:
            dd = a3 * dh
        if g_d is not None:
            dd = g_d if dd is None else dd + g_d
        if dd is None:
            return (None,) * 9
        if dh is None:
            dh = torch.zeros_like(dd)
        ga, gb = _halves(g) if g is not None else (None, None)
        dh4 = a4 * dh
        d_current = _gain_grad(dd, gb) if _needs(ctx, 0) else None
        d_dprev = a1 * dd if _needs(ctx, 1) else None
        d_v = (a2 * dd + _gain_grad(dh4, ga)) if _needs(ctx, 2) else None
        d_path = _pathway_grad(g, dh4, v, dd, current) if (g is not None and _needs(ctx, 3)) else None
        grads = [
            (dd * d_prev).sum() if _needs(ctx, 4) else None,
            (dd * v).sum() if _needs(ctx, 5) else None,
            (dh * d).sum() if _needs(ctx, 6) else None,
            (dh * _mul_gain(v, ga)).sum() if _needs(ctx, 7) else None,
        ]
        return d_current, d_dprev, d_v, d_path, *grads, None


def _lmh(cell, current, state, pathways):
    a1 = torch.sigmoid(cell.d_u) - 0.5
    a2 = torch.sigmoid(cell.s_u) - 0.5
    a3 = torch.sigmoid(cell.d_p) + 0.5
    a4 = torch.sigmoid(cell.s_p) + 0.5
    s, d, v = _LMHUpdate.apply(current, state.d, state.v, pathways, a1, a2, a3, a4, cell.spike_fn)
    return s, TwoCompartmentState(d, v, s)


# ------------------------------------------------------------------------------------------------- TC-LIF


class _TCLIFUpdate(Function):
    """``D = ((D[t-1] - k1 V[t-1]) + I Gb) - gamma sg(S[t-1])``, ``V = (V[t-1] Ga + k2 D) - sg(S[t-1])``,
    ``S = Theta(V - 1)``. Returns ``(S, D, V)``."""

    @staticmethod
    def forward(ctx, current, d_prev, v, s_prev, pathways, k1, k2, gamma, spike_fn):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        g = _gains(pathways)
        ga, gb = _halves(g) if g is not None else (None, None)
        d = d_prev - k1 * v + _mul_gain(current, gb) - gamma * s_prev
        v_new = _mul_gain(v, ga) + k2 * d - s_prev
        s = _heaviside(v_new, 1.0, spike_fn.strict)
        ctx.spike_fn = spike_fn
        ctx.save_for_backward(current, v, s_prev, g, d, v_new, k1, k2, gamma)
        return s, d, v_new

    @staticmethod
    def backward(ctx, g_s, g_d, g_v):  # type: ignore[override]
        current, v, s_prev, g, d, v_new, k1, k2, gamma = ctx.saved_tensors
        dv = None
        if g_s is not None:
            dv = _surrogate_grad(ctx.spike_fn, v_new, 1.0).mul_(g_s)
        if g_v is not None:
            dv = g_v if dv is None else dv + g_v
        dd = None
        if dv is not None:
            dd = k2 * dv
        if g_d is not None:
            dd = g_d if dd is None else dd + g_d
        if dd is None:
            return (None,) * 9
        if dv is None:
            dv = torch.zeros_like(dd)
        ga, gb = _halves(g) if g is not None else (None, None)
        d_current = _gain_grad(dd, gb) if _needs(ctx, 0) else None
        d_dprev = dd if _needs(ctx, 1) else None
        d_v = (_gain_grad(dv, ga) - k1 * dd) if _needs(ctx, 2) else None
        d_path = _pathway_grad(g, dv, v, dd, current) if (g is not None and _needs(ctx, 4)) else None
        d_k1 = -(dd * v).sum() if _needs(ctx, 5) else None
        d_k2 = (dv * d).sum() if _needs(ctx, 6) else None
        d_gamma = -(dd * s_prev).sum() if _needs(ctx, 7) else None
        return d_current, d_dprev, d_v, None, d_path, d_k1, d_k2, d_gamma, None


def _tclif(cell, current, state, pathways):
    s, d, v = _TCLIFUpdate.apply(current, state.d, state.v, state.s.detach(), pathways,
                                 torch.sigmoid(cell.s_u), torch.sigmoid(cell.s_p), cell.gamma, cell.spike_fn)
    return s, TwoCompartmentState(d, v, s)


# --------------------------------------------------------------------------------------------------- GLIF


class _GLIFUpdate(Function):
    """Per-channel coefficients (1, C, 1, 1): ``I' = I c_in``, ``carried = (c_u U[t-1]) (1 - gamma S[t-1])``,
    ``U = ((carried Ga - c_l) + I' Gb) - c_r S[t-1]``, ``S = Theta(U - v_th)``. Returns ``(S, U)``."""

    @staticmethod
    def forward(ctx, current, u, s_prev, pathways, c_in, c_u, gamma, c_l, c_r, v_th, spike_fn):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        g = _gains(pathways)
        ga, gb = _halves(g) if g is not None else (None, None)
        i_in = current * c_in
        keep = 1.0 - gamma * s_prev
        carried = c_u * u * keep
        u_new = _mul_gain(carried, ga) - c_l + _mul_gain(i_in, gb) - c_r * s_prev
        s = _heaviside(u_new, v_th, spike_fn.strict)
        ctx.spike_fn = spike_fn
        ctx.save_for_backward(current, u, s_prev, g, keep, u_new, c_in, c_u, gamma, c_r, v_th)
        return s, u_new

    @staticmethod
    def backward(ctx, g_s, g_u):  # type: ignore[override]
        current, u, s_prev, g, keep, u_new, c_in, c_u, gamma, c_r, v_th = ctx.saved_tensors
        d_vth = None
        du = None
        if g_s is not None:
            ds = _surrogate_grad(ctx.spike_fn, u_new, v_th).mul_(g_s)
            du = ds
            if _needs(ctx, 9):
                d_vth = -ds.sum((0, 2, 3), keepdim=True)
        if g_u is not None:
            du = g_u if du is None else du + g_u
        if du is None:
            return (None,) * 11
        ga, gb = _halves(g) if g is not None else (None, None)
        d_carried = _gain_grad(du, ga)
        d_iin = _gain_grad(du, gb)
        cu_u = c_u * u
        d_current = d_iin * c_in if _needs(ctx, 0) else None
        d_u = d_carried * c_u * keep if _needs(ctx, 1) else None
        d_keep = d_carried * cu_u  # d loss / d (1 - gamma S[t-1])
        d_sprev = None
        if _needs(ctx, 2):
            d_sprev = -(gamma * d_keep) - c_r * du
        d_path = None
        if g is not None and _needs(ctx, 3):
            d_path = _pathway_grad(g, du, cu_u * keep, du, current * c_in)
        red = (0, 2, 3)
        d_cin = (d_iin * current).sum(red, keepdim=True) if _needs(ctx, 4) else None
        d_cu = (d_carried * u * keep).sum(red, keepdim=True) if _needs(ctx, 5) else None
        d_gamma = -(d_keep * s_prev).sum(red, keepdim=True) if _needs(ctx, 6) else None
        d_cl = -du.sum(red, keepdim=True) if _needs(ctx, 7) else None
        d_cr = -(du * s_prev).sum(red, keepdim=True) if _needs(ctx, 8) else None
        return d_current, d_u, d_sprev, d_path, d_cin, d_cu, d_gamma, d_cl, d_cr, d_vth, None


def _glif(cell, current, state, pathways):
    alpha, beta, gamma = (cell.coefficient(n) for n in ("alpha", "beta", "gamma"))
    tau, v_th, leak, conduct, v_reset = (cell.coefficient(n) for n in ("tau", "v_th", "leak", "conduct", "v_reset"))
    c_in = 1.0 - beta * (1.0 - conduct)
    c_u = 1.0 - alpha * (1.0 - tau)
    c_l = (1.0 - alpha) * leak
    c_r = (1.0 - gamma) * v_reset
    s, u = _GLIFUpdate.apply(current, state.u, state.s, pathways, c_in, c_u, gamma, c_l, c_r, v_th, cell.spike_fn)
    return s, GLIFState(u, s)


# ------------------------------------------------------------------------------------------------ dispatch

#: exact cell type -> fused step ``(cell, current, state, pathways) -> (spike, state)``
FUSED = {IF: _if, STCLIF: _if, LIF: _lif, PLIF: _plif, STCPLIF: _plif, LMH: _lmh, STCLMH: _lmh,
         TCLIF: _tclif, GLIF: _glif}


def _overridden(cell: SpikingCell) -> bool:
    return "update" in vars(cell)


def fused_update(cell: SpikingCell, current: Tensor, state, pathways: Tensor | None):
    """One fused neuron step, or ``None`` when ``cell`` has no fused version (run ``cell.update`` then)."""
    if _overridden(cell):
        return None
    if type(cell) is STC:
        base = cell.base
        if _overridden(base):
            return None
        step = FUSED.get(type(base))
        return None if step is None else step(base, current, state, pathways)
    step = FUSED.get(type(cell))
    return None if step is None else step(cell, current, state, pathways)


def has_fused(cell: SpikingCell) -> bool:
    if _overridden(cell):
        return False
    if type(cell) is STC:
        return not _overridden(cell.base) and type(cell.base) in FUSED
    return type(cell) in FUSED


__all__ = ["FUSED", "fused_update", "has_fused"]
