"""``stcsnn analyze gradients | dynamics``: gradients through time and neuron dynamics, of fresh models, trained
checkpoints or every cell of a finished ``stcsnn reproduce`` grid (:mod:`stcsnn.analysis.gradients`,
:mod:`stcsnn.analysis.dynamics`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from stcsnn.cli.options import model_args, split_names
from stcsnn.errors import StcsnnError

if TYPE_CHECKING:
    import torch


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``stcsnn analyze`` (called by :func:`stcsnn.cli.analysis.add_commands`, in its place in the help)."""
    p = sub.add_parser("analyze", help="look inside a model: gradients through time, neuron dynamics")
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    p.set_defaults(func=lambda args: _missing_analysis())
    g = asub.add_parser("gradients", help="loss gradient w.r.t. the membrane potential at every step (BPTT) and "
                                          "the per-step temporal factor dV[t]/dV[t-1]",
                        description="For fresh seeded models of each --neurons, trained --checkpoint(s), or every "
                                    "finished cell of a --grid, and one test batch: ||dL/dV_l[t]|| per layer and "
                                    "step (the training objective, backpropagated through time), and the "
                                    "distribution of dV[t]/dV[t-1] along the membrane path (LIF: 0.5 (1 - phi'), "
                                    "STC: (1 + tanh A)(1 - phi')). CSV and PNGs (with --grid: one per STC-X / X "
                                    "pair, mean over seeds).")
    model_args(g, many=True)
    g.add_argument("--grid", metavar="DIR", help="a finished `stcsnn reproduce` grid folder (e.g. "
                                                 "runs/reproduce/small): every cell's evaluated checkpoint")
    g.add_argument("--neurons", help="comma-separated neurons for fresh models (default lif,stc_lif)")
    g.add_argument("--batch-size", type=int, default=8, help="sequences in the batch (default 8)")
    g.add_argument("--lags", action="store_true",
                   help="also the per-lag view: the norm of d x_hat[t+k] / d x[t] (prediction vs input frame) "
                        "against the lag k, on an autoregressive rollout, and relative to lag 1 (lags.csv)")
    g.add_argument("--lag-probes", type=int, default=8, metavar="R",
                   help="random probes per output frame for --lags (Hutchinson's estimate; 0: exact, one "
                        "backward pass per output pixel; default 8)")
    g.add_argument("--out", help="output folder (default runs/analysis/gradients; with --grid DIR/gradients)")
    g.set_defaults(func=_gradients)
    _add_dynamics(asub)


def _add_dynamics(asub: argparse._SubParsersAction) -> None:
    d = asub.add_parser("dynamics", help="STC gains, firing rates per layer and step, a spike raster",
                        description="Distributions of the temporal gain 1 + tanh A and the spatial gain "
                                    "1 + tanh B (STC neurons) per layer, on moving-object pixels and on the "
                                    "background (object: the input frame the step reads exceeds "
                                    "--object-threshold somewhere in the neuron's patch), firing rates per layer "
                                    "and step, and a spike raster of one sample. CSV and PNG.")
    model_args(d)
    d.add_argument("--grid", metavar="DIR", help="a finished `stcsnn reproduce` grid folder: every STC cell's "
                                                 "evaluated checkpoint, one table")
    d.add_argument("--object-threshold", type=float, default=0.1,
                   help="input intensity above which a patch counts as moving object (default 0.1)")
    d.add_argument("--sample", type=int, default=0, help="sample (index in the split) for the raster (default 0)")
    d.add_argument("--batch-size", type=int, default=8, help="sequences for the distributions (default 8)")
    d.add_argument("--raster-neurons", type=int, default=128, help="neurons per layer in the raster (default 128)")
    d.add_argument("--out", help="output folder (default runs/analysis/dynamics; with --grid DIR/dynamics)")
    d.set_defaults(func=_dynamics)

def _missing_analysis() -> int:
    raise StcsnnError("stcsnn analyze needs an analysis: gradients or dynamics (see stcsnn analyze --help)")


# ---------------------------------------------------------------------------------------------- gradients


