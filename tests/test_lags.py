"""The per-lag input-output Jacobian against an independent autograd computation on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from stcsnn.analysis.gradients import lag_jacobian, lag_profile
from stcsnn.config import make_config
from stcsnn.models import build_model


def _tiny(neuron: str):
    cfg = make_config({"neuron": neuron, "hidden_channels": [16], "kernel_size": 3, "patch_size": 4,
                       "frame_shape": [1, 8, 8], "dtype": "float64", "seed": 1})
    return build_model(cfg)


@pytest.mark.parametrize("neuron", ["lif", "stc_lif"])
def test_exact_lag_jacobian_equals_torch_autograd_functional_jacobian(neuron):
    torch.manual_seed(0)
    model = _tiny(neuron)
    inputs = torch.rand(2, 3, 1, 8, 8, dtype=torch.float64) * 3
    rows = lag_jacobian(model, inputs, n_future=2)

    model.eval()
    def outputs(x):
        return model.rollout(x, 3, 2).frames

    jac = torch.autograd.functional.jacobian(outputs, inputs)  # (B, S, C, H, W, B, T, C, H, W)
    steps = 3 + 2 - 1
    assert len(rows) == sum(min(s + 1, 3) for s in range(steps))
    for r in rows:
        s, t = r["output_s"], r["input_t"]
        # each sample's own block (samples do not interact), Frobenius norm squared, mean over the batch
        per_sample = [jac[b, s, :, :, :, b, t].square().sum() for b in range(2)]
        expected = (sum(per_sample) / 2).sqrt().item()
        assert r["jac_norm"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert r["lag"] == s + 1 - t
        cross = jac[0, s, :, :, :, 1, t].abs().max().item()
        assert cross == 0.0
    # causality: no output depends on a later input
    assert all(jac[:, s, :, :, :, :, t].abs().max() == 0 for s in range(steps) for t in range(3) if t > s)


def test_hutchinson_estimate_approaches_the_exact_norm_and_the_profile_is_relative_to_lag_1():
    torch.manual_seed(0)
    model = _tiny("stc_lif")
    inputs = torch.rand(3, 3, 1, 8, 8, dtype=torch.float64) * 3
    exact = lag_jacobian(model, inputs, 2)
    estimate = lag_jacobian(model, inputs, 2, probes=400, seed=3)
    for a, b in zip(exact, estimate):
        assert (a["input_t"], a["output_s"]) == (b["input_t"], b["output_s"])
        if a["jac_norm"] > 0:
            assert b["jac_norm"] == pytest.approx(a["jac_norm"], rel=0.15)
    prof = lag_profile(exact)
    assert prof[0]["lag"] == 1 and prof[0]["relative"] == pytest.approx(1.0)
    lag2 = [r["jac_norm"] for r in exact if r["lag"] == 2]
    assert prof[1]["jac_norm"] == pytest.approx(sum(lag2) / len(lag2)) and prof[1]["pairs"] == len(lag2)


def test_analyze_gradients_lags_writes_the_profile_per_model(tmp_path, capsys):
    import csv

    from stcsnn.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: embedded\ndata_options: {canvas_size: 32, num_samples: 4, val_samples: 2, "
                   "test_samples: 2}\nhidden_channels: [16]\nkernel_size: 3\npatch_size: 4\ninput_frames: 3\n"
                   "output_frames: 2\n")
    assert main(["--threads", "1", "analyze", "gradients", "--config", str(cfg), "--neurons", "lif,stc_lif",
                 "--lags", "--lag-probes", "0", "--batch-size", "2", "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "lags.csv").open()))
    for neuron in ("lif", "stc_lif"):
        mine = [r for r in rows if r["neuron"] == neuron]
        assert [int(r["lag"]) for r in mine] == [1, 2, 3, 4]  # 3 + 2 - 1 outputs, inputs 0..2
        assert float(mine[0]["relative"]) == 1.0 and all(r["estimate"] == "exact" for r in mine)
        assert [int(r["pairs"]) for r in mine] == [3, 3, 2, 1]
    out = capsys.readouterr().out
    assert "relative to lag 1, k = 1..4" in out
    assert main(["analyze", "gradients", "--config", str(cfg), "--lags", "--lag-probes", "-1", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "--lag-probes must be 0 (exact) or a number of probes, got -1" in capsys.readouterr().err


def test_lag_summary_and_pairs_by_hand():
    from stcsnn.analysis.gradients import lag_pair_rows, lag_summary_rows
    from stcsnn.analysis.stats import t_ppf

    rows = []
    # relative norms at lag 2: base 0.1 and 0.01 (logs -1, -2), STC 1 and 0.1 (logs 0, -1): STC - base = +1, +1
    for model, rel in (("if", (0.1, 0.01)), ("stc_lif", (1.0, 0.1))):
        for seed, r in enumerate(rel):
            rows += [{"dataset": "d", "model": model, "seed": seed, "state": "trained", "lag": 1, "relative": 1.0},
                     {"dataset": "d", "model": model, "seed": seed, "state": "trained", "lag": 2, "relative": r}]
    summary = {(r["model"], r["lag"]): r for r in lag_summary_rows(rows)}
    base = summary[("if", 2)]
    half = t_ppf(0.975, 1) * math.sqrt(0.5) / math.sqrt(2)  # logs -1, -2: mean -1.5, sd sqrt(0.5)
    assert base["log10_relative"] == pytest.approx(-1.5) and base["relative_geomean"] == pytest.approx(10 ** -1.5)
    assert (base["ci_low"], base["ci_high"]) == pytest.approx((-1.5 - half, -1.5 + half))
    assert summary[("if", 1)]["log10_relative"] == 0.0 and summary[("if", 1)]["seeds"] == 2
    pairs = {r["lag"]: r for r in lag_pair_rows(rows, [("stc_lif", "if")])}
    # identical differences (+1, +1): the interval has zero width, and excludes 0
    assert pairs[2]["diff_log10"] == pytest.approx(1.0) and pairs[2]["shown"]
    assert pairs[2]["ci_low"] == pytest.approx(1.0) and pairs[2]["seeds"] == 2
    assert pairs[1]["diff_log10"] == 0.0 and not pairs[1]["shown"]
