"""Measurement primitives: device sync, timing (calls and streams), CPU and CUDA peak memory, convolution FLOPs, the
convolution roof.

Each measures one thing and asserts nothing (benchmarks are never tests). Clocks can be injected, so the timing
logic is testable without timing anything.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from stcsnn.device import autocast

Clock = Callable[[], float]


# ---------------------------------------------------------------------------------------------- time


def sync(device: torch.device | None) -> None:
    """Wait for the work queued on ``device``: CUDA runs asynchronously, a timer must not stop before it ends."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], n: int, device: torch.device | None = None,
               clock: Clock = time.perf_counter) -> list[float]:
    """Seconds of each of ``n`` calls of ``fn``, the device synchronised before and after each call."""
    times = []
    for _ in range(n):
        sync(device)
        t0 = clock()
        fn()
        sync(device)
        times.append(clock() - t0)
    return times


def median_time(fn: Callable[[], Any], n: int, device: torch.device | None = None,
                clock: Clock = time.perf_counter) -> float:
    """Median seconds of ``n`` (>= 1) calls of ``fn``: robust to the odd slow call on a shared machine."""
    return statistics.median(time_calls(fn, n, device, clock))


def time_for(fn: Callable[[], Any], seconds: float, device: torch.device | None = None, min_calls: int = 2,
             max_calls: int = 200, clock: Clock = time.perf_counter) -> list[float]:
    """Seconds of each call of ``fn``: at least ``min_calls`` calls, then more until ``seconds`` have passed or
    ``max_calls`` calls were made (a fixed time budget whatever the speed of the call)."""
    budget = clock() + seconds
    times: list[float] = []
    while len(times) < min_calls or (clock() < budget and len(times) < max_calls):
        times += time_calls(fn, 1, device, clock)
    return times


# ---------------------------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: fall back to the peak so far (growth then reads low, never high)
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (it never resets: one fresh process per measurement)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def memory_mark(device: torch.device) -> int:
    """Start a peak-memory measurement: resets CUDA's peak counter; returns the baseline for :func:`peak_growth`."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return rss_bytes()


def peak_growth(device: torch.device, mark: int) -> int:
    """Peak memory since :func:`memory_mark` above its baseline: CUDA -- ``max_memory_allocated``; CPU -- the peak
    resident set (so, on a CPU, what ran before the mark must not have peaked higher)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - mark
    return peak_rss_bytes() - mark


# ---------------------------------------------------------------------------------------------- convolutions


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

    def __enter__(self) -> ConvFlops:
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
                    grad_out, w, mask = args[0], args[2], args[-1]  # mask: (input, weight, bias) wanted
                    macs = grad_out.numel() * (w.numel() // w.shape[0])
                    counter.backward_input += 2 * macs if mask[0] else 0
                    counter.backward_weight += 2 * macs if mask[1] else 0
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)


def conv_time_share(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Fraction of one profiled call of ``fn`` spent in convolutions (forward and backward); ``None`` if the
    profiler fails."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with profile(activities=acts) as prof:
            (wall,) = time_calls(fn, 1, device)
    except Exception:  # the profiler is a diagnostic: never fail the benchmark for it
        return None
    conv_us = 0.0
    for e in prof.key_averages():
        if e.key in ("aten::convolution", "aten::convolution_backward"):
            conv_us += e.device_time_total if cuda else e.cpu_time_total
    return conv_us / 1e6 / wall if wall > 0 else None


def conv_rate(batch: int, cin: int, cout: int, kernel: int, size: tuple[int, int], fmt: str, input_grad: bool,
              device: torch.device, amp: str | None = None, seconds: float = 2.0) -> dict[str, Any]:
    """Throughput of one same-padded dense convolution, forward + backward (weight gradient, and the input
    gradient if ``input_grad``), in memory format ``fmt`` (``contiguous`` / ``channels_last``) under ``amp``."""
    mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, *size, generator=g).to(device).contiguous(memory_format=mf)
    wt = torch.randn(cout, cin, kernel, kernel, generator=g).to(device).contiguous(memory_format=mf)
    x.requires_grad_(input_grad)
    wt.requires_grad_(True)
    go = torch.randn(batch, cout, *size, generator=g).to(device).contiguous(memory_format=mf)

    def once() -> None:
        with autocast(device, amp):  # the training step's precision
            y = F.conv2d(x, wt, padding=kernel // 2)
        y.backward(go.to(y.dtype))

    time_calls(once, 3, device)  # warm-up: algorithm selection, allocator, caches
    times = time_for(once, seconds, device)
    flops = 2 * batch * cout * size[0] * size[1] * cin * kernel * kernel * (3 if input_grad else 2)
    best, med = min(times), statistics.median(times)
    return {"batch": batch, "in": cin, "out": cout, "kernel": kernel, "size": list(size), "format": fmt,
            "input_grad": input_grad, "flops": flops, "median_s": med, "best_s": best,
            "gflops_median": flops / med / 1e9, "gflops_best": flops / best / 1e9}


def conv_roof(shapes: Iterable[tuple[int, int, int, bool]], kernel: int, size: tuple[int, int],
              device: torch.device, amp: str | None = None, seconds: float = 2.0) -> dict[str, Any]:
    """The best median throughput over ``shapes`` ``(batch, in, out, input_grad)`` in both memory formats: the
    roof a convolution-bound step could reach on this machine."""
    rows = [conv_rate(batch, cin, cout, kernel, size, fmt, gi, device, amp, seconds)
            for batch, cin, cout, gi in shapes for fmt in ("contiguous", "channels_last")]
    top = max(rows, key=lambda r: r["gflops_median"])
    return {"shapes": rows, "roof_gflops": top["gflops_median"], "roof_shape": top}


# ---------------------------------------------------------------------------------------------- streaming


def stream_times(step: Callable[[Any], Any], observed: Sequence[Any], warmup: int, n: int,
                 device: torch.device | None = None, clock: Clock = time.perf_counter) -> list[float]:
    """Seconds of each of ``n`` streaming calls of ``step`` (one frame in, its forecast out; the state is
    ``step``'s own, carried from call to call): the ``observed`` frames first, then ``warmup`` untimed and ``n``
    timed calls, each fed the previous call's forecast (what a stream does after its observed prefix)."""
    if not observed:
        raise ValueError("stream_times needs at least one observed frame to start the stream")
    for frame in observed:
        x = step(frame)
    for _ in range(warmup):
        x = step(x)
    times = []
    for _ in range(n):
        sync(device)
        t0 = clock()
        x = step(x)
        sync(device)
        times.append(clock() - t0)
    return times
