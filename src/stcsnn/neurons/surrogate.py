"""Surrogate spike functions: a Heaviside step forward, a smooth derivative backward.

Split the SpikingJelly way, each part testable alone:

* ``*_grad(x, alpha)`` -- the surrogate derivative as a plain function of ``x = v - v_th``;
* :class:`SpikeFunction` -- the autograd function (forward: Heaviside, backward: the derivative);
* :class:`Surrogate` -- a small module holding the name, ``alpha`` and the threshold convention.

Derivatives (``x = v - v_th``):

============== ======================================================= ========= =====================
name           derivative                                              alpha     value at x = 0
============== ======================================================= ========= =====================
sigmoid        alpha * sig(alpha x) * (1 - sig(alpha x))               4         alpha / 4 = 1
atan           (alpha / 2) / (1 + (pi/2 * alpha * x)^2)                2         alpha / 2 = 1
rectangle      1/alpha where |x| < alpha/2, else 0 (alpha = width)     1         1/alpha = 1
triangle       max(0, 1 - |x|/alpha) / alpha  (alpha = half-width)     1         1/alpha = 1
fast_sigmoid   1 / (1 + alpha |x|)^2   (SuperSpike)                    10        1
============== ======================================================= ========= =====================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from stcsnn.errors import StcsnnError


def sigmoid_grad(x: Tensor, alpha: float) -> Tensor:
    s = torch.sigmoid(alpha * x)
    return alpha * s * (1.0 - s)


def atan_grad(x: Tensor, alpha: float) -> Tensor:
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)


def rectangle_grad(x: Tensor, alpha: float) -> Tensor:
    return (x.abs() < alpha / 2.0).to(x.dtype) / alpha


def triangle_grad(x: Tensor, alpha: float) -> Tensor:
    return torch.clamp(1.0 - x.abs() / alpha, min=0.0) / alpha


def fast_sigmoid_grad(x: Tensor, alpha: float) -> Tensor:
    return 1.0 / (1.0 + alpha * x.abs()) ** 2


#: name -> (derivative, default alpha)
SURROGATES: dict[str, tuple[Callable[[Tensor, float], Tensor], float]] = {
    "sigmoid": (sigmoid_grad, 4.0),
    "atan": (atan_grad, 2.0),
    "rectangle": (rectangle_grad, 1.0),
    "triangle": (triangle_grad, 1.0),
    "fast_sigmoid": (fast_sigmoid_grad, 10.0),
}


def check_surrogate(name: str) -> None:
    if name not in SURROGATES:
        raise StcsnnError(f"unknown surrogate {name!r}: expected one of {', '.join(sorted(SURROGATES))}")


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward (``x >= 0``, or ``x > 0`` when ``strict``), surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x: Tensor, name: str, alpha: float, strict: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.name = name
        ctx.alpha = alpha
        return (x > 0).to(x.dtype) if strict else (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        derivative = SURROGATES[ctx.name][0]
        return grad_out * derivative(x, ctx.alpha), None, None, None


def spike(x: Tensor, surrogate: str = "sigmoid", alpha: float | None = None, strict: bool = False) -> Tensor:
    """Emit spikes ``H(x)`` for ``x = v - v_th`` with the named surrogate derivative."""
    check_surrogate(surrogate)
    if alpha is None:
        alpha = SURROGATES[surrogate][1]
    return SpikeFunction.apply(x, surrogate, float(alpha), strict)


class Surrogate(nn.Module):
    """``Surrogate("sigmoid", alpha=4.0)(v - v_th)`` -> spikes in {0, 1} with a smooth backward."""

    def __init__(self, name: str = "sigmoid", alpha: float | None = None, strict: bool = False) -> None:
        super().__init__()
        check_surrogate(name)
        self.name = name
        self.alpha = float(SURROGATES[name][1] if alpha is None else alpha)
        if self.alpha <= 0:
            raise StcsnnError(f"surrogate alpha must be > 0, got {self.alpha}")
        self.strict = strict

    def derivative(self, x: Tensor) -> Tensor:
        """The surrogate derivative at ``x`` (used by the gradient analysis)."""
        return SURROGATES[self.name][0](x, self.alpha)

    def forward(self, x: Tensor) -> Tensor:
        return SpikeFunction.apply(x, self.name, self.alpha, self.strict)

    def extra_repr(self) -> str:
        return f"{self.name!r}, alpha={self.alpha}, strict={self.strict}"
