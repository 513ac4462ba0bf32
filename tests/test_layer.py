"""Neuron layers (``build_layer``): every registered spiking neuron stepped on a current the caller computed.

References computed independently of the code under test: the LIF and STC-LIF equations written out in plain
torch, the dense autapse as a per-group matrix product (einsum), the 1-D autapse with ``F.conv1d``, a
hand-written GroupNorm; the conv cells (synapse + the same neuron) for the composition.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stcsnn.errors import StcsnnError
from stcsnn.neurons import MembraneState, NeuronLayer, build_layer, build_neuron, get_spec, spiking_neurons
from tests.helpers import load_file

DT = torch.float64
SPIKING = spiking_neurons()
SHAPES = {0: (3, 32), 1: (3, 32, 7), 2: (3, 32, 5, 6)}


def make(name: str, dims: int, seed: int = 0, **opts) -> NeuronLayer:
    torch.manual_seed(seed)
    kernel = {"kernel_size": 3} if (get_spec(name).is_stc and dims) else {}
    layer = build_layer(name, 32, dims=dims, **kernel, **opts).to(DT)
    with torch.no_grad():  # move the (zero-initialised) scalar parameters off their symmetric start
        for pname, p in layer.named_parameters():
            if p.dim() <= 1 and "norm" not in pname:
                p.add_(0.3 * torch.randn(p.shape, dtype=DT))
    return layer


def currents(dims: int, steps: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(steps, *SHAPES[dims], generator=g, dtype=DT)


def group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    b, c = x.shape[:2]
    xg = x.reshape(b, groups, -1)
    mean = xg.mean(-1, keepdim=True)
    var = ((xg - mean) ** 2).mean(-1, keepdim=True)
    y = ((xg - mean) / torch.sqrt(var + 1e-5)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    return y * weight.view(shape) + bias.view(shape)


def ref_stc_lif(layer: NeuronLayer, seq: torch.Tensor, dims: int) -> torch.Tensor:
    """STC-LIF by its equations: (A, B) = GN32(W * S[t-1]) split per group, H = V (1 + tanh A) + I (1 + tanh B),
    S = Theta(H - 1), V = H - S; W applied as a per-group matrix (dims 0) or F.conv1d (dims 1)."""
    aut = layer.neuron.autapse
    c, m = 32, 2
    w4 = aut.conv.weight.detach()  # (2C, C/16, kh, kw)
    v = torch.zeros_like(seq[0])
    s = torch.zeros_like(seq[0])
    out = []
    for current in seq:
        if dims == 0:
            wg = w4[:, :, 0, 0].reshape(16, 2 * m, m)  # group g: (2m outputs, m inputs)
            y = torch.einsum("goi,bgi->bgo", wg, s.reshape(-1, 16, m)).reshape(-1, 2 * c)
        else:
            y = F.conv1d(s, w4[:, :, :, 0], padding=w4.shape[2] // 2, groups=16)
        y = group_norm(y, 32, aut.norm.weight.detach(), aut.norm.bias.detach())
        y = y.reshape(y.shape[0], 16, 2, m, *y.shape[2:])
        a, b = y[:, :, 0].reshape(current.shape), y[:, :, 1].reshape(current.shape)
        h = v * (1 + torch.tanh(a)) + current * (1 + torch.tanh(b))
        s = (h >= 1.0).to(DT)
        v = h - s
        out.append(s)
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------ equations


def test_lif_layer_is_the_lif_equations():
    """LIF on dense currents: H = V/2 + I/2, S = Theta(H - 1), V = H - S, step by step."""
    layer = build_layer("lif", 5).to(DT)
    seq = currents(0)[:, :, :5]
    spikes, state = layer.multi_step(seq)
    v = torch.zeros(3, 5, dtype=DT)
    for t, current in enumerate(seq):
        h = 0.5 * v + 0.5 * current
        s = (h >= 1.0).to(DT)
        v = h - s
        assert torch.equal(spikes[t], s)
    assert torch.allclose(state.v, v, rtol=0, atol=1e-14) and torch.equal(state.s, s)
    assert spikes.sum() > 0 and (spikes == 0).any()


@pytest.mark.parametrize("dims", [0, 1])
@pytest.mark.parametrize("fast", [True, False])
def test_stc_lif_layer_autapse_is_grouped_linear_or_conv1d(dims, fast):
    layer = make("stc_lif", dims)
    layer.fast = fast
    seq = currents(dims)
    spikes, _ = layer.multi_step(seq)
    assert torch.equal(spikes, ref_stc_lif(layer, seq, dims))
    assert 0 < spikes.mean() < 1


@pytest.mark.parametrize("name", [n for n in SPIKING if get_spec(n).is_stc])
def test_conv_cell_is_its_synapse_then_the_layer(name):
    """A conv cell (B, C_in, H, W) -> spikes equals its synapse followed by a dims=2 layer holding its neuron's
    parameters: the cell is the composition of a synapse and the layer (both on the plain update, bit for bit)."""
    torch.manual_seed(3)
    cell = build_neuron(name, 2, 32, 3).to(DT)
    layer = build_layer(name, 32, dims=2, kernel_size=3).to(DT)
    layer.fast = False
    neuron_params = {k: v for k, v in cell.state_dict().items() if ".synapse." not in "." + k}
    layer.neuron.load_state_dict(neuron_params)
    g = torch.Generator().manual_seed(4)
    frames = torch.randn(5, 2, 2, 6, 6, generator=g, dtype=DT)
    state_c = state_l = None
    for x in frames:
        s_c, state_c = cell(x, state_c)
        s_l, state_l = layer(cell.synapse(x), state_l)
        assert torch.equal(s_c, s_l)
    assert all(torch.equal(a, b) for a, b in zip(state_c, state_l))


# ------------------------------------------------------------------------------------------------ every neuron


@pytest.mark.parametrize("dims", [0, 1, 2])
@pytest.mark.parametrize("name", SPIKING)
def test_fast_and_plain_agree_and_multi_step_is_the_loop(name, dims):
    """float64: the fused update equals the module's own update (spikes exactly, states and gradients to
    rounding); ``multi_step`` equals the step loop and resumes from a state."""
    seq = currents(dims).requires_grad_(True)
    results = []
    for fast in (True, False):
        layer = make(name, dims)
        layer.fast = fast
        spikes, state = layer.multi_step(seq)
        loss = (spikes * torch.linspace(0.5, 1.5, spikes.numel(), dtype=DT).view(spikes.shape)).sum() \
            + sum((t ** 2).sum() for t in state if t.requires_grad)
        params = [p for p in layer.parameters() if p.requires_grad]  # (GLIF's frozen gates do not)
        grads = torch.autograd.grad(loss, [seq, *params], allow_unused=True)
        results.append((spikes, state, grads))
    (s1, st1, g1), (s2, st2, g2) = results
    assert torch.equal(s1, s2) and 0 < s1.mean() < 1
    assert tuple(s1.shape) == tuple(seq.shape) and all(t.shape == seq.shape[1:] for t in st1)
    for a, b in zip(st1, st2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert g1[0].abs().sum() > 0
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    layer = make(name, dims)
    with torch.no_grad():
        state, loop = None, []
        for current in seq:
            s, state = layer(current, state)
            loop.append(s)
        head, mid = layer.multi_step(seq[:2])
        tail, end = layer.multi_step(seq[2:], mid)
    assert torch.equal(torch.stack(loop), s1) and torch.equal(torch.cat([head, tail]), s1)
    assert all(torch.equal(a, b) for a, b in zip(end, state))


class SmoothSpike(nn.Module):
    """sigmoid(4x), the sigmoid surrogate's smooth primitive: makes a step a smooth function for gradcheck."""

    def forward(self, x):
        return torch.sigmoid(4.0 * x)


