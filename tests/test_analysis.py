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
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from helpers import one_error

import stcsnn
from stcsnn.analysis.dynamics import gain_rows, object_masks, rate_rows, region_rows, trace_dynamics
from stcsnn.analysis.gradients import gradient_rows, trace_gradients
from stcsnn.analysis.reproduce import run_grid
from stcsnn.cli import main
from stcsnn.config import make_config
from stcsnn.data import build_split
from stcsnn.io import atomic_torch_save
from stcsnn.models.loading import load_model, model_checkpoint

T_IN, T_OUT = 3, 3
STEPS = T_IN + T_OUT - 1



def small(neuron: str, hidden=(16,)):
    cfg = make_config({"neuron": neuron, "hidden_channels": list(hidden), "kernel_size": 3, "patch_size": 2,
                       "frame_shape": [1, 8, 8], "input_frames": T_IN, "output_frames": T_OUT, "seed": 0})
    torch.manual_seed(0)
    model = stcsnn.build_model(cfg)
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
    atomic_torch_save(model_checkpoint(stcsnn.build_model(cfg), cfg), ckpt)
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


# ---------------------------------------------------------------------------------------------- trained models

GRID = {
    "name": "micro", "datasets": ["embedded"], "seeds": 1, "horizon": 0,
    "config": {
        "data_options": {"canvas_size": 32, "num_samples": 8, "val_samples": 2, "test_samples": 4},
        "hidden_channels": [16, 16], "kernel_size": 3, "patch_size": 4, "input_frames": 3, "output_frames": 2,
        "batch_size": 2, "eval_batch_size": 2, "epochs": 1, "steps_per_epoch": 3, "warmup_epochs": 0,
        "lr": 0.01, "max_val_batches": 1, "max_test_batches": 1, "num_visualize": 0, "device": "cpu",
    },
}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A finished micro grid (lif, stc_lif): trained checkpoints as `stcsnn reproduce` leaves them."""
    out = tmp_path_factory.mktemp("grid")
    torch.set_num_threads(1)
    assert run_grid(GRID, models=["lif", "stc_lif"], out=out, progress=False, log=lambda s: None, plots=False) == 0
    return out / "micro"


def independent_norms(model, cfg, frames):
    """||dL/dV_l[t]|| by retain_grad on each membrane through an observer and one backward of a loss written
    here (MSE over frames 2..T of the rollout), not by the analysis' torch.autograd.grad."""
    membranes = [[] for _ in model.cells]

    def observer(t, l, s, state):
        v = getattr(state, model.cells[l].membrane)
        v.retain_grad()
        membranes[l].append(v)

    out = model.rollout(frames, cfg.input_frames, cfg.output_frames, observer=observer, fast=False)
    F.mse_loss(out.frames, frames[:, 1:cfg.input_frames + cfg.output_frames]).backward()
    return [[0.0 if v.grad is None else v.grad.norm().item() for v in layer] for layer in membranes]


def test_trained_checkpoint_gradients_match_independent_autograd(grid, tmp_path):
    ckpt = grid / "embedded" / "stc_lif" / "seed0" / "best.pt"
    out = tmp_path / "g"
    assert main(["analyze", "gradients", "--checkpoint", str(ckpt), "--batch-size", "2", "--out", str(out)]) == 0
    rows = read_csv(out / "gradients.csv")
    model, cfg = load_model(ckpt)
    assert model.cells[0].membrane == "v"
    frames = torch.stack([torch.cat(build_split(cfg, "test")[i], 0) for i in range(2)])
    norms = independent_norms(model, cfg, frames)
    assert [(int(r["layer"]), int(r["step"])) for r in rows] == [(l, t) for l in range(2) for t in range(4)]
    for r in rows:
        assert float(r["grad_norm"]) == pytest.approx(norms[int(r["layer"])][int(r["step"])], rel=1e-5, abs=1e-12)
    assert any(float(r["grad_norm"]) > 0 for r in rows if r["step"] == "0")
    # the per-step factors of the trained model equal autograd through the real (fast) rollout, in float64
    model = model.double()
    trace = trace_gradients(model, frames.double(), cfg)
    vs = []
    model.rollout(frames.double(), 3, 2, observer=lambda t, l, s, st: vs.append(st.v) if l == 0 else None)
    for t in range(1, 4):
        graph = torch.autograd.grad(vs[t], vs[t - 1], torch.ones_like(vs[t]), retain_graph=True)[0]
        torch.testing.assert_close(trace.factors[0][t], graph, rtol=1e-9, atol=1e-12)
    summary = read_csv(out / "factor_summary.csv")
    assert [r["layer"] for r in summary] == ["0", "1", "all"] and float(summary[-1]["factor_max"]) <= 2.0


