"""From the cells' files to numbers: one row per cell, means over seeds, and each STC neuron against its base.

Which metrics, their direction (lower or higher is better) and labels come from the metric table
(:data:`stcsnn.metrics.METRICS`, the reported set :func:`~stcsnn.metrics.reported_metrics`); the pairs from the
neuron registry (:func:`stcsnn.neurons.registry.stc_pairs`: an STC neuron against its declared base).

Paired statistics (:mod:`stcsnn.analysis.stats`), per pair and metric, over the seeds both models finished:
the mean difference STC-X minus X with its 95% t interval and two-sided paired t-test p-value, a percentile
bootstrap interval (two-level, seeds then test sequences, where each cell recorded per-sequence values; over
seeds otherwise), and Holm's correction over every pair x reported metric of the grid. :data:`PRIMARY` is the
metric declared primary. A difference is *shown* only when both intervals exclude 0.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stcsnn.analysis.grid.cells import Cell, read_cell_json
from stcsnn.analysis.grid.evaluate import cell_energy, horizon_ranges, long_horizon, sequence_record
from stcsnn.analysis.stats import holm, paired_summary, t_interval
from stcsnn.metrics import METRICS, reported_metrics

#: the metric the comparison is judged on (declared before any run; the others are secondary)
PRIMARY = "mse"
CONFIDENCE = 0.95
#: the other columns of the table: counts, rates and times (means and std over seeds)
COST_KEYS = ("params", "macs", "sops", "energy_snn_uj", "energy_ann_uj", "firing_rate", "train_seconds",
             "cell_wall_seconds")
#: the clipping threshold the training gradient-norm statistics are stated against: how often, and how far, a
#: ``grad_clip`` of this value would have clipped (1.0 is the usual choice; no grid cell clips)
CLIP_REFERENCE = 1.0
#: the training gradient-norm statistics of a cell (:func:`grad_norm_stats`, from ``steps.csv``)
GRAD_KEYS = ("grad_norm_median", "grad_norm_p99", "grad_norm_max", "clipped_share", "clipped_excess")
#: what each session of a cell records of where it ran (``timing.json``), columns of runs.csv
PROVENANCE = ("machine", "commit")
#: the nested details of a row, kept for results.json and out of the CSV files
DETAILS = ("per_horizon", "long", "timing", "per_sequence")


def lower_is_better(key: str) -> bool:
    """A metric's direction from the metric table; the long-horizon MSE ranges (``mse_a_b``) are MSEs."""
    return METRICS[key].lower_is_better if key in METRICS else METRICS["mse"].lower_is_better


def training_seconds(run_dir: Path) -> float:
    """Sum of the per-epoch ``seconds`` of ``metrics.csv`` (training and validation, resumptions included)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return float("nan")
    with path.open() as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds"))


def selected_epoch(run_dir: Path, checkpoint: str) -> int | None:
    """The epoch whose weights the test report evaluated: the first epoch with the lowest validation MSE of
    ``metrics.csv`` (the training loop writes best.pt only on a strict improvement), the last epoch when the
    report evaluated last.pt; None without ``metrics.csv``."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if Path(checkpoint).name == "last.pt":
        return int(rows[-1]["epoch"]) if rows else None
    val = [(float(r["val_mse"]), int(r["epoch"])) for r in rows if r.get("val_mse")]
    val = [v for v in val if math.isfinite(v[0])]
    return min(val, key=lambda v: v[0])[1] if val else None