@pytest.mark.parametrize("dims", [0, 1])
@pytest.mark.parametrize("name", ["lif", "glif", "stc_lif", "stc_tclif"])
def test_gradcheck_one_step(name, dims):
    """float64 gradcheck of one plain step (current and carried state) with the spike made smooth."""
    layer = make(name, dims)
    layer.fast = False
    neuron = getattr(layer.neuron, "base", layer.neuron)
    neuron.spike_fn = SmoothSpike()
    g = torch.Generator().manual_seed(7)
    shape = SHAPES[dims][:1] + SHAPES[dims][1:]
    x = torch.randn(shape, generator=g, dtype=DT, requires_grad=True)
    fields = [f for f in layer.State._fields if f != "s"]
    svals = [(0.5 * torch.randn(shape, generator=g, dtype=DT)).requires_grad_(True) for _ in fields]
    prev_s = (torch.rand(shape, generator=g, dtype=DT) > 0.5).to(DT)

    def f(x, *vals):
        s, st = layer(x, layer.State(**dict(zip(fields, vals)), s=prev_s))
        return (s, *[getattr(st, k) for k in fields])

    assert torch.autograd.gradcheck(f, (x, *svals), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_surrogate_by_name():
    """``surrogate="atan"``: dS/dI of one LIF step from rest is 0.5 * atan'(I/2 - 1)."""
    layer = build_layer("lif", 4, surrogate="atan").to(DT)
    layer.fast = False
    current = torch.tensor([[0.5, 1.5, 2.0, 3.0]], dtype=DT, requires_grad=True)
    spikes, _ = layer(current)
    spikes.sum().backward()
    x = 0.5 * current.detach() - 1.0
    expected = 0.5 * (2.0 / 2.0) / (1.0 + (math.pi / 2.0 * 2.0 * x) ** 2)
    torch.testing.assert_close(current.grad, expected, rtol=1e-12, atol=0)
    assert spikes.tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_elementwise_neuron_takes_any_rank_unless_dims_given():
    layer = build_layer("plif", 4).to(DT)
    x = torch.randn(2, 4, 3, 2, 2, dtype=DT) * 3
    s, state = layer(x)
    flat, _ = layer(x.reshape(2, 4, -1))
    assert s.shape == x.shape and isinstance(state, MembraneState) and torch.equal(s.reshape(2, 4, -1), flat)
    with pytest.raises(StcsnnError, match=r"\(B, C\).*got shape \(2, 4, 12\)"):
        build_layer("plif", 4, dims=0)(x.reshape(2, 4, -1))


# ------------------------------------------------------------------------------------------------ bad input


def test_ann_cell_is_refused():
    with pytest.raises(StcsnnError, match=r"'convlstm' is an ANN baseline.*one of if, lif"):
        build_layer("convlstm", 32)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"name": "stc_lif", "channels": 24}, r"multiple of 16 .*got 24"),
    ({"name": "lif", "channels": 0}, r"positive integer, got 0"),
    ({"name": "stc_lif", "channels": 32, "dims": 3}, r"dims must be 0 .*got 3"),
    ({"name": "lif", "channels": 8, "kernel_size": 3}, r"kernel_size is the STC autapse's"),
    ({"name": "stc_lif", "channels": 32, "kernel_size": 3}, r"for dims=1 or dims=2"),
    ({"name": "stc_lif", "channels": 32, "dims": 2, "kernel_size": 4}, r"positive odd integer, got 4"),
    ({"name": "lif", "channels": 8, "surrogate": "nope"}, r"unknown surrogate 'nope'"),
    ({"name": "lif", "channels": 8, "tau": 2}, r"no option tau"),
    ({"name": "stc_lfi", "channels": 8}, r"did you mean 'stc_lif'"),
])
def test_bad_options(kwargs, pattern):
    with pytest.raises(StcsnnError, match=pattern):
        build_layer(**kwargs)


