"""``stcsnn bench``: training-step time, inference time, peak memory and roofline efficiency, fast vs plain;
streaming latency, torch vs ONNX Runtime.

For each neuron (and the ``convlstm`` baseline when registered) at a configuration (``small``: hidden 64 x 3,
kernel 5, patch 4, batch 4, 10 -> 10 frames of 1x64x64, meant for CPU; ``paper``: hidden 256 x 3, patch 2,
batch 16, same frames, meant for a GPU -- on a CPU only with ``--allow-slow``) it measures, each variant in a
fresh subprocess:

* **training step**: the trainer's objective (:func:`stcsnn.train.objective.rollout_loss`: the rollout with a
  scheduled-sampling mask, MSE over frames 2..T), backward, Adam step; the median over ``--repeats`` steps
  after ``--warmup`` steps;
* **inference**: the autoregressive prediction of the 10 future frames from the 10 observed ones, no grad;
* **peak memory**: CPU -- the growth of the process's peak resident set (``ru_maxrss``) over its resident set
  just before the first step (activations, gradients, Adam state, workspaces); CUDA --
  ``torch.cuda.max_memory_allocated`` minus the memory allocated before the first step;

for the **fast** path (``SpikingPredictor.rollout``), the **plain** path
(:func:`stcsnn.models.plain_rollout`: one frame at a time through the neuron modules, no batching over time,
no fused updates, default memory format; the STC pathways are one grouped convolution on both paths) and
the fast path with **activation checkpointing** (``--checkpoint-steps``).

**Roofline.** In the same run it measures this machine's best dense convolution throughput: every dense
synaptic convolution shape the fast path runs (all prefix frames batched, and one frame), forward + backward
(input and weight gradients), in both memory formats; the best GFLOP/s is the roof. It measures one roof per
precision (:func:`roof_precisions`): **fp32** always, **bf16** (under bf16 autocast) where the device computes
bf16 natively (:func:`stcsnn.device.native_bf16`), and the rows' own ``--amp`` precision if neither covers it
(fp16 on a GPU; bf16 emulated). Each row's roofline is against the roof of the precision it ran in
(:func:`roofline`): ``--amp bf16`` rows against the bf16 roof, the others against the fp32 roof; the Markdown
gives every roof (GFLOP/s and its shape) and says which one the roofline columns use. ``--skip-roof`` skips
them all. The step's convolution FLOPs are counted from the real shapes while a training step runs (a dispatch
mode that sees every ``aten.convolution`` and ``aten.convolution_backward``): forward ``2 * MACs`` per
convolution; backward ``2 * MACs`` for the weight gradient plus ``2 * MACs`` for the input gradient where it is
computed (not for the observed frames, which need none) -- every convolution counts, dense synaptic, grouped STC
pathway and the 1x1 readout. Roofline efficiency = step FLOPs / (step time x the roof of the row's precision):
1.0 would be a step that is nothing but convolutions running at the best dense rate.

**Streaming** (:func:`measure_stream`; by default for the ``small`` configuration only, ``--no-stream`` skips
it). The per-frame latency of ``model.step`` at batch 1 on the configuration's frame size, in float32: the
observed frames, then each forecast fed back as the next frame, the state carried from call to call; the median
over a fixed number of frames after warm-up, at the run's thread count. Once through PyTorch (no grad, the
model's default inference policy) and once through ONNX Runtime (CPU) running the graph ``stcsnn export --onnx``
writes, checked against the torch step before it is timed (``onnx_max_diff``). Without the optional onnx /
onnxruntime packages the table says so in one line and only the torch column is filled.

**Threads** (``--busy K``, K >= 0). Instead of the tables above, the training step of the chosen neurons
(default ``stc_lif`` only) at the default thread setting (``auto``: what :func:`stcsnn.threads.choose_threads`
picks while the load runs) and at every fixed count 1..usable CPUs, while K competing CPU-bound processes spin
on the same CPUs (:mod:`stcsnn.perf.load`; ``--busy 0``: a quiet machine). All settings are measured in one
process, interleaved step by step (a drifting load then affects them alike); the table gives each setting's
median step and its ratio to the best fixed count, so the default's row is its slowdown against the best.

Results: a Markdown table (printed, ``bench.md``) and ``bench.json`` in ``--out``: per configuration ``roofs``
(precision -> roof), ``roof`` (the roof of the rows' precision, the one roof earlier files had), ``rows`` (each
with its ``roof_precision`` and ``roofline``) and, where measured, ``stream`` (per neuron ``torch_s``,
``onnx_s``, every frame's time, ``onnx_max_diff``, or ``onnx_missing``); ``machine.native_bf16`` says whether
the device computes bf16 natively. ``--amp bf16`` on a device without native bf16 prints one note to stderr and
runs anyway. Benchmarks are never tests: nothing here asserts a time.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from stcsnn.children import python_command
from stcsnn.config import Config, make_config
from stcsnn.device import autocast, cpu_model, native_bf16, pick_device
from stcsnn.errors import StcsnnError
from stcsnn.perf.load import BusyLoad
from stcsnn.perf.measure import (
    ConvFlops,
    conv_roof,
    conv_time_share,
    median_time,
    memory_mark,
    peak_growth,
    stream_times,
    time_calls,
)

CONFIGS: dict[str, dict[str, Any]] = {
    "small": {"hidden_channels": [64, 64, 64], "kernel_size": 5, "patch_size": 4, "batch_size": 4,
              "input_frames": 10, "output_frames": 10, "frame_shape": [1, 64, 64]},
    "paper": {"hidden_channels": [256, 256, 256], "kernel_size": 5, "patch_size": 2, "batch_size": 16,
              "input_frames": 10, "output_frames": 10, "frame_shape": [1, 64, 64]},
}
#: configurations too slow for a CPU unless asked for
GPU_CONFIGS = ("paper",)
DEFAULT_REPEATS = {"small": 10, "paper": 5}
#: the objective trained: the trainer's defaults (MSE over every output frame, scheduled sampling)
OBJECTIVE = {"loss": "all", "sampling": "scheduled"}
#: the code of the fresh process that runs one measurement: ``child_main([TASK, SPEC])``
CHILD_CODE = "import sys; from stcsnn.perf.commands import child_main; sys.exit(child_main(sys.argv[1:]))"
#: the configurations whose streaming latency is measured unless asked otherwise (``--no-stream``)
STREAM_CONFIGS = ("small",)
#: streaming: timed frames, and untimed ones after the observed prefix (the same counts for every neuron)
STREAM_FRAMES = 50
STREAM_WARMUP = 10


# ---------------------------------------------------------------------------------------------- one variant


class Workload(NamedTuple):
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    frames: torch.Tensor
    mask: torch.Tensor
    device: torch.device
    cfg: Config


def bench_config(spec: dict[str, Any]) -> Config:
    """The run :class:`~stcsnn.config.Config` of one variant: what the trainer would be given for it."""
    return make_config({**CONFIGS[spec["config"]], **OBJECTIVE, "neuron": spec["neuron"], "device": spec["device"],
                        "amp": spec.get("amp"), "compile": bool(spec.get("compile")),
                        "checkpoint_steps": spec.get("checkpoint_steps", 0)})


def build(spec: dict[str, Any]) -> Workload:
    """Model, optimizer, frames and mask of one variant (seeded: every variant sees the same)."""
    from stcsnn.models import build_model

    cfg = bench_config(spec)
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    model = build_model(cfg, policy=bench_policy(spec)).to(device)
    if cfg.compile:
        model.compile_updates()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    b, t_in, t_out = cfg.batch_size, cfg.input_frames, cfg.output_frames
    c, h, w = cfg.frame_shape
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(b, t_in + t_out, c, h, w, generator=g).to(device)
    # half true frames, half the model's own: both kinds of scheduled-sampling input are exercised
    mask = (torch.rand(b, t_out - 1, generator=g) < 0.5).float().to(device)
    return Workload(model, opt, frames, mask, device, cfg)


def bench_policy(spec: dict[str, Any]):
    """The :class:`~stcsnn.models.ExecutionPolicy` a variant's model is built with: the plain path for
    ``path: plain``; the fast path with ``spec["channels_last"]``'s layout where the spec names one; else
    ``None``, the model's per-run choice (what training and inference use)."""
    from stcsnn.models import PLAIN, ExecutionPolicy

    if spec.get("path") == "plain":
        return PLAIN
    if spec.get("channels_last") is not None:
        return ExecutionPolicy(fast=True, channels_last=spec["channels_last"])
    return None