def test_grid_gradients(grid, tmp_path):
    assert main(["analyze", "gradients", "--grid", str(grid), "--batch-size", "2", "--out", str(tmp_path / "g")]) == 0
    rows = read_csv(tmp_path / "g" / "gradients.csv")
    assert {(r["neuron"], r["seed"]) for r in rows} == {("lif", "0"), ("stc_lif", "0")}
    assert max(float(r["factor_max"]) for r in rows if r["neuron"] == "lif" and r["factor_max"]) <= 0.5
    ckpt = grid / "embedded" / "stc_lif" / "seed0" / "best.pt"
    summary = read_csv(tmp_path / "g" / "factor_summary.csv")
    assert {(r["neuron"], r["layer"]) for r in summary} >= {("lif", "all"), ("stc_lif", "all")}
    if importlib.util.find_spec("matplotlib"):
        # stc_lif's declared base is if, not in this grid: no pair, one figure of every neuron
        assert (tmp_path / "g" / "gradients_embedded_all.png").is_file()
    # two checkpoints side by side: the same numbers as the grid's for the same cells and batch
    both = tmp_path / "both"
    assert main(["analyze", "gradients", "--checkpoint", str(grid / "embedded" / "lif" / "seed0" / "best.pt"),
                 "--checkpoint", str(ckpt), "--batch-size", "2", "--out", str(both)]) == 0
    pair = read_csv(both / "gradients.csv")
    assert [r["neuron"] for r in pair[::8]] == ["lif", "stc_lif"] and pair[-1]["checkpoint"] == str(ckpt)
    assert [float(r["grad_norm"]) for r in pair] == [float(r["grad_norm"]) for r in rows]


def test_grid_dynamics_gains_by_region(grid, tmp_path, capsys):
    assert main(["analyze", "dynamics", "--grid", str(grid), "--batch-size", "2", "--out", str(tmp_path / "d")]) == 0
    printed = capsys.readouterr().out
    assert "stc_lif layer 0 temporal gain: object" in printed
    regions = read_csv(tmp_path / "d" / "gains_by_region_summary.csv")
    assert [(r["model"], r["layer"], r["gain"]) for r in regions] == \
        [("stc_lif", str(l), g) for l in range(2) for g in ("temporal", "spatial")]
    for r in regions:
        assert float(r["difference_mean"]) == pytest.approx(float(r["object_mean"]) - float(r["background_mean"]))
    assert {r["model"] for r in read_csv(tmp_path / "d" / "rates.csv")} == {"lif", "stc_lif"}


def test_gains_by_region_by_hand():
    model, cfg, _ = small("stc_lif")
    frames = torch.zeros(2, T_IN + T_OUT, 1, 8, 8)
    frames[:, :, :, 0:2, 0:3] = 0.5  # an object over patches (0, 0) and (0, 1) of the 4 x 4 patch grid
    frames[1, :, :, 7, 7] = 0.05  # below the threshold: still background
    trace = trace_dynamics(model, frames, cfg)
    masks = object_masks(trace, 0.1)
    expected = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    expected[:, :, 0, 0:2] = True
    torch.testing.assert_close(masks[1], expected)
    rows = region_rows(trace, 0.1)
    obj = next(r for r in rows if (r["layer"], r["gain"], r["region"], r["step"]) == (0, "temporal", "object", 1))
    gain = trace.gains[0]["temporal"][1]  # (2, 16, 4, 4)
    assert obj["count"] == 2 * 16 * 2 and obj["share"] == pytest.approx(2 / 16)
    assert obj["gain_mean"] == pytest.approx(gain[:, :, 0, 0:2].mean().item(), rel=1e-6)
    pooled = next(r for r in rows if (r["layer"], r["gain"], r["region"], r["step"])
                  == (0, "spatial", "background", "all"))
    manual = torch.cat([trace.gains[0]["spatial"][t][~masks[t].expand(2, 16, 4, 4)] for t in range(1, STEPS)])
    assert pooled["gain_mean"] == pytest.approx(manual.mean().item(), rel=1e-6)
    # after the inputs the object mask follows the model's own prediction, the frame it reads
    pred = model.eval().rollout(frames, T_IN, T_OUT).frames
    torch.testing.assert_close(masks[T_IN], F.max_pool2d(pred[:, T_IN - 1], 2) > 0.1)


