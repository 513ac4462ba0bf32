"""The benchmark's command line: ``stcsnn bench``, ``python benchmarks/bench.py`` (the same, standalone), and
:func:`child_main`, the entry point of each measuring subprocess (:func:`stcsnn.perf.bench.run_child`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stcsnn.errors import StcsnnError
from stcsnn.perf import bench


def _description() -> str:
    return (bench.__doc__ or "").split("\n\n")[0]


def add_arguments(p: argparse.ArgumentParser, standalone: bool = False) -> None:
    """The options of ``stcsnn bench``; ``standalone`` adds ``--threads`` (``stcsnn --threads N`` has it)."""
    p.add_argument("--config", action="append", choices=sorted(bench.CONFIGS), default=None,
                   help="configuration (repeatable; default small). 'paper' is meant for a GPU")
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
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype (GPU)")
    p.add_argument("--allow-slow", action="store_true", help="allow the paper configuration on a CPU")
    p.add_argument("--skip-roof", action="store_true", help="skip the convolution roof (no roofline column)")
    p.add_argument("--busy", type=int, default=None, metavar="K",
                   help="measure thread settings instead: the training step at --threads auto and at every fixed "
                        "count while K competing CPU-bound processes spin on the same CPUs (0: quiet; at most "
                        "the CPU count); "
                        "default neurons stc_lif")
    p.add_argument("--out", default="runs/bench", help="directory for bench.json and bench.md")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``stcsnn bench``."""
    p = sub.add_parser("bench", help="benchmark training/inference speed and memory: fast path vs plain",
                       description=_description())
    add_arguments(p)
    p.set_defaults(func=bench_command)


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def bench_command(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed options describe, print the table, write bench.json / bench.md."""
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
    results = bench.run_benchmark(
        args.config or ["small"], neurons, args.device, args.repeats, args.warmup, ks,
        plain=not (args.no_plain or args.no_reference), allow_slow=args.allow_slow, threads=threads,
        amp=args.amp, compile=args.compile, checkpoint_neurons=_csv(args.checkpoint_neurons),
        log=lambda s: print(s, file=sys.stderr, flush=True),
        progress=lambda partial: bench.write_results(partial, args.out), skip_roof=args.skip_roof)
    js, md = bench.write_results(results, args.out)
    print(bench.markdown(results))
    print(f"wrote {js} and {md}")
    return 0


def busy_command(args: argparse.Namespace) -> int:
    """``--busy K``: the thread table (see :func:`stcsnn.perf.bench.run_thread_benchmark`, which checks K)."""
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
    p = argparse.ArgumentParser(prog="bench", description=_description())
    add_arguments(p, standalone=True)
    args = p.parse_args(argv)
    try:
        return bench_command(args)
    except StcsnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_task(task: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement: ``roof`` (the convolution roof), ``variant`` (one variant of one neuron) or ``threads``
    (the thread settings of one neuron)."""
    if task == "roof":
        return bench.measure_roof(spec)
    if task == "variant":
        return bench.run_variant(spec)
    if task == "threads":
        return bench.run_threads(spec)
    raise StcsnnError(f"unknown benchmark task {task!r}: expected roof, variant or threads")


def child_main(argv: list[str]) -> int:
    """``--child TASK SPEC_JSON``: run one measurement and print its result as one JSON line (the last line of
    stdout is what the parent reads)."""
    task, spec = argv[0], json.loads(argv[1])
    print(json.dumps(run_task(task, spec)))
    return 0


if __name__ == "__main__":  # the CLI; ``--child TASK SPEC``: one measurement here (bench.run_child uses child_main)
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(main())
