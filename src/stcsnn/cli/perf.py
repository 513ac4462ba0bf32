"""The benchmark's command line: ``stcsnn bench`` and ``python benchmarks/bench.py`` (the same, standalone).

What is measured, and how, is :mod:`stcsnn.perf.bench`, imported (with torch) when the benchmark runs; the
entry point of each measuring subprocess is :mod:`stcsnn.perf.commands`."""

from __future__ import annotations

import argparse
import sys

from stcsnn.errors import StcsnnError

#: the first paragraph of :mod:`stcsnn.perf.bench`'s docstring, which says what is measured and how (reading it
#: there would import torch)
DESCRIPTION = ("``stcsnn bench``: training-step time, inference time, peak memory and roofline efficiency, fast vs "
               "plain; streaming latency, torch vs ONNX Runtime.")


def add_arguments(p: argparse.ArgumentParser, standalone: bool = False) -> None:
    """The options of ``stcsnn bench``; ``standalone`` adds ``--threads`` (``stcsnn --threads N`` has it)."""
    # no argparse choices: the names are stcsnn.perf.bench.CONFIGS's, checked by bench_command (reading them here
    # would import torch for --help)
    p.add_argument("--config", action="append", default=None, metavar="NAME",
                   help="configuration: small or paper (repeatable; default small). 'paper' is meant for a GPU")
    p.add_argument("--neurons", default=None,
                   help="comma-separated neurons (default: every registered neuron, convlstm included)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions (default: 10 small, 5 paper)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    p.add_argument("--checkpoint-steps", default="5", metavar="K[,K...]",
                   help="activation-checkpointing chunk sizes to measure (0: none; default 5)")
    p.add_argument("--checkpoint-neurons", default=None,
                   help="neurons measured with checkpointing (default stc_lif)")
    p.add_argument("--no-plain", action="store_true", help="skip the plain path")
    # the old name of --no-plain, kept for existing scripts ("reference" now means the paper's code only)
    p.add_argument("--no-reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true",
                   help="also measure torch.compile of each cell update (the trainer's --compile)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    if standalone:
        p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None,
                   help="autocast dtype of the measured rows (fp16: GPU; bf16: GPU, or a CPU with native bf16)")
    p.add_argument("--allow-slow", action="store_true", help="allow the paper configuration on a CPU")
    p.add_argument("--skip-roof", action="store_true",
                   help="skip the convolution roofs, fp32 and bf16 (no roofline column)")
    p.add_argument("--no-stream", action="store_true",
                   help="skip the streaming latency (torch step vs ONNX Runtime, batch 1; measured by default for "
                        "the small configuration only)")
    p.add_argument("--busy", type=int, default=None, metavar="K",
                   help="measure thread settings instead: the training step at --threads auto and at every fixed "
                        "count while K competing CPU-bound processes spin on the same CPUs (0: quiet; at most "
                        "the CPU count); "
                        "default neurons stc_lif")
    p.add_argument("--out", default="runs/bench", help="directory for bench.json and bench.md")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``stcsnn bench``."""
    p = sub.add_parser("bench", help="benchmark training/inference speed and memory: fast path vs plain",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=bench_command)


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def bench_command(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed options describe, print the table, write bench.json / bench.md."""
    from stcsnn.perf import bench

    for name in args.config or []:
        if name not in bench.CONFIGS:
            raise StcsnnError(f"--config {name!r}: expected a benchmark configuration, one of "
                              f"{', '.join(sorted(bench.CONFIGS))}")
    if getattr(args, "busy", None) is not None:
        return busy_command(args)
    neurons = _csv(args.neurons) or bench.default_neurons()
    try:
        ks = [int(k) for k in _csv(args.checkpoint_steps) or []]
    except ValueError:
        raise StcsnnError(f"--checkpoint-steps must be integers, got {args.checkpoint_steps!r}") from None
    if args.no_reference:
        print("note: --no-reference is deprecated, use --no-plain", file=sys.stderr)
    import torch

    if getattr(args, "thread_choice", None) is None and getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))  # standalone (benchmarks/bench.py); the CLI has applied it
    threads = torch.get_num_threads()  # every measuring subprocess uses this process's thread count
    from stcsnn.device import pick_device, slow_bf16_note

    note = slow_bf16_note(pick_device(args.device), args.amp)
    if note:
        print(note, file=sys.stderr, flush=True)
    results = bench.run_benchmark(
        args.config or ["small"], neurons, args.device, args.repeats, args.warmup, ks,
        plain=not (args.no_plain or args.no_reference), allow_slow=args.allow_slow, threads=threads,
        amp=args.amp, compile=args.compile, checkpoint_neurons=_csv(args.checkpoint_neurons),
        log=lambda s: print(s, file=sys.stderr, flush=True),
        progress=lambda partial: bench.write_results(partial, args.out), skip_roof=args.skip_roof,
        stream=False if args.no_stream else None)
    js, md = bench.write_results(results, args.out)
    print(bench.markdown(results))
    print(f"wrote {js} and {md}")
    return 0


def busy_command(args: argparse.Namespace) -> int:
    """``--busy K``: the thread table (see :func:`stcsnn.perf.bench.run_thread_benchmark`, which checks K)."""
    from stcsnn.perf import bench

    device = "cpu" if args.device == "auto" else args.device  # thread counts are a CPU matter
    results = bench.run_thread_benchmark(
        args.config or ["small"], _csv(args.neurons) or ["stc_lif"], args.busy, device, args.repeats, args.warmup,
        log=lambda s: print(s, file=sys.stderr, flush=True),
        progress=lambda partial: bench.write_results(partial, args.out))
    js, md = bench.write_results(results, args.out)
    print(bench.markdown(results))
    print(f"wrote {js} and {md}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/bench.py ...``: the same as ``stcsnn bench ...``."""
    p = argparse.ArgumentParser(prog="bench", description=DESCRIPTION)
    add_arguments(p, standalone=True)
    args = p.parse_args(argv)
    try:
        return bench_command(args)
    except StcsnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
