"""stcsnn neurons inside SpikingJelly and snnTorch networks, against the installed packages (skipped when a
package is absent: ``pip install --no-deps spikingjelly loguru`` / ``snntorch``, see the ``interop`` extra).

Each network is compared in float64 with the same computation written with stcsnn alone: the dense layers
applied to the whole sequence with ``F.linear`` and the neuron through ``NeuronLayer.multi_step``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stcsnn.errors import StcsnnError
from stcsnn.neurons import build_layer, spiking_neurons
from stcsnn.neurons.interop import SpikingJellyNeuron

DT = torch.float64


def sequence(steps: int = 7, batch: int = 3, features: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(steps, batch, features, generator=g, dtype=DT)


def reference(fc1: nn.Linear, layer, fc2: nn.Linear, x_seq: torch.Tensor) -> torch.Tensor:
    spikes, _ = layer.multi_step(F.linear(x_seq, fc1.weight, fc1.bias))
    return F.linear(spikes, fc2.weight, fc2.bias)


@pytest.fixture
def sj():
    pytest.importorskip("spikingjelly.activation_based",
                             reason="SpikingJelly is not installed (pip install --no-deps spikingjelly loguru)")
    from spikingjelly.activation_based import functional, layer

    return functional, layer


@pytest.mark.parametrize("name", spiking_neurons())
def test_spikingjelly_network_single_and_multi_step(sj, name):
    functional, sj_layer = sj
    torch.manual_seed(1)
    neuron = SpikingJellyNeuron(build_layer(name, 32))
    net = nn.Sequential(sj_layer.Linear(12, 32), neuron, sj_layer.Linear(32, 5)).to(DT)
    x_seq = sequence()
    with torch.no_grad():
        expected = reference(net[0], neuron.layer, net[2], x_seq)
        functional.set_step_mode(net, "m")
        assert neuron.step_mode == "m" and net[0].step_mode == "m"
        multi = net(x_seq)
        assert neuron.state is not None
        again = net(x_seq)  # carries on from the state of the first sequence
        functional.reset_net(net)
        assert neuron.state is None
        functional.set_step_mode(net, "s")
        single = torch.stack([net(x) for x in x_seq])
    torch.testing.assert_close(multi, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(single, expected, rtol=0, atol=1e-12)
    assert not torch.allclose(again, expected)  # so the reset above did something
    assert isinstance(neuron, pytest.importorskip("spikingjelly.activation_based.base").MemoryModule)


def test_spikingjelly_gradients_match_multi_step(sj):
    """Training through the SpikingJelly network gives the gradients of the stcsnn-only computation."""
    functional, sj_layer = sj
    torch.manual_seed(2)
    neuron = SpikingJellyNeuron(build_layer("stc_lif", 32), step_mode="m")
    net = nn.Sequential(sj_layer.Linear(12, 32, step_mode="m"), neuron, sj_layer.Linear(32, 5, step_mode="m"))
    net = net.to(DT)
    x_seq = sequence(seed=3)
    net(x_seq).square().sum().backward()
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    reference(net[0], neuron.layer, net[2], x_seq).square().sum().backward()
    for a, b in zip(got, (p.grad for p in net.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert got[0].abs().sum() > 0
    functional.reset_net(net)


def test_spikingjelly_conv_network(sj):
    """A (B, C, H, W) STC layer (dims=2, the paper's autapse) after SpikingJelly's Conv2d, multi-step."""
    functional, sj_layer = sj
    torch.manual_seed(6)
    neuron = SpikingJellyNeuron(build_layer("stc_lif", 32, dims=2, kernel_size=3), step_mode="m")
    conv = sj_layer.Conv2d(2, 32, 3, padding=1, step_mode="m")
    net = nn.Sequential(conv, neuron).to(DT)
    g = torch.Generator().manual_seed(7)
    x_seq = 3.0 * torch.rand(5, 2, 2, 6, 6, generator=g, dtype=DT)
    with torch.no_grad():
        got = net(x_seq)
        functional.reset_net(net)
        expected, _ = neuron.layer.multi_step(F.conv2d(x_seq.flatten(0, 1), conv.weight, conv.bias, padding=1)
                                              .unflatten(0, (5, 2)))
    assert torch.equal(got, expected) and 0 < got.mean() < 1


def test_adapter_refuses_bad_arguments():
    with pytest.raises(StcsnnError, match=r"expected a NeuronLayer .*got Linear"):
        SpikingJellyNeuron(nn.Linear(2, 2))
    with pytest.raises(StcsnnError, match=r"step_mode must be 's' .* or 'm' .*got 'x'"):
        SpikingJellyNeuron(build_layer("lif", 4), step_mode="x")


@pytest.mark.parametrize("name", ["lif", "stc_lif", "stc_glif"])
def test_snntorch_model(name):
    """An snnTorch model (explicit-state loop, an ``snn.Leaky`` layer before the stcsnn layer) equals
    ``multi_step`` over the sequence of the Leaky layer's spikes."""
    snn = pytest.importorskip("snntorch", reason="snnTorch is not installed (pip install --no-deps snntorch)")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(12, 32)
            self.lif = snn.Leaky(beta=0.8)
            self.fc2 = nn.Linear(32, 32)
            self.stc = build_layer(name, 32)
            self.fc3 = nn.Linear(32, 5)

        def forward(self, x_seq):
            mem = self.lif.init_leaky()
            state = None
            out = []
            for x in x_seq:
                spk1, mem = self.lif(self.fc1(x), mem)
                spk1 = spk1.to(x.dtype)  # snnTorch's surrogates return float32 spikes (0/1: exact in float64)
                spk2, state = self.stc(self.fc2(spk1), state)
                out.append(self.fc3(spk2))
            return torch.stack(out)

    torch.manual_seed(4)
    net = Net().to(DT)
    x_seq = sequence(seed=5)
    got = net(x_seq)
    got.square().sum().backward()
    trained = [p for p in net.parameters() if p.requires_grad]  # (GLIF's frozen gates are not)
    grads = [p.grad.clone() for p in trained]
    net.zero_grad()
    mem, leaky = net.lif.init_leaky(), []  # the snnTorch layer alone, then stcsnn over the whole sequence
    for x in x_seq:
        spk1, mem = net.lif(F.linear(x, net.fc1.weight, net.fc1.bias), mem)
        leaky.append(spk1.to(DT))
    expected = reference(net.fc2, net.stc, net.fc3, torch.stack(leaky))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert 0 < torch.stack(leaky).mean() < 1
    expected.square().sum().backward()
    for a, p in zip(grads, trained):
        torch.testing.assert_close(a, p.grad, rtol=1e-10, atol=1e-12)
