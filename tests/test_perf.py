"""The benchmark's primitives and command line (``stcsnn.perf``). No timing assertions: only counts, structure
and that the numbers are finite."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from helpers import one_error

from stcsnn.cli import build_parser, main
from stcsnn.cli import perf as perf_cli
from stcsnn.errors import StcsnnError
from stcsnn.perf import bench, commands, load
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
    assert args.no_reference and not args.no_plain and args.func is perf_cli.bench_command


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


# ------------------------------------------------------------------------------------------------ --busy K

TINY = {"hidden_channels": [16], "kernel_size": 3, "patch_size": 4, "batch_size": 1,
        "input_frames": 2, "output_frames": 2, "frame_shape": [1, 8, 8]}


def _load_pids(parent: int) -> list[int]:
    """Live (not zombie) load processes started by ``parent``, found by their command line in /proc."""
    from pathlib import Path

    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if load.MARKER.encode() in argv and argv[argv.index(load.MARKER.encode()) + 1] == str(parent).encode() \
                and state != "Z":
            found.append(int(d.name))
    return found


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the load processes through /proc")


@needs_proc
def test_busy_load_runs_pinned_processes_and_stops_them():
    with load.BusyLoad(2, max_seconds=60) as busy:
        pids = busy.pids
        assert len(pids) == 2 and busy.running() == 2
        assert sorted(_load_pids(os.getpid())) == sorted(pids)
        for pid in pids:
            assert os.sched_getaffinity(pid) == os.sched_getaffinity(0)
    assert _load_pids(os.getpid()) == [] and busy.running() == 0
    with load.BusyLoad(0) as none:
        assert none.pids == []


@needs_proc
def test_busy_load_is_stopped_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with load.BusyLoad(1, max_seconds=60) as busy:
            assert len(_load_pids(os.getpid())) == 1
            raise RuntimeError("boom")
    assert _load_pids(os.getpid()) == [] and busy.procs == []


def test_busy_load_ends_by_itself_after_max_seconds():
    busy = load.BusyLoad(1, max_seconds=0.2).start()
    try:
        assert busy.procs[0].wait(timeout=20) == 0  # nobody stopped it
    finally:
        busy.stop()


# (SIGINT's handler set explicitly: a process started from a background job inherits SIGINT ignored)
_HOLD = ("import signal, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
         "from stcsnn.perf.load import BusyLoad\nwith BusyLoad(1, max_seconds=60) as b:\n"
         "    print(b.pids[0], flush=True)\n    time.sleep(60)\n")


@needs_proc
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_busy_load_ends_on_ctrl_c_and_when_its_parent_is_killed(sig):
    """A real second process holding the load: Ctrl-C (SIGINT to it alone, not to the load) stops the load in its
    ``finally``; after SIGKILL (no ``finally`` runs) the orphaned load notices and exits by itself."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert _load_pids(proc.pid) == [pid]
        proc.send_signal(sig)
        proc.wait(timeout=20)
        if sig == signal.SIGINT:  # stopped (and reaped) in the holder's finally, before the holder exited
            assert proc.returncode != 0 and _load_pids(proc.pid) == []
            return
        deadline = time.monotonic() + 10
        while _load_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _load_pids(proc.pid) == []
    finally:
        proc.kill()
        proc.wait()


@needs_proc
def test_thread_benchmark_stops_the_load_when_a_measurement_fails(monkeypatch):
    seen = []

    def failing_child(task, spec):
        seen.append((task, spec["busy"], len(_load_pids(os.getpid()))))
        raise StcsnnError("benchmark subprocess failed (threads stc_lif fast)")

    monkeypatch.setattr(bench, "run_child", failing_child)
    with pytest.raises(StcsnnError, match="subprocess failed"):
        bench.run_thread_benchmark(["small"], ["stc_lif"], busy=1, settle=0, log=lambda s: None)
    assert seen == [("threads", 1, 1)]  # the load ran during the measurement ...
    assert _load_pids(os.getpid()) == []  # ... and was stopped although it raised