def grad_norm_stats(run_dir: Path, clip: float = CLIP_REFERENCE) -> dict[str, float]:
    """Statistics of the global gradient norm before clipping over every optimizer step of ``steps.csv``:
    median, 99th percentile, maximum; ``clipped_share``, the fraction of steps whose norm exceeds ``clip``; and
    ``clipped_excess``, their mean norm / ``clip`` (how far a clip would have scaled them down; NaN when none).
    All NaN without ``steps.csv`` or its ``grad_norm`` column (runs of older versions)."""
    path = run_dir / "steps.csv"
    norms: list[float] = []
    if path.is_file():
        with path.open() as f:
            norms = [float(r["grad_norm"]) for r in csv.DictReader(f) if r.get("grad_norm")]
        norms = [n for n in norms if math.isfinite(n)]
    if not norms:
        return {k: float("nan") for k in GRAD_KEYS}
    arr = np.asarray(norms)
    over = arr[arr > clip]
    return {"grad_norm_median": float(np.median(arr)), "grad_norm_p99": float(np.percentile(arr, 99)),
            "grad_norm_max": float(arr.max()), "clipped_share": float(len(over) / len(arr)),
            "clipped_excess": float(over.mean() / clip) if len(over) else float("nan")}


def _timing(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "timing.json"
    sessions = read_cell_json(path, "the cell's timing record", ("sessions",))["sessions"] if path.is_file() else []
    loads = [x for s in sessions for x in (s.get("loadavg_start"), s.get("loadavg_end")) if x is not None]
    return {"cell_wall_seconds": sum(s["train_wall_seconds"] + s["eval_wall_seconds"] for s in sessions)
            if sessions else float("nan"),
            "threads": sorted({s["threads"] for s in sessions}), "jobs": sorted({s["jobs"] for s in sessions}),
            "loadavg": [min(loads), max(loads)] if loads else [],
            # where the cell ran and which source ran it (sessions written before these were recorded lack them)
            **{key: "+".join(dict.fromkeys(str(s[key]) for s in sessions if s.get(key))) for key in PROVENANCE}}


def range_key(a: int, b: int) -> str:
    return f"mse_{a}_{b}"


def _ranges(long: dict[str, Any]) -> dict[str, float]:
    if not long.get("available"):
        return {}
    return {range_key(a, b): float(long["ranges"][f"{a}-{b}"])
            for a, b in horizon_ranges(long["trained_output_frames"], long["horizon"])}


def cell_row(cell: Cell) -> dict[str, Any]:
    """One row of ``runs.csv``: the cell's test metrics, long-horizon MSE ranges, counts, firing rate, times and
    selected epoch (``per_horizon``, ``long``, ``timing`` and ``per_sequence`` hold the details)."""
    from stcsnn.neurons.registry import get_spec

    report = cell.report
    record = sequence_record(cell)
    energy = cell_energy(cell)
    ann = get_spec(cell.model).is_ann
    rates = [float(r) for r in report.get("firing_rate") or []]
    total = energy["total"]
    # the test report's values; a metric it does not hold (registered later) from the per-sequence evaluation
    metrics = {m: float(report["metrics"].get(m, record["metrics"].get(m, math.nan))) for m in reported_metrics()}
    row: dict[str, Any] = {"dataset": cell.dataset, "model": cell.model, "kind": get_spec(cell.model).kind.upper(),
                           "seed": cell.seed, **metrics}
    long = long_horizon(cell) if cell.horizon else {"available": False, "reason": ""}  # none was asked for
    row.update(_ranges(long))
    timing = _timing(cell.run_dir)
    ckpt = str(report.get("checkpoint", "best.pt"))
    row.update({"params": total["params"], "macs": total["macs"], "sops": total["sops"],
                "energy_snn_uj": total["energy_snn_pj"] / 1e6, "energy_ann_uj": total["energy_ann_pj"] / 1e6,
                "firing_rate": float("nan") if ann or not rates else sum(rates) / len(rates),
                "train_seconds": training_seconds(cell.run_dir), "cell_wall_seconds": timing["cell_wall_seconds"],
                **grad_norm_stats(cell.run_dir),
                "selected_epoch": selected_epoch(cell.run_dir, ckpt), "checkpoint": Path(ckpt).name,
                "test_samples": report.get("num_samples"), "run_dir": str(cell.run_dir),
                **{key: timing[key] for key in PROVENANCE}})
    row.update({"per_horizon": report.get("per_horizon", {}), "long": long, "timing": timing,
                "per_sequence": record["per_sequence"]})
    return row


def reference_row(payload: dict[str, Any]) -> dict[str, Any]:
    """A table row of a naive reference predictor (:func:`.evaluate.reference_evaluation`): one "seed"."""
    test, long = payload["test"], payload["long"]
    row: dict[str, Any] = {"dataset": payload["dataset"], "model": payload["model"], "kind": "reference",
                           "seed": None, **{m: test["metrics"].get(m, math.nan) for m in reported_metrics()},
                           **_ranges(long), "test_samples": test["num_samples"]}
    row.update({"per_horizon": test["per_horizon"], "long": long,
                "timing": {"threads": [], "jobs": [], "loadavg": []}, "per_sequence": test["per_sequence"]})
    return row


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of the finite values; std is NaN for fewer than two."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else float("nan")


def range_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith("mse_") and k[4:].replace("_", "").isdigit())
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds per (dataset, model), in the order the rows came."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    out = []
    for (d, m), rs in groups.items():
        row = {"dataset": d, "model": m, "kind": rs[0]["kind"], "seeds": len(rs)}
        for k in (*reported_metrics(), *range_keys(rs), *COST_KEYS, *GRAD_KEYS):
            row[f"{k}_mean"], row[f"{k}_std"] = mean_std([r.get(k) for r in rs])
        out.append(row)
    return out