def _gradient_line(name: str, traces: list) -> str:
    """One printed line per model: mean over its traces (seeds) of the loss, |dL/dV[0]| per layer and the
    factor statistics."""
    from stcsnn.analysis.gradients import pooled_factors

    layers = len(traces[0].grad_norm)
    first = [sum(t.grad_norm[l][0] for t in traces) / len(traces) for l in range(layers)]
    x = pooled_factors(traces)
    med = x.median().item() if x.numel() else float("nan")
    top = x.max().item() if x.numel() else float("nan")
    gt1 = (x > 1).float().mean().item() if x.numel() else float("nan")
    m = traces[0].membrane.upper()
    seeds = f" ({len(traces)} seeds)" if len(traces) > 1 else ""
    return (f"{name:<10} loss {sum(t.loss for t in traces) / len(traces):.5f}  |dL/d{m}[0]| per layer "
            + " ".join(f"{g:.3g}" for g in first)
            + f"  factor d{m}[t]/d{m}[t-1]: median {med:.3f}, max {top:.3f}, share > 1 {gt1:.2%}{seeds}")


def _gradients(args: argparse.Namespace) -> int:
    from stcsnn.analysis.common import batch_indices, get_batch, out_dir, resolve_model, write_csv
    from stcsnn.analysis.gradients import (
        FIELDS,
        factor_summary_rows,
        gradient_rows,
        histogram_rows,
        plot_gradients,
        trace_gradients,
    )
    from stcsnn.device import pick_device

    device = pick_device(args.device)
    checkpoints = list(args.checkpoint or [])
    if args.grid is not None:
        if checkpoints or args.neurons is not None or args.config is not None:
            raise StcsnnError("--grid analyses the grid's own checkpoints: give no --config, --checkpoint or "
                              "--neurons with it")
        return _gradients_grid(args, device)
    out = out_dir(args.out, "runs/analysis/gradients")
    if checkpoints:
        if args.neurons is not None:
            raise StcsnnError("--neurons builds fresh models; with --checkpoint the neuron is the checkpoint's")
        specs: list = [(None, c) for c in checkpoints]
    else:
        names = split_names(args.neurons) or ["lif", "stc_lif"]
        from stcsnn.neurons.registry import get_spec

        for n in names:
            get_spec(n)
        specs = [(n, None) for n in names]
    if args.lags and args.lag_probes < 0:
        raise StcsnnError(f"--lag-probes must be 0 (exact) or a number of probes, got {args.lag_probes}")
    traces, rows, lag_rows = [], [], []
    frames = None
    for neuron, ckpt in specs:
        model, cfg, dataset = resolve_model(args.config, args.set, ckpt, device, args.split, neuron)
        if frames is None or tuple(frames.shape[2:]) != tuple(cfg.frame_shape):
            frames = get_batch(dataset, batch_indices(dataset, args.batch_size), device)
        trace = trace_gradients(model, frames, cfg)
        if [t for t in traces if t.neuron == trace.neuron]:  # the same neuron twice: name them apart
            trace.label = f"{trace.neuron} ({ckpt})"
        traces.append(trace)
        rows += [{**r, "neuron": trace.name, **({"checkpoint": ckpt} if ckpt else {})} for r in gradient_rows(trace)]
        print(_gradient_line(trace.name, [trace]))
        if args.lags:
            lag_rows += _lag_rows(trace.name, model, frames, cfg, args.lag_probes or None)
    hist, _ = histogram_rows(traces)
    fields = FIELDS + (["checkpoint"] if checkpoints else [])
    paths = [write_csv(out / "gradients.csv", rows, fields), write_csv(out / "factor_hist.csv", hist),
             write_csv(out / "factor_summary.csv", factor_summary_rows({t.name: [t] for t in traces}))]
    if lag_rows:
        paths.append(write_csv(out / "lags.csv", lag_rows))
    png = plot_gradients(traces, hist, out / "gradients.png")
    if png is not None:
        paths.append(png)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _lag_rows(name: str, model, frames, cfg, probes: int | None) -> list[dict]:
    """The per-lag Jacobian profile of one model (:func:`stcsnn.analysis.gradients.lag_jacobian`), printed as
    one line relative to lag 1."""
    from stcsnn.analysis.gradients import lag_jacobian, lag_profile

    profile = lag_profile(lag_jacobian(model, frames[:, :cfg.input_frames], cfg.output_frames, probes))
    print(f"{name:<10} |dx_hat[t+k]/dx[t]| relative to lag 1, k = 1..{profile[-1]['lag']}: "
          + " ".join(f"{r['relative']:.3g}" for r in profile))
    how = "exact" if probes is None else f"{probes} probes"
    return [{"neuron": name, **r, "estimate": how} for r in profile]


