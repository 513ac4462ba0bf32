"""Training curves of one or more runs (``stcsnn plot``): loss per step and the validation metrics, overlaid.

A run folder (written by ``stcsnn train``) holds ``config.yaml`` (the label: neuron and seed), ``metrics.csv``
(one row per epoch: ``epoch, step, train_loss, val_mse, val_mae, val_ssim, val_psnr, lr, eta, rate_l0..``; the
validation columns are empty on epochs without validation) and, in newer runs, ``steps.csv`` (one row per
optimizer step: ``step, epoch, loss, lr, p_true, seconds``). Without ``steps.csv`` the loss curve falls back to
the per-epoch ``train_loss`` of ``metrics.csv``. Drawn with matplotlib on an Agg canvas (the ``viz`` extra).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stcsnn.errors import DataError

STEPS_REQUIRED = ("step", "loss")
METRICS_REQUIRED = ("step", "train_loss")
VAL_PANELS = (("val_mse", "validation MSE"), ("val_mae", "validation MAE"), ("val_ssim", "validation SSIM"),
              ("val_psnr", "validation PSNR (dB)"))


@dataclass
class Curve:
    """x (optimizer steps) and y of one curve; NaN where a row has no value."""

    x: np.ndarray
    y: np.ndarray

    def finite(self) -> Curve:
        keep = np.isfinite(self.y)
        return Curve(self.x[keep], self.y[keep])


@dataclass
class RunCurves:
    """Everything ``stcsnn plot`` draws of one run."""

    path: Path
    label: str
    loss: Curve
    loss_per_step: bool  # True: from steps.csv; False: per-epoch train_loss from metrics.csv
    lr: Curve | None = None
    val: dict[str, Curve] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _number(text: str | None, path: Path, line: int, column: str, required: bool) -> float:
    if text is None or not text.strip():
        if required:
            raise DataError(f"{path}: line {line} has no value in column {column!r}; expected a number")
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}: line {line}, column {column!r}: expected a number, found {text[:40]!r}") from None


def read_columns(path: Path, required: Sequence[str], optional: Sequence[str] = (),
                 tolerate_partial_last_line: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
    """Numeric columns of a CSV file with a header -> ({column: values sorted by step}, notes).

    ``required`` columns must be in the header and hold a number on every row; ``optional`` ones may be
    absent or empty (NaN). Rows repeating a step (a run resumed from an earlier checkpoint writes those steps
    again) keep the last occurrence. ``tolerate_partial_last_line``: a file appended to while training may end
    in a line still being written; it is left out (with a note) instead of failing."""
    notes: list[str] = []
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a CSV file: not UTF-8 text (byte {exc.start})") from None
    lines = text.splitlines(keepends=True)
    if tolerate_partial_last_line and len(lines) > 1 and not lines[-1].endswith(("\n", "\r")):
        lines = lines[:-1]
        notes.append(f"note: {path}: left out its last line, which is still being written")
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        found = ", ".join(header) if header else "an empty file"
        raise DataError(f"{path}: expected a CSV header with the columns {', '.join(required)}; missing "
                        f"{', '.join(missing)} (found {found})")
    rows: dict[float, dict[str, float]] = {}
    for row in reader:
        line = reader.line_num
        if None in row:  # more fields than the header names
            raise DataError(f"{path}: line {line} has {len(header) + len(row[None])} fields, the header "
                            f"{len(header)}")
        values = {c: _number(row.get(c), path, line, c, True) for c in required}
        values.update({c: _number(row.get(c), path, line, c, False) for c in optional if c in header})
        if not math.isfinite(values["step"]):
            raise DataError(f"{path}: line {line}, column 'step': expected a finite number, found {row['step']!r}")
        rows[values["step"]] = values
    ordered = [rows[s] for s in sorted(rows)]
    columns = {c: np.array([r.get(c, math.nan) for r in ordered], dtype=np.float64)
               for c in (*required, *optional)}
    return columns, notes


def _label(run: Path) -> str:
    from stcsnn.config import load_config

    path = run / "config.yaml"
    if not path.is_file():
        raise DataError(f"{run}: no config.yaml; expected a run folder written by `stcsnn train` (config.yaml, "
                        "metrics.csv, steps.csv)")
    cfg = load_config(path)
    return f"{cfg.neuron} seed {cfg.seed}"


def read_run(run: str | os.PathLike) -> RunCurves:
    """The curves of one run folder; :class:`~stcsnn.errors.DataError` when its files are missing or corrupt."""
    run = Path(run)
    if not run.is_dir():
        what = "a file" if run.exists() else "nothing there"
        raise DataError(f"{run}: expected a run folder written by `stcsnn train` (config.yaml, metrics.csv), "
                        f"found {what}")
    steps_csv, metrics_csv = run / "steps.csv", run / "metrics.csv"
    if not steps_csv.is_file() and not metrics_csv.is_file():
        raise DataError(f"{run}: neither steps.csv nor metrics.csv; expected a run folder written by "
                        "`stcsnn train` that has trained at least one epoch")
    label = _label(run)
    notes: list[str] = []
    metrics = None
    if metrics_csv.is_file():
        metrics, more = read_columns(metrics_csv, METRICS_REQUIRED, ("epoch", "lr", *(k for k, _ in VAL_PANELS)))
        notes += more
    if steps_csv.is_file():
        steps, more = read_columns(steps_csv, STEPS_REQUIRED, ("epoch", "lr"), tolerate_partial_last_line=True)
        notes += more
        loss, per_step = Curve(steps["step"], steps["loss"]), True
        lr = Curve(steps["step"], steps["lr"])
    else:
        notes.append(f"note: {run} has no steps.csv: its loss curve is per epoch (train_loss of metrics.csv)")
        loss, per_step = Curve(metrics["step"], metrics["train_loss"]), False
        lr = Curve(metrics["step"], metrics["lr"])
    if not loss.x.size:
        raise DataError(f"{run}: {'steps.csv' if per_step else 'metrics.csv'} has a header but no rows yet; "
                        "expected at least one logged step")
    val = {k: Curve(metrics["step"], metrics[k]).finite() for k, _ in VAL_PANELS} if metrics is not None else {}
    lr = lr.finite()
    return RunCurves(run, label, loss, per_step, lr if lr.x.size else None, val, notes)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average that skips NaN (a NaN loss leaves a gap, not a poisoned average)."""
    ok = np.isfinite(y)
    v = np.where(ok, y, 0.0)
    c = np.concatenate([[0.0], np.cumsum(v)])
    n = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    count = n[idx] - n[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (c[idx] - c[lo]) / np.maximum(count, 1), np.nan)


