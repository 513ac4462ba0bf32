"""Surrogate spike functions: Heaviside forward, surrogate derivative backward.

Every expected value here is written from the formulas of the issue / the table in ``surrogate.py``'s
docstring, in plain numpy or torch, never by calling the derivative functions under test.

About ``gradcheck``: the forward of a spike function is a step, whose true derivative is 0 almost everywhere,
so ``gradcheck(spike, x)`` would (correctly) fail -- the surrogate backward is *by design* not the derivative
of the forward. What can be checked numerically is that the backward is the exact derivative of the smooth
primitive ``P`` of the surrogate (``P' = surrogate``). ``test_gradcheck_backward_is_derivative_of_primitive``
builds ``f(x) = spike(x) + sg(P(x) - spike(x))``: its value is ``P(x)`` (smooth), its analytic gradient is
the spike function's backward, so ``gradcheck(f)`` compares the implemented backward against finite
differences of ``P``. A second check runs ``gradcheck`` on the backward itself (double backward), so the
surrogate path is also differentiable in float64. The cells' continuous parts are gradchecked in
``test_neurons.py`` with the spike swapped for a smooth primitive.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stcsnn.neurons import SURROGATES, Surrogate, build_neuron, spike

NAMES = ("sigmoid", "atan", "rectangle", "triangle", "fast_sigmoid")
DEFAULT_ALPHA = {"sigmoid": 4.0, "atan": 2.0, "rectangle": 1.0, "triangle": 1.0, "fast_sigmoid": 10.0}


def expected_derivative(name: str, x: np.ndarray, a: float) -> np.ndarray:
    """The table of surrogate.py's docstring, in numpy."""
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-a * x))
        return a * s * (1.0 - s)
    if name == "atan":
        return (a / 2.0) / (1.0 + (math.pi / 2.0 * a * x) ** 2)
    if name == "rectangle":
        return np.where(np.abs(x) < a / 2.0, 1.0 / a, 0.0)
    if name == "triangle":
        return np.maximum(0.0, 1.0 - np.abs(x) / a) / a
    if name == "fast_sigmoid":
        return 1.0 / (1.0 + a * np.abs(x)) ** 2
    raise AssertionError(name)


def primitive(name: str, x: torch.Tensor, a: float) -> torch.Tensor:
    """A smooth antiderivative P of each surrogate (P' = the surrogate), written by hand."""
    if name == "sigmoid":
        return torch.sigmoid(a * x)
    if name == "atan":
        return torch.atan(math.pi / 2.0 * a * x) / math.pi + 0.5
    if name == "rectangle":
        return torch.clamp(x / a + 0.5, 0.0, 1.0)
    if name == "triangle":
        inside = 0.5 + x / a - torch.sign(x) * x**2 / (2 * a**2)
        return torch.where(x.abs() < a, inside, (x > 0).to(x.dtype))
    if name == "fast_sigmoid":
        return x / (1.0 + a * x.abs())
    raise AssertionError(name)


POINTS = np.array([-2.0, -0.9, -0.5, -0.49, -0.25, -0.05, 0.0, 0.05, 0.25, 0.49, 0.5, 0.51, 0.9, 1.0, 2.5])


def backward_of(x: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = spike(x, **kwargs)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), g


def test_registered_surrogates_and_default_alphas():
    assert set(SURROGATES) == set(NAMES)
    for name in NAMES:
        assert Surrogate(name).alpha == DEFAULT_ALPHA[name]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("alpha", [None, 0.5, 3.0])
def test_backward_matches_formula(name, alpha):
    a = DEFAULT_ALPHA[name] if alpha is None else alpha
    x = torch.tensor(POINTS, dtype=torch.float64)
    _, g = backward_of(x, surrogate=name, alpha=alpha)
    np.testing.assert_allclose(g.numpy(), expected_derivative(name, POINTS, a), rtol=1e-12, atol=1e-15)
    # the module's own derivative (used by the gradient analysis) agrees, and so does its backward
    mod = Surrogate(name, alpha)
    np.testing.assert_allclose(mod.derivative(x).numpy(), expected_derivative(name, POINTS, a), rtol=1e-12)
    xr = x.clone().requires_grad_(True)
    mod(xr).sum().backward()
    np.testing.assert_allclose(xr.grad.numpy(), expected_derivative(name, POINTS, a), rtol=1e-12, atol=1e-15)


def test_backward_multiplies_upstream_gradient():
    x = torch.tensor([-0.3, 0.0, 0.2], dtype=torch.float64, requires_grad=True)
    up = torch.tensor([2.0, -3.0, 0.5], dtype=torch.float64)
    (spike(x) * up).sum().backward()
    expected = up.numpy() * expected_derivative("sigmoid", x.detach().numpy(), 4.0)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_default_peak_is_one_at_zero(name):
    _, g = backward_of(torch.zeros(1, dtype=torch.float64), surrogate=name)
    assert g.item() == pytest.approx(1.0, abs=1e-15)


