"""``stcsnn energy``, ``stcsnn analyze gradients | dynamics`` and ``stcsnn reproduce``."""

from __future__ import annotations

import argparse
import shlex

import torch

from stcsnn.device import pick_device
from stcsnn.errors import StcsnnError


def _model_args(p: argparse.ArgumentParser, config_required: bool = False) -> None:
    p.add_argument("--config", required=config_required,
                   help="YAML config (model and data); optional with --checkpoint, which holds its own config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for nesting; value parsed as YAML); repeatable")
    p.add_argument("--checkpoint", metavar="CKPT", help="trained weights (default: a fresh model seeded by `seed`)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="data split (default test)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default cpu)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("energy", help="count MACs / SOPs per layer on a real forward pass and estimate energy",
                       description="Hooks on every convolution count, over a real rollout, the MACs, the input "
                                   "firing rates and the synaptic operations (SOPs = MACs x input rate, for spike "
                                   "inputs), and estimate energy at 45 nm (0.9 pJ per AC, 4.6 pJ per MAC) next to "
                                   "the same network as an ANN. See stcsnn.analysis.energy for what is counted.")
    _model_args(p)
    p.add_argument("--batches", type=int, default=1, help="batches to average over (default 1)")
    p.add_argument("--batch-size", type=int, help="sequences per batch (default: eval_batch_size or batch_size)")
    p.add_argument("--out", help="folder for energy.csv / energy_layers.csv / energy.json (default runs/energy)")
    p.set_defaults(func=_energy)

    p = sub.add_parser("analyze", help="look inside a model: gradients through time, neuron dynamics")
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    p.set_defaults(func=lambda args: _missing_analysis())
    g = asub.add_parser("gradients", help="loss gradient w.r.t. the membrane potential at every step (BPTT) and "
                                          "the per-step temporal factor dV[t]/dV[t-1]",
                        description="For fresh seeded models of each --neurons (or a --checkpoint) and one batch: "
                                    "||dL/dV_l[t]|| per layer and step, and the distribution of dV[t]/dV[t-1] "
                                    "along the membrane path. CSV and a PNG with one curve per neuron type.")
    _model_args(g)
    g.add_argument("--neurons", help="comma-separated neurons for fresh models (default lif,stc_lif)")
    g.add_argument("--batch-size", type=int, default=8, help="sequences in the batch (default 8)")
    g.add_argument("--out", help="output folder (default runs/analysis/gradients)")
    g.set_defaults(func=_gradients)
    d = asub.add_parser("dynamics", help="STC gains, firing rates per layer and step, a spike raster",
                        description="Distributions of the temporal gain 1 + tanh A and the spatial gain "
                                    "1 + tanh B (STC neurons), firing rates per layer and step, and a spike "
                                    "raster of one sample. CSV and PNG.")
    _model_args(d)
    d.add_argument("--sample", type=int, default=0, help="sample (index in the split) for the raster (default 0)")
    d.add_argument("--batch-size", type=int, default=8, help="sequences for the distributions (default 8)")
    d.add_argument("--raster-neurons", type=int, default=128, help="neurons per layer in the raster (default 128)")
    d.add_argument("--out", help="output folder (default runs/analysis/dynamics)")
    d.set_defaults(func=_dynamics)

    p = sub.add_parser("reproduce", help="train and evaluate the comparison grid, write one table and plots",
                       description="Train every (dataset, model, seed) cell with the ordinary training loop, "
                                   "then write results.md / results.csv (mean and std over seeds) and per-horizon "
                                   "plots. Re-running skips finished cells and resumes unfinished ones.")
    p.add_argument("--scale", required=True, choices=["tiny", "small", "paper"],
                   help="tiny: minutes on 2 CPU cores; small: hours on CPU / minutes on GPU; paper: configs/")
    p.add_argument("--datasets", help="comma-separated datasets (default: the scale's)")
    p.add_argument("--models", help="comma-separated models (default: the 8 neurons of the paper and convlstm)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of every cell; repeatable")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the scale's)")
    p.add_argument("--configs", help="folder of <dataset>/<model>.yaml for --scale paper (default configs/)")
    p.add_argument("--out", default="runs/reproduce", help="root folder (default runs/reproduce)")
    p.add_argument("--quiet", action="store_true", help="no per-step training progress")
    p.set_defaults(func=_reproduce)


def _missing_analysis() -> int:
    raise StcsnnError("stcsnn analyze needs an analysis: gradients or dynamics (see stcsnn analyze --help)")



def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise StcsnnError(f"expected a comma-separated list of names, got {text!r}")
    return names


# ---------------------------------------------------------------------------------------------- energy


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


# ---------------------------------------------------------------------------------------------- gradients