def _thread_rows(**step_ms):
    return [{"setting": name, "threads": threads, "reason": "r", "step_s": ms / 1e3, "step_times_s": [ms / 1e3]}
            for name, (threads, ms) in step_ms.items()]


def test_thread_summary_compares_the_default_with_the_best_fixed_count():
    rows = _thread_rows(auto=(2, 150.0), **{"1": (1, 120.0), "2": (2, 160.0)})
    s = bench.thread_summary(rows)
    assert (s["best_threads"], s["default_threads"]) == (1, 2)
    assert s["best_s"] == pytest.approx(0.12) and s["slowdown"] == pytest.approx(1.25)
    assert [r["vs_best"] for r in rows] == pytest.approx([1.25, 1.0, 160 / 120])
    # auto is never the "best fixed count", even when it is the fastest row
    rows = _thread_rows(auto=(1, 90.0), **{"1": (1, 100.0), "2": (2, 300.0)})
    assert bench.thread_summary(rows)["best_threads"] == 1
    assert bench.thread_summary(rows)["slowdown"] == pytest.approx(0.9)
    with pytest.raises(StcsnnError, match="fixed thread count"):
        bench.thread_summary(_thread_rows(auto=(1, 90.0)))


def test_thread_table_markdown_on_hand_made_numbers():
    table = {"neuron": "stc_lif", "rows": _thread_rows(auto=(1, 110.0), **{"1": (1, 100.0), "2": (2, 250.0)})}
    results = {"machine": {"cpu": "Test CPU", "device": "cpu", "threads": 1, "torch": "x"}, "started": "now",
               "busy": 1, "configs": {"small": {"settings": bench.CONFIGS["small"], "rows": [], "threads": [table]}}}
    md = bench.markdown(results)
    assert "1 competing CPU-bound process(es) spinning" in md
    assert "| neuron | setting | threads | train step (ms) | vs best |" in md
    assert "| stc_lif | auto (default) | 1 | 110.0 | 1.10x |" in md
    assert "| stc_lif | 1 | 1 | 100.0 | 1.00x |" in md and "| stc_lif | 2 | 2 | 250.0 | 2.50x |" in md
    assert "is 1.10x the best fixed count (1 thread(s)) (target <= 1.25x: met)" in md
    assert "ratio 1.10x is this run's noise" in md
    assert "Convolution roof" not in md and "plain (ms)" not in md  # only the thread table in this mode
    results["busy"] = 0
    assert "(target <= 1.10x: met)" in bench.markdown(results) and "no competing load" in bench.markdown(results)
    table["rows"][0]["step_s"] = 0.2
    assert "(target <= 1.10x: missed)" in bench.markdown(results)


def test_run_threads_interleaves_every_setting_in_one_process(monkeypatch):
    monkeypatch.setitem(bench.CONFIGS, "tiny", TINY)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what auto then picks (the environment wins over auto)
    spec = {"config": "tiny", "device": "cpu", "neuron": "stc_lif", "path": "fast", "settings": ["auto", 1, 2],
            "repeats": 3, "warmup": 1}
    order = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (order.append(n), real(n)))
    try:
        r = bench.run_threads(spec)
    finally:
        real(1)
    assert [row["setting"] for row in r["rows"]] == ["auto", "1", "2"]
    assert [row["threads"] for row in r["rows"]] == [1, 1, 2]
    assert r["rows"][0]["reason"] == "OMP_NUM_THREADS=1"
    assert all(len(row["step_times_s"]) == 3 and math.isfinite(row["step_s"]) for row in r["rows"])
    # warm-up per setting, then rounds that each start one setting later
    assert order == [1, 1, 2] + [1, 1, 2] + [1, 2, 1] + [2, 1, 1]