def test_sigmoid_alpha4_values():
    _, g = backward_of(torch.tensor([0.0, 0.5, -0.5], dtype=torch.float64))  # default surrogate = sigmoid(4)
    s = 1 / (1 + math.exp(-2.0))
    assert g[0].item() == 1.0
    assert g[1].item() == pytest.approx(4 * s * (1 - s), rel=1e-14)
    assert g[2].item() == pytest.approx(4 * s * (1 - s), rel=1e-14)


def test_rectangle_width_one():
    x = torch.tensor([-0.75, -0.5, -0.4999, -0.2, 0.0, 0.3, 0.4999, 0.5, 0.6], dtype=torch.float64)
    _, g = backward_of(x, surrogate="rectangle")
    assert g.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_is_heaviside(name, dtype):
    x = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 0.3, 2.0], dtype=dtype)
    out, _ = backward_of(x, surrogate=name)
    assert out.dtype == dtype
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]  # spike when v - v_th >= 0
    strict, _ = backward_of(x, surrogate=name, strict=True)
    assert strict.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # GLIF's convention: > 0
    assert Surrogate(name, strict=True)(x).tolist() == strict.tolist()
    assert Surrogate(name)(x).tolist() == out.tolist()


def test_strict_threshold_does_not_change_backward():
    x = torch.tensor([0.0, 0.2], dtype=torch.float64)
    _, g1 = backward_of(x, surrogate="rectangle", strict=True)
    _, g2 = backward_of(x, surrogate="rectangle", strict=False)
    assert torch.equal(g1, g2) and g1.tolist() == [1.0, 1.0]


def test_unknown_surrogate_lists_valid_names():
    for make in (lambda: spike(torch.zeros(2), surrogate="relu"), lambda: Surrogate("relu"),
                 lambda: build_neuron("lif", 1, 16, 3, surrogate="relu")):
        with pytest.raises(ValueError) as err:
            make()
        msg = str(err.value)
        assert "relu" in msg
        for name in NAMES:
            assert name in msg


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_non_positive_alpha_rejected(alpha):
    with pytest.raises(ValueError, match="alpha"):
        Surrogate("sigmoid", alpha)


def test_cell_surrogate_option_is_used():
    """A cell built with ``surrogate="atan", alpha=3`` backpropagates the atan derivative at H - 1."""
    cell = build_neuron("if", 1, 16, 1, surrogate="atan", alpha=3.0).double()
    current = torch.linspace(-1.0, 3.0, 16, dtype=torch.float64).view(1, 16, 1, 1).requires_grad_(True)
    zero = torch.zeros_like(current)
    s, _ = cell.update(current, cell.State(zero, zero))
    s.sum().backward()
    expected = expected_derivative("atan", current.detach().numpy() - 1.0, 3.0)
    np.testing.assert_allclose(current.grad.numpy(), expected, rtol=1e-12)


# points away from every kink (0, +-alpha/2, +-alpha) so finite differences of P are well defined
SMOOTH_POINTS = [-2.3, -1.3, -0.8, -0.3, -0.15, 0.1, 0.2, 0.35, 0.7, 1.6]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("alpha", [None, 1.7])
def test_gradcheck_backward_is_derivative_of_primitive(name, alpha):
    a = DEFAULT_ALPHA[name] if alpha is None else alpha

    def f(x):
        s = spike(x, surrogate=name, alpha=alpha)
        return s + (primitive(name, x, a) - s).detach()  # value P(x), gradient = the spike's backward

    x = torch.tensor(SMOOTH_POINTS, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    # sanity: the primitive really is an antiderivative of the tabulated formula (plain autograd of P)
    (gp,) = torch.autograd.grad(primitive(name, x, a).sum(), x)
    np.testing.assert_allclose(gp.numpy(), expected_derivative(name, np.array(SMOOTH_POINTS), a), rtol=1e-12)


def test_gradcheck_detects_a_wrong_backward():
    """The check above can fail: pair the sigmoid backward with the atan primitive."""
    def f(x):
        s = spike(x, surrogate="sigmoid")
        return s + (primitive("atan", x, 4.0) - s).detach()

    x = torch.tensor(SMOOTH_POINTS, dtype=torch.float64, requires_grad=True)
    assert not torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6, raise_exception=False)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_double_backward(name):
    """The surrogate backward is itself differentiable (float64 gradcheck of x -> d spike / dx)."""
    def first_derivative(x):
        (g,) = torch.autograd.grad(spike(x, surrogate=name).sum(), x, create_graph=True)
        return g

    x = torch.tensor(SMOOTH_POINTS, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(first_derivative, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