def _gradients_grid(args: argparse.Namespace, device: torch.device) -> int:
    """``analyze gradients --grid DIR``: every finished cell's evaluated checkpoint, one test batch per
    dataset; per STC-X / X pair a plot of the mean over seeds."""
    from pathlib import Path

    from stcsnn.analysis.common import batch_indices, get_batch, out_dir, resolve_model, write_csv
    from stcsnn.analysis.gradients import (
        FIELDS,
        compact,
        factor_summary_rows,
        gradient_rows,
        histogram_rows,
        plot_gradients,
        trace_gradients,
    )
    from stcsnn.analysis.reproduce import finished_cells, stc_pairs

    if args.lags and args.lag_probes < 0:
        raise StcsnnError(f"--lag-probes must be 0 (exact) or a number of probes, got {args.lag_probes}")
    cells = finished_cells(args.grid)
    out = out_dir(args.out, str(Path(args.grid) / "gradients"))
    rows, summaries, hists, paths, lag_rows = [], [], [], [], []
    for dataset_name in dict.fromkeys(c.dataset for c in cells):
        groups: dict[str, list] = {}
        for c in (c for c in cells if c.dataset == dataset_name):
            model, cfg, dataset = resolve_model(None, args.set, str(c.checkpoint), device, args.split)
            frames = get_batch(dataset, batch_indices(dataset, args.batch_size), device)
            if args.lags:
                lag_rows += _grid_lag_rows(c, model, cfg, frames, args.lag_probes or None, device)
            trace = trace_gradients(model, frames, cfg)
            rows += [{"dataset": c.dataset, "seed": c.seed, "checkpoint": str(c.checkpoint), **r}
                     for r in gradient_rows(trace)]
            groups.setdefault(c.model, []).append(compact(trace))  # the exact per-step rows are taken above
        for name, traces in groups.items():
            print(f"{dataset_name}: " + _gradient_line(name, traces))
        summaries += [{"dataset": dataset_name, **r} for r in factor_summary_rows(groups)]
        pairs = stc_pairs(list(groups))
        selections = [(f"{base}_vs_{stc}", {base: groups[base], stc: groups[stc]}) for stc, base in pairs]
        selections = selections or [("all", groups)]
        for tag, selection in selections:
            hist, _ = histogram_rows(selection)
            hists += [{"dataset": dataset_name, "plot": tag, **r} for r in hist]
            seeds = sorted({len(v) for v in selection.values()})
            png = plot_gradients(selection, hist, out / f"gradients_{dataset_name}_{tag}.png",
                                 title=f"trained models, {dataset_name} ({'/'.join(map(str, seeds))} seed(s) each; "
                                       f"{args.split} batch of {args.batch_size})")
            if png is not None:
                paths.append(png)
    paths = [write_csv(out / "gradients.csv", rows, ["dataset", "seed", "checkpoint", *FIELDS]),
             write_csv(out / "factor_summary.csv", summaries), write_csv(out / "factor_hist.csv", hists), *paths]
    if lag_rows:
        paths += _write_grid_lags(lag_rows, out, args)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _grid_lag_rows(cell, model, cfg, frames, probes: int | None, device) -> list[dict]:
    """The per-lag profiles of one grid cell: its trained weights and a fresh model of its config and seed."""
    import torch

    from stcsnn.analysis.gradients import lag_jacobian, lag_profile
    from stcsnn.models import build_model

    torch.manual_seed(cfg.seed)
    fresh = build_model(cfg).to(device)
    out = []
    for state, m in (("fresh", fresh), ("trained", model)):
        profile = lag_profile(lag_jacobian(m, frames[:, :cfg.input_frames], cfg.output_frames, probes))
        out += [{"dataset": cell.dataset, "model": cell.model, "seed": cell.seed, "state": state, **r,
                 "estimate": "exact" if probes is None else f"{probes} probes"} for r in profile]
    return out