def step_functions(w: Workload) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(training step, inference)`` of a workload, on the path and layout its model was built with."""
    from stcsnn.train.objective import rollout_loss

    cfg = w.cfg

    def train_step() -> None:
        with autocast(w.device, cfg.amp):
            loss, _ = rollout_loss(w.model, w.frames, cfg, w.mask)
        w.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        w.optimizer.step()

    def infer() -> None:
        with torch.no_grad(), autocast(w.device, cfg.amp):
            w.model.rollout(w.frames[:, :cfg.input_frames], cfg.input_frames, cfg.output_frames)

    return train_step, infer


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one variant (``fast``, ``plain``, ``compile``, checkpointed) of one configuration; returns ``spec``
    with the measurements added."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    w = build(spec)
    train_step, infer = step_functions(w)
    mark = memory_mark(w.device)
    time_calls(train_step, spec["warmup"], w.device)
    step_times = time_calls(train_step, spec["repeats"], w.device)
    peak = peak_growth(w.device, mark)  # before inference, which needs less: the training step's peak
    time_calls(infer, 1, w.device)
    infer_s = median_time(infer, spec["repeats"], w.device)
    flops, share = ConvFlops(), None
    if not spec.get("compile"):  # (a dispatch mode around compiled code would measure something else)
        with flops:
            train_step()
        share = conv_time_share(train_step, w.device)
    return {
        **spec,
        "step_s": statistics.median(step_times), "step_times_s": step_times,
        "infer_s": infer_s,
        "peak_bytes": peak,
        "conv_flops": flops.total, "conv_flops_forward": flops.forward,
        "conv_flops_backward_input": flops.backward_input, "conv_flops_backward_weight": flops.backward_weight,
        "conv_time_share": share,
    }


def run_threads(spec: dict[str, Any]) -> dict[str, Any]:
    """The training step (fast path) at each of ``spec["settings"]`` (``"auto"`` or a thread count), interleaved
    in this one process: warm-up steps per setting, then ``repeats`` rounds of one step per setting (each round
    starting one setting later, so no setting always runs right after another). ``auto`` is resolved here, by
    :func:`stcsnn.threads.choose_threads`, while whatever load the caller started runs."""
    from stcsnn.threads import choose_threads

    counts: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for setting in spec["settings"]:
        choice = choose_threads("auto" if setting == "auto" else int(setting))
        counts[str(setting)], reasons[str(setting)] = choice.threads, choice.reason
    w = build(spec)
    train_step, _ = step_functions(w)
    names = list(counts)
    for name in names:
        torch.set_num_threads(counts[name])
        time_calls(train_step, spec["warmup"], w.device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(spec["repeats"]):
        for name in names[r % len(names):] + names[:r % len(names)]:
            torch.set_num_threads(counts[name])
            times[name] += time_calls(train_step, 1, w.device)
    rows = [{"setting": name, "threads": counts[name], "reason": reasons[name],
             "step_s": statistics.median(times[name]), "step_times_s": times[name]} for name in names]
    return {**spec, "rows": rows}


def thread_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The default (``auto``) setting against the best fixed thread count, from rows of :func:`run_threads`:
    ``{"best_threads", "best_s", "default_threads", "default_s", "slowdown"}`` (the default's median step over
    the best fixed one's); also each row's ``vs_best``."""
    fixed = [r for r in rows if r["setting"] != "auto"]
    if not fixed:
        raise StcsnnError("a thread table needs at least one fixed thread count, got only 'auto'")
    best = min(fixed, key=lambda r: r["step_s"])
    default = next((r for r in rows if r["setting"] == "auto"), None)
    for r in rows:
        r["vs_best"] = r["step_s"] / best["step_s"]
    return {"best_threads": best["threads"], "best_s": best["step_s"],
            "default_threads": default["threads"] if default else None,
            "default_s": default["step_s"] if default else None,
            "slowdown": default["step_s"] / best["step_s"] if default else None}


