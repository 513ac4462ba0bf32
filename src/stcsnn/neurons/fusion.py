"""Shared pieces of the fused neuron updates (one autograd node per neuron step, hand-written backward).

Each neuron file defines its equations once, as a pure ``*_charge`` function (tensors and coefficients in,
the membrane before firing out), used by its module's ``update`` and by its fused ``torch.autograd.Function``.
The fused forward calls that same function -- so the forward is the module's by construction -- and saves
only what the hand-written backward needs; cheap terms are recomputed there (the surrogate derivative,
``tanh' = G (2 - G)``), temporaries are updated in place, and the pathway gradient is written straight into
the fused ``(B, 2C, H, W)`` layout of :class:`stcsnn.neurons.stc.Autapse`. Why: under plain autograd every
small elementwise op of an update is a node that saves its inputs, and the STC gains sliced out of the fused
pathway output get a backward that zero-fills and adds two full-size buffers; fusing shortens an STC-LIF
step's elementwise work (forward + backward) on CPU (``stcsnn bench`` measures the fast path).

Layout: the pathway output of 16-group convolution ``g`` holds ``[A of group g, B of group g]``, so the gains
are views of shape (B, 16, C/16, H, W); :func:`grouped` brings the state, current and per-channel
coefficients into that shape (views, no copies), the charge function runs there, and the result is reshaped
back to (B, C, H, W).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from stcsnn.neurons.base import GROUPS
from stcsnn.neurons.surrogate import SURROGATES


def grouped(x):
    """(B, C, H, W) or (1, C, 1, 1) -> (B, 16, C/16, H, W) / (1, 16, C/16, 1, 1) views; scalars unchanged."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        return x
    b, c, h, w = x.shape
    return x.reshape(b, GROUPS, c // GROUPS, h, w)


def halves(p: Tensor) -> tuple[Tensor, Tensor]:
    """Fused pathway tensor (B, 2C, H, W) -> views (A, B), each (B, 16, C/16, H, W)."""
    b, c2, h, w = p.shape
    p6 = p.view(b, GROUPS, 2, c2 // (2 * GROUPS), h, w)
    return p6[:, :, 0], p6[:, :, 1]


def gains(pathways: Tensor | None) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """``G = 1 + tanh(pathways)`` and its two halves ``(G, G_A, G_B)`` (all ``None`` without pathways).

    Computed as ``2 sigmoid(2 x)`` (the same function): on CPU torch's ``tanh`` kernel measured slower
    than ``sigmoid``'s, and ``1 + tanh`` loses digits to cancellation where tanh is near -1."""
    if pathways is None:
        return None, None, None
    g = torch.mul(pathways, 2.0).sigmoid_().mul_(2.0)
    return (g, *halves(g))


def charge_grouped(charge, g: Tensor | None, like: Tensor, *args):
    """Run ``charge(*args, temporal_gain=G_A, spatial_gain=G_B)`` in the gains' grouped layout and return its
    outputs as ``like``-shaped (B, C, H, W) tensors (no pathways: the plain layout)."""
    if g is None:
        return charge(*args)
    ga, gb = halves(g)
    out = charge(*(grouped(a) for a in args), temporal_gain=ga, spatial_gain=gb)
    if isinstance(out, tuple):
        return tuple(o.reshape(like.shape) for o in out)
    return out.reshape(like.shape)


def mul_gain(x: Tensor, g: Tensor | None) -> Tensor:
    """``x * g`` in the grouped layout (``x`` itself when ``g`` is None), as a (B, C, H, W) tensor."""
    return x if g is None else (grouped(x) * g).reshape(x.shape)


def pathway_grad(g: Tensor, dh_a: Tensor, x_a: Tensor, dh_b: Tensor, x_b: Tensor) -> Tensor:
    """d loss / d pathways (before tanh), written straight into the fused layout from the gains
    ``g = 1 + tanh``: ``[dh_a x_a, dh_b x_b] * g (2 - g)`` (``tanh' = 1 - tanh^2 = g (2 - g)``)."""
    out = torch.empty_like(g)
    oa, ob = halves(out)
    torch.mul(grouped(dh_a), grouped(x_a), out=oa)
    torch.mul(grouped(dh_b), grouped(x_b), out=ob)
    return out.mul_(torch.rsub(g, 2.0).mul_(g))


def heaviside(h: Tensor, threshold, strict: bool) -> Tensor:
    """``Theta(h - threshold)`` as h's dtype; equals the surrogate's forward ``((h - threshold) >= 0)``
    (``>`` if strict) exactly, without the subtraction's temporary."""
    out = torch.empty_like(h)
    return (torch.gt if strict else torch.ge)(h, threshold, out=out)


def surrogate_grad(spike_fn, h: Tensor, threshold) -> Tensor:
    """The surrogate derivative at ``h - threshold`` (a fresh tensor the caller may overwrite)."""
    if spike_fn.name == "sigmoid":  # alpha sig(alpha x) (1 - sig(alpha x)), in place on one buffer
        alpha = spike_fn.alpha
        sig = torch.sub(h, threshold).mul_(alpha).sigmoid_()
        return torch.rsub(sig, 1.0).mul_(sig).mul_(alpha)
    return SURROGATES[spike_fn.name][0](h - threshold, spike_fn.alpha)


def through_reset(sg: Tensor, g_s: Tensor | None, g_v: Tensor | None) -> Tensor | None:
    """d loss / dH for ``S = Theta(H - th)``, ``V = H - S``: ``g_v + (g_s - g_v) sg`` (``sg`` is consumed)."""
    if g_v is None:
        return None if g_s is None else sg.mul_(g_s)
    if g_s is None:
        return sg.neg_().add_(1.0).mul_(g_v)
    return sg.mul_(g_s - g_v).add_(g_v)


def accumulate(*grads: Tensor | None) -> Tensor | None:
    """The sum of the gradients that exist (``None`` when none does)."""
    out = None
    for g in grads:
        if g is not None:
            out = g if out is None else out + g
    return out


def coef(k, x: Tensor) -> Tensor:
    """``k * x`` (``x`` itself when ``k`` is None)."""
    return x if k is None else k * x


def sum_like(grad: Tensor, like) -> Tensor | None:
    """Reduce ``grad`` to the shape of a coefficient (0-dim or (1, C, 1, 1)); ``None`` for a plain number."""
    if not isinstance(like, Tensor):
        return None
    if like.dim() == 0:
        return grad.sum()
    return grad.sum((0, 2, 3), keepdim=True)


# ---------------------------------------------------------------------------------------------- channels-last


def is_channels_last(x: Tensor) -> bool:
    """True when ``x`` (B, C, H, W) is laid out channel-fastest (NHWC), so that (B, H*W, C) is a view of it (a
    batch stride larger than H*W*C -- a frame sliced out of a (B, T, ...) sequence -- is fine)."""
    if x.dim() != 4:
        return False
    b, c, h, w = x.shape
    sb, sc, sh, sw = x.stride()
    return (c == 1 or sc == 1) and (w == 1 or sw == c) and (h == 1 or sh == w * c) and (b == 1 or sb >= h * w * c)


def _rows(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C): a view of a channels-last tensor, a copy otherwise."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def _unrows(r: Tensor, h: int, w: int) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W) channels-last view."""
    b, _, c = r.shape
    return r.view(b, h, w, c).permute(0, 3, 1, 2)


def _norm_forward(r: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float):
    """GroupNorm of contiguous rows ``r`` (B, HW, C), each group ``C / groups`` adjacent channels, over (HW,
    group); ``weight``/``bias`` (C,). Returns ``(out, d, rstd)``: the output and the centred input (B, HW, C)
    and the per-channel ``rstd`` (B, C). Two-pass statistics (the mean, then the centred sum of squares), as
    accurate as the native kernel's Welford moments. Every big operand is a (B, HW, C) row block and every
    coefficient a (B, 1, C) row: the loops run along whole rows of channels (with (B, HW, G, k) shapes they
    would run k at a time, measured several times slower)."""
    b, hw, c = r.shape
    k = c // groups
    n = hw * k
    mean = r.sum(1).view(b, groups, k).sum(2).div_(n).repeat_interleave(k, 1)
    d = torch.sub(r, mean.unsqueeze(1))
    var = torch.mul(d, d).sum(1).view(b, groups, k).sum(2).div_(n)
    rstd = var.add_(eps).rsqrt_().repeat_interleave(k, 1)
    scale = (rstd if weight is None else rstd * weight).unsqueeze(1)
    out = torch.mul(d, scale) if bias is None else torch.addcmul(bias, d, scale)
    return out, d, rstd


def _norm_backward(g: Tensor, d: Tensor, rstd: Tensor, weight: Tensor | None, groups: int, need_x: bool):
    """Gradients ``(dx, d_weight, d_bias)`` of :func:`_norm_forward` for the output gradient rows ``g``:
    ``dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))`` with ``dxhat = g w``, as two fused
    multiply-adds over the rows."""
    b, hw, c = d.shape
    k = c // groups
    n = hw * k
    c1 = g.sum(1)  # per channel: sum of dy
    c2 = torch.mul(g, d).sum(1)  # per channel: sum of dy (x - mean)
    d_weight = None if weight is None else (c2 * rstd).sum(0)
    d_bias = c1.sum(0)
    d_x = None
    if need_x:
        w = 1.0 if weight is None else weight
        m1 = (c1 * w).view(b, groups, k).sum(2).div_(n).repeat_interleave(k, 1)
        m2 = (c2 * w * rstd).view(b, groups, k).sum(2).div_(n).repeat_interleave(k, 1)
        d_x = torch.addcmul((-rstd * m1).unsqueeze(1), g, (rstd * w).unsqueeze(1))
        d_x.addcmul_(d, (-rstd * rstd * m2).unsqueeze(1))
    return d_x, d_weight, d_bias


class GroupNormChannelsLast(Function):
    """GroupNorm of a channels-last (B, C, H, W) tensor, output channels-last. Why: torch's CPU GroupNorm
    kernel for channels-last input measured several times slower than for NCHW (for the pathway tensors of
    the models here), and converting to NCHW and back costs time each way; in the (B, H*W, C)
    view every reduction runs over the outer axis and every normalisation along whole rows of channels."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps):  # type: ignore[override]
        h, w = x.shape[2:]
        out, d, rstd = _norm_forward(_rows(x).contiguous(), groups, weight, bias, eps)
        ctx.groups = groups
        ctx.save_for_backward(d, rstd, weight)
        return _unrows(out, h, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        d, rstd, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        d_x, d_w, d_b = _norm_backward(_rows(grad), d, rstd, weight, ctx.groups, need[0])
        return (None if d_x is None else _unrows(d_x.contiguous(), *grad.shape[2:]),
                d_w if need[1] else None, d_b if need[2] else None, None, None)


def _fast_norm(norm: torch.nn.GroupNorm, x: Tensor) -> bool:
    return (is_channels_last(x) and x.dtype in (torch.float32, torch.float64) and x.shape[1] > 1
            and not torch.is_autocast_enabled(x.device.type))


def group_norm(norm: torch.nn.GroupNorm, x: Tensor) -> Tensor:
    """``norm(x)``; for a channels-last float32/float64 input outside autocast, :class:`GroupNormChannelsLast`
    (the same function, channels-last output, much faster on CPU)."""
    if _fast_norm(norm, x):
        return GroupNormChannelsLast.apply(x, norm.weight, norm.bias, norm.num_groups, norm.eps)
    return norm(x)
