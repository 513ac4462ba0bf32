"""``stcsnn bench``: training-step time, inference time, peak memory and roofline efficiency, fast vs reference.

For each neuron (and the ``convlstm`` baseline when registered) at a configuration (``small``: hidden 64 x 3,
kernel 5, patch 4, batch 4, 10 -> 10 frames of 1x64x64, meant for CPU; ``paper``: hidden 256 x 3, patch 2,
batch 16, same frames, meant for a GPU -- on a CPU only with ``--allow-slow``) it measures, each variant in a
fresh subprocess:

* **training step**: forward (``rollout`` with a scheduled-sampling mask, as ``stcsnn train``), MSE loss,
  backward, Adam step; the median over ``--repeats`` steps after ``--warmup`` steps;
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
(input and weight gradients), in both memory formats; the best GFLOP/s is the roof. The step's convolution
FLOPs are counted from the real shapes while a training step runs (a dispatch mode that sees every
``aten.convolution`` and ``aten.convolution_backward``): forward ``2 * MACs`` per convolution; backward
``2 * MACs`` for the weight gradient plus ``2 * MACs`` for the input gradient where it is computed (not for the
observed frames, which need none) -- every convolution counts, dense synaptic, grouped STC pathway and the 1x1
readout. Roofline efficiency = step FLOPs / (step time x roof): 1.0 would be a step that is nothing but
convolutions running at the best dense rate.

Results: a Markdown table (printed, ``bench.md``) and ``bench.json`` in ``--out``. Benchmarks are never tests:
nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stcsnn.device import pick_device
from stcsnn.errors import StcsnnError

CONFIGS: dict[str, dict[str, Any]] = {
    "small": {"hidden_channels": [64, 64, 64], "kernel_size": 5, "patch_size": 4, "batch_size": 4,
              "input_frames": 10, "output_frames": 10, "frame_shape": [1, 64, 64]},
    "paper": {"hidden_channels": [256, 256, 256], "kernel_size": 5, "patch_size": 2, "batch_size": 16,
              "input_frames": 10, "output_frames": 10, "frame_shape": [1, 64, 64]},
}
#: configurations too slow for a CPU unless asked for
GPU_CONFIGS = ("paper",)
DEFAULT_REPEATS = {"small": 10, "paper": 5}


# ---------------------------------------------------------------------------------------------- measuring


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: fall back to the peak so far (growth then reads low, never high)
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class ConvFlops:
    """Counts convolution FLOPs from the real shapes of every ``aten.convolution`` / ``convolution_backward``
    dispatched while active: forward 2*MACs; backward 2*MACs per gradient computed (input, weight)."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward_input = 0
        self.backward_weight = 0

    @property
    def total(self) -> int:
        return self.forward + self.backward_input + self.backward_weight

    def __enter__(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        aten = torch.ops.aten

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if func is aten.convolution.default:
                    w = args[1]
                    counter.forward += 2 * out.numel() * (w.numel() // w.shape[0])
                elif func is aten.convolution_backward.default:
                    grad_out, w, mask = args[0], args[2], args[-1]
                    macs = grad_out.numel() * (w.numel() // w.shape[0])
                    counter.backward_input += 2 * macs if mask[0] else 0
                    counter.backward_weight += 2 * macs if mask[1] else 0
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def build(spec: dict[str, Any]):
    """Model, optimizer, frames and mask of one benchmark configuration (seeded)."""
    import torch

    from stcsnn.models import SpikingPredictor

    cfg = CONFIGS[spec["config"]]
    device = pick_device(spec["device"])
    torch.manual_seed(0)
    c, h, w = cfg["frame_shape"]
    model = SpikingPredictor(spec["neuron"], c, cfg["hidden_channels"], cfg["kernel_size"], cfg["patch_size"],
                             checkpoint_steps=spec.get("checkpoint_steps", 0)).to(device)
    if spec.get("channels_last") is not None:
        model.channels_last = spec["channels_last"]
    if spec.get("compile"):
        for cell in model.cells:
            cell.update = torch.compile(cell.update)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    b, t_in, t_out = cfg["batch_size"], cfg["input_frames"], cfg["output_frames"]
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(b, t_in + t_out, c, h, w, generator=g).to(device)
    mask = (torch.rand(b, t_out - 1, generator=g) < 0.5).float().to(device)
    return model, opt, frames, mask, device


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one variant (``fast``, ``reference``, checkpointed) of one configuration; returns a dict."""
    import torch
    import torch.nn.functional as F

    from stcsnn.models import plain_rollout

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model, opt, frames, mask, device = build(spec)
    cfg = CONFIGS[spec["config"]]
    t_in, t_out = cfg["input_frames"], cfg["output_frames"]
    reference = spec["path"] == "reference"
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.get("amp") or "")

    def rollout(*args):
        if reference:
            return plain_rollout(model, *args)
        return model.rollout(*args)

    def train_step():
        ctx = torch.autocast(device.type, dtype=amp) if amp else _null()
        with ctx:
            out = rollout(frames, t_in, t_out, mask)
        loss = F.mse_loss(out.frames.float(), frames[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer():
        ctx = torch.autocast(device.type, dtype=amp) if amp else _null()
        with torch.no_grad(), ctx:
            rollout(frames[:, :t_in], t_in, t_out)

    def timed(fn, n):
        times = []
        for _ in range(n):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return times

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device)
    else:
        mem0 = _rss_bytes()
    timed(train_step, spec["warmup"])
    step_times = timed(train_step, spec["repeats"])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - mem0
    else:
        peak = _peak_rss_bytes() - mem0
    timed(infer, 1)
    infer_times = timed(infer, spec["repeats"])
    flops = ConvFlops()
    conv_share = None
    if not spec.get("compile"):  # (a dispatch mode around compiled code would measure something else)
        with flops:
            train_step()
        conv_share = _conv_share(train_step, device)
    return {
        **spec,
        "step_s": statistics.median(step_times), "step_times_s": step_times,
        "infer_s": statistics.median(infer_times),
        "peak_bytes": peak,
        "conv_flops": flops.total, "conv_flops_forward": flops.forward,
        "conv_flops_backward_input": flops.backward_input, "conv_flops_backward_weight": flops.backward_weight,
        "conv_time_share": conv_share,
    }


def _conv_share(fn, device) -> float | None:
    """Fraction of one profiled call of ``fn`` spent in convolutions (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with profile(activities=acts) as prof:
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            wall = time.perf_counter() - t0
    except Exception:  # the profiler is a diagnostic: never fail the benchmark for it
        return None
    conv_us = 0.0
    for e in prof.key_averages():
        if e.key in ("aten::convolution", "aten::convolution_backward"):
            conv_us += e.device_time_total if cuda else e.cpu_time_total
    return conv_us / 1e6 / wall if wall > 0 else None


def conv_roof(spec: dict[str, Any]) -> dict[str, Any]:
    """Best dense convolution throughput (forward + backward) over the model's dense synaptic shapes."""
    import torch
    import torch.nn.functional as F

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    cfg = CONFIGS[spec["config"]]
    device = pick_device(spec["device"])
    c, h, w = cfg["frame_shape"]
    p, k = cfg["patch_size"], cfg["kernel_size"]
    widths = [p * p * c, *cfg["hidden_channels"]]
    hw = (h // p, w // p)
    b = cfg["batch_size"]
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.get("amp") or "")
    shapes = set()
    for i in range(len(widths) - 1):
        for batch, needs_input_grad in ((b * cfg["input_frames"], i > 0), (b, True)):
            shapes.add((batch, widths[i], widths[i + 1], needs_input_grad))
    rows = []
    for batch, cin, cout, gi in sorted(shapes):
        for fmt in ("contiguous", "channels_last"):
            mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
            g = torch.Generator().manual_seed(0)
            x = torch.randn(batch, cin, *hw, generator=g).to(device).contiguous(memory_format=mf)
            wt = torch.randn(cout, cin, k, k, generator=g).to(device).contiguous(memory_format=mf)
            x.requires_grad_(gi)
            wt.requires_grad_(True)
            go = torch.randn(batch, cout, *hw, generator=g).to(device).contiguous(memory_format=mf)

            def once(x=x, wt=wt, go=go):
                with torch.autocast(device.type, dtype=amp) if amp else _null():  # the step's precision
                    y = F.conv2d(x, wt, padding=k // 2)
                y.backward(go.to(y.dtype))

            for _ in range(3):
                once()
            times = []
            budget = time.perf_counter() + spec.get("roof_seconds", 2.0)
            while len(times) < 2 or (time.perf_counter() < budget and len(times) < 200):
                _sync(device)
                t0 = time.perf_counter()
                once()
                _sync(device)
                times.append(time.perf_counter() - t0)
            macs = batch * cout * hw[0] * hw[1] * cin * k * k
            flops = 2 * macs * (3 if gi else 2)
            best = min(times)
            med = statistics.median(times)
            rows.append({"batch": batch, "in": cin, "out": cout, "kernel": k, "size": list(hw), "format": fmt,
                         "input_grad": gi, "flops": flops, "median_s": med, "best_s": best,
                         "gflops_median": flops / med / 1e9, "gflops_best": flops / best / 1e9})
    top = max(rows, key=lambda r: r["gflops_median"])
    return {"config": spec["config"], "device": spec["device"], "amp": spec.get("amp"), "shapes": rows,
            "roof_gflops": top["gflops_median"], "roof_shape": top}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------------------------- orchestrating


def _child(task: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``task`` in a fresh Python process (clean peak-RSS / CUDA state) and return its JSON result."""
    cmd = [sys.executable, "-m", "stcsnn.bench", "--child", task, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise StcsnnError(f"benchmark subprocess failed ({task} {spec.get('neuron', '')} {spec.get('path', '')}):\n"
                          + "\n".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_info(device_name: str) -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dev = pick_device(device_name)
    info["device"] = str(dev)
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def default_neurons() -> list[str]:
    from stcsnn.neurons import list_neurons

    return [name for name, _ in list_neurons()]


def run_benchmark(configs: list[str], neurons: list[str], device: str = "auto", repeats: int | None = None,
                  warmup: int = 2, checkpoint_steps: list[int] | None = None, reference: bool = True,
                  allow_slow: bool = False, threads: int | None = None, amp: str | None = None,
                  compile: bool = False, checkpoint_neurons: list[str] | None = None,
                  log=print, progress=None, skip_roof: bool = False) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able results (see :func:`markdown` for the table).
    ``progress(results)``, if given, is called after every measurement (to write partial results)."""
    dev = pick_device(device)
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
    ckpt = [k for k in (checkpoint_steps or []) if k > 0]
    ckpt_neurons = checkpoint_neurons if checkpoint_neurons is not None else [n for n in ("stc_lif",) if n in neurons]
    results: dict[str, Any] = {"machine": machine_info(device), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "configs": {}}
    for cfg in configs:
        reps = repeats or DEFAULT_REPEATS[cfg]
        base = {"config": cfg, "device": str(dev), "repeats": reps, "warmup": warmup, "threads": threads,
                "amp": amp}
        if skip_roof:
            roof = {"config": cfg, "device": str(dev), "shapes": [], "roof_gflops": None, "roof_shape": None}
        else:
            log(f"[{cfg}] measuring the convolution roof ...")
            roof = _child("roof", base)
            log(f"[{cfg}] roof {roof['roof_gflops']:.1f} GFLOP/s ({_shape_str(roof['roof_shape'])})")
        rows: list[dict[str, Any]] = []
        results["configs"][cfg] = {"roof": roof, "rows": rows, "settings": CONFIGS[cfg]}
        for neuron in neurons:
            variants = [("fast", 0, False)]
            if reference:
                variants.append(("reference", 0, False))
            if compile:
                variants.append(("compile", 0, True))
            if neuron in ckpt_neurons:
                variants += [("fast", k, False) for k in ckpt]
            for path, k, comp in variants:
                spec = {**base, "neuron": neuron, "path": "reference" if path == "reference" else "fast",
                        "checkpoint_steps": k, "compile": comp, "variant": path}
                r = _child("variant", spec)
                if path == "fast" and not k:
                    fast_flops = r["conv_flops"]
                if comp:  # the same convolutions as the fast path (not counted under compile)
                    r["conv_flops"] = fast_flops
                r["roofline"] = (r["conv_flops"] / (r["step_s"] * roof["roof_gflops"] * 1e9)
                                 if roof["roof_gflops"] else None)
                rows.append(r)
                log(f"[{cfg}] {neuron:<10} {path:<9} ckpt={k:<2} step {r['step_s'] * 1e3:8.1f} ms  "
                    f"infer {r['infer_s'] * 1e3:8.1f} ms  peak {r['peak_bytes'] / 2**20:8.1f} MiB  "
                    f"roofline {r['roofline'] or float('nan'):.2f}")
                if progress is not None:
                    progress(results)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return results


def _shape_str(r: dict[str, Any]) -> str:
    return (f"batch {r['batch']}, {r['in']}->{r['out']}, {r['kernel']}x{r['kernel']}, "
            f"{r['size'][0]}x{r['size'][1]}, {r['format']}")


def _find(rows, neuron, variant, k=0):
    for r in rows:
        if r["neuron"] == neuron and r["variant"] == variant and r["checkpoint_steps"] == k:
            return r
    return None


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    where = m.get("gpu") or m.get("cpu") or m.get("processor")
    lines = [f"Machine: {where} ({m['device']}, {m['threads']} threads), torch {m['torch']}, "
             f"{results['started']}.", ""]
    for cfg, res in results["configs"].items():
        s = res["settings"]
        roof = res["roof"]
        rows = res["rows"]
        lines += [f"### `{cfg}`: hidden {s['hidden_channels']}, kernel {s['kernel_size']}, patch {s['patch_size']}, "
                  f"batch {s['batch_size']}, {s['input_frames']} -> {s['output_frames']} frames of "
                  f"{'x'.join(map(str, s['frame_shape']))}", "",
                  (f"Convolution roof: {roof['roof_gflops']:.0f} GFLOP/s (best dense synaptic convolution, "
                   f"forward + backward: {_shape_str(roof['roof_shape'])})." if roof["roof_gflops"] else
                   "Convolution roof: not measured (--skip-roof)."), ""]
        lines += ["| neuron | train step (ms) | reference (ms) | speed-up | inference (ms) | reference (ms) | "
                  "speed-up | peak mem (MiB) | reference (MiB) | conv GFLOP/step | roofline | reference roofline | "
                  "conv share of step |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        neurons = list(dict.fromkeys(r["neuron"] for r in rows))
        for n in neurons:
            f = _find(rows, n, "fast")
            ref = _find(rows, n, "reference")

            def val(r, key, scale=1.0, fmt="{:.1f}"):
                return fmt.format(r[key] * scale) if r and r.get(key) is not None else "-"

            speed = f"{ref['step_s'] / f['step_s']:.2f}x" if ref else "-"
            share = "-" if not f or f.get("conv_time_share") is None else f"{f['conv_time_share']:.0%}"
            ispeed = f"{ref['infer_s'] / f['infer_s']:.2f}x" if ref else "-"
            lines.append(f"| {n} | {val(f, 'step_s', 1e3)} | {val(ref, 'step_s', 1e3)} | {speed} | "
                         f"{val(f, 'infer_s', 1e3)} | {val(ref, 'infer_s', 1e3)} | {ispeed} | "
                         f"{val(f, 'peak_bytes', 2**-20)} | {val(ref, 'peak_bytes', 2**-20)} | "
                         f"{val(f, 'conv_flops', 1e-9, '{:.2f}')} | {val(f, 'roofline', 1, '{:.2f}')} | "
                         f"{val(ref, 'roofline', 1, '{:.2f}')} | "
                         f"{share} |")
        comp = [r for r in rows if r["variant"] == "compile"]
        if comp:
            lines += ["", "`torch.compile` of each cell's update (the trainer's `--compile`), instead of the fused "
                      "updates:", "", "| neuron | train step (ms) | vs fast path |", "|---|---:|---:|"]
            for r in comp:
                f = _find(rows, r["neuron"], "fast")
                lines.append(f"| {r['neuron']} | {r['step_s'] * 1e3:.1f} | {r['step_s'] / f['step_s']:.2f}x |")
        ck = [r for r in rows if r["checkpoint_steps"]]
        if ck:
            lines += ["", "Activation checkpointing over time (`checkpoint_steps = K`):", "",
                      "| neuron | K | train step (ms) | time vs default | peak mem (MiB) | memory vs default |",
                      "|---|---:|---:|---:|---:|---:|"]
            for r in ck:
                f = _find(rows, r["neuron"], "fast")
                lines.append(f"| {r['neuron']} | {r['checkpoint_steps']} | {r['step_s'] * 1e3:.1f} | "
                             f"{r['step_s'] / f['step_s']:.2f}x | {r['peak_bytes'] / 2**20:.1f} | "
                             f"{r['peak_bytes'] / max(f['peak_bytes'], 1):.2f}x |")
        lines.append("")
    lines += ["Times are medians over the timed repetitions after warm-up, each variant in a fresh process. "
              "Roofline = convolution FLOPs of the training step (forward 2 MACs; backward 2 MACs per "
              "gradient computed, input and weight; every convolution: synaptic, pathway, readout) / (step "
              "time x convolution roof). Conv share = fraction of a (profiled) step spent inside convolution "
              "ops, so roofline / conv share is the convolutions' own rate relative to the roof. Peak memory: "
              "growth of the peak resident set over the resident set before the first step (CPU), "
              "max allocated minus allocated before the first step (CUDA).", ""]
    return "\n".join(lines)


def write_results(results: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "bench.json", out / "bench.md"
    js.write_text(json.dumps(results, indent=1) + "\n")
    md.write_text(markdown(results))
    return js, md


# ---------------------------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser, standalone: bool = False) -> None:
    p.add_argument("--config", action="append", choices=sorted(CONFIGS), default=None,
                   help="configuration (repeatable; default small). 'paper' is meant for a GPU")
    p.add_argument("--neurons", default=None,
                   help="comma-separated neurons (default: every registered neuron, convlstm included)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions (default: 10 small, 5 paper)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    p.add_argument("--checkpoint-steps", default="5", metavar="K[,K...]",
                   help="activation-checkpointing chunk sizes to measure (0: none; default 5)")
    p.add_argument("--checkpoint-neurons", default=None,
                   help="neurons measured with checkpointing (default stc_lif)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference path")
    p.add_argument("--compile", action="store_true",
                   help="also measure torch.compile of each cell update (the trainer's --compile)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    if standalone:  # (``stcsnn --threads N bench`` has the global option)
        p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype (GPU)")
    p.add_argument("--allow-slow", action="store_true", help="allow the paper configuration on a CPU")
    p.add_argument("--skip-roof", action="store_true", help="skip the convolution roof (no roofline column)")
    p.add_argument("--out", default="runs/bench", help="directory for bench.json and bench.md")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark training/inference speed and memory: fast path vs reference",
                       description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=_bench)


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def _bench(args: argparse.Namespace) -> int:
    neurons = _csv(args.neurons) or default_neurons()
    try:
        ks = [int(k) for k in _csv(args.checkpoint_steps) or []]
    except ValueError:
        raise StcsnnError(f"--checkpoint-steps must be integers, got {args.checkpoint_steps!r}") from None
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()  # every measuring subprocess uses this process's thread count
    results = run_benchmark(args.config or ["small"], neurons, args.device, args.repeats, args.warmup, ks,
                            not args.no_reference, args.allow_slow, threads, args.amp, args.compile,
                            _csv(args.checkpoint_neurons), log=lambda s: print(s, file=sys.stderr, flush=True),
                            progress=lambda partial: write_results(partial, args.out), skip_roof=args.skip_roof)
    js, md = write_results(results, args.out)
    print(markdown(results))
    print(f"wrote {js} and {md}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/bench.py ...``: the same as ``stcsnn bench ...``."""
    p = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    add_arguments(p, standalone=True)
    args = p.parse_args(argv)
    try:
        return _bench(args)
    except StcsnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _child_main(argv: list[str]) -> int:
    task, spec = argv[0], json.loads(argv[1])
    result = conv_roof(spec) if task == "roof" else run_variant(spec)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # ``python -m stcsnn.bench --child TASK SPEC`` (subprocess), else the CLI
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2:]))
    sys.exit(main())