def _write_grid_lags(lag_rows: list[dict], out, args) -> list:
    """lags.csv (every cell, fresh and trained), lags_summary.csv (per model: the seeds' mean of log10 of the
    relative norm with a 95% t interval), lags_pairs.csv (STC neuron minus its base, paired by seed) and a plot
    per dataset; one line per model and the largest lag printed."""
    from stcsnn.analysis.common import write_csv
    from stcsnn.analysis.gradients import lag_pair_rows, lag_summary_rows, plot_lags
    from stcsnn.analysis.reproduce import stc_pairs

    summary = lag_summary_rows(lag_rows)
    pairs = lag_pair_rows(lag_rows, stc_pairs(list(dict.fromkeys(r["model"] for r in lag_rows))))
    paths = [write_csv(out / "lags.csv", lag_rows), write_csv(out / "lags_summary.csv", summary)]
    if pairs:
        paths.append(write_csv(out / "lags_pairs.csv", pairs))
    for d in dict.fromkeys(r["dataset"] for r in summary):
        rows_d = [r for r in summary if r["dataset"] == d]
        last = max(r["lag"] for r in rows_d)
        for r in (r for r in rows_d if r["lag"] == last):
            print(f"{d}: {r['model']:<17} {r['state']:<8} |dx_hat[t+{last}]/dx[t]| / lag 1: "
                  f"{r['relative_geomean']:.3g} (95% t over {r['seeds']} seed(s): {10 ** r['ci_low']:.3g} to "
                  f"{10 ** r['ci_high']:.3g})")
        png = plot_lags(rows_d, out / f"lags_{d}.png", f"{d}: per-lag input-output Jacobian, geometric mean over "
                                                      f"seeds, 95% t band ({args.split} batch of {args.batch_size})")
        if png is not None:
            paths.append(png)
    return paths


# ---------------------------------------------------------------------------------------------- dynamics


def _region_line(rows: list[dict], layer: int) -> str:
    """``temporal gain object 1.08 / background 0.97, spatial ...`` for one layer (steps >= 1 pooled)."""
    parts = []
    for kind in ("temporal", "spatial"):
        got = {r["region"]: r["gain_mean"] for r in rows if r["layer"] == layer and r["gain"] == kind
               and r["step"] == "all"}
        if got:
            parts.append(f"{kind} gain object {got.get('object', float('nan')):.3f} / background "
                         f"{got.get('background', float('nan')):.3f}")
    return ", ".join(parts)


