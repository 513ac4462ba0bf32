"""``stcsnn energy``, ``stcsnn analyze gradients | dynamics`` (its handlers: :mod:`stcsnn.cli.analyze`) and
``stcsnn reproduce``."""

from __future__ import annotations

import argparse
import shlex

from stcsnn.analysis.scales import SCALES  # plain data, no torch: the parser stays light
from stcsnn.cli import analyze
from stcsnn.cli.options import model_args, split_names
from stcsnn.errors import StcsnnError


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_energy(sub)
    analyze.add_commands(sub)
    _add_reproduce(sub)


def _add_energy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("energy", help="count MACs / SOPs per layer on a real forward pass and estimate energy",
                       description="Hooks on every convolution count, over a real rollout, the MACs, the input "
                                   "firing rates and the synaptic operations (SOPs = MACs x input rate, for spike "
                                   "inputs), and estimate energy at 45 nm (0.9 pJ per AC, 4.6 pJ per MAC) next to "
                                   "the same network as an ANN. See stcsnn.analysis.energy for what is counted.")
    model_args(p)
    p.add_argument("--batches", type=int, default=1, help="batches to average over (default 1)")
    p.add_argument("--batch-size", type=int, help="sequences per batch (default: eval_batch_size or batch_size)")
    p.add_argument("--out", help="folder for energy.csv / energy_layers.csv / energy.json (default runs/energy)")
    p.set_defaults(func=_energy)


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="train and evaluate the comparison grid, write one table and plots",
                       description="Train every (dataset, model, seed) cell with the ordinary training loop (one "
                                   "run folder per cell), evaluate each past its trained horizon, then write "
                                   "table.md / table.csv (mean ± std over seeds, STC-X minus X per seed), "
                                   "results.json and per-horizon plots in <out>/<scale>/. Re-running skips "
                                   "finished cells and resumes unfinished ones.")
    p.add_argument("--scale", required=True, choices=list(SCALES),
                   help="; ".join(f"{name}: {spec['help']}" for name, spec in SCALES.items()))
    p.add_argument("--datasets", help="comma-separated datasets, or the variants of a scale with variants such as "
                                      "recall (recall_d0,recall_d5; default: the scale's)")
    p.add_argument("--models", help="comma-separated models (default: the scale's)")
    # the most seeds allowed (stcsnn.analysis.scales.MAX_SEEDS) is named by the error that refuses more
    p.add_argument("--seeds", help="a count N (seeds 0..N-1) or a list such as 0,2 or 1-2 (default: the scale's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of every cell; repeatable")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the scale's)")
    p.add_argument("--configs", help="folder of <dataset>/reference.yaml for --scale paper (default configs/)")
    p.add_argument("--horizon", type=int, metavar="N",
                   help="frames predicted by the long-term evaluation, past the trained output_frames (default: "
                        "the scale's, 30 for a 10 -> 10 model; 0: none)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="cells trained at a time, each in its own process with threads/N threads (default 1)")
    p.add_argument("--max-cells", type=int, metavar="N", help="train at most N cells now (the rest on a later run)")
    p.add_argument("--out", default="runs/reproduce", help="root folder (default runs/reproduce)")
    p.add_argument("--quiet", action="store_true", help="no per-step training progress")
    p.set_defaults(func=_reproduce)

def _energy(args: argparse.Namespace) -> int:
    from stcsnn.analysis.common import (
        batch_indices,
        clean_json,
        get_batch,
        out_dir,
        resolve_model,
        write_csv,
        write_json,
    )
    from stcsnn.analysis.energy import count_operations, format_table
    from stcsnn.device import pick_device

    if args.batches < 1:
        raise StcsnnError(f"--batches must be >= 1, got {args.batches}")
    device = pick_device(args.device)
    out = out_dir(args.out, "runs/energy")
    model, cfg, dataset = resolve_model(args.config, args.set, args.checkpoint, device, args.split)
    size = args.batch_size or cfg.eval_batch_size or cfg.batch_size
    batches = [get_batch(dataset, idx, device) for b in range(args.batches)
               if (idx := batch_indices(dataset, size, b))]
    report = count_operations(model, batches, cfg.input_frames, cfg.output_frames)
    source = args.checkpoint or f"fresh {cfg.neuron} model (seed {cfg.seed})"
    print(f"{cfg.neuron} on {cfg.dataset} ({args.split}), {source}")
    print(format_table(report))
    payload = {"neuron": cfg.neuron, "dataset": cfg.dataset, "split": args.split, "source": source,
               "config": cfg.to_dict(), **report.to_dict()}
    paths = [write_csv(out / "energy.csv", report.convs), write_csv(out / "energy_layers.csv",
                                                                    report.layers + [report.total]),
             write_json(out / "energy.json", clean_json(payload))]
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0

# ---------------------------------------------------------------------------------------------- reproduce


def _reproduce(args: argparse.Namespace) -> int:
    from stcsnn.analysis.reproduce import parse_seeds, run_grid
    from stcsnn.config import parse_overrides

    overrides = parse_overrides(args.set)
    if args.device is not None:
        overrides["device"] = args.device
    command = f"stcsnn reproduce --scale {args.scale}"
    for flag in ("datasets", "models", "seeds", "device", "configs", "horizon", "jobs", "max_cells", "threads"):
        value = getattr(args, flag, None)
        if value not in (None, "auto") and not (flag == "jobs" and value == 1):
            command += f" --{flag.replace('_', '-')} {shlex.quote(str(value))}"
    command += "".join(f" --set {shlex.quote(s)}" for s in args.set)
    choice = getattr(args, "thread_choice", None)
    return run_grid(args.scale, split_names(args.datasets), split_names(args.models), parse_seeds(args.seeds),
                    args.out, overrides, args.configs, progress=not args.quiet, command=command,
                    horizon=args.horizon, jobs=args.jobs, threads=choice.threads if choice else None,
                    max_cells=args.max_cells)