def mean_image_ratio(mse: float | None, mean_image_mse: float | None) -> float:
    """``mse`` as a multiple of the mean_image reference's MSE on the same data (below 1: better than predicting
    the mean frame); NaN when either is unknown or the reference is not positive."""
    if mse is None or mean_image_mse is None or not (math.isfinite(mse) and math.isfinite(mean_image_mse)) \
            or mean_image_mse <= 0:
        return float("nan")
    return mse / mean_image_mse


def delay_series(rows: list[dict[str, Any]], delays: dict[str, tuple[str, int]],
                 metrics: Sequence[str] = ("mse", "ssim")) -> list[dict[str, Any]]:
    """Per (dataset, model, delay), the mean and :func:`t_interval` over seeds of each metric of ``rows`` (cell
    rows and reference rows, ``dataset`` holding a variant label): ``delays`` maps each label to its registered
    dataset and delay; rows of other labels are left out. Ordered by dataset, model (as the rows came), delay."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["dataset"] in delays:
            d, delay = delays[r["dataset"]]
            groups.setdefault((d, r["model"], delay), []).append(r)
    order = {key: i for i, key in enumerate(dict.fromkeys((d, m) for d, m, _ in groups))}
    out = []
    for (d, m, delay), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][:2]], kv[0][2])):
        row: dict[str, Any] = {"dataset": d, "model": m, "delay": delay, "n": len(rs)}
        for k in metrics:
            row[f"{k}_mean"], row[f"{k}_lo"], row[f"{k}_hi"] = t_interval([r.get(k) for r in rs])
        out.append(row)
    return out


def _sequence_diffs(stc: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> np.ndarray | None:
    """(seeds, sequences) per-sequence differences of ``key``, when every cell recorded the same sequences."""
    try:
        a = np.array([r["per_sequence"][key] for r in stc], dtype=np.float64)
        b = np.array([r["per_sequence"][key] for r in base], dtype=np.float64)
    except (KeyError, TypeError, ValueError):  # not recorded, or of different lengths
        return None
    return a - b if a.ndim == 2 and a.shape == b.shape and a.shape[1] > 0 else None


def _statistics(diffs: list[float], sequences: np.ndarray | None) -> dict[str, Any]:
    """The interval statistics of one pair and metric (NaN with fewer than two seeds: no interval)."""
    nan = float("nan")
    out = {"ci_t_low": nan, "ci_t_high": nan, "ci_boot_low": nan, "ci_boot_high": nan, "p": nan,
           "bootstrap": "two-level" if sequences is not None else "seeds", "shown": False}
    if len(diffs) < 2 or not all(math.isfinite(x) for x in diffs):
        return out
    s = paired_summary(diffs, CONFIDENCE, per_sequence=sequences)
    out.update({"ci_t_low": s["ci_t"][0], "ci_t_high": s["ci_t"][1], "ci_boot_low": s["ci_boot"][0],
                "ci_boot_high": s["ci_boot"][1], "p": s["p_t"]})
    out["shown"] = all(lo > 0 or hi < 0 for lo, hi in (s["ci_t"], s["ci_boot"]))
    return out


def paired_differences(rows: list[dict[str, Any]], comparisons: Sequence[tuple[str, str]] = ()
                       ) -> list[dict[str, Any]]:
    """Per dataset and pair (STC neuron, its base; then each of ``comparisons``, ``(model, against)``, present in
    the rows, e.g. STC-LIF against LIF or against its single-pathway ablations): the difference of every metric
    for each seed both finished, its mean and sample std, in how many seeds the first model was the better one,
    and the statistics of the module docstring (``<metric>_ci_t_low`` ..., ``<metric>_p``, ``<metric>_p_holm``,
    ``<metric>_shown``); ``against`` is ``"base"`` or ``"comparison"``. Holm's family is every pair of both
    kinds x reported metric."""
    from stcsnn.neurons.registry import stc_pairs

    out = []
    for d in dict.fromkeys(r["dataset"] for r in rows):
        by = {(r["model"], r["seed"]): r for r in rows if r["dataset"] == d}
        models = list(dict.fromkeys(m for m, _ in by))
        pairs = [(*p, "base") for p in stc_pairs(models)]
        pairs += [(a, b, "comparison") for a, b in comparisons if a in models and b in models
                  and (a, b, "base") not in pairs]
        for stc, base, kind in pairs:
            seeds = sorted({s for m, s in by if m == stc} & {s for m, s in by if m == base})
            if not seeds:
                continue
            keys = [k for k in (*reported_metrics(), *range_keys([by[(stc, s)] for s in seeds]))
                    if all(k in by[(m, s)] for m in (stc, base) for s in seeds)]
            per_seed = [{"seed": s, **{k: by[(stc, s)][k] - by[(base, s)][k] for k in keys}} for s in seeds]
            row: dict[str, Any] = {"dataset": d, "stc": stc, "base": base, "against": kind, "seeds": seeds,
                                   "per_seed": per_seed}
            for k in keys:
                diffs = [p[k] for p in per_seed]
                row[f"{k}_mean"], row[f"{k}_std"] = mean_std(diffs)
                row[f"{k}_stc_better"] = sum((x < 0) if lower_is_better(k) else (x > 0) for x in diffs)
                sequences = _sequence_diffs([by[(stc, s)] for s in seeds], [by[(base, s)] for s in seeds], k)
                row.update({f"{k}_{name}": v for name, v in _statistics(diffs, sequences).items()})
            row["keys"] = keys
            out.append(row)
    family = [(p, k) for p in out for k in reported_metrics() if k in p["keys"] and math.isfinite(p[f"{k}_p"])]
    for (p, k), adjusted in zip(family, holm([p[f"{k}_p"] for p, k in family])):
        p[f"{k}_p_holm"] = adjusted
    for p in out:
        for k in p["keys"]:
            p.setdefault(f"{k}_p_holm", float("nan"))
    return out


def horizon_series(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (dataset, model, metric, predicted frame): from the long-term evaluation
    where every seed has one (``source: long``), else from the test report (``source: report``)."""
    out = []
    for d, m in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        rs = [r for r in rows if r["dataset"] == d and r["model"] == m]
        long = all(r["long"].get("available") for r in rs)
        for metric in reported_metrics():
            series = [(r["long"]["per_horizon"] if long else r["per_horizon"]).get(metric, []) for r in rs]
            for t in range(min((len(s) for s in series), default=0)):
                mean, std = mean_std([s[t] for s in series])
                out.append({"dataset": d, "model": m, "metric": metric, "frame": t + 1, "mean": mean, "std": std,
                            "seeds": len(rs), "source": "long" if long else "report"})
    return out
