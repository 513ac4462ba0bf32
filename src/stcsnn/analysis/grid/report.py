"""The files of a ``stcsnn reproduce`` grid: ``table.md`` (the table), ``table.csv`` (mean and sample standard
deviation over seeds per dataset and model, the reference predictors included), ``paired.csv`` (STC neuron
minus its base per seed, then the statistics over seeds), ``runs.csv`` (one row per cell), ``per_horizon.csv``
(mean and std per predicted frame), ``results.json`` (all of it), the plots (:mod:`.plots`) and, for a grid
whose variants set a delay, ``recall_<dataset>.csv`` (mean and 95% t interval over seeds per model and delay).

Metric columns, labels, formats and directions come from the metric table (:mod:`stcsnn.metrics`).
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from stcsnn.analysis.common import clean_json, write_csv, write_json
from stcsnn.analysis.grid.aggregate import (
    CONFIDENCE,
    DETAILS,
    PRIMARY,
    PROVENANCE,
    aggregate,
    cell_row,
    delay_series,
    horizon_series,
    mean_image_ratio,
    paired_differences,
    range_keys,
    reference_row,
)
from stcsnn.analysis.grid.cells import Cell, Grid
from stcsnn.analysis.grid.evaluate import REFERENCE_MODELS, reference_evaluation
from stcsnn.analysis.scales import REFERENCES
from stcsnn.config import Config
from stcsnn.device import cpu_model
from stcsnn.errors import StcsnnError
from stcsnn.metrics import METRICS, reported_metrics

NOT_SHOWN = "not shown"
#: the statistics rows of paired.csv after the per-seed rows (``seed`` holds the row's name)
PAIRED_STATS = ("mean", "std", "ci_t_low", "ci_t_high", "ci_boot_low", "ci_boot_high", "p", "p_holm", "difference")


def _fmt_key(key: str) -> str:
    """The print format of a metric column (a long-horizon MSE range prints as MSE)."""
    return METRICS[key].fmt if key in METRICS else METRICS["mse"].fmt


def label(key: str) -> str:
    """A column's label: the metric table's, ``MSE a-b`` for a long-horizon range."""
    if key in METRICS:
        return METRICS[key].label
    _, a, b = key.split("_")
    return f"{METRICS['mse'].label} {a}-{b}"


def _fmt(mean: float, std: float, fmt: str, scale: float = 1.0, sign: bool = False) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    text = format(mean / scale, ("+" if sign else "") + fmt)
    return text + (f" ± {format(std / scale, fmt)}" if std is not None and not math.isnan(std) else "")


def _machine(cells: list[Cell]) -> str:
    device = cells[0].cfg.device if cells else "?"
    cpu = cpu_model()
    return (f"{platform.platform()}, {f'{cpu}, ' if cpu else ''}{os.cpu_count()} logical CPUs, "
            f"Python {platform.python_version()}, "
            f"torch {torch.__version__}, config device {device!r}"
            + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))


def _scale_summary(cfg: Config) -> str:
    steps = (cfg.steps_per_epoch or 0) * cfg.epochs
    layers = len(cfg.hidden_channels)
    return (f"{layers} layer{'s' if layers > 1 else ''} of {', '.join(map(str, cfg.hidden_channels))} channels, kernel "
            f"{cfg.kernel_size}, patch {cfg.patch_size}, {cfg.input_frames} -> {cfg.output_frames} frames, "
            + (f"{steps} steps" if steps else f"{cfg.epochs} epochs") + f" of batch {cfg.batch_size}, lr {cfg.lr:g}, "
            f"{cfg.sampling} sampling, validation every {cfg.val_every} epoch(s)")


def difference(p: dict[str, Any], key: str) -> str:
    """The mean difference with its t interval, or "not shown" where an interval includes 0 (or none exists)."""
    if not p.get(f"{key}_shown"):
        return NOT_SHOWN
    f = _fmt_key(key)
    return (f"{format(p[key + '_mean'], '+' + f)} [{format(p[key + '_ci_t_low'], '+' + f)}, "
            f"{format(p[key + '_ci_t_high'], '+' + f)}]")


def _interval(p: dict[str, Any], key: str) -> str:
    lo, hi = p.get(f"{key}_ci_boot_low", math.nan), p.get(f"{key}_ci_boot_high", math.nan)
    f = _fmt_key(key)
    return "-" if math.isnan(lo) else f"[{format(lo, '+' + f)}, {format(hi, '+' + f)}]"


def _p(p: dict[str, Any], key: str) -> str:
    raw, adjusted = p.get(f"{key}_p", math.nan), p.get(f"{key}_p_holm", math.nan)
    return "-" if math.isnan(raw) else f"{raw:.3g}" + ("" if math.isnan(adjusted) else f" / {adjusted:.3g}")


def _pairs_markdown(pairs: list[dict[str, Any]]) -> list[str]:
    """The paired-differences table of one dataset: per seed, then the statistics over seeds."""
    lines: list[str] = []
    keys = list(dict.fromkeys(k for p in pairs for k in p["keys"]))
    pct = f"{CONFIDENCE:.0%}"
    lines += ["", "### Paired differences: STC neuron minus its base neuron, same seed", "",
              "Each STC neuron against the neuron it wraps (the registry's declared base), trained with the same "
              f"seed. {label(PRIMARY)} is the primary metric; the others are secondary. For metrics where lower is "
              "better a negative difference favours the STC neuron, otherwise a positive one. Difference: mean over "
              f"seeds with its {pct} t interval, *{NOT_SHOWN}* wherever the t or the bootstrap interval includes 0 "
              f"(or, with one seed, none exists), whatever the mean. Bootstrap: {pct} percentile interval, "
              "resampling seeds and then test sequences within each seed (two-level) where per-sequence values "
              "exist (the MSE a-b ranges: seeds only). p: two-sided paired t-test / Holm-adjusted over every pair "
              "and reported metric of the grid."
              + ("" if all(p.get("against", "base") == "base" for p in pairs) else
                 " Rows marked *(comparison)* pair two models named by the scale's `comparisons` (e.g. STC-LIF "
                 "against LIF, the paper's own comparison, or against one of its single-pathway ablations); they "
                 "are in the same Holm family."), "",
              "| pair | seed | " + " | ".join(f"Δ{label(k)}" for k in keys) + " |",
              "|---|---|" + "---:|" * len(keys)]
    for p in pairs:
        name = f"{p['stc']} − {p['base']}" + (" (comparison)" if p.get("against") == "comparison" else "")
        n = len(p["seeds"])
        for s in p["per_seed"]:
            lines.append(f"| {name} | {s['seed']} | "
                         + " | ".join(_fmt(s[k], math.nan, _fmt_key(k), sign=True) if k in s else "-" for k in keys)
                         + " |")
        lines += [f"| {name} | difference ({pct} t, n = {n}) | " + " | ".join(difference(p, k) for k in keys) + " |",
                  f"| {name} | bootstrap {pct} | " + " | ".join(_interval(p, k) for k in keys) + " |",
                  f"| {name} | p (t / Holm) | " + " | ".join(_p(p, k) for k in keys) + " |",
                  f"| {name} | STC better | " + " | ".join(f"{p[k + '_stc_better']}/{n}" if k + "_stc_better" in p
                                                         else "-" for k in keys) + " |"]
    return lines


def _header_lines(grid: Grid, rows: list[dict[str, Any]], command: str | None) -> list[str]:
    """The table's caption: command, seeds, cells finished, machine, threads, jobs and load."""
    cells = grid.cells
    seeds = sorted({c.seed for c in cells})
    done = sum(c.finished for c in cells)
    command = command or f"stcsnn reproduce --scale {grid.name}"
    threads = sorted({t for r in rows for t in r["timing"]["threads"]})
    jobs = sorted({j for r in rows for j in r["timing"]["jobs"]})
    loads = [x for r in rows for x in r["timing"]["loadavg"]]
    lines = [f"# stcsnn reproduce: scale {grid.name}", "",
             f"command: `{command}`  ", f"seeds: {', '.join(map(str, seeds))}  ",
             f"cells: {done} of {len(cells)} finished" + ("" if done == len(cells) else
                                                            " (the others are missing from this table)") + "  ",
             f"machine: {_machine(cells)}  "]
    if threads:
        lines.append(f"threads per cell: {', '.join(map(str, threads))}; cells at a time: "
                     f"{', '.join(map(str, jobs))}; 1-minute load average during the cells: "
                     + (f"{min(loads):.1f} to {max(loads):.1f}" if loads else "unknown") + "  ")
    # the machines and source commits the finished cells ran on (a cell resumed elsewhere names both)
    seen = {key: sorted({v for r in rows for v in str(r.get(key) or "").split("+") if v}) for key in PROVENANCE}
    lines.append(f"cells ran on: {', '.join(seen['machine']) or 'unknown'}; commits: "
                 f"{', '.join(seen['commit']) or 'unknown (not run from a git checkout)'}")
    return lines


