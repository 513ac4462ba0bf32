"""``stcsnn bench``: the roof of each precision (fp32, bf16) and each row's roofline against its own, the note
for bf16 without native bf16 arithmetic, and the streaming latency (torch step vs ONNX Runtime)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from helpers import TINY as TINY_RUN

from stcsnn import device as device_mod
from stcsnn.cli import main
from stcsnn.errors import StcsnnError
from stcsnn.models import export
from stcsnn.perf import bench, commands
from stcsnn.perf.measure import stream_times

TINY = {"hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "batch_size": 1,
        "input_frames": 2, "output_frames": 2, "frame_shape": [1, 8, 8]}
CPU = torch.device("cpu")


def _roof(gflops, batch=40, cin=16, cout=64, fmt="channels_last", amp=None):
    shape = {"batch": batch, "in": cin, "out": cout, "kernel": 5, "size": [16, 16], "format": fmt}
    return {"roof_gflops": gflops, "roof_shape": shape, "shapes": [shape], "amp": amp,
            "precision": amp or "fp32"}


# ------------------------------------------------------------------------------------------------ roofs


def test_roofline_divides_by_the_roof_of_the_rows_own_precision():
    roofs = {"fp32": _roof(100.0), "bf16": _roof(400.0, amp="bf16")}
    # 2 GFLOP in 50 ms = 40 GFLOP/s: 0.4 of the fp32 roof; 2 GFLOP in 20 ms = 100 GFLOP/s: 0.25 of the bf16 roof
    assert bench.roofline({"amp": None, "conv_flops": 2e9, "step_s": 0.05}, roofs) == pytest.approx(0.4)
    assert bench.roofline({"amp": "bf16", "conv_flops": 2e9, "step_s": 0.02}, roofs) == pytest.approx(0.25)
    assert bench.roofline({"amp": "fp16", "conv_flops": 2e9, "step_s": 0.02}, roofs) is None  # no fp16 roof
    assert bench.roofline({"amp": None, "conv_flops": 2e9, "step_s": 0.05}, {}) is None  # --skip-roof


@pytest.mark.parametrize("native, amp, expected", [
    (True, None, ["fp32", "bf16"]), (False, None, ["fp32"]), (False, "bf16", ["fp32", "bf16"]),
    (True, "bf16", ["fp32", "bf16"]), (True, "fp16", ["fp32", "bf16", "fp16"])])
def test_roof_precisions_fp32_always_bf16_where_native_and_the_rows_own(monkeypatch, native, amp, expected):
    monkeypatch.setattr(bench, "native_bf16", lambda dev: native)
    assert bench.roof_precisions(CPU, amp) == expected


def _results(roofs, amp):
    row = {"neuron": "lif", "variant": "fast", "checkpoint_steps": 0, "step_s": 0.02, "infer_s": 0.01,
           "peak_bytes": 2**20, "conv_flops": 2e9, "amp": amp, "conv_time_share": 0.5}
    row["roof_precision"] = bench.precision(amp)
    row["roofline"] = bench.roofline(row, roofs)
    roof = roofs.get(bench.precision(amp)) or {"roof_gflops": None, "roof_shape": None, "shapes": []}
    return {"machine": {"cpu": "Test CPU", "device": "cpu", "threads": 1, "torch": "x"}, "started": "now",
            "configs": {"small": {"settings": bench.CONFIGS["small"], "roof": roof, "roofs": roofs, "rows": [row]}}}


def test_markdown_names_both_roofs_and_the_one_the_rooflines_use():
    md = bench.markdown(_results({"fp32": _roof(100.0), "bf16": _roof(400.0, batch=4, amp="bf16")}, "bf16"))
    assert ("Convolution roofs (best dense synaptic convolution, forward + backward): "
            "fp32 100 GFLOP/s (batch 40, 16->64, 5x5, 16x16, channels_last); "
            "bf16 400 GFLOP/s (batch 4, 16->64, 5x5, 16x16, channels_last).") in md
    assert "here the bf16 roof (the rows ran under --amp bf16)" in md
    assert "| lif | 20.0 | - | - | 10.0 | - | - | 1.0 | - | 2.00 | 0.25 | - | 50% |" in md  # 100 / 400 GFLOP/s
    md = bench.markdown(_results({"fp32": _roof(100.0)}, None))
    assert "fp32 100 GFLOP/s" in md and "bf16 not measured (this device has no native bf16)" in md
    assert "here the fp32 roof (the rows ran float32)" in md and "| 2.00 | 1.00 |" in md  # 100 / 100 GFLOP/s
    assert "not measured (--skip-roof)" in bench.markdown(_results({}, None))


def test_markdown_reads_a_bench_json_of_one_roof():
    """A bench.json written before the per-precision roofs has only ``roof``: it still renders, as that roof."""
    results = _results({"fp32": _roof(100.0)}, None)
    del results["configs"]["small"]["roofs"]
    del results["configs"]["small"]["roof"]["precision"]
    md = bench.markdown(results)
    assert "fp32 100 GFLOP/s (batch 40, 16->64, 5x5, 16x16, channels_last)" in md
    assert "bf16" not in md  # such a run measured no bf16 roof at all: nothing is claimed about it


def _in_process(monkeypatch, tasks):
    """run_child without a subprocess (the tiny configuration exists only in this process); records each task."""
    def run_child(task, spec):
        tasks.append((task, spec["config"], spec.get("amp")))
        spec = {**spec, "roof_seconds": 0, "stream_frames": 3, "stream_warmup": 1}
        return json.loads(json.dumps(commands.run_task(task, spec)))

    monkeypatch.setattr(bench, "run_child", run_child)


def test_run_benchmark_measures_both_roofs_and_each_row_uses_its_own(monkeypatch):
    monkeypatch.setitem(bench.CONFIGS, "tiny", TINY)
    monkeypatch.setattr(bench, "native_bf16", lambda dev: True)
    tasks: list = []
    _in_process(monkeypatch, tasks)
    res = bench.run_benchmark(["tiny"], ["lif"], "cpu", repeats=1, warmup=0, plain=True, amp="bf16",
                              log=lambda s: None, stream=False)
    assert [t for t in tasks if t[0] == "roof"] == [("roof", "tiny", None), ("roof", "tiny", "bf16")]
    cfg = res["configs"]["tiny"]
    assert set(cfg["roofs"]) == {"fp32", "bf16"} and cfg["roof"] is cfg["roofs"]["bf16"]  # old key: the rows'
    assert cfg["roofs"]["fp32"]["precision"] == "fp32" and cfg["roofs"]["bf16"]["amp"] == "bf16"
    bf16 = cfg["roofs"]["bf16"]["roof_gflops"]
    for row in cfg["rows"]:
        assert row["roof_precision"] == "bf16"
        assert row["roofline"] == pytest.approx(row["conv_flops"] / (row["step_s"] * bf16 * 1e9))
    assert "stream" not in cfg
    assert bench.run_benchmark(["tiny"], ["lif"], "cpu", repeats=1, warmup=0, plain=False, log=lambda s: None,
                               skip_roof=True, stream=False)["configs"]["tiny"]["roofs"] == {}


def test_stream_runs_by_default_for_the_small_configuration_only(monkeypatch):
    tasks: list = []
    fake = {"roof": {"roof_gflops": 1.0, "roof_shape": _roof(1.0)["roof_shape"]},
            "variant": {"conv_flops": 1, "step_s": 1.0, "infer_s": 1.0, "peak_bytes": 1},
            "stream": {"torch_s": 1.0, "onnx_s": None}}

    def run_child(task, spec):
        tasks.append((task, spec["config"]))
        return {**spec, **fake[task]}

    monkeypatch.setattr(bench, "run_child", run_child)
    args = dict(device="cpu", repeats=1, warmup=0, plain=False, allow_slow=True, log=lambda s: None)
    res = bench.run_benchmark(["small", "paper"], ["lif"], **args)
    assert [t for t in tasks if t[0] == "stream"] == [("stream", "small")]
    assert "stream" in res["configs"]["small"] and "stream" not in res["configs"]["paper"]
    tasks.clear()
    bench.run_benchmark(["small"], ["lif"], stream=False, **args)
    assert not [t for t in tasks if t[0] == "stream"]


# ------------------------------------------------------------------------------------------------ bf16 note


@pytest.mark.parametrize("caps, native", [
    ({"architecture": "x86_64", "avx2": True, "avx512_bw": True}, False),
    ({"architecture": "x86_64", "avx512_bf16": True}, True), ({"architecture": "x86_64", "amx_bf16": True}, True),
    ({"architecture": "aarch64", "neon": True, "bf16": True}, True),
    ({"architecture": "aarch64", "neon": True}, False)])
def test_native_bf16_reads_the_cpu_capabilities(monkeypatch, caps, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert device_mod.native_bf16(CPU) is native
    note = device_mod.slow_bf16_note(CPU, "bf16")
    assert (note is None) is native
    assert device_mod.slow_bf16_note(CPU, None) is None and device_mod.slow_bf16_note(CPU, "fp16") is None


def _notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if "no native bf16" in line]


@pytest.mark.parametrize("native", [False, True])
def test_bench_amp_bf16_without_native_bf16_prints_one_note_and_runs(monkeypatch, tmp_path, capsys, native):
    monkeypatch.setattr(device_mod, "native_bf16", lambda dev: native)
    seen = {}

    def fake_run(configs, neurons, *args, amp=None, stream=None, **kwargs):
        seen.update(amp=amp, stream=stream)
        return _results({"fp32": _roof(100.0)}, amp)

    monkeypatch.setattr(bench, "run_benchmark", fake_run)
    assert main(["bench", "--neurons", "lif", "--amp", "bf16", "--no-stream", "--out", str(tmp_path)]) == 0
    notes = _notes(capsys.readouterr().err)
    assert seen == {"amp": "bf16", "stream": False}  # it runs anyway, and --no-stream reaches the benchmark
    if native:
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].startswith("note: amp bf16 on cpu: this CPU has no native bf16")
        assert "slow" in notes[0] and "running anyway" in notes[0]


def test_train_amp_bf16_without_native_bf16_prints_one_note_and_trains(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(device_mod, "native_bf16", lambda dev: False)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_RUN, "epochs": 1, "warmup_epochs": 0}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--amp", "bf16", "--quiet"]) == 0
    notes = _notes(capsys.readouterr().err)
    assert len(notes) == 1 and "running anyway" in notes[0]
    assert (tmp_path / "run" / "last.pt").is_file()


# ------------------------------------------------------------------------------------------------ streaming


def test_stream_times_feeds_back_each_forecast_and_times_only_the_last_n():
    seen = []

    def step(x):
        seen.append(x)
        return x + 1

    ticks = iter(range(100))
    times = stream_times(step, [0, 10], warmup=3, n=4, clock=lambda: 2.0 * next(ticks))
    assert seen == [0, 10, 11, 12, 13, 14, 15, 16, 17]  # the observed frames, then every forecast fed back
    assert times == [2.0] * 4
    with pytest.raises(ValueError):
        stream_times(step, [], 1, 1)


@pytest.mark.parametrize("neuron", ["lif", "stc_lif"])
def test_measure_stream_on_a_tiny_model_times_torch_and_an_agreeing_onnx_step(monkeypatch, capsys, neuron):
    pytest.importorskip("onnxruntime")
    monkeypatch.setitem(bench.CONFIGS, "tiny", TINY)
    spec = {"config": "tiny", "device": "cpu", "neuron": neuron, "threads": 1, "amp": "bf16",
            "stream_frames": 4, "stream_warmup": 2}
    assert commands.child_main(["stream", json.dumps(spec)]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (r["neuron"], r["frames"], r["warmup_frames"], r["observed_frames"], r["frame_shape"]) == \
        (neuron, 4, 2, 2, [1, 8, 8])
    assert r["amp"] is None  # the stream is float32 whatever the rows' autocast
    assert len(r["torch_times_s"]) == len(r["onnx_times_s"]) == 4
    for key in ("torch_s", "onnx_s"):
        assert math.isfinite(r[key]) and r[key] > 0
    assert 0 <= r["onnx_max_diff"] < 1e-4 and "onnx_missing" not in r  # the timed graph is the torch step's
    md = "\n".join(bench._stream_table([r]))
    assert "| neuron | torch step (ms/frame) | ONNX Runtime (ms/frame) | faster |" in md
    assert f"| {neuron} | {r['torch_s'] * 1e3:.2f} | {r['onnx_s'] * 1e3:.2f} | " in md
    faster = "ONNX Runtime" if r["onnx_s"] < r["torch_s"] else "torch"
    assert f"| {faster} (" in md


def test_measure_stream_without_onnx_times_torch_and_says_so_in_one_line(monkeypatch):
    monkeypatch.setitem(bench.CONFIGS, "tiny", TINY)

    def missing():
        raise StcsnnError("ONNX export needs the onnx and onnxruntime packages (onnx is not installed): pip ...")

    monkeypatch.setattr(export, "onnx_modules", missing)
    spec = {"config": "tiny", "device": "cpu", "neuron": "lif", "stream_frames": 2, "stream_warmup": 0}
    r = bench.measure_stream(spec)
    assert r["onnx_s"] is None and r["onnx_times_s"] is None and math.isfinite(r["torch_s"])
    lines = bench._stream_table([r])
    assert "| lif | " in "\n".join(lines) and " | - | - | - |" in "\n".join(lines)
    assert [line for line in lines if "ONNX Runtime: not measured" in line] == [
        "ONNX Runtime: not measured -- ONNX export needs the onnx and onnxruntime packages (onnx is not "
        "installed): pip ..."]


def test_measure_stream_does_not_swallow_other_export_errors(monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setitem(bench.CONFIGS, "tiny", TINY)

    def broken(*args, **kwargs):
        raise RuntimeError("the exporter broke")

    monkeypatch.setattr(export, "onnx_step_bytes", broken)
    with pytest.raises(RuntimeError, match="the exporter broke"):
        bench.measure_stream({"config": "tiny", "device": "cpu", "neuron": "lif"})