@needs_proc
def test_bench_busy_cli_writes_the_thread_table(monkeypatch, tmp_path, capsys):
    """``stcsnn bench --busy 1`` end to end, its measuring child run in this process (the tiny configuration
    exists only here): the load runs while it measures, is gone after, and bench.md / bench.json hold the table."""
    monkeypatch.setitem(bench.CONFIGS, "tiny", TINY)
    seen = []

    def child_here(task, spec):
        seen.append(len(_load_pids(os.getpid())))
        try:
            return json.loads(json.dumps(commands.run_task(task, spec)))
        finally:
            torch.set_num_threads(1)

    monkeypatch.setattr(bench, "run_child", child_here)
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)  # (the settling pause)
    out = tmp_path / "bench"
    assert main(["bench", "--busy", "1", "--config", "tiny", "--repeats", "1", "--warmup", "0",
                 "--out", str(out)]) == 0
    assert seen == [1] and _load_pids(os.getpid()) == []
    res = json.loads((out / "bench.json").read_text())
    assert res["busy"] == 1 and res["usable_cpus"] >= 1
    (table,) = res["configs"]["tiny"]["threads"]
    assert table["neuron"] == "stc_lif"
    assert [r["setting"] for r in table["rows"]] == ["auto", *map(str, range(1, res["usable_cpus"] + 1))]
    md = (out / "bench.md").read_text()
    assert "| stc_lif | auto (default) |" in md and "the best fixed count" in md
    assert "| stc_lif | auto (default) |" in capsys.readouterr().out


def test_bench_busy_rejects_a_negative_count(tmp_path, capsys):
    marker = tmp_path / "bench" / "bench.md"
    marker.parent.mkdir()
    marker.write_text("earlier results\n")
    assert main(["bench", "--busy", "-1", "--out", str(marker.parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --busy must be") and "got -1" in err and "\n" not in err
    assert "Traceback" not in err and marker.read_text() == "earlier results\n"


@pytest.mark.parametrize("argv", [["--threads", "1", "bench"], ["bench", "--threads", "1"], ["bench"]])
def test_bench_command_takes_the_global_thread_choice(argv, tmp_path, monkeypatch, capsys):
    """The CLI applies --threads (auto or N) before the command: the benchmark reads the resulting count and
    hands it to its measuring subprocesses (it used to pass the raw option text to torch)."""
    import torch

    from stcsnn.cli import main

    seen = {}

    def fake_run(configs, neurons, *args, threads=None, **kwargs):
        seen["threads"] = threads
        return {"machine": {"cpu": "Test CPU", "device": "cpu", "threads": threads, "torch": "x"}, "started": "now",
                "configs": {"small": {"settings": bench.CONFIGS["small"],
                                      "roof": {"roof_gflops": None, "roof_shape": None, "shapes": []},
                                      "rows": [_row("lif", "fast", 0.1, 0.04, 100)]}}}

    monkeypatch.setattr(bench, "run_benchmark", fake_run)
    assert main([*argv, "--neurons", "lif", "--out", str(tmp_path)]) == 0
    assert seen["threads"] == torch.get_num_threads() == 1  # the tests pin OMP_NUM_THREADS=1 for auto
    assert (tmp_path / "bench.md").is_file()


def test_cpu_model_reads_cpuinfo_and_is_none_without_it(tmp_path):
    from stcsnn.device import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n"
                    "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n")
    assert cpu_model(str(info)) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    info.write_text("processor\t: 0\nmodel name\t:\n")
    assert cpu_model(str(info)) is None
    assert cpu_model(str(tmp_path / "missing")) is None


def test_bench_busy_above_the_cpu_count_is_refused_before_any_process_starts(tmp_path, capsys, monkeypatch):
    """``--busy 100000`` would start 100,000 interpreters: above the CPUs this process may use it is one error line
    naming that count, and no load process starts."""
    from stcsnn.threads import affinity_cpus

    started = []
    monkeypatch.setattr(load.BusyLoad, "start", lambda self: started.append(self.k) or self)
    cpus = len(affinity_cpus())
    marker = tmp_path / "bench" / "bench.md"
    marker.parent.mkdir()
    marker.write_text("earlier results\n")
    for k in (cpus + 1, 100000):
        line = one_error(capsys, main(["bench", "--busy", str(k), "--out", str(marker.parent)]))
        assert line == (f"error: --busy must be a number of load processes from 0 to the {cpus} CPU(s) this process "
                        f"may use, got {k}")
    assert started == [] and marker.read_text() == "earlier results\n"