def test_bad_currents_and_states():
    layer = build_layer("stc_lif", 32)
    with pytest.raises(StcsnnError, match=r"built for currents of shape \(B, C\) \(dims=0\), got shape "
                                          r"\(2, 32, 4, 4\) \(build_layer\(\.\.\., dims=2\)"):
        layer(torch.zeros(2, 32, 4, 4))
    with pytest.raises(StcsnnError, match=r"32 channels \(dim 1\), got 16"):
        layer(torch.zeros(2, 16))
    with pytest.raises(TypeError, match=r"floating-point current, got dtype torch.int64"):
        layer(torch.zeros(2, 32, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch.Tensor current, got list"):
        layer([0.0] * 32)
    _, state = layer(torch.zeros(2, 32))
    with pytest.raises(StcsnnError, match=r"state field 'v' has shape \(2, 32\), expected \(3, 32\)"):
        layer(torch.zeros(3, 32), state)
    with pytest.raises(TypeError, match=r"expected a MembraneState state, got int"):
        layer(torch.zeros(2, 32), 3)
    assert torch.equal(layer(torch.zeros(2, 32), tuple(state))[0], layer(torch.zeros(2, 32), state)[0])
    with pytest.raises(StcsnnError, match=r"currents of shape \(T, B, C\), got \(2, 32\)"):
        layer.multi_step(torch.zeros(2, 32))


def test_synapse_less_neuron_is_not_a_conv_cell():
    layer = build_layer("lif", 16)
    with pytest.raises(StcsnnError, match=r"has no synapse .*build_layer"):
        layer.neuron(torch.zeros(1, 2, 4, 4))


# ------------------------------------------------------------------------------------------------ the example


def test_sequential_fmnist_example_beats_chance():
    """docs/examples/sequential_fmnist.py, shortened (80 Adam steps, 64 neurons): the held-out accuracy of the
    row-by-row STC-LIF classifier is far above chance (10 %) -- the layer trains through a user's nn.Linear."""
    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "sequential_fmnist.py"
    example = load_file(path, "sequential_fmnist")
    model, acc = example.train(steps=80, hidden=64)
    assert acc > 0.4, acc
    assert isinstance(model.neuron, NeuronLayer) and model.neuron.name == "stc_lif"