#: the issue's targets for the default's slowdown against the best fixed count: quiet, one busy process
THREAD_TARGETS = {0: 1.1, 1: 1.25}


def roof_shapes(settings: dict[str, Any]) -> list[tuple[int, int, int, bool]]:
    """``(batch, in, out, input_grad)`` of every dense synaptic convolution of the fast path: each layer's over all
    observed frames at once (the first layer's input, the frames, needs no gradient) and over one frame."""
    c = settings["frame_shape"][0]
    p = settings["patch_size"]
    widths = [p * p * c, *settings["hidden_channels"]]
    b = settings["batch_size"]
    shapes = set()
    for i in range(len(widths) - 1):
        for batch, needs_input_grad in ((b * settings["input_frames"], i > 0), (b, True)):
            shapes.add((batch, widths[i], widths[i + 1], needs_input_grad))
    return sorted(shapes)


def precision(amp: str | None) -> str:
    """The name of a computation's precision: ``fp32`` without autocast, else the autocast dtype's."""
    return amp or "fp32"


def roof_precisions(dev: torch.device, amp: str | None) -> list[str]:
    """The precisions whose roof a run measures: fp32 always; bf16 where ``dev`` computes it natively; and the
    rows' own (``amp``), so that every row has the roof of its precision (bf16 emulated included)."""
    out = ["fp32"]
    if native_bf16(dev):
        out.append("bf16")
    if amp and amp not in out:
        out.append(amp)
    return out


def roofline(row: dict[str, Any], roofs: dict[str, dict[str, Any]]) -> float | None:
    """Roofline efficiency of a measured row against the roof of its own precision (``row["amp"]``): step
    convolution FLOPs / (step seconds x roof FLOP/s); ``None`` where that roof or the FLOPs were not measured."""
    roof = roofs.get(precision(row.get("amp")))
    if not roof or not roof.get("roof_gflops") or row.get("conv_flops") is None:
        return None
    return row["conv_flops"] / (row["step_s"] * roof["roof_gflops"] * 1e9)


