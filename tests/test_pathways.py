"""Pathway ablations (``neuron_options: {pathways: temporal | spatial}``) and temporal-gain interventions
(``temporal_gain: capped | detached``); the ablations against single-pathway STC-LIF neurons
written out by hand, in float64, on the plain and the fused path, and through the predictor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stcsnn.config import make_config
from stcsnn.errors import StcsnnError
from stcsnn.models import build_model
from stcsnn.neurons import build_neuron
from stcsnn.neurons.registry import get_spec, stc_pairs


def _by_hand(cell, currents: torch.Tensor, kept: str) -> list[torch.Tensor]:
    """STC-LIF with one pathway, from its equations: the kept pathway's signal GN16(W * S[t-1]) (W: the cell's
    single grouped convolution), the other gain 1; H = V (1 + tanh A) + I (1 + tanh B); S = [H >= 1]; V = H - S."""
    w, gn = cell.autapse.conv.weight, cell.autapse.norm
    k = w.shape[-1]
    v = torch.zeros_like(currents[0])
    s = torch.zeros_like(currents[0])
    spikes = []
    for current in currents:
        signal = F.group_norm(F.conv2d(s, w, padding=k // 2, groups=16), 16, gn.weight, gn.bias, gn.eps)
        g = 1.0 + torch.tanh(signal)
        g_a, g_b = (g, 1.0) if kept == "temporal" else (1.0, g)
        h = v * g_a + current * g_b
        s = (h >= 1.0).to(h.dtype)
        v = h - s
        spikes.append(s)
    return spikes


@pytest.mark.parametrize("kept", ["temporal", "spatial"])
@pytest.mark.parametrize("fast", [False, True])
def test_one_pathway_equals_the_hand_written_neuron_in_float64(kept, fast):
    torch.manual_seed(0)
    cell = build_neuron("stc_lif", 4, 32, 3, pathways=kept).double()
    with torch.no_grad():  # a non-trivial GroupNorm affine, so both of its parameters matter
        cell.autapse.norm.weight.uniform_(0.5, 1.5)
        cell.autapse.norm.bias.uniform_(-0.3, 0.3)
    assert cell.autapse.conv.out_channels == 32 and cell.autapse.norm.num_groups == 16  # one pathway built
    currents = torch.rand(6, 2, 32, 8, 8, dtype=torch.float64) * 1.6
    expected = _by_hand(cell, currents, kept)
    state = None
    for t, current in enumerate(currents):
        spikes, state = cell.neuron_step(current, state, fast=fast)
        assert torch.equal(spikes, expected[t]), (kept, fast, t)
    assert 0 < float(torch.stack(expected).mean()) < 1  # spikes happen, and not everywhere


@pytest.mark.parametrize("kept", ["temporal", "spatial"])
def test_the_absent_gain_is_exactly_one_and_both_is_the_default(kept):
    torch.manual_seed(1)
    cell = build_neuron("stc_lif", 4, 32, 3, pathways=kept).double()
    g_a, g_b = cell.autapse(torch.rand(2, 32, 8, 8, dtype=torch.float64).round())
    assert torch.equal(g_b if kept == "temporal" else g_a, torch.ones_like(g_a))
    assert not torch.equal(g_a if kept == "temporal" else g_b, torch.ones_like(g_a))
    assert build_neuron("stc_lif", 4, 32, 3).autapse.conv.out_channels == 64


def test_registered_ablations_are_grid_models_paired_with_the_base_and_take_the_option_through_the_config():
    assert get_spec("stc_lif_temporal").base == "if" and get_spec("stc_lif_spatial").base == "if"
    assert stc_pairs(["if", "stc_lif", "stc_lif_temporal"]) == [("stc_lif", "if"), ("stc_lif_temporal", "if")]
    cfg = make_config({"neuron": "stc_plif", "neuron_options": {"pathways": "spatial"}, "hidden_channels": [16],
                       "kernel_size": 3, "patch_size": 4, "frame_shape": [1, 16, 16]})
    model = build_model(cfg)
    assert model.cells[0].autapse.kept == "spatial"
    assert build_model(make_config({**cfg.to_dict(), "neuron": "stc_lif_temporal", "neuron_options": {}})
                       ).cells[0].autapse.kept == "temporal"
    with pytest.raises(StcsnnError, match="neuron option 'pathways' must be one of both, temporal, spatial"):
        build_neuron("stc_lif", 4, 32, 3, pathways="neither")
    with pytest.raises(StcsnnError, match="has no option pathways"):
        build_neuron("lif", 4, 32, 3, pathways="temporal")


def test_the_predictor_fast_and_plain_paths_agree_with_one_pathway():
    from stcsnn.models import PLAIN

    torch.manual_seed(2)
    cfg = make_config({"neuron": "stc_lif_temporal", "hidden_channels": [16, 16], "kernel_size": 3,
                       "patch_size": 4, "frame_shape": [1, 16, 16], "dtype": "float64"})
    model = build_model(cfg)
    x = torch.rand(2, 4, 1, 16, 16, dtype=torch.float64)
    fast = model(x, n_future=3)
    plain = model(x, n_future=3, policy=PLAIN)
    assert torch.allclose(fast, plain, rtol=0, atol=1e-9)


def _pair(option: str):
    """A free STC-LIF and one with ``temporal_gain=option``, with the same weights (float64)."""
    torch.manual_seed(3)
    free = build_neuron("stc_lif", 4, 32, 3).double()
    other = build_neuron("stc_lif", 4, 32, 3, temporal_gain=option).double()
    other.load_state_dict(free.state_dict())
    return free, other


def _run(cell, currents, fast):
    state, out = None, []
    for current in currents:
        s, state = cell.neuron_step(current, state, fast=fast)
        out.append(s)
    return torch.stack(out), state


@pytest.mark.parametrize("fast", [False, True])
def test_capped_temporal_gain_is_min_of_the_free_gain_and_one(fast):
    free, capped = _pair("capped")
    spikes = (torch.rand(2, 32, 8, 8, dtype=torch.float64) > 0.5).double()
    g_free, b_free = free.autapse(spikes)
    g_cap, b_cap = capped.autapse(spikes)
    assert torch.equal(g_cap, torch.clamp(g_free, max=1.0)) and torch.equal(b_cap, b_free)
    assert bool((g_free > 1).any())  # the cap changes something here
    currents = torch.rand(6, 2, 32, 8, 8, dtype=torch.float64) * 1.6
    plain, _ = _run(capped, currents, fast=False)
    assert torch.equal(_run(capped, currents, fast=fast)[0], plain)  # the fused path computes the same


@pytest.mark.parametrize("fast", [False, True])
def test_detached_temporal_gain_changes_no_value_and_stops_its_gradient(fast):
    free, detached = _pair("detached")
    currents = (torch.rand(6, 2, 32, 8, 8, dtype=torch.float64) * 1.6).requires_grad_(False)
    grads = {}
    for name, cell in (("free", free), ("detached", detached)):
        spikes, state = _run(cell, currents, fast)
        (spikes.sum() + state.v.square().sum()).backward()
        grads[name] = (spikes.detach(), split_pathways_grad(cell))
    assert torch.equal(grads["free"][0], grads["detached"][0])  # the forward pass is unchanged
    (ga_free, _), (ga_det, gb_det) = grads["free"][1], grads["detached"][1]
    assert ga_free.abs().sum() > 0 and torch.equal(ga_det, torch.zeros_like(ga_det))  # no gradient through A
    assert gb_det.abs().sum() > 0  # the spatial pathway still learns


def split_pathways_grad(cell) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the fused autapse convolution split into its temporal (A) and spatial (B) rows."""
    g = cell.autapse.conv.weight.grad
    c, m = cell.autapse.channels, cell.autapse.channels // 16
    g = g.reshape(16, 2, m, *g.shape[1:])
    return g[:, 0].reshape(c, *g.shape[3:]), g[:, 1].reshape(c, *g.shape[3:])


def test_registered_interventions_default_their_temporal_gain_and_pair_with_if():
    for name, option in (("stc_lif_capped", "capped"), ("stc_lif_detached", "detached")):
        assert get_spec(name).base == "if" and get_spec(name).temporal_gain == option
        assert build_neuron(name, 4, 32, 3).autapse.temporal_gain == option
        assert build_neuron(name, 4, 32, 3, temporal_gain="free").autapse.temporal_gain == "free"  # the option wins
    assert build_neuron("stc_lif", 4, 32, 3).autapse.temporal_gain == "free"
    with pytest.raises(StcsnnError, match="temporal_gain must be one of free, capped, detached"):
        from stcsnn.neurons.lif import IF
        from stcsnn.neurons.stc import register_stc

        register_stc("stc_lif_bad", IF, "never registered", temporal_gain="halved")