def test_grid_bad_input_one_error_line(tmp_path, capsys, grid):
    cases = [
        (["analyze", "gradients", "--grid", str(tmp_path / "nothing")], "no such folder"),
        (["analyze", "gradients", "--grid", str(tmp_path)], "found none"),
        (["analyze", "gradients", "--grid", str(grid), "--neurons", "lif"], "--grid"),
        (["analyze", "dynamics", "--grid", str(grid), "--object-threshold", "2"], "--object-threshold"),
    ]
    for argv, text in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and text in err[0], err


@pytest.mark.parametrize("analysis", ["gradients", "dynamics"])
def test_grid_corrupt_report_one_error_line(tmp_path, capsys, grid, analysis):
    """A cell of the grid whose report.json is garbage: one error line naming it and how to redo it; no output
    folder, the grid's files unchanged."""
    import shutil

    copy = tmp_path / "micro"
    shutil.copytree(grid, copy)
    report = copy / "embedded" / "stc_lif" / "seed0" / "report.json"
    report.write_bytes(b"{not json")
    before = {str(p): p.read_bytes() for p in sorted(copy.rglob("*")) if p.is_file()}
    rc = main(["analyze", analysis, "--grid", str(copy), "--batch-size", "2"])
    line = one_error(capsys, rc)
    assert line.startswith(f"error: {report}: expected the cell's test report") and "no valid JSON" in line
    assert line.endswith("delete it and run the same `stcsnn reproduce` command again")
    assert {str(p): p.read_bytes() for p in sorted(copy.rglob("*")) if p.is_file()} == before
    assert not (copy / analysis).exists()


# ------------------------------------------------------------------------- device: the tensors made here
# The "meta" device stands in for a GPU: a tensor there has a device other than the CPU's, and torch's own
# device checks run on it, so code that makes a helper tensor on the CPU fails here as it would on CUDA.


def test_summary_makes_its_quantiles_on_the_input_device(monkeypatch):
    from stcsnn.analysis import common

    real = torch.quantile
    seen = []

    def quantile(x, q):
        real(x, q)  # torch's check: "q tensor must be on the same device as the input tensor"
        seen.append((x.device, q.device, q.tolist() if q.device.type == "cpu" else None))
        return torch.tensor([0.0, 0.5, 1.0])  # a meta result cannot be read back; the check above is the test

    monkeypatch.setattr(torch, "quantile", quantile)
    common.quantiles(torch.empty(7, device="meta"))
    assert seen == [(torch.device("meta"), torch.device("meta"), None)]
    # and on the CPU the real values (hand-computed: 0..10, linear interpolation)
    monkeypatch.setattr(torch, "quantile", real)
    s = common.summary(torch.arange(11.0), "x")
    assert (s["x_min"], s["x_p05"], s["x_median"], s["x_p95"], s["x_max"]) == pytest.approx((0, 0.5, 5, 9.5, 10))


def test_region_histograms_of_an_empty_region_live_on_the_gains_device():
    from stcsnn.analysis.dynamics import DynamicsTrace, region_histograms

    # one step only: the pooled steps (>= 1) are empty, so every region is empty
    gain = torch.empty(1, 2, 2, 2, device="meta")
    trace = DynamicsTrace("stc_lif", [[0.5]], [{"temporal": [gain], "spatial": [gain]}], [[gain]],
                          [torch.empty(1, 1, 4, 4, device="meta")], patch_size=2)
    hists = region_histograms(trace, bins=7)
    assert set(hists) == {(0, k, r) for k in ("temporal", "spatial") for r in ("object", "background")}
    assert all(h.device.type == "meta" and h.shape == (7,) for h in hists.values())
