"""The figures of a ``stcsnn reproduce`` grid: ``per_horizon_<dataset>.png`` (every model, the reference
predictors dotted), ``pairs_<dataset>.png`` (each STC neuron against its declared base neuron) and
``recall_<dataset>.png`` (test MSE and SSIM against the delay of a grid's variants)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _band(ax, rows: list[dict[str, Any]], label: str, style: str = "-", color=None) -> None:
    x = [r["frame"] for r in rows]
    mean = [r["mean"] for r in rows]
    (line,) = ax.plot(x, mean, style, marker="o", ms=2.5, label=label, color=color)
    std = [r["std"] for r in rows]
    if all(s is not None and math.isfinite(s) for s in std):
        ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2, lw=0)


def plot_horizons(rows: list[dict[str, Any]], root: Path, trained: dict[str, int] | None = None) -> list[Path]:
    """``per_horizon_<dataset>.png`` (MSE and SSIM per predicted frame, every model) and ``pairs_<dataset>.png``
    (one row per STC neuron and its declared base); a dotted grey line marks the trained horizon."""
    from stcsnn.analysis.common import pyplot, save_figure
    from stcsnn.metrics import METRICS
    from stcsnn.neurons.registry import NEURONS, stc_pairs

    plt = pyplot()
    if plt is None:
        return []
    trained = trained or {}
    paths = []

    def finish(ax, d: str, metric: str) -> None:
        if d in trained and max(r["frame"] for r in rows if r["dataset"] == d) > trained[d]:
            ax.axvline(trained[d] + 0.5, color="grey", lw=0.8, ls=":",
                       label=f"trained horizon ({trained[d]} frames)")
        ax.set_xlabel("predicted frame")
        ax.set_ylabel(METRICS[metric].label + (" (per frame, sum over pixels)" if metric == "mse" else ""))
        # every panel has its legend, below the axes: no line or band is drawn over its text
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)

    for d in dict.fromkeys(r["dataset"] for r in rows):
        models = list(dict.fromkeys(r["model"] for r in rows if r["dataset"] == d))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, metric in zip(axes, ("mse", "ssim")):
            for m in models:
                rs = [r for r in rows if r["dataset"] == d and r["model"] == m and r["metric"] == metric]
                spec = NEURONS.get(m)  # the reference predictors are no neurons
                _band(ax, rs, m, ":" if spec is None else "--" if spec.is_ann else "-")
            finish(ax, d, metric)
            ax.set_title(f"{d}: {METRICS[metric].label} per predicted frame")
        fig.tight_layout()
        paths.append(save_figure(fig, root / f"per_horizon_{d}.png"))
        pairs = stc_pairs(models)
        if pairs:
            fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 3.4 * len(pairs)), squeeze=False)
            for (stc, base), row in zip(pairs, axes):
                for ax, metric in zip(row, ("mse", "ssim")):
                    for m, color in ((base, "tab:blue"), (stc, "tab:red")):
                        rs = [r for r in rows if r["dataset"] == d and r["model"] == m and r["metric"] == metric]
                        _band(ax, rs, m, color=color)
                    finish(ax, d, metric)
                    ax.set_title(f"{d}: {stc} vs {base}, {METRICS[metric].label}")
            fig.tight_layout()
            paths.append(save_figure(fig, root / f"pairs_{d}.png"))
    return paths


def plot_delays(rows: list[dict[str, Any]], path: Path) -> list[Path]:
    """Test MSE (left) and SSIM (right) against the delay, one line per model with its t interval over seeds as a
    band (:func:`~stcsnn.analysis.grid.aggregate.delay_series` rows of one dataset), the mean_image reference
    dotted (a predictor with no memory) and perfect memory (MSE 0, SSIM 1) dashed."""
    from stcsnn.analysis.common import pyplot, save_figure
    from stcsnn.metrics import METRICS
    from stcsnn.neurons.registry import NEURONS

    plt = pyplot()
    if plt is None or not rows:
        return []
    d = rows[0]["dataset"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, perfect in zip(axes, ("mse", "ssim"), (0.0, 1.0)):
        for m in dict.fromkeys(r["model"] for r in rows):
            rs = [r for r in rows if r["model"] == m]
            x, mean = [r["delay"] for r in rs], [r[f"{metric}_mean"] for r in rs]
            spec = NEURONS.get(m)  # the reference predictor is no neuron
            (line,) = ax.plot(x, mean, ":" if spec is None else "--" if spec.is_ann else "-", marker="o", ms=3,
                              label=m + (" (no memory)" if spec is None else ""))
            lo, hi = [r[f"{metric}_lo"] for r in rs], [r[f"{metric}_hi"] for r in rs]
            if all(v is not None and math.isfinite(v) for v in lo + hi):
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.axhline(perfect, color="black", lw=0.8, ls="--", label="perfect memory")
        ax.set_xticks(sorted({r["delay"] for r in rows}))
        ax.set_xlabel("delay D (blank frames between showing and recall)")
        ax.set_ylabel(METRICS[metric].label + (" (per frame, sum over pixels)" if metric == "mse" else ""))
        ax.set_title(f"{d}: test {METRICS[metric].label} against the delay (95% t interval over seeds)")
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    return [save_figure(fig, path)]
