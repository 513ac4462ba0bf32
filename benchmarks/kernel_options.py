"""The remaining levers of STC-LIF's CPU training step, each measured on its own (1 thread, medians).

    python benchmarks/kernel_options.py [--repeats 30] [--no-compile] [--out DIR]

Issue 18 asks for STC-LIF's fp32 training step at 0.60 of the convolution roof. Its profile (``stcsnn bench``,
README Performance) leaves the grouped pathway convolution (64 -> 128 channels, 16 groups, 5 x 5, on the
(4, 64, 16, 16) spikes of one frame; 57 calls a step forward and backward) at about a quarter of the roof, and
the elementwise neuron update, GroupNorm and layout copies as most of the rest. This script measures the
alternatives to what the fast path does today, at the `small` configuration's shapes, so that what was tried and
dropped can be checked on any machine:

1. the grouped convolution as oneDNN computes it (NCHW; channels-last with the two layout copies the fast path
   pays around it) and as im2col + batched matrix product (``unfold`` + ``matmul``: the same maths);
2. its weight gradient per frame (19 calls at batch 4) against one call over all frames (batch 76): deferring the
   weight gradients of a rollout to one batched call;
3. the same in bf16, beside the dense 64 -> 64 convolution (the shape oneDNN runs fastest);
4. GroupNorm + the fused STC-IF update, forward and backward, with the pathway tensor NCHW (today) or kept
   channels-last (no copies, the channels-last GroupNorm, a mixed-layout update);
5. the fused update's forward and backward as eager PyTorch (today's hand-written autograd function) and as
   ``torch.compile`` (inductor: generated C++, needs a compiler at run time) of the same formulas.

Nothing here asserts a time; each alternative's result is compared with today's (``max_rel_err``: the largest
difference over the largest magnitude). A gain here is an upper bound: part 2's, implemented in the predictor
(per-frame input gradients NCHW, one batched channels-last weight gradient per layer and rollout), made the whole
training step no faster (issue 18's closing note).
The printed table (and ``--out DIR``: ``kernel_options.md``/``.json``) is what the closing note of issue 18 cites."""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from stcsnn.device import cpu_model
from stcsnn.io import atomic_write_text
from stcsnn.neurons import fusion
from stcsnn.neurons.lif import MembraneUpdate
from stcsnn.neurons.registry import build_neuron
from stcsnn.perf.measure import time_calls

CL = torch.channels_last
B, C, HW, K, GROUPS, FRAMES = 4, 64, 16, 5, 16, 19  # the `small` bench configuration's per-frame shapes