def _table_row(r: dict[str, Any], metrics: list[str], ranges: list[str]) -> str:
    params = "-" if math.isnan(r["params_mean"]) else f"{int(r['params_mean']):,d}"
    return (f"| {r['model']} | {r['kind']} | {r['seeds']} | "
            + "".join(f"{_fmt(r[k + '_mean'], r[k + '_std'], _fmt_key(k))} | " for k in (*metrics, *ranges))
            + f"{params} | {_fmt(r['macs_mean'], math.nan, '.2f', 1e6)} | "
            f"{_fmt(r['sops_mean'], r['sops_std'], '.2f', 1e6)} | "
            f"{_fmt(r['firing_rate_mean'], r['firing_rate_std'], '.3f')} | "
            f"{_fmt(r['train_seconds_mean'], r['train_seconds_std'], '.0f')} | "
            f"{_fmt(r.get('mse_vs_mean_image', math.nan), math.nan, '.3f')} |")


def results_markdown(grid: Grid, rows: list[dict[str, Any]], table: list[dict[str, Any]],
                     paired: list[dict[str, Any]], command: str | None = None) -> str:
    cells = grid.cells
    metrics = list(reported_metrics())
    lines = _header_lines(grid, rows, command)
    lines += ["", "Test split, the evaluated checkpoint (best validation MSE; its epoch is `selected_epoch` in "
              "runs.csv) of each run. MSE and MAE are per-frame sums over pixels (OpenSTL's convention). Mean ± "
              "sample standard deviation (n - 1) over seeds (no ± with one seed). MSE a-b: mean per-frame MSE over "
              "predicted frames a..b of the same test sequences rolled out past the trained horizon (fully "
              "autoregressive). Reference rows (no training, same test sequences, same evaluation): mean_image "
              "predicts the pixel-wise mean frame of the training split for every future frame, last_frame "
              "repeats the last observed frame. MACs and SOPs are per sequence, counted by `stcsnn energy` on the "
              "real forward pass. Firing rate: mean over layers (SNN rows only). Train time: wall-clock seconds of "
              "training and validation per cell. MSE / mean image: the row's mean MSE divided by the mean_image "
              "reference's MSE of the same data (below 1: better than predicting the mean frame).", ""]
    for d in dict.fromkeys(r["dataset"] for r in table):
        rows_d = [r for r in table if r["dataset"] == d]
        ranges = range_keys([{k[:-5]: 1 for k in r if k.endswith("_mean")} for r in rows_d])
        first = next(c for c in cells if c.dataset == d)
        lines += [f"## {d}", "", f"Data: {grid.data_notes.get(d, d)}.  ",
                  f"Model and training: {_scale_summary(first.cfg)}.  "]
        tested = sorted({r["test_samples"] for r in rows if r["dataset"] == d and r.get("test_samples")})
        if tested:
            lines.append(f"Test sequences per cell: {', '.join(map(str, tested))}.  ")
        unavailable = sorted({r["long"].get("reason", "") for r in rows
                              if r["dataset"] == d and not r["long"].get("available")} - {""})
        if unavailable:
            lines.append(f"No long-term evaluation for some cells: {'; '.join(unavailable)}.  ")
        lines += ["", "| model | kind | seeds | " + "".join(f"{label(k)} | " for k in (*metrics, *ranges))
                  + "params | MACs (M) | SOPs (M) | firing rate | train time (s) | MSE / mean image |",
                  "|---|---|---:|" + "---:|" * (len(metrics) + len(ranges) + 6)]
        lines += [_table_row(r, metrics, ranges) for r in rows_d]
        pairs = [p for p in paired if p["dataset"] == d]
        if pairs:
            lines += _pairs_markdown(pairs)
        refs = REFERENCES.get(d)
        if refs:
            lines += ["", "Outside references (reported by others at their own scale, not measured here):", ""]
            for ref in refs:
                vals = ", ".join(f"{label(k)} {ref[k]}" for k in metrics if k in ref)
                lines.append(f"- {ref['model']}: {vals} ({ref['source']})")
        plots = f"`per_horizon_{d}.png` (every model)" + (f", `pairs_{d}.png` (each STC neuron against its base "
                                                          "neuron)" if pairs else "")
        lines += ["", f"Per-horizon plots: {plots}; mean over seeds with a band of ± one standard deviation.", ""]
    for d in dict.fromkeys(d for d, _ in grid_delays(grid).values()):
        lines += [f"Against the delay: `recall_{d}.png` and `recall_{d}.csv`: test MSE and SSIM of each model per "
                  f"delay, mean over seeds with its {CONFIDENCE:.0%} t interval; mean_image (no memory) and perfect "
                  "memory (MSE 0, SSIM 1) for reference.", ""]
    return "\n".join(lines)