def _gradients(args: argparse.Namespace) -> int:
    from stcsnn.analysis.common import batch_indices, get_batch, out_dir, resolve_model, write_csv
    from stcsnn.analysis.gradients import FIELDS, gradient_rows, histogram_rows, plot_gradients, trace_gradients

    device = pick_device(args.device)
    out = out_dir(args.out, "runs/analysis/gradients")
    if args.checkpoint is not None:
        if args.neurons is not None:
            raise StcsnnError("--neurons builds fresh models; with --checkpoint the neuron is the checkpoint's")
        specs = [None]
    else:
        specs = _split_names(args.neurons) or ["lif", "stc_lif"]
        from stcsnn.neurons.registry import get_spec

        for n in specs:
            get_spec(n)
    traces, rows = [], []
    frames = None
    for neuron in specs:
        model, cfg, dataset = resolve_model(args.config, args.set, args.checkpoint, device, args.split, neuron)
        if frames is None:
            frames = get_batch(dataset, batch_indices(dataset, args.batch_size), device)
        trace = trace_gradients(model, frames, cfg)
        traces.append(trace)
        rows += gradient_rows(trace)
        first = [trace.grad_norm[l][0] for l in range(len(trace.grad_norm))]
        factors = [r for r in rows if r["neuron"] == trace.neuron and r["step"] > 0]
        med = sum(r["factor_median"] for r in factors) / max(len(factors), 1)
        top = max((r["factor_max"] for r in factors), default=float("nan"))
        gt1 = sum(r["factor_gt1"] for r in factors) / max(len(factors), 1)
        m = trace.membrane.upper()
        print(f"{trace.neuron:<10} loss {trace.loss:.5f}  |dL/d{m}[0]| per layer "
              + " ".join(f"{g:.3g}" for g in first)
              + f"  factor d{m}[t]/d{m}[t-1]: mean median {med:.3f}, max {top:.3f}, share > 1 {gt1:.2%}")
    hist, _ = histogram_rows(traces)
    paths = [write_csv(out / "gradients.csv", rows, FIELDS), write_csv(out / "factor_hist.csv", hist)]
    png = plot_gradients(traces, hist, out / "gradients.png")
    if png is not None:
        paths.append(png)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---------------------------------------------------------------------------------------------- dynamics


def _dynamics(args: argparse.Namespace) -> int:
    from stcsnn.analysis.common import batch_indices, get_batch, out_dir, resolve_model, write_csv
    from stcsnn.analysis.dynamics import (
        gain_histogram_rows,
        gain_rows,
        plot_dynamics,
        raster_rows,
        rate_rows,
        trace_dynamics,
    )

    if args.raster_neurons < 1:
        raise StcsnnError(f"--raster-neurons must be >= 1, got {args.raster_neurons}")
    device = pick_device(args.device)
    out = out_dir(args.out, "runs/analysis/dynamics")
    model, cfg, dataset = resolve_model(args.config, args.set, args.checkpoint, device, args.split)
    if not 0 <= args.sample < len(dataset):
        raise StcsnnError(f"--sample {args.sample} out of range: the {args.split} split has {len(dataset)} sequences")
    indices = batch_indices(dataset, args.batch_size)
    if args.sample not in indices:
        indices = [args.sample] + indices[:-1]
    frames = get_batch(dataset, indices, device)
    trace = trace_dynamics(model, frames, cfg)
    raster = raster_rows(trace, indices.index(args.sample), args.raster_neurons)
    paths = [write_csv(out / "rates.csv", rate_rows(trace)), write_csv(out / "raster.csv", raster)]
    gains = gain_rows(trace)
    if gains:
        paths += [write_csv(out / "gains.csv", gains), write_csv(out / "gain_hist.csv", gain_histogram_rows(trace))]
    else:
        print(f"note: {cfg.neuron} has no STC pathways, so no gain distributions")
    paths += plot_dynamics(trace, raster, out, cfg.input_frames)
    for l, r in enumerate(trace.rates):
        line = f"layer {l}: firing rate {sum(r) / len(r):.4f} (steps {min(r):.3f}..{max(r):.3f})"
        g = trace.gains[l]
        if g is not None:
            ta = torch.stack(g["temporal"]).mean().item()
            sb = torch.stack(g["spatial"]).mean().item()
            line += f", mean temporal gain {ta:.3f}, mean spatial gain {sb:.3f}"
        print(line)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---------------------------------------------------------------------------------------------- reproduce


def _reproduce(args: argparse.Namespace) -> int:
    from stcsnn.analysis.reproduce import run_grid
    from stcsnn.config import parse_overrides

    overrides = parse_overrides(args.set)
    if args.device is not None:
        overrides["device"] = args.device
    command = f"stcsnn reproduce --scale {args.scale}"
    for flag in ("datasets", "models", "device", "configs", "threads"):
        if getattr(args, flag, None) not in (None, "auto"):
            command += f" --{flag} {shlex.quote(str(getattr(args, flag)))}"
    command += f" --seeds {args.seeds}" + "".join(f" --set {shlex.quote(s)}" for s in args.set)
    return run_grid(args.scale, _split_names(args.datasets), _split_names(args.models), args.seeds, args.out,
                    overrides, args.configs, progress=not args.quiet, command=command)
