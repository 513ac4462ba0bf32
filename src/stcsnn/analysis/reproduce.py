"""``stcsnn reproduce``: train and evaluate a grid (datasets x models x seeds), then one table and plots.

Each cell of the grid is an ordinary run directory ``<out>/<scale>/<dataset>/<model>/seed<k>/`` trained by
:class:`stcsnn.train.loop.Trainer` (the same loop, patching, scheduled sampling and metrics for every model).
A cell is finished when its ``report.json`` exists (the test report written at the end of a run); re-running
skips finished cells and resumes unfinished ones from their ``last.pt`` (``resume="auto"``).

Outputs in ``<out>/<scale>/``: ``results.md`` and ``results.csv`` (mean and sample standard deviation over
seeds of MSE, MAE, SSIM, PSNR on the test split, parameters, MACs / SOPs / energy per sequence from
:mod:`stcsnn.analysis.energy`, firing rate, training time), ``runs.csv`` (one row per cell),
``per_horizon.csv`` and ``per_horizon_<dataset>.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stcsnn.analysis.common import clean_json, write_csv, write_json
from stcsnn.analysis.scales import DEFAULT_MODELS, REFERENCES, SCALES
from stcsnn.config import Config, make_config, read_yaml
from stcsnn.errors import ConfigError, StcsnnError

METRICS = ("mse", "mae", "ssim", "psnr")


@dataclass
class Cell:
    dataset: str
    model: str
    seed: int
    cfg: Config
    run_dir: Path

    @property
    def finished(self) -> bool:
        return (self.run_dir / "report.json").is_file()

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model} seed {self.seed}"


def get_scale(scale: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, definition)`` of a scale given by name or as a dict (``name`` key optional)."""
    if isinstance(scale, dict):
        return str(scale.get("name", "custom")), scale
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}: expected one of {', '.join(SCALES)}")
    return scale, SCALES[scale]


def _configs_dir(path: str | os.PathLike | None) -> Path:
    if path is not None:
        return Path(path)
    here = Path("configs")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "configs"


def paper_config(template: str, configs: Path, dataset: str, model: str, log: Callable[[str], None]) -> dict:
    """The reference config of (dataset, model); a model without its own file (e.g. an ANN baseline added
    after the configs were generated) takes the dataset's ``lif.yaml`` with its neuron replaced: the
    reference settings are the same for every model (``scripts/make_configs.py``)."""
    path = Path(template.format(configs=configs, dataset=dataset, model=model))
    if path.is_file():
        return read_yaml(path)
    fallback = Path(template.format(configs=configs, dataset=dataset, model="lif"))
    if not fallback.is_file():
        raise ConfigError(f"no reference config {str(path)!r} (nor {str(fallback)!r}); generate them with "
                          "`python scripts/make_configs.py` or pass --configs DIR")
    log(f"note: {path} not found; using {fallback} with neuron: {model} (python scripts/make_configs.py "
        "writes it)")
    raw = read_yaml(fallback)
    raw["neuron"] = model
    raw["neuron_options"] = {}
    return raw


def plan_grid(scale: str | dict[str, Any], datasets: Sequence[str] | None = None,
              models: Sequence[str] | None = None, seeds: int = 1, out: str | os.PathLike = "runs/reproduce",
              overrides: dict[str, Any] | None = None, configs: str | os.PathLike | None = None,
              log: Callable[[str], None] = print) -> tuple[str, list[Cell]]:
    """Validate the request and build every cell's config (nothing is trained)."""
    from stcsnn.data.registry import get_dataset_spec
    from stcsnn.neurons.registry import get_spec

    name, spec = get_scale(scale)
    datasets = list(datasets or spec.get("datasets") or ["embedded"])
    models = list(models or DEFAULT_MODELS)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    for m in models:
        get_spec(m)
    for d in datasets:
        get_dataset_spec(d)
    if len(set(models)) != len(models) or len(set(datasets)) != len(datasets):
        raise ConfigError("--models and --datasets must not repeat a name")
    root = Path(out) / name
    cells = []
    for d in datasets:
        for m in models:
            for s in range(seeds):
                if "config_files" in spec:
                    raw = paper_config(spec["config_files"], _configs_dir(configs), d, m, log)
                else:
                    raw = json.loads(json.dumps(spec.get("config", {})))  # a deep copy of plain data
                raw.update({"dataset": d, "neuron": m, "seed": s})
                try:
                    cfg = make_config(raw, overrides)
                except ConfigError as exc:
                    raise ConfigError(f"scale {name!r}, {d}/{m}: {exc}") from None
                cells.append(Cell(d, m, s, cfg, root / d / m / f"seed{s}"))
    return name, cells