def paired_rows(paired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of paired.csv: one per seed, then one per statistic (:data:`PAIRED_STATS`, in ``seed``)."""
    out = []
    for p in paired:
        head = {"dataset": p["dataset"], "stc": p["stc"], "base": p["base"]}
        out += [{**head, "seed": s["seed"], **{k: s[k] for k in p["keys"]}} for s in p["per_seed"]]
        for stat in PAIRED_STATS:
            if stat == "difference":
                out.append({**head, "seed": stat, **{k: p[f"{k}_mean"] if p[f"{k}_shown"] else NOT_SHOWN
                                                     for k in p["keys"]}})
            else:
                out.append({**head, "seed": stat, **{k: p[f"{k}_{stat}"] for k in p["keys"]}})
    return out


def reference_rows(grid: Grid) -> list[dict[str, Any]]:
    """The naive predictors' rows for each dataset of the grid with a finished cell."""
    firsts = {c.dataset: c for c in reversed(grid.cells)}
    return [reference_row(reference_evaluation(grid.root, firsts[d], name))
            for d in dict.fromkeys(c.dataset for c in grid.cells if c.finished) for name in REFERENCE_MODELS]


def write_results(grid: Grid, command: str | None = None, plots: bool = True) -> list[Path]:
    """``table.md``, ``table.csv``, ``paired.csv``, ``runs.csv``, ``per_horizon.csv``, ``results.json`` and the
    plots for the finished cells of ``grid``; returns the written paths."""
    from stcsnn.analysis.grid.plots import plot_horizons
    from stcsnn.io import atomic_write_text

    root = grid.root
    rows = [cell_row(c) for c in grid.cells if c.finished]
    if not rows:
        raise StcsnnError(f"no finished runs under {root}")
    references = reference_rows(grid)
    mean_mse = {r["dataset"]: r["mse"] for r in references if r["model"] == "mean_image"}
    for r in rows:
        r["mse_vs_mean_image"] = mean_image_ratio(r["mse"], mean_mse.get(r["dataset"]))
    table = aggregate(rows + references)
    for r in table:
        r["mse_vs_mean_image"] = mean_image_ratio(r["mse_mean"], mean_mse.get(r["dataset"]))
    paired = paired_differences(rows, grid.comparisons)
    horizon = horizon_series(rows + references)
    root.mkdir(parents=True, exist_ok=True)
    flat = [{k: v for k, v in r.items() if k not in DETAILS} for r in rows]
    paths = [write_csv(root / "runs.csv", flat, list(dict.fromkeys(k for r in flat for k in r)))]
    paths.append(write_csv(root / "table.csv", table, list(dict.fromkeys(k for r in table for k in r))))
    csv_rows = paired_rows(paired)
    if csv_rows:
        paths.append(write_csv(root / "paired.csv", csv_rows, list(dict.fromkeys(k for r in csv_rows for k in r))))
    atomic_write_text(root / "table.md", results_markdown(grid, rows, table, paired, command))
    paths.append(root / "table.md")
    if horizon:
        paths.append(write_csv(root / "per_horizon.csv", horizon))
    payload = {"scale": grid.name, "command": command or f"stcsnn reproduce --scale {grid.name}",
               "machine": _machine(grid.cells), "data": grid.data_notes, "variants": grid.variants,
               "primary_metric": PRIMARY, "confidence": CONFIDENCE,
               "cells": {"total": len(grid.cells), "finished": len(rows)},
               "runs": rows, "references": references, "table": table, "paired": paired, "per_horizon": horizon}
    paths.append(write_json(root / "results.json", clean_json(payload)))
    if horizon and plots:
        paths += plot_horizons(horizon, root, {c.dataset: c.cfg.output_frames for c in grid.cells})
    # the delay plot's one reference is mean_image (no memory); perfect memory is drawn from its definition
    paths += _write_delays(grid, rows + [r for r in references if r["model"] == "mean_image"], plots)
    return paths


def grid_delays(grid: Grid) -> dict[str, tuple[str, int]]:
    """Variant label -> (its registered dataset, its delay) for the variants that set ``data_options.delay``."""
    real = {c.dataset: c.cfg.dataset for c in grid.cells}
    return {label: (real[label], int(over["data_options"]["delay"])) for label, over in grid.variants.items()
            if label in real and "delay" in (over.get("data_options") or {})}


def _write_delays(grid: Grid, rows: list[dict[str, Any]], plots: bool) -> list[Path]:
    """``recall_<dataset>.csv`` (and ``.png``): test MSE and SSIM against the delay of the grid's variants."""
    from stcsnn.analysis.grid.plots import plot_delays

    series = delay_series(rows, grid_delays(grid))
    paths = []
    for d in dict.fromkeys(r["dataset"] for r in series):
        rs = [r for r in series if r["dataset"] == d]
        paths.append(write_csv(grid.root / f"recall_{d}.csv", rs))
        if plots:
            paths += plot_delays(rs, grid.root / f"recall_{d}.png")
    return paths
