"""``stcsnn analyze gradients | dynamics``: results against independent computations, bad input.

The expected per-step factors are computed here from the recorded states with formulas written in this file
(the sigmoid surrogate's derivative, the STC pathway as a grouped conv + GroupNorm picked by the documented
channel layout), and cross-checked against autograd through the *real* rollout graph: in the predictor,
V[t-1] feeds only H[t], so d V[t] / d V[t-1] there is the elementwise membrane-path factor. The analysis
runs the module path (``fast=False``) and the real graph the fast path: two computations that round
differently, so these comparisons run in float64 (in float32 one rounding difference can flip a spike).
"""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from stcsnn.analysis.dynamics import gain_rows, rate_rows, trace_dynamics
from stcsnn.analysis.gradients import gradient_rows, trace_gradients
from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.io import atomic_torch_save
from stcsnn.models import build_model
from stcsnn.models.loading import model_checkpoint

T_IN, T_OUT = 3, 3
STEPS = T_IN + T_OUT - 1



def small(neuron: str, hidden=(16,)):
    cfg = make_config({"neuron": neuron, "hidden_channels": list(hidden), "kernel_size": 3, "patch_size": 2,
                       "frame_shape": [1, 8, 8], "input_frames": T_IN, "output_frames": T_OUT, "seed": 0})
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # larger currents: neurons fire and the surrogate derivative takes many values
        for cell in model.cells:
            cell.synapse.norm.weight.mul_(3.0)
    frames = torch.rand(2, T_IN + T_OUT, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, cfg, frames


def small64(neuron: str, hidden=(16,)):
    """``small`` in float64 (model and frames), for comparisons between the module and the fast path."""
    model, cfg, frames = small(neuron, hidden)
    return model.double(), cfg, frames.double()


def sigmoid_surrogate_grad(x: torch.Tensor, alpha: float = 4.0) -> torch.Tensor:
    s = 1.0 / (1.0 + torch.exp(-alpha * x))
    return alpha * s * (1.0 - s)


def pathway_a(cell, prev_spikes: torch.Tensor) -> torch.Tensor:
    """A[t] = GN(W_h * S[t-1]) from the fused autapse parameters: conv group g yields [W_h outputs of group g,
    W_v outputs of group g] (stcsnn.neurons.stc), normalised by GroupNorm(32) over the fused channels."""
    conv, norm = cell.autapse.conv, cell.autapse.norm
    out = F.conv2d(prev_spikes, conv.weight, padding=conv.padding, groups=16)
    out = F.group_norm(out, 32, norm.weight, norm.bias, norm.eps)
    b, c2, h, w = out.shape
    return out.view(b, 16, 2, c2 // 32, h, w)[:, :, 0].reshape(b, c2 // 2, h, w)


def real_graph_factors(model, cfg, frames):
    """d V[t] / d V[t-1] by autograd through the real rollout (layer 0), and dL/dV norms via retain_grad."""
    vs = [[] for _ in model.cells]

    def observer(t, l, s, state):
        state.v.retain_grad()
        vs[l].append(state.v)

    out = model.rollout(frames, cfg.input_frames, cfg.output_frames, observer=observer)
    loss = F.mse_loss(out.frames, frames[:, 1:])
    loss.backward(retain_graph=True)  # first: retained .grad would also collect the autograd.grad calls below
    norms = [[(v.grad.norm().item() if v.grad is not None else 0.0) for v in layer] for layer in vs]
    factors = [None] + [torch.autograd.grad(vs[0][t], vs[0][t - 1], torch.ones_like(vs[0][t]), retain_graph=True)[0]
                        for t in range(1, STEPS)]
    return factors, norms


def test_lif_factor_is_half_one_minus_surrogate():
    model, cfg, frames = small64("lif")
    trace = trace_gradients(model, frames, cfg)
    cell = model.cells[0]
    rates = []
    for t in range(1, STEPS):
        state = trace.states[0][t]
        h = state.v + state.s  # soft reset: V = H - S
        expected = 0.5 * (1.0 - sigmoid_surrogate_grad(h - 1.0))
        torch.testing.assert_close(trace.factors[0][t], expected, rtol=1e-5, atol=1e-6)
        assert trace.factors[0][t].max() <= 0.5
        rates.append(state.s.mean().item())
    assert 0 < sum(rates) / len(rates) < 1  # the check covered firing and silent neurons
    assert cell.spike_fn.name == "sigmoid"
    graph, norms = real_graph_factors(model, cfg, frames)
    for t in range(1, STEPS):
        torch.testing.assert_close(trace.factors[0][t], graph[t], rtol=1e-9, atol=1e-12)
    for mine, ref in zip(trace.grad_norm, norms):
        assert mine == pytest.approx(ref, rel=1e-4, abs=1e-12)


def test_stc_lif_factor_is_temporal_gain_times_one_minus_surrogate():
    model, cfg, frames = small64("stc_lif")
    trace = trace_gradients(model, frames, cfg)
    cell = model.cells[0]
    above_one = 0.0
    for t in range(1, STEPS):
        state, prev = trace.states[0][t], trace.states[0][t - 1]
        h = state.v + state.s
        a = pathway_a(cell, prev.s)
        expected = (1.0 + torch.tanh(a)) * (1.0 - sigmoid_surrogate_grad(h - 1.0))
        torch.testing.assert_close(trace.factors[0][t], expected, rtol=1e-5, atol=1e-6)
        above_one = max(above_one, (trace.factors[0][t] > 1).float().mean().item())
    assert above_one > 0  # unlike LIF, the factor can exceed 1
    graph, _ = real_graph_factors(model, cfg, frames)
    for t in range(1, STEPS):
        torch.testing.assert_close(trace.factors[0][t], graph[t], rtol=1e-9, atol=1e-12)


def test_gradient_rows_one_per_layer_and_step():
    model, cfg, frames = small("lif", hidden=(16, 16))
    rows = gradient_rows(trace_gradients(model, frames, cfg))
    assert [(r["layer"], r["step"]) for r in rows] == [(l, t) for l in range(2) for t in range(STEPS)]
    assert all(r["neuron"] == "lif" and r["grad_norm"] >= 0 for r in rows)
    assert rows[-1]["grad_norm"] == 0.0  # V[T-1] of the last step influences nothing


def test_dynamics_gains_and_rates():
    model, cfg, frames = small("stc_lif")
    spikes = []
    model.rollout(frames, T_IN, T_OUT, observer=lambda t, l, s, st: spikes.append(s.detach()))
    trace = trace_dynamics(model, frames, cfg)
    cell = model.cells[0]
    for t in range(STEPS):
        assert trace.rates[0][t] == pytest.approx(spikes[t].mean().item())
        prev = spikes[t - 1] if t else torch.zeros_like(spikes[0])
        with torch.no_grad():
            torch.testing.assert_close(trace.gains[0]["temporal"][t], 1.0 + torch.tanh(pathway_a(cell, prev)))
    rows = gain_rows(trace)
    assert {r["gain"] for r in rows} == {"temporal", "spatial"}
    assert all(0.0 <= r["gain_min"] and r["gain_max"] <= 2.0 for r in rows)
    assert len(rate_rows(trace)) == STEPS


# ---------------------------------------------------------------------------------------------- CLI

CONFIG = """\
dataset: embedded
data_options: {canvas_size: 32, test_samples: 4}
neuron: stc_lif
hidden_channels: [16]
kernel_size: 3
patch_size: 4
input_frames: 3
output_frames: 2
"""


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return str(path)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cli_gradients_csv_and_plot(tmp_path, config, capsys):
    out = tmp_path / "g"
    assert main(["analyze", "gradients", "--config", config, "--neurons", "lif,stc_lif", "--batch-size", "2",
                 "--out", str(out)]) == 0
    rows = read_csv(out / "gradients.csv")
    steps = 3 + 2 - 1
    assert [(r["neuron"], r["layer"], r["step"]) for r in rows] == \
        [(n, "0", str(t)) for n in ("lif", "stc_lif") for t in range(steps)]
    assert rows[1]["factor_max"] and float(rows[1]["factor_max"]) <= 0.5
    assert read_csv(out / "factor_hist.csv")
    pytest.importorskip("matplotlib")
    assert (out / "gradients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_dynamics_csv_and_plots(tmp_path, config):
    out = tmp_path / "d"
    assert main(["analyze", "dynamics", "--config", config, "--sample", "3", "--batch-size", "2",
                 "--raster-neurons", "10", "--out", str(out)]) == 0
    assert len(read_csv(out / "rates.csv")) == 4
    raster = read_csv(out / "raster.csv")
    assert len(raster) == 10 and set(raster[0]) >= {"layer", "neuron", "channel", "y", "x", "s0", "s3"}
    gains = read_csv(out / "gains.csv")
    assert {r["gain"] for r in gains} == {"temporal", "spatial"}
    pytest.importorskip("matplotlib")
    for name in ("gains.png", "rates.png", "raster.png"):
        assert (out / name).is_file()


def test_bad_input_one_error_line(tmp_path, config, capsys):
    # a checkpoint whose architecture differs from the config
    cfg = make_config({"neuron": "lif", "hidden_channels": [32], "kernel_size": 3, "patch_size": 4,
                       "frame_shape": [1, 32, 32]})
    ckpt = tmp_path / "m.pt"
    atomic_torch_save(model_checkpoint(build_model(cfg), cfg), ckpt)
    cases = [
        ["analyze", "dynamics", "--config", config, "--checkpoint", str(ckpt)],
        ["analyze", "gradients", "--config", config, "--neurons", "lif,nosuch"],
        ["energy", "--config", config, "--set", "dataset=mmnist", "--set", f"data_root={tmp_path / 'none'}",
         "--set", "data_options={}"],
        ["analyze", "dynamics", "--config", config, "--set", "neuron=convlstm"],
        ["analyze", "dynamics", "--config", config, "--sample", "99"],
    ]
    expected = ["does not match", "nosuch", "mmnist", "ANN baseline", "out of range"]
    for argv, text in zip(cases, expected):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and text in err[0], err
