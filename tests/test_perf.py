"""The benchmark's primitives and command line (``stcsnn.perf``). No timing assertions: only counts, structure
and that the numbers are finite."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from stcsnn.cli import build_parser, main
from stcsnn.perf import bench, commands
from stcsnn.perf.measure import ConvFlops, median_time, time_calls, time_for


def _conv_macs(batch, cin, cout, k, h, w):
    return batch * cout * h * w * cin * k * k  # same padding: one output per input position


@pytest.mark.parametrize("input_grad", [True, False])
def test_conv_flops_forward_and_backward_match_the_hand_count(input_grad):
    x = torch.randn(2, 3, 8, 8, requires_grad=input_grad)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    macs = _conv_macs(2, 3, 4, 3, 8, 8)
    with ConvFlops() as flops:
        y = F.conv2d(x, w, padding=1)
        assert flops.forward == 2 * macs and flops.backward_input == flops.backward_weight == 0
        y.sum().backward()
    assert flops.forward == 2 * macs
    assert flops.backward_weight == 2 * macs
    assert flops.backward_input == (2 * macs if input_grad else 0)
    assert flops.total == 2 * macs * (3 if input_grad else 2)


def test_conv_flops_counts_grouped_convolutions_per_group():
    x = torch.randn(1, 8, 6, 6)
    w = torch.randn(8, 2, 3, 3)  # groups=4: each output sees 2 input channels
    with ConvFlops() as flops:
        F.conv2d(x, w, padding=1, groups=4)
    assert flops.forward == 2 * (1 * 8 * 6 * 6) * (2 * 3 * 3)


class _FakeClock:
    """A clock that reads the given instants in turn."""

    def __init__(self, instants):
        self.instants = iter(instants)

    def __call__(self):
        return next(self.instants)


def test_time_calls_and_median_use_the_injected_clock():
    calls = []
    fn = lambda: calls.append(1)  # noqa: E731
    # start/stop per call: durations 1, 3, 2
    assert time_calls(fn, 3, clock=_FakeClock([0, 1, 10, 13, 20, 22])) == [1, 3, 2]
    assert median_time(fn, 3, clock=_FakeClock([0, 1, 10, 13, 20, 22])) == 2
    assert len(calls) == 6


def test_time_for_stops_at_the_budget_but_not_before_min_calls():
    calls = []
    fn = lambda: calls.append(1)  # noqa: E731
    # budget set at 0 + 5; calls at [0,1], [2,3] (min 2 reached), budget check at 4 < 5: [6,7]; check at 8: stop
    times = time_for(fn, 5, min_calls=2, clock=_FakeClock([0, 0, 1, 2, 3, 4, 6, 7, 8]))
    assert times == [1, 1, 1] and len(calls) == 3
    assert len(time_for(fn, 1e9, max_calls=4)) == 4


def _row(neuron, variant, step_s, infer_s, peak_mib, k=0):
    return {"neuron": neuron, "variant": variant, "checkpoint_steps": k, "step_s": step_s, "infer_s": infer_s,
            "peak_bytes": peak_mib * 2**20, "conv_flops": 2e9, "roofline": 0.5 if variant == "fast" else 0.25,
            "conv_time_share": 0.6}


def test_markdown_has_the_plain_columns_and_a_row_per_neuron():
    results = {
        "machine": {"cpu": "Test CPU", "device": "cpu", "threads": 1, "torch": "x"}, "started": "now",
        "configs": {"small": {"settings": bench.CONFIGS["small"],
                              "roof": {"roof_gflops": None, "roof_shape": None, "shapes": []},
                              "rows": [_row("lif", "fast", 0.1, 0.04, 100), _row("lif", "plain", 0.15, 0.05, 120),
                                       _row("lif", "fast", 0.12, 0.04, 60, k=5)]}},
    }
    md = bench.markdown(results)
    assert md.startswith("Machine: Test CPU (cpu, 1 threads), torch x, now.")
    assert ("| neuron | train step (ms) | plain (ms) | speed-up | inference (ms) | plain (ms) | speed-up | "
            "peak mem (MiB) | plain (MiB) | conv GFLOP/step | roofline | plain roofline | conv share of step |") in md
    assert ("| lif | 100.0 | 150.0 | 1.50x | 40.0 | 50.0 | 1.25x | 100.0 | 120.0 | 2.00 | 0.50 | 0.25 | 60% |"
            in md)
    assert "| lif | 5 | 120.0 | 1.20x | 60.0 | 0.60x |" in md
    assert "not measured (--skip-roof)" in md
    assert "reference" not in md


def test_variants_fast_first_plain_optional():
    assert bench.variants(True, False, [5]) == [("fast", 0, False), ("plain", 0, False), ("fast", 5, False)]
    assert bench.variants(False, True, []) == [("fast", 0, False), ("compile", 0, True)]


def test_bench_help_lists_no_plain_and_hides_no_reference(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--no-plain" in out and "--no-reference" not in out and "fast vs plain" in out
    args = build_parser().parse_args(["bench", "--no-reference"])
    assert args.no_reference and not args.no_plain and args.func is commands.bench_command


def test_child_runs_a_tiny_variant_and_roof_in_process(monkeypatch, capsys):
    monkeypatch.setitem(bench.CONFIGS, "tiny", {
        "hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "batch_size": 1,
        "input_frames": 2, "output_frames": 2, "frame_shape": [1, 8, 8]})
    base = {"config": "tiny", "device": "cpu", "repeats": 1, "warmup": 0, "threads": None, "amp": None}
    for path in ("fast", "plain"):
        spec = {**base, "neuron": "stc_lif", "path": path, "checkpoint_steps": 0, "compile": False, "variant": path}
        assert commands.child_main(["variant", json.dumps(spec)]) == 0
        r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert r["variant"] == path and len(r["step_times_s"]) == 1
        for key in ("step_s", "infer_s", "peak_bytes"):
            assert math.isfinite(r[key])
        assert r["conv_flops"] > 0 and r["conv_flops"] == (r["conv_flops_forward"] + r["conv_flops_backward_input"]
                                                         + r["conv_flops_backward_weight"])
    assert commands.child_main(["roof", json.dumps({**base, "roof_seconds": 0})]) == 0
    roof = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert math.isfinite(roof["roof_gflops"]) and roof["roof_gflops"] > 0
    assert len(roof["shapes"]) == 2 * len(bench.roof_shapes(bench.CONFIGS["tiny"]))


def test_bench_config_is_the_trainers_objective():
    cfg = bench.bench_config({"config": "small", "neuron": "lif", "device": "cpu", "amp": "bf16"})
    assert (cfg.input_frames, cfg.output_frames, cfg.loss, cfg.sampling) == (10, 10, "all", "scheduled")
    assert cfg.amp == "bf16" and cfg.hidden_channels == [64, 64, 64] and not cfg.compile
