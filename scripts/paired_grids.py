"""The same models trained two ways: paired by seed, what changes from grid A to grid B?

    python scripts/paired_grids.py runs/tclif_sg/small runs/tclif_grad/small --names sg,grad

A and B are two ``stcsnn reproduce`` output folders (each holding the ``runs.csv`` it wrote) whose cells differ in
one setting (a ``--set`` given to one of them). Every (dataset, model) with test results in both is paired by
seed, and each reported metric's B - A difference is summarised over the seeds common to both: mean, the 95%
Student t interval and the seed bootstrap interval of the mean difference, the paired t-test's p-value and Holm's
adjustment over every row and metric printed (one family), and on how many seeds B is better (by the metric
table's direction, ``stcsnn.metrics.METRICS``). Prints a Markdown table; reads nothing else and writes nothing."""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from pathlib import Path

from stcsnn.analysis.stats import holm, paired_summary
from stcsnn.metrics import METRICS, reported_metrics


def read_runs(folder: Path) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
    """``{(dataset, model): {seed: {metric: value}}}`` from ``folder/runs.csv`` (cells without a test result, an
    empty ``mse``, are left out)."""
    path = folder / "runs.csv"
    if not path.is_file():
        raise ValueError(f"expected a reproduce output folder holding runs.csv, found no {path}")
    out: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("dataset", "model", "seed", "mse") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"expected the columns dataset, model, seed and the metrics in {path}, found no "
                             f"{missing[0]!r}")
        for row in reader:
            if not row["mse"]:
                continue
            values = {m: float(row[m]) for m in METRICS if row.get(m)}
            out.setdefault((row["dataset"], row["model"]), {})[int(row["seed"])] = values
    return out


def _natural(key: tuple[str, str]) -> list:
    """Sort key: numbers inside names by value (recall_d5 before recall_d10)."""
    return [int(part) if part.isdigit() else part for name in key for part in re.split(r"(\d+)", name)]


def compare(a: dict, b: dict, metrics: tuple[str, ...]) -> list[dict]:
    """One row per (dataset, model, metric) present in both, with the B - A summary over the common seeds;
    datasets and models in natural order."""
    rows = []
    for key in sorted(set(a) & set(b), key=_natural):
        seeds = sorted(set(a[key]) & set(b[key]))
        if len(seeds) < 2:
            continue
        for m in metrics:
            if not all(m in a[key][s] and m in b[key][s] for s in seeds):
                continue
            va = [a[key][s][m] for s in seeds]
            vb = [b[key][s][m] for s in seeds]
            diffs = [y - x for x, y in zip(va, vb)]
            better = sum((d < 0) if METRICS[m].lower_is_better else (d > 0) for d in diffs)
            rows.append({"dataset": key[0], "model": key[1], "metric": m, "seeds": seeds, "a": va, "b": vb,
                         "better": better, **paired_summary(diffs)})
    for row, adjusted in zip(rows, holm([r["p_t"] for r in rows])):
        row["p_holm"] = adjusted
    return rows


def _mean_sd(values: list[float], fmt: str) -> str:
    return f"{format(statistics.fmean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def table(rows: list[dict], names: tuple[str, str]) -> str:
    a, b = names
    lines = [f"| dataset | model | metric | seeds | {a} (mean ± sd) | {b} (mean ± sd) | {b} − {a} (95% t) | "
             f"bootstrap 95% | p (t / Holm) | {b} better |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fmt = METRICS[r["metric"]].fmt
        lo, hi = r["ci_t"]
        blo, bhi = r["ci_boot"]
        lines.append(f"| {r['dataset']} | {r['model']} | {METRICS[r['metric']].label} | "
                     f"{','.join(map(str, r['seeds']))} | {_mean_sd(r['a'], fmt)} | {_mean_sd(r['b'], fmt)} | "
                     f"{r['mean']:+.4g} [{lo:+.4g}, {hi:+.4g}] | [{blo:+.4g}, {bhi:+.4g}] | "
                     f"{r['p_t']:.3g} / {r['p_holm']:.3g} | {r['better']}/{r['n']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="grid A: a reproduce output folder (<out>/<scale>) with runs.csv")
    ap.add_argument("b", type=Path, help="grid B, the same models trained the other way")
    ap.add_argument("--names", default="A,B", help="the two grids' names in the table (default A,B)")
    ap.add_argument("--metrics", default=",".join(reported_metrics()),
                    help="comma-separated metrics (default: the reported set)")
    args = ap.parse_args(argv)
    names = tuple(n.strip() for n in args.names.split(","))
    if len(names) != 2 or not all(names):
        print(f"error: --names expects two comma-separated names, got {args.names!r}", file=sys.stderr)
        return 2
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        print(f"error: --metrics expects names from {', '.join(METRICS)}, got {args.metrics!r}", file=sys.stderr)
        return 2
    try:
        a, b = read_runs(args.a), read_runs(args.b)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = compare(a, b, metrics)
    if not rows:
        print(f"error: expected (dataset, model) cells with test results for 2 or more common seeds in both "
              f"{args.a} and {args.b}, found none", file=sys.stderr)
        return 1
    print(table(rows, names), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