def _check_threshold(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise StcsnnError(f"--object-threshold must lie in [0, 1) (frames are in [0, 1]), got {value}")


def _dynamics(args: argparse.Namespace) -> int:
    import torch

    from stcsnn.analysis.common import batch_indices, get_batch, out_dir, resolve_model, write_csv
    from stcsnn.analysis.dynamics import (
        gain_histogram_rows,
        gain_rows,
        plot_dynamics,
        plot_regions,
        raster_rows,
        rate_rows,
        region_histograms,
        region_rows,
        trace_dynamics,
    )
    from stcsnn.device import pick_device

    if args.raster_neurons < 1:
        raise StcsnnError(f"--raster-neurons must be >= 1, got {args.raster_neurons}")
    _check_threshold(args.object_threshold)
    device = pick_device(args.device)
    if args.grid is not None:
        if args.checkpoint is not None or args.config is not None:
            raise StcsnnError("--grid analyses the grid's own checkpoints: give no --config or --checkpoint with it")
        return _dynamics_grid(args, device)
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
    regions: list[dict] = []
    if gains:
        regions = region_rows(trace, args.object_threshold)
        paths += [write_csv(out / "gains.csv", gains), write_csv(out / "gain_hist.csv", gain_histogram_rows(trace)),
                  write_csv(out / "gains_by_region.csv", regions)]
        png = plot_regions({cfg.neuron: region_histograms(trace, args.object_threshold)}, out / "gains_by_region.png",
                           f"{cfg.neuron}: STC gains on moving-object vs background neurons (input > "
                           f"{args.object_threshold:g} in the patch; steps >= 1)")
        if png is not None:
            paths.append(png)
    else:
        print(f"note: {cfg.neuron} has no STC pathways, so no gain distributions")
    paths += plot_dynamics(trace, raster, out, cfg.input_frames)
    for l, r in enumerate(trace.rates):
        line = f"layer {l}: firing rate {sum(r) / len(r):.4f} (steps {min(r):.3f}..{max(r):.3f})"
        g = trace.gains[l]
        if g is not None:
            ta = torch.stack(g["temporal"]).mean().item()
            sb = torch.stack(g["spatial"]).mean().item()
            line += f", mean temporal gain {ta:.3f}, mean spatial gain {sb:.3f}; " + _region_line(regions, l)
        print(line)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _pick(rows: list[dict], layer: int, kind: str, region: str) -> float:
    return next(r["gain_mean"] for r in rows if r["layer"] == layer and r["gain"] == kind and r["region"] == region)


def _dynamics_grid(args: argparse.Namespace, device: torch.device) -> int:
    """``analyze dynamics --grid DIR``: firing rates of every spiking cell and, for every STC cell, the gains
    on object vs background neurons; a summary over seeds and one plot per dataset."""
    from pathlib import Path

    from stcsnn.analysis.common import batch_indices, get_batch, is_ann, out_dir, resolve_model, write_csv
    from stcsnn.analysis.dynamics import plot_regions, rate_rows, region_histograms, region_rows, trace_dynamics
    from stcsnn.analysis.reproduce import finished_cells, mean_std

    cells = finished_cells(args.grid)
    out = out_dir(args.out, str(Path(args.grid) / "dynamics"))
    rates, regions, summary, paths = [], [], [], []
    for dataset_name in dict.fromkeys(c.dataset for c in cells):
        hists: dict[str, dict] = {}
        per_model: dict[str, list[list[dict]]] = {}
        for c in (c for c in cells if c.dataset == dataset_name):
            model, cfg, dataset = resolve_model(None, args.set, str(c.checkpoint), device, args.split)
            if is_ann(model):
                continue
            frames = get_batch(dataset, batch_indices(dataset, args.batch_size), device)
            trace = trace_dynamics(model, frames, cfg)
            rates += [{"dataset": c.dataset, "model": c.model, "seed": c.seed, **r} for r in rate_rows(trace)]
            if all(g is None for g in trace.gains):
                continue
            rows = [r for r in region_rows(trace, args.object_threshold) if r["step"] == "all"]
            regions += [{"dataset": c.dataset, "model": c.model, "seed": c.seed, **r} for r in rows]
            per_model.setdefault(c.model, []).append(rows)
            h = region_histograms(trace, args.object_threshold)
            total = hists.setdefault(c.model, {})
            for k, v in h.items():
                total[k] = total[k] + v if k in total else v
            del trace
        for name, seeds in per_model.items():
            for l in sorted({r["layer"] for r in seeds[0]}):
                for kind in ("temporal", "spatial"):
                    obj = [_pick(rows, l, kind, "object") for rows in seeds]
                    bg = [_pick(rows, l, kind, "background") for rows in seeds]
                    row = {"dataset": dataset_name, "model": name, "seeds": len(seeds), "layer": l, "gain": kind}
                    for key, vals in (("object", obj), ("background", bg),
                                      ("difference", [a - b for a, b in zip(obj, bg)])):
                        row[f"{key}_mean"], row[f"{key}_std"] = mean_std(vals)
                    summary.append(row)
                    print(f"{dataset_name}: {name} layer {l} {kind} gain: object {row['object_mean']:.3f}, "
                          f"background {row['background_mean']:.3f}, difference {row['difference_mean']:+.3f}"
                          + (f" ± {row['difference_std']:.3f} over {len(seeds)} seeds" if len(seeds) > 1 else ""))
        png = plot_regions(hists, out / f"gains_by_region_{dataset_name}.png",
                           f"{dataset_name}: STC gains on moving-object vs background neurons, trained models "
                           f"(seeds pooled; input > {args.object_threshold:g} in the patch; steps >= 1)")
        if png is not None:
            paths.append(png)
    if not rates:
        raise StcsnnError(f"--grid {args.grid!r}: no spiking cells to analyse (only ANN baselines)")
    paths = [write_csv(out / "rates.csv", rates), *paths]
    if regions:
        paths[1:1] = [write_csv(out / "gains_by_region.csv", regions),
                      write_csv(out / "gains_by_region_summary.csv", summary)]
    else:
        print("note: no STC cells in the grid, so no gain distributions")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