def median_ms(fn, repeats: int) -> float:
    """Milliseconds of the middle call (upper middle for an even count) of ``repeats`` after 3 warm-up calls."""
    time_calls(fn, 3)
    times = sorted(time_calls(fn, repeats))
    return times[len(times) // 2] * 1e3


def conv_flops(batch: int, cin: int, cout: int, groups: int) -> float:
    return 2.0 * batch * cout * (cin // groups) * K * K * HW * HW


def grouped_conv(rows: list, repeats: int) -> None:
    x = torch.randn(B, C, HW, HW)
    w = torch.randn(2 * C, C // GROUPS, K, K)
    gy = torch.randn(B, 2 * C, HW, HW)
    flops = conv_flops(B, C, 2 * C, GROUPS)

    def onednn(x, w):
        return F.conv2d(x, w, padding=K // 2, groups=GROUPS)

    def channels_last(x, w):  # what the fast path does in training: convert in, convolve, convert out
        return F.conv2d(x.contiguous(memory_format=CL), w, padding=K // 2, groups=GROUPS).contiguous()

    def im2col(x, w):
        cols = F.unfold(x, K, padding=K // 2).view(x.shape[0], GROUPS, (C // GROUPS) * K * K, HW * HW)
        return torch.matmul(w.view(1, GROUPS, 2 * C // GROUPS, -1), cols).view(x.shape[0], 2 * C, HW, HW)

    ref = onednn(x.double(), w.double())
    for name, fn in (("oneDNN NCHW", onednn), ("oneDNN channels-last + 2 copies (today)", channels_last),
                     ("unfold + matmul", im2col)):
        fwd, total = forward_backward_ms(fn, x, w, gy, repeats)
        rows.append({"part": "grouped conv fp32", "variant": name, "forward_ms": fwd, "fwd_bwd_ms": total,
                     "gflops_fwd": flops / fwd / 1e6,
                     "max_rel_err": ((fn(x, w).double() - ref).abs().max() / ref.abs().max()).item()})


def forward_backward_ms(fn, x, w, gy, repeats: int) -> tuple[float, float]:
    """Median times of ``fn(x, w)`` without gradients, and of its forward + backward for ``gy``."""
    xg, wg = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    with torch.no_grad():
        fwd = median_ms(lambda: fn(x, w), repeats)
    return fwd, median_ms(lambda: fn(xg, wg).backward(gy), repeats)


def weight_grad(gy: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """The grouped pathway convolution's weight gradient alone."""
    return torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], [K // 2] * 2, [1, 1], False, [0, 0], GROUPS,
                                               [False, True, False])[1]


def deferred_weight_grad(rows: list, repeats: int) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.randn(2 * C, C // GROUPS, K, K).to(dtype).contiguous(memory_format=CL)
        per = [(torch.randn(B, C, HW, HW).to(dtype).contiguous(memory_format=CL),
                torch.randn(B, 2 * C, HW, HW).to(dtype).contiguous(memory_format=CL)) for _ in range(FRAMES)]
        x_all = torch.cat([p[0] for p in per]).contiguous(memory_format=CL)
        g_all = torch.cat([p[1] for p in per]).contiguous(memory_format=CL)
        summed = sum(weight_grad(g, x, w).double() for x, g in per)
        err = ((weight_grad(g_all, x_all, w).double() - summed).abs().max() / summed.abs().max()).item()
        per_frame = median_ms(functools.partial(lambda per, w: [weight_grad(g, x, w) for x, g in per], per, w),
                              repeats)
        batched = median_ms(functools.partial(weight_grad, g_all, x_all, w), repeats)
        name = str(dtype).removeprefix("torch.")
        rows.append({"part": f"pathway weight grad {name}", "variant": f"{FRAMES} calls at batch {B} (today)",
                     "total_ms": per_frame})
        rows.append({"part": f"pathway weight grad {name}", "variant": f"1 call at batch {B * FRAMES}",
                     "total_ms": batched, "max_rel_err": err})


def bf16_convs(rows: list, repeats: int) -> None:
    for name, cout, groups in (("grouped 64->128, 16 groups", 2 * C, GROUPS), ("dense 64->64", C, 1)):
        x = torch.randn(B, C, HW, HW).bfloat16().contiguous(memory_format=CL)
        w = torch.randn(cout, C // groups, K, K).bfloat16().contiguous(memory_format=CL)
        gy = torch.randn(B, cout, HW, HW).bfloat16().contiguous(memory_format=CL)
        fwd, total = forward_backward_ms(functools.partial(F.conv2d, padding=K // 2, groups=groups), x, w, gy, repeats)
        rows.append({"part": "conv bf16 channels-last", "variant": name, "forward_ms": fwd, "fwd_bwd_ms": total,
                     "gflops_fwd": conv_flops(B, C, cout, groups) / fwd / 1e6})


def norm_and_update(rows: list, repeats: int) -> None:
    cell = build_neuron("stc_lif", C, C, K)
    norm, spike_fn = cell.autapse.norm, cell.spike_fn
    cur = torch.randn(B, C, HW, HW).requires_grad_()
    v = torch.randn(B, C, HW, HW).requires_grad_()
    gs, gv = torch.randn(B, C, HW, HW), torch.randn(B, C, HW, HW)
    conv_out = torch.randn(B, 2 * C, HW, HW).contiguous(memory_format=CL)
    results = {}
    def run(y: Tensor, keep_cl: bool) -> None:
        p = fusion.group_norm(norm, y) if keep_cl else norm(y.contiguous())
        torch.autograd.backward(MembraneUpdate.apply(cur, v, p, None, None, spike_fn), (gs, gv))

    for name, keep_cl in (("pathways NCHW: copy, native GroupNorm (today)", False),
                          ("pathways channels-last: no copy, channels-last GroupNorm", True)):
        y = conv_out.clone().requires_grad_()
        run(y, keep_cl)
        results[name] = y.grad.double().clone()
        rows.append({"part": "GroupNorm + fused update", "variant": name,
                     "fwd_bwd_ms": median_ms(functools.partial(run, y, keep_cl), repeats)})
    a, b = results.values()
    rows[-1]["max_rel_err"] = ((a - b).abs().max() / a.abs().max()).item()


def _update_formulas(spike_fn):
    """The fused STC-IF update's forward and backward (lif.MembraneUpdate with k_v = k_i = None) as plain
    functions of tensors, for torch.compile."""
    alpha, m = spike_fn.alpha, C // GROUPS

    def forward(cur, v, p):
        b = cur.shape[0]
        g = (torch.sigmoid(p * 2.0) * 2.0).view(b, GROUPS, 2, m, HW, HW)
        h = (v.view(b, GROUPS, m, HW, HW) * g[:, :, 0] + cur.view(b, GROUPS, m, HW, HW) * g[:, :, 1]).view(v.shape)
        s = (h >= 1.0).to(h.dtype)
        return s, h - s, h

    def backward(cur, v, p, h, g_s, g_v):
        b = cur.shape[0]
        g = torch.sigmoid(p * 2.0) * 2.0
        g6 = g.view(b, GROUPS, 2, m, HW, HW)
        sig = torch.sigmoid((h - 1.0) * alpha)
        dh = (g_v + (g_s - g_v) * sig * (1.0 - sig) * alpha).view(b, GROUPS, m, HW, HW)
        d_path = torch.stack((dh * v.view(b, GROUPS, m, HW, HW), dh * cur.view(b, GROUPS, m, HW, HW)), 2)
        return (dh * g6[:, :, 1]).view(v.shape), (dh * g6[:, :, 0]).view(v.shape), d_path.view(p.shape) * g * (2 - g)

    return forward, backward


def compiled_update(rows: list, repeats: int) -> None:
    spike_fn = build_neuron("stc_lif", C, C, K).spike_fn
    cur, v = torch.randn(B, C, HW, HW).requires_grad_(), torch.randn(B, C, HW, HW).requires_grad_()
    p = torch.randn(B, 2 * C, HW, HW).requires_grad_()
    gs, gv = torch.randn(B, C, HW, HW), torch.randn(B, C, HW, HW)
    with torch.no_grad():
        eager_fwd = median_ms(lambda: MembraneUpdate.apply(cur, v, p, None, None, spike_fn), repeats)

    def eager_both():
        torch.autograd.backward(MembraneUpdate.apply(cur, v, p, None, None, spike_fn), (gs, gv))
    eager_total = median_ms(eager_both, repeats)
    rows.append({"part": "fused STC-IF update", "variant": "eager autograd function (today)",
                 "forward_ms": eager_fwd, "fwd_bwd_ms": eager_total})
    forward, backward = _update_formulas(spike_fn)
    t = time.perf_counter()
    cf, cb = torch.compile(forward, dynamic=False), torch.compile(backward, dynamic=False)
    with torch.no_grad():
        s, vv, h = cf(cur, v, p)
        grads = cb(cur, v, p, h, gs, gv)
        compile_s = time.perf_counter() - t
    cur.grad = v.grad = p.grad = None
    eager_both()
    with torch.no_grad():
        err = max(((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
                  for a, b in zip(grads, (cur.grad, v.grad, p.grad)))
        fwd = median_ms(lambda: cf(cur, v, p), repeats)
        bwd = median_ms(lambda: cb(cur, v, p, h, gs, gv), repeats)
    rows.append({"part": "fused STC-IF update", "variant": f"torch.compile (compiled in {compile_s:.0f} s), no "
                 "autograd node overhead", "forward_ms": fwd, "fwd_bwd_ms": fwd + bwd, "max_rel_err": err})


COLUMNS = ("forward_ms", "fwd_bwd_ms", "total_ms", "gflops_fwd", "max_rel_err")


def table(rows: list) -> str:
    lines = ["| part | variant | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * len(COLUMNS)]
    for r in rows:
        cells = [(f"{r[c]:.3g}" if c == "max_rel_err" else f"{r[c]:.3f}" if c.endswith("ms") else f"{r[c]:.1f}")
                 if c in r else "" for c in COLUMNS]
        lines.append(f"| {r['part']} | {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true", help="skip part 5 (torch.compile needs a C++ compiler)")
    ap.add_argument("--out", type=Path, help="write kernel_options.md and .json here (a new or empty folder)")
    args = ap.parse_args()
    if args.out is not None and (args.out.is_symlink() or args.out.exists() and (
            not args.out.is_dir() or any(args.out.iterdir()))):
        sys.exit(f"kernel_options.py: --out must be a new or empty folder (not a symbolic link), got {args.out}")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"
    rows: list = []
    grouped_conv(rows, args.repeats)
    deferred_weight_grad(rows, args.repeats)
    bf16_convs(rows, args.repeats)
    norm_and_update(rows, args.repeats)
    if not args.no_compile:
        compiled_update(rows, args.repeats)
    head = (f"CPU: {cpu_model()}; torch {torch.__version__}; Python {platform.python_version()}; 1 thread; "
            f"medians of {args.repeats}; 1-minute load before: {load}")
    text = head + "\n\n" + table(rows)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "kernel_options.md", text + "\n")
        report = json.dumps({"machine": head, "rows": rows}, indent=1)
        atomic_write_text(args.out / "kernel_options.json", report + "\n")


if __name__ == "__main__":
    main()