def measure_roof(spec: dict[str, Any]) -> dict[str, Any]:
    """Best dense convolution throughput (forward + backward) over the configuration's dense synaptic shapes,
    under ``spec["amp"]`` (``None``: float32)."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    s = CONFIGS[spec["config"]]
    _, h, w = s["frame_shape"]
    p = s["patch_size"]
    roof = conv_roof(roof_shapes(s), s["kernel_size"], (h // p, w // p), pick_device(spec["device"]),
                     spec.get("amp"), spec.get("roof_seconds", 2.0))
    return {"config": spec["config"], "device": spec["device"], "amp": spec.get("amp"),
            "precision": precision(spec.get("amp")), **roof}


def measure_stream(spec: dict[str, Any]) -> dict[str, Any]:
    """Per-frame latency of streaming prediction, batch 1, the configuration's frame size, in float32: the
    observed frames, then forecasts fed back, the state carried from call to call (:func:`stream_times`).
    ``torch``: ``model.step`` without gradients under the model's default inference policy, on the spec's
    device. ``onnx``: the same model's step graph as ``stcsnn export --onnx`` writes it
    (:func:`stcsnn.models.export.onnx_step_bytes`), through an onnxruntime CPU session with the torch thread
    count; first checked against the torch step (:func:`~stcsnn.models.export.check_onnx`), so that no wrong graph
    is timed. Without onnx / onnxruntime installed only the torch side runs and ``onnx_missing`` says why."""
    from stcsnn.models import build_model
    from stcsnn.models.export import check_onnx, onnx_modules, onnx_session, onnx_step_bytes, state_names, zero_state

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    cfg = bench_config({**spec, "amp": None})
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    model = build_model(cfg).eval()  # on the CPU first: the ONNX export traces it there
    shape = tuple(cfg.frame_shape)
    observed = torch.rand(cfg.input_frames, 1, *shape, generator=torch.Generator().manual_seed(1))
    n, warmup = spec.get("stream_frames", STREAM_FRAMES), spec.get("stream_warmup", STREAM_WARMUP)
    # (the spec's repeats / warmup count training steps, not frames: left out)
    out = {**{k: v for k, v in spec.items() if k not in ("repeats", "warmup")}, "amp": None, "frames": n,
           "warmup_frames": warmup, "observed_frames": cfg.input_frames,
           "frame_shape": list(shape), "onnx_s": None, "onnx_times_s": None, "onnx_max_diff": None}
    try:
        onnx_modules()
    except StcsnnError as exc:  # only the absence of the optional packages: any other failure is the run's
        out["onnx_missing"] = str(exc)
    else:
        data = onnx_step_bytes(model, shape)
        diff = check_onnx(model, data, shape)
        if not math.isfinite(diff):
            raise StcsnnError(f"the ONNX step of {spec['neuron']} predicts non-finite values (max difference "
                              f"{diff} from the torch step): not timing it")
        session, names = onnx_session(data), state_names(model)
        flat = [t.numpy() for t in zero_state(model, 1, shape)]

        def onnx_step(frame):
            nonlocal flat
            pred, *flat = session.run(None, {"frame": frame, **dict(zip(names, flat))})
            return pred

        times = stream_times(onnx_step, [f.numpy() for f in observed], warmup, n)
        out.update(onnx_s=statistics.median(times), onnx_times_s=times, onnx_max_diff=diff)
    model.to(device)
    state = None

    def torch_step(frame: torch.Tensor) -> torch.Tensor:
        nonlocal state
        pred, state = model.step(frame, state)
        return pred

    with torch.no_grad():
        times = stream_times(torch_step, list(observed.to(device)), warmup, n, device)
    out.update(torch_s=statistics.median(times), torch_times_s=times)
    return out


# ---------------------------------------------------------------------------------------------- orchestrating


def run_child(task: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``task`` in a fresh Python process (clean peak-RSS / CUDA state) and return its JSON result."""
    cmd = python_command(CHILD_CODE, task, json.dumps(spec))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise StcsnnError(f"benchmark subprocess failed ({task} {spec.get('neuron', '')} {spec.get('path', '')}):\n"
                          + "\n".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_info(device_name: str) -> dict[str, Any]:
    """Python, torch, platform, CPU model, threads and (CUDA) GPU of this machine."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}
    cpu = cpu_model()
    if cpu:
        info["cpu"] = cpu
    dev = pick_device(device_name)
    info["device"] = str(dev)
    info["native_bf16"] = native_bf16(dev)
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def default_neurons() -> list[str]:
    """Every registered neuron (ANN cells such as ``convlstm`` included)."""
    from stcsnn.neurons import list_neurons

    return [name for name, _ in list_neurons()]


def check_request(configs: list[str], neurons: list[str], dev: torch.device, allow_slow: bool) -> None:
    """Refuse unknown configurations and neurons, and a GPU configuration on a CPU unless ``allow_slow``."""
    for cfg in configs:
        if cfg not in CONFIGS:
            raise StcsnnError(f"unknown benchmark config {cfg!r}: expected one of {', '.join(CONFIGS)}")
        if cfg in GPU_CONFIGS and dev.type == "cpu" and not allow_slow:
            raise StcsnnError(f"the {cfg!r} configuration is meant for a GPU; on a CPU it takes minutes per step "
                              "-- pass --allow-slow to run it anyway")
    known = set(default_neurons())
    for n in neurons:
        if n not in known:
            raise StcsnnError(f"unknown neuron {n!r}: expected one of {', '.join(sorted(known))}")


def variants(plain: bool, compile: bool, checkpoint_steps: list[int]) -> list[tuple[str, int, bool]]:
    """``(variant, checkpoint_steps, compiled)`` to measure for one neuron; the fast one first (the others are
    compared with it)."""
    out = [("fast", 0, False)]
    if plain:
        out.append(("plain", 0, False))
    if compile:
        out.append(("compile", 0, True))
    return out + [("fast", k, False) for k in checkpoint_steps]


def _roofs(cfg: str, base: dict[str, Any], dev: torch.device, skip: bool, log: Callable[[str], Any]
           ) -> dict[str, dict[str, Any]]:
    """The roof of each of :func:`roof_precisions`, by precision (none with ``skip``)."""
    roofs: dict[str, dict[str, Any]] = {}
    for p in [] if skip else roof_precisions(dev, base["amp"]):
        log(f"[{cfg}] measuring the {p} convolution roof ...")
        roofs[p] = run_child("roof", {**base, "amp": None if p == "fp32" else p})
        log(f"[{cfg}] {p} roof {roofs[p]['roof_gflops']:.1f} GFLOP/s ({_shape_str(roofs[p]['roof_shape'])})")
    return roofs


def _measure_neuron(cfg: str, neuron: str, base: dict[str, Any], todo: list[tuple[str, int, bool]],
                    roofs: dict[str, dict[str, Any]], rows: list[dict[str, Any]], log: Callable[[str], Any],
                    on_row: Callable[[], Any]) -> None:
    fast_flops = None
    for variant, k, comp in todo:
        spec = {**base, "neuron": neuron, "path": "plain" if variant == "plain" else "fast",
                "checkpoint_steps": k, "compile": comp, "variant": variant}
        r = run_child("variant", spec)
        if variant == "fast" and not k:
            fast_flops = r["conv_flops"]
        if comp:  # the same convolutions as the fast path (not counted under compile)
            r["conv_flops"] = fast_flops
        r["roof_precision"] = precision(r.get("amp"))
        r["roofline"] = roofline(r, roofs)
        rows.append(r)
        log(f"[{cfg}] {neuron:<10} {variant:<9} ckpt={k:<2} step {r['step_s'] * 1e3:8.1f} ms  "
            f"infer {r['infer_s'] * 1e3:8.1f} ms  peak {r['peak_bytes'] / 2**20:8.1f} MiB  "
            f"roofline {r['roofline'] or float('nan'):.2f} ({r['roof_precision']} roof)")
        on_row()


def _measure_stream(cfg: str, neuron: str, base: dict[str, Any], stream: list[dict[str, Any]],
                    log: Callable[[str], Any], on_row: Callable[[], Any]) -> None:
    r = run_child("stream", {**base, "neuron": neuron})
    stream.append(r)
    onnx = f"{r['onnx_s'] * 1e3:7.2f} ms/frame" if r["onnx_s"] is not None else "not measured"
    log(f"[{cfg}] {neuron:<10} stream: torch step {r['torch_s'] * 1e3:7.2f} ms/frame  ONNX Runtime {onnx}")
    on_row()


def run_benchmark(configs: list[str], neurons: list[str], device: str = "auto", repeats: int | None = None,
                  warmup: int = 2, checkpoint_steps: list[int] | None = None, plain: bool = True,
                  allow_slow: bool = False, threads: int | None = None, amp: str | None = None,
                  compile: bool = False, checkpoint_neurons: list[str] | None = None,
                  log: Callable[[str], Any] = print, progress: Callable[[dict[str, Any]], Any] | None = None,
                  skip_roof: bool = False, stream: bool | None = None) -> dict[str, Any]:
    """Run the benchmark, one fresh subprocess per measurement; returns the JSON-able results (see
    :func:`markdown`). ``progress(results)``, if given, is called after every measurement (partial results).
    ``stream``: measure the streaming latency (``None``: for the :data:`STREAM_CONFIGS` only)."""
    dev = pick_device(device)
    check_request(configs, neurons, dev, allow_slow)
    ckpt = [k for k in (checkpoint_steps or []) if k > 0]
    ckpt_neurons = checkpoint_neurons if checkpoint_neurons is not None else [n for n in ("stc_lif",) if n in neurons]
    results: dict[str, Any] = {"machine": machine_info(device), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "configs": {}}

    def on_row() -> None:
        if progress is not None:
            progress(results)

    for cfg in configs:
        base = {"config": cfg, "device": str(dev), "repeats": repeats or DEFAULT_REPEATS[cfg], "warmup": warmup,
                "threads": threads, "amp": amp}
        roofs = _roofs(cfg, base, dev, skip_roof, log)
        # "roof": the roof of the rows' precision, the one roof bench.json had before there were several
        roof = roofs.get(precision(amp)) or {"config": cfg, "device": base["device"], "shapes": [],
                                             "roof_gflops": None, "roof_shape": None}
        rows: list[dict[str, Any]] = []
        results["configs"][cfg] = {"roof": roof, "roofs": roofs, "rows": rows, "settings": CONFIGS[cfg]}
        for neuron in neurons:
            todo = variants(plain, compile, ckpt if neuron in ckpt_neurons else [])
            _measure_neuron(cfg, neuron, base, todo, roofs, rows, log, on_row)
        if stream or (stream is None and cfg in STREAM_CONFIGS):
            streamed: list[dict[str, Any]] = []
            results["configs"][cfg]["stream"] = streamed
            for neuron in neurons:
                _measure_stream(cfg, neuron, base, streamed, log, on_row)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return results


def run_thread_benchmark(configs: list[str], neurons: list[str], busy: int, device: str = "cpu",
                         repeats: int | None = None, warmup: int = 2, log: Callable[[str], Any] = print,
                         progress: Callable[[dict[str, Any]], Any] | None = None, settle: float = 1.0,
                         usable: int | None = None) -> dict[str, Any]:
    """``stcsnn bench --busy K``: the thread table of each neuron at each configuration while ``busy`` load
    processes spin (none for 0); the load is stopped however this returns or raises. ``usable`` (default: the
    CPUs this process may use) bounds the fixed counts measured."""
    from stcsnn.threads import affinity_cpus, usable_cpus

    cpus = len(affinity_cpus())
    if not 0 <= busy <= cpus:  # more spinning processes than CPUs to pin them to measure nothing more
        raise StcsnnError(f"--busy must be a number of load processes from 0 to the {cpus} CPU(s) this process may "
                          f"use, got {busy}")
    dev = pick_device(device)
    if dev.type != "cpu":
        raise StcsnnError(f"--busy measures CPU thread counts: expected --device cpu, got {device} ({dev})")
    check_request(configs, neurons, dev, allow_slow=False)
    usable = usable or usable_cpus()
    settings = ["auto", *range(1, usable + 1)]
    results: dict[str, Any] = {"machine": machine_info(str(dev)), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "busy": busy, "usable_cpus": usable, "configs": {}}
    with BusyLoad(busy) as load:
        if busy:
            log(f"started {busy} competing load process(es): pids {', '.join(map(str, load.pids))}")
            time.sleep(settle)  # let them reach full speed before anything is chosen or timed
        for cfg in configs:
            tables: list[dict[str, Any]] = []
            results["configs"][cfg] = {"settings": CONFIGS[cfg], "rows": [], "threads": tables}
            for neuron in neurons:
                spec = {"config": cfg, "device": str(dev), "neuron": neuron, "path": "fast", "busy": busy,
                        "settings": settings, "repeats": repeats or DEFAULT_REPEATS[cfg], "warmup": warmup}
                r = run_child("threads", spec)
                r["summary"] = thread_summary(r["rows"])
                tables.append(r)
                for row in r["rows"]:
                    log(f"[{cfg}] {neuron:<10} busy={busy} threads {row['setting']:>4} ({row['threads']}) "
                        f"step {row['step_s'] * 1e3:8.1f} ms  {row['vs_best']:.2f}x best")
                if progress is not None:
                    progress(results)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return results


# ---------------------------------------------------------------------------------------------- reporting


def _shape_str(r: dict[str, Any]) -> str:
    return (f"batch {r['batch']}, {r['in']}->{r['out']}, {r['kernel']}x{r['kernel']}, "
            f"{r['size'][0]}x{r['size'][1]}, {r['format']}")


def _find(rows: list[dict[str, Any]], neuron: str, variant: str, k: int = 0) -> dict[str, Any] | None:
    for r in rows:
        if r["neuron"] == neuron and r["variant"] == variant and r["checkpoint_steps"] == k:
            return r
    return None


def _val(r: dict[str, Any] | None, key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    return fmt.format(r[key] * scale) if r and r.get(key) is not None else "-"


MAIN_HEADER = ["| neuron | train step (ms) | plain (ms) | speed-up | inference (ms) | plain (ms) | speed-up | "
               "peak mem (MiB) | plain (MiB) | conv GFLOP/step | roofline | plain roofline | conv share of step |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]


def _main_row(rows: list[dict[str, Any]], n: str) -> str:
    f, pl = _find(rows, n, "fast"), _find(rows, n, "plain")
    speed = f"{pl['step_s'] / f['step_s']:.2f}x" if pl else "-"
    ispeed = f"{pl['infer_s'] / f['infer_s']:.2f}x" if pl else "-"
    share = "-" if not f or f.get("conv_time_share") is None else f"{f['conv_time_share']:.0%}"
    return (f"| {n} | {_val(f, 'step_s', 1e3)} | {_val(pl, 'step_s', 1e3)} | {speed} | "
            f"{_val(f, 'infer_s', 1e3)} | {_val(pl, 'infer_s', 1e3)} | {ispeed} | "
            f"{_val(f, 'peak_bytes', 2**-20)} | {_val(pl, 'peak_bytes', 2**-20)} | "
            f"{_val(f, 'conv_flops', 1e-9, '{:.2f}')} | {_val(f, 'roofline', 1, '{:.2f}')} | "
            f"{_val(pl, 'roofline', 1, '{:.2f}')} | {share} |")


def _compile_table(rows: list[dict[str, Any]]) -> list[str]:
    comp = [r for r in rows if r["variant"] == "compile"]
    if not comp:
        return []
    lines = ["", "`torch.compile` of each cell's update (the trainer's `--compile`), instead of the fused updates:",
             "", "| neuron | train step (ms) | vs fast path |", "|---|---:|---:|"]
    for r in comp:
        f = _find(rows, r["neuron"], "fast")
        lines.append(f"| {r['neuron']} | {r['step_s'] * 1e3:.1f} | {r['step_s'] / f['step_s']:.2f}x |")
    return lines


def _checkpoint_table(rows: list[dict[str, Any]]) -> list[str]:
    ck = [r for r in rows if r["checkpoint_steps"]]
    if not ck:
        return []
    lines = ["", "Activation checkpointing over time (`checkpoint_steps = K`):", "",
             "| neuron | K | train step (ms) | time vs default | peak mem (MiB) | memory vs default |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in ck:
        f = _find(rows, r["neuron"], "fast")
        lines.append(f"| {r['neuron']} | {r['checkpoint_steps']} | {r['step_s'] * 1e3:.1f} | "
                     f"{r['step_s'] / f['step_s']:.2f}x | {r['peak_bytes'] / 2**20:.1f} | "
                     f"{r['peak_bytes'] / max(f['peak_bytes'], 1):.2f}x |")
    return lines


def _thread_table(tables: list[dict[str, Any]], busy: int) -> list[str]:
    """``--busy``: per neuron the settings, their thread counts, median steps and ratios to the best fixed
    count, then one line per neuron comparing the default with the best."""
    if not tables:
        return []
    load = "no competing load (quiet)" if not busy else f"{busy} competing CPU-bound process(es) spinning"
    lines = [f"Thread settings, training step, {load}:", "",
             "| neuron | setting | threads | train step (ms) | vs best |", "|---|---|---:|---:|---:|"]
    notes = []
    for t in tables:
        summary = thread_summary(t["rows"])
        for r in t["rows"]:
            setting = "auto (default)" if r["setting"] == "auto" else r["setting"]
            lines.append(f"| {t['neuron']} | {setting} | {r['threads']} | {r['step_s'] * 1e3:.1f} | "
                         f"{r['vs_best']:.2f}x |")
        if summary["slowdown"] is not None:
            target = THREAD_TARGETS.get(busy)
            verdict = "" if target is None else (
                f" (target <= {target:.2f}x: {'met' if summary['slowdown'] <= target else 'missed'})")
            auto = next(r for r in t["rows"] if r["setting"] == "auto")
            same = next((r for r in t["rows"] if r["setting"] != "auto" and r["threads"] == auto["threads"]), None)
            noise = "" if same is None else (  # the same computation twice: what the load's jitter alone moves
                f" auto and the fixed {same['threads']} ran the same thread count: their ratio "
                f"{auto['step_s'] / same['step_s']:.2f}x is this run's noise.")
            notes.append(f"{t['neuron']}: the default (auto, {summary['default_threads']} thread(s); "
                         f"{auto['reason']}) is {summary['slowdown']:.2f}x the best fixed count "
                         f"({summary['best_threads']} thread(s)){verdict}.{noise}")
    return [*lines, "", *notes]


def _roof_lines(res: dict[str, Any]) -> list[str]:
    """Each measured roof (GFLOP/s, shape) and which roof the roofline columns divide by; nothing for a thread
    table (no roof)."""
    roofs = res.get("roofs")
    one_roof = roofs is None  # a bench.json of before the per-precision roofs: one roof, of the rows' precision
    if one_roof:
        roof = res.get("roof")
        if roof is None:
            return []
        roofs = {roof.get("precision") or precision(roof.get("amp")): roof} if roof.get("roof_gflops") else {}
    if not roofs:
        return ["Convolution roof: not measured (--skip-roof).", ""]
    parts = [f"{p} {r['roof_gflops']:.0f} GFLOP/s ({_shape_str(r['roof_shape'])})" for p, r in roofs.items()]
    if "bf16" not in roofs and not one_roof:  # (earlier runs measured no bf16 roof at all)
        parts.append("bf16 not measured (this device has no native bf16)")
    lines = ["Convolution roofs (best dense synaptic convolution, forward + backward): " + "; ".join(parts) + "."]
    used = list(dict.fromkeys(r.get("roof_precision") or precision(r.get("amp")) for r in res["rows"]))
    if used:
        ran = " and ".join("float32" if p == "fp32" else f"under --amp {p}" for p in used)
        lines.append(f"Roofline columns: each row against the roof of its own precision -- here the "
                     f"{' / '.join(used)} roof (the rows ran {ran}).")
    return [*lines, ""]


STREAM_HEADER = ["| neuron | torch step (ms/frame) | ONNX Runtime (ms/frame) | faster | max abs diff, ONNX vs torch |",
                 "|---|---:|---:|---|---:|"]


def _stream_table(stream: list[dict[str, Any]]) -> list[str]:
    """The streaming latency of each neuron, torch against ONNX Runtime (or one line saying why ONNX Runtime
    was not measured)."""
    if not stream:
        return []
    r0 = stream[0]
    lines = ["", f"Streaming latency, one frame at a time (`model.step`, batch 1, "
                 f"{'x'.join(map(str, r0['frame_shape']))} frames, float32, the state carried and each forecast fed "
                 f"back): median over {r0['frames']} frames after the {r0['observed_frames']} observed and "
                 f"{r0['warmup_frames']} warm-up frames, {r0.get('threads') or 'default'} thread(s). torch: no grad, "
                 f"the default inference policy, on {r0['device']}; ONNX Runtime: the graph `stcsnn export --onnx` "
                 "writes, CPU.", "", *STREAM_HEADER]
    for r in stream:
        if r["onnx_s"] is None:
            faster = "-"
        elif r["onnx_s"] < r["torch_s"]:
            faster = f"ONNX Runtime ({r['torch_s'] / r['onnx_s']:.2f}x)"
        else:
            faster = f"torch ({r['onnx_s'] / r['torch_s']:.2f}x)"
        lines.append(f"| {r['neuron']} | {_val(r, 'torch_s', 1e3, '{:.2f}')} | {_val(r, 'onnx_s', 1e3, '{:.2f}')} | "
                     f"{faster} | {_val(r, 'onnx_max_diff', 1, '{:.2g}')} |")
    missing = next((r["onnx_missing"] for r in stream if r.get("onnx_missing")), None)
    return [*lines, *(["", f"ONNX Runtime: not measured -- {missing}"] if missing else [])]


def _config_section(cfg: str, res: dict[str, Any], busy: int | None = None) -> list[str]:
    s, rows = res["settings"], res["rows"]
    lines = [f"### `{cfg}`: hidden {s['hidden_channels']}, kernel {s['kernel_size']}, patch {s['patch_size']}, "
             f"batch {s['batch_size']}, {s['input_frames']} -> {s['output_frames']} frames of "
             f"{'x'.join(map(str, s['frame_shape']))}", "", *_roof_lines(res)]
    if rows:
        lines += [*MAIN_HEADER, *(_main_row(rows, n) for n in dict.fromkeys(r["neuron"] for r in rows))]
    return [*lines, *_compile_table(rows), *_checkpoint_table(rows), *_stream_table(res.get("stream", [])),
            *_thread_table(res.get("threads", []), busy or 0), ""]


FOOTNOTE = ("Times are medians over the timed repetitions after warm-up, each variant in a fresh process. "
            "Roofline = convolution FLOPs of the training step (forward 2 MACs; backward 2 MACs per "
            "gradient computed, input and weight; every convolution: synaptic, pathway, readout) / (step "
            "time x the convolution roof of the row's precision). Conv share = fraction of a (profiled) step "
            "spent inside convolution ops, so roofline / conv share is the convolutions' own rate relative to "
            "the roof. Peak memory: growth of the peak resident set over the resident set before the first step (CPU), "
            "max allocated minus allocated before the first step (CUDA).")


THREAD_FOOTNOTE = ("Times are medians over the timed repetitions after warm-up; all settings of a neuron ran in "
                   "one process, one step each in turn. 'vs best' = the setting's median / the fastest fixed "
                   "count's median. 'auto' is what `--threads auto` (the default) chose in that process while "
                   "the load ran.")


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: the machine, then per configuration the roof and the tables."""
    m = results["machine"]
    where = m.get("gpu") or m.get("cpu") or m.get("processor")
    lines = [f"Machine: {where} ({m['device']}, {m['threads']} threads), torch {m['torch']}, "
             f"{results['started']}.", ""]
    for cfg, res in results["configs"].items():
        lines += _config_section(cfg, res, results.get("busy"))
    footnote = THREAD_FOOTNOTE if "busy" in results else FOOTNOTE
    return "\n".join([*lines, footnote, ""])


def write_results(results: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "bench.json", out / "bench.md"
    js.write_text(json.dumps(results, indent=1) + "\n")
    md.write_text(markdown(results))
    return js, md