def run_grid(scale: str | dict[str, Any], datasets: Sequence[str] | None = None, models: Sequence[str] | None = None,
             seeds: int = 1, out: str | os.PathLike = "runs/reproduce", overrides: dict[str, Any] | None = None,
             configs: str | os.PathLike | None = None, progress: bool = True,
             log: Callable[[str], None] = print, command: str | None = None) -> int:
    """Train every unfinished cell, then write the table and plots. Returns an exit code (130: interrupted)."""
    from stcsnn.train.loop import Trainer

    name, cells = plan_grid(scale, datasets, models, seeds, out, overrides, configs, log)
    root = Path(out) / name
    for i, cell in enumerate(cells, 1):
        if cell.finished:
            log(f"[{i}/{len(cells)}] {cell.label}: finished, skipped ({cell.run_dir / 'report.json'})")
            continue
        resumed = (cell.run_dir / "last.pt").is_file()
        log(f"[{i}/{len(cells)}] {cell.label}: {'resuming' if resumed else 'training'} in {cell.run_dir}")
        t0 = time.time()
        rc = Trainer(cell.cfg, cell.run_dir, resume="auto", progress=progress).fit()
        if rc:
            log(f"stopped at {cell.label}; run the same command again to resume")
            return rc
        log(f"[{i}/{len(cells)}] {cell.label}: done in {time.time() - t0:.0f} s")
    paths = write_results(name, cells, root, command)
    log("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---------------------------------------------------------------------------------------------- results


def training_seconds(run_dir: Path) -> float:
    """Sum of the per-epoch ``seconds`` of ``metrics.csv`` (training and validation, resumptions included)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return float("nan")
    with path.open() as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds"))


def cell_energy(cell: Cell, max_samples: int = 16) -> dict[str, Any]:
    """Operation counts of the cell's evaluated weights on its first test batch (cached in energy.json)."""
    from stcsnn.analysis.common import batch_indices, get_batch
    from stcsnn.analysis.energy import count_operations
    from stcsnn.data import build_split
    from stcsnn.models.loading import load_model

    cache = cell.run_dir / "energy.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    ckpt = cell.run_dir / "best.pt"
    if not ckpt.is_file():
        ckpt = cell.run_dir / "last.pt"
    model, cfg = load_model(ckpt, "cpu")
    dataset = build_split(cfg, "test")
    frames = get_batch(dataset, batch_indices(dataset, min(max_samples, cfg.eval_batch_size or cfg.batch_size)),
                       torch.device("cpu"))
    report = count_operations(model, [frames], cfg.input_frames, cfg.output_frames).to_dict()
    report["checkpoint"] = str(ckpt)
    write_json(cache, clean_json(report))
    return report


def cell_row(cell: Cell) -> dict[str, Any]:
    """One row of ``runs.csv``: the cell's test metrics, counts, firing rate and training time."""
    from stcsnn.neurons.registry import get_spec

    report = json.loads((cell.run_dir / "report.json").read_text())
    energy = cell_energy(cell)
    ann = get_spec(cell.model).is_ann
    rates = [float(r) for r in report.get("firing_rate") or []]
    total = energy["total"]
    row = {"dataset": cell.dataset, "model": cell.model, "kind": "ANN" if ann else "SNN", "seed": cell.seed,
           **{m: float(report["metrics"][m]) for m in METRICS},
           "params": total["params"], "macs": total["macs"], "sops": total["sops"],
           "energy_snn_uj": total["energy_snn_pj"] / 1e6, "energy_ann_uj": total["energy_ann_pj"] / 1e6,
           "firing_rate": float("nan") if ann or not rates else sum(rates) / len(rates),
           "train_seconds": training_seconds(cell.run_dir), "run_dir": str(cell.run_dir)}
    row["per_horizon"] = report.get("per_horizon", {})
    return row


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else float("nan")


TABLE_KEYS = ("mse", "mae", "ssim", "psnr", "params", "macs", "sops", "energy_snn_uj", "energy_ann_uj",
              "firing_rate", "train_seconds")


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds per (dataset, model), in the order the cells came."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    out = []
    for (d, m), rs in groups.items():
        row = {"dataset": d, "model": m, "kind": rs[0]["kind"], "seeds": len(rs)}
        for k in TABLE_KEYS:
            row[f"{k}_mean"], row[f"{k}_std"] = _mean_std([r[k] for r in rs])
        out.append(row)
    return out


def _fmt(mean: float, std: float, digits: int, big: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    if big:
        text = f"{mean / 1e6:.{digits}f}"
        return text + (f" ± {std / 1e6:.{digits}f}" if not math.isnan(std) else "")
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if not math.isnan(std) else "")


def results_markdown(name: str, table: list[dict[str, Any]], cells: list[Cell], command: str | None = None) -> str:
    seeds = sorted({c.seed for c in cells})
    device = cells[0].cfg.device if cells else "?"
    machine = (f"{platform.platform()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
               f"torch {torch.__version__}, config device {device!r}"
               + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    command = command or f"stcsnn reproduce --scale {name}"
    lines = [f"# stcsnn reproduce: scale {name}", "",
             f"command: `{command}`  ", f"seeds: {', '.join(map(str, seeds))}  ", f"machine: {machine}", "",
             "Test split, the evaluated checkpoint (best validation MSE) of each run. MSE and MAE are per-frame "
             "sums over pixels (OpenSTL's convention). Mean ± sample standard deviation over seeds (no ± with one "
             "seed). MACs, SOPs and energy are per sequence, counted by `stcsnn energy` on the real forward pass "
             "(SNN: 4.6 pJ per MAC on real-valued inputs + 0.9 pJ per SOP; ANN: 4.6 pJ per MAC). Firing rate: "
             "mean over layers (SNN rows only). Training time: wall-clock seconds of training and validation.", ""]
    for d in dict.fromkeys(r["dataset"] for r in table):
        lines += [f"## {d}", "",
                  "| model | kind | MSE | MAE | SSIM | PSNR | params | MACs (M) | SOPs (M) | E_SNN (µJ) | "
                  "E_ANN (µJ) | firing rate | train time (s) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in table if r["dataset"] == d):
            lines.append(
                f"| {r['model']} | {r['kind']} | {_fmt(r['mse_mean'], r['mse_std'], 2)} | "
                f"{_fmt(r['mae_mean'], r['mae_std'], 2)} | {_fmt(r['ssim_mean'], r['ssim_std'], 4)} | "
                f"{_fmt(r['psnr_mean'], r['psnr_std'], 3)} | {int(r['params_mean']):,d} | "
                f"{_fmt(r['macs_mean'], float('nan'), 2, big=True)} | {_fmt(r['sops_mean'], r['sops_std'], 2, True)} | "
                f"{_fmt(r['energy_snn_uj_mean'], r['energy_snn_uj_std'], 2)} | "
                f"{_fmt(r['energy_ann_uj_mean'], float('nan'), 2)} | "
                f"{_fmt(r['firing_rate_mean'], r['firing_rate_std'], 3)} | "
                f"{_fmt(r['train_seconds_mean'], r['train_seconds_std'], 0)} |")
        refs = REFERENCES.get(d)
        if refs:
            lines += ["", "Outside references (reported by others at their own scale, not measured here):", ""]
            for ref in refs:
                vals = ", ".join(f"{k.upper()} {ref[k]}" for k in METRICS if k in ref)
                lines.append(f"- {ref['model']}: {vals} ({ref['source']})")
        lines += ["", f"Per-horizon plot: `per_horizon_{d}.png`", ""]
    return "\n".join(lines)


def write_results(name: str, cells: list[Cell], root: Path, command: str | None = None) -> list[Path]:
    rows = [cell_row(c) for c in cells if c.finished]
    if not rows:
        raise StcsnnError(f"no finished runs under {root}")
    table = aggregate(rows)
    root.mkdir(parents=True, exist_ok=True)
    from stcsnn.io import atomic_write_text

    paths = [write_csv(root / "runs.csv", rows, [k for k in rows[0] if k != "per_horizon"])]
    paths.append(write_csv(root / "results.csv", table))
    atomic_write_text(root / "results.md", results_markdown(name, table, cells, command))
    paths.append(root / "results.md")
    horizon_rows = []
    for (d, m) in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        rs = [r for r in rows if r["dataset"] == d and r["model"] == m]
        for metric in METRICS:
            series = [r["per_horizon"].get(metric, []) for r in rs]
            for t in range(min((len(s) for s in series), default=0)):
                mean, std = _mean_std([float(s[t]) for s in series])
                horizon_rows.append({"dataset": d, "model": m, "metric": metric, "frame": t + 1, "mean": mean,
                                     "std": std, "seeds": len(rs)})
    if horizon_rows:
        paths.append(write_csv(root / "per_horizon.csv", horizon_rows))
        paths += plot_horizons(horizon_rows, root)
    return paths


def plot_horizons(rows: list[dict[str, Any]], root: Path) -> list[Path]:
    from stcsnn.analysis.common import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return []
    paths = []
    for d in dict.fromkeys(r["dataset"] for r in rows):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, metric in zip(axes, ("mse", "ssim")):
            for m in dict.fromkeys(r["model"] for r in rows if r["dataset"] == d):
                rs = [r for r in rows if r["dataset"] == d and r["model"] == m and r["metric"] == metric]
                ann = is_ann_name(m)
                ax.plot([r["frame"] for r in rs], [r["mean"] for r in rs], ls="--" if ann else "-",
                        marker="o", ms=3, label=m)
            ax.set_xlabel("predicted frame")
            ax.set_ylabel(metric.upper() + (" (per frame, sum over pixels)" if metric == "mse" else ""))
            ax.set_title(f"{d}: {metric.upper()} per horizon")
        axes[1].legend(fontsize=7, ncol=2)
        fig.tight_layout()
        paths.append(save_figure(fig, root / f"per_horizon_{d}.png"))
    return paths


def is_ann_name(model: str) -> bool:
    from stcsnn.neurons.registry import NEURONS

    spec = NEURONS.get(model)
    return bool(spec is not None and spec.is_ann)


__all__ = ["Cell", "aggregate", "plan_grid", "run_grid", "write_results"]