def _unique_labels(runs: Sequence[RunCurves]) -> list[str]:
    """Run labels, with the folder added where two runs would read the same (same neuron and seed)."""
    labels = [r.label for r in runs]
    out = []
    for r, label in zip(runs, labels):
        if labels.count(label) > 1:
            names = [x.path.name for x, lab in zip(runs, labels) if lab == label]
            label += f" ({r.path.name if names.count(r.path.name) == 1 else r.path})"
        out.append(label)
    return out


def _loss_panel(ax, runs: Sequence[RunCurves], colors: list[str]) -> None:
    """Training loss: per step (faint raw values under a moving average) or dashed per epoch; log scale when the
    loss spans more than 20x."""
    for run, color in zip(runs, colors):
        if run.loss_per_step:
            n = len(run.loss.x)
            window = max(1, n // 50)
            if window > 1:  # the raw per-step loss is noisy: faint, with its moving average on top
                ax.plot(run.loss.x, run.loss.y, color=color, alpha=0.25, linewidth=0.6)
            ax.plot(run.loss.x, _smooth(run.loss.y, window), color=color, linewidth=1.5)
        else:
            ax.plot(run.loss.x, run.loss.y, color=color, linewidth=1.5, linestyle="--", marker="o", markersize=3)
    ys = np.concatenate([r.loss.finite().y for r in runs])
    if ys.size and ys.min() > 0 and ys.max() / ys.min() > 20:
        ax.set_yscale("log")
    per_epoch = [not r.loss_per_step for r in runs]
    ax.set_title("training loss" + (" (dashed: per epoch)" if any(per_epoch) else ""))


def _lr_panel(ax, runs: Sequence[RunCurves], colors: list[str]) -> None:
    """Learning rate on a log scale, or "no data" when no run logged one."""
    if any(r.lr is not None for r in runs):
        for run, color in zip(runs, colors):
            if run.lr is not None:
                ax.plot(run.lr.x, run.lr.y, color=color, linewidth=1.2)
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")
    ax.set_title("learning rate")


def _val_panels(axes, runs: Sequence[RunCurves], colors: list[str]) -> None:
    """One panel per validation metric (:data:`VAL_PANELS`), "no validation yet" where no run has a value."""
    for ax, (key, title) in zip(axes, VAL_PANELS):
        drawn = False
        for run, color in zip(runs, colors):
            curve = run.val.get(key)
            if curve is not None and curve.x.size:
                ax.plot(curve.x, curve.y, color=color, linewidth=1.2, marker="o", markersize=3)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_title(title)


def curves_figure(runs: Sequence[RunCurves]):
    """A matplotlib ``Figure`` (Agg canvas) with six panels over optimizer steps: training loss, learning rate,
    validation MSE, MAE, SSIM, PSNR; one colour per run, named in the legend on top."""
    from stcsnn.viz import require_viz

    require_viz("stcsnn plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(13, 7.5), dpi=110, facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    labels = _unique_labels(runs)
    _loss_panel(axes[0], runs, colors)
    _lr_panel(axes[1], runs, colors)
    _val_panels(axes[2:], runs, colors)
    for ax in axes:
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers, even on short runs
        ax.grid(True, alpha=0.3)
        ax.title.set_fontsize(10)

    handles = [Line2D([], [], color=c, linewidth=2) for c in colors]
    ncol = min(len(runs), 3)
    legend_rows = math.ceil(len(runs) / ncol)
    fig.legend(handles, labels, loc="upper center", ncol=ncol, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.995))
    fig.subplots_adjust(top=0.92 - 0.035 * legend_rows, bottom=0.08, left=0.06, right=0.98, hspace=0.35,
                        wspace=0.25)
    return fig


def write_curves(runs: Sequence[RunCurves], out: str | os.PathLike) -> Path:
    """Draw :func:`curves_figure` and write it as PNG, atomically; returns the path."""
    from stcsnn.io import atomic_write_bytes

    fig = curves_figure(runs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)
