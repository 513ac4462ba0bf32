"""Does training with ``--amp bf16`` on the CPU follow fp32?

    python benchmarks/bf16_check.py [--neurons lif,stc_lif] [--seeds 0,1,2] [--jobs 1] [--out runs/bf16_check]

For each neuron and seed it runs ``stcsnn train`` twice in a subprocess (``--threads 1``), fp32 (the default)
and ``--amp bf16``, for 300 optimizer steps (3 epochs x 100 steps, validation after every epoch) at the ``small``
configuration of ``stcsnn bench`` (hidden 64 x 3, kernel 5, patch 4, batch 4, 10 -> 10 frames) on Moving
Fashion-MNIST, with the training schedule of the ``small`` scale of ``stcsnn reproduce`` (lr, warm-up,
scheduled sampling, validation batches). Every run has its own folder ``OUT/<neuron>-<precision>-seed<seed>``; a
run whose folder holds ``report.json`` (written by ``train`` at its end) is skipped and an unfinished one is
continued from its ``last.pt`` (``--resume auto``), so the check can be stopped and started again.

Per neuron it then compares, seed by seed, (a) the mean training loss over steps 201-300 (``steps.csv``), (b) the
validation MSE after step 300 (``metrics.csv``, last epoch) and (c) the loss curves: the mean over steps 1-300 of
|loss_bf16 - loss_fp32| of the same seed (same data, same initial weights), next to the same quantity between the
fp32 runs of different seeds. Verdict for (a) and (b): bf16's seed mean lies within fp32's seed-to-seed spread,
|mean_bf16 - mean_fp32| <= 2 * sd_fp32 (sample standard deviation over seeds); for (c): the mean same-seed
bf16-fp32 curve difference is at most the mean fp32 seed-to-seed curve difference. ``OUT/bf16_check.md`` (printed)
and ``OUT/bf16_check.json`` hold the table, the verdicts and the machine, torch version, threads, date, commit and
command.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path

import torch

from stcsnn.children import python_command
from stcsnn.device import cpu_model
from stcsnn.errors import StcsnnError
from stcsnn.io import NOFOLLOW, atomic_write_text
from stcsnn.perf.bench import CONFIGS

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16")
EPOCHS, STEPS_PER_EPOCH = 3, 100
LAST_STEP = EPOCHS * STEPS_PER_EPOCH
#: the steps whose training loss is averaged for (a): the last epoch
LATE_STEPS = (201, 300)
#: the number of sample standard deviations of fp32's seed means that bf16's seed mean may be away
SPREAD = 2.0
THREADS = 1
#: ``stcsnn train`` needs a config file; every key is given by ``--set`` so that the logged command is complete
BASE_CONFIG = "{}\n"
#: the code of each training child: the stcsnn command line, its arguments after it
CLI_CODE = "import sys; from stcsnn.cli import main; sys.exit(main())"
DATASET = "mfmnist"


class CheckError(StcsnnError):
    """A run's records are missing or not what ``stcsnn train`` writes."""


# ------------------------------------------------------------------------------------------------ the runs


#: The training schedule of the check: the ``small`` scale's as it was when the check ran (commit aceeb65; the
#: scale has since changed to a smaller task, see scales.py), written out so that the check reruns as it ran.
SCHEDULE = {"batch_size": 4, "eval_batch_size": 16, "lr": 1.0e-3, "min_lr": 1.0e-5, "warmup_epochs": 1,
            "warmup_lr": 1.0e-4, "sampling": "scheduled", "sampling_changing_rate": 1.5e-3, "sampling_stop_iter": 700,
            "max_val_batches": 4, "num_visualize": 4, "data_options": {}}


def run_config(neuron: str, seed: int) -> dict:
    """The config keys of one run: :data:`SCHEDULE`, the bench's ``small`` model and frames (two garments on
    64x64, 10 -> 10), 300 steps with validation every epoch."""
    return {**SCHEDULE, **CONFIGS["small"],
            "epochs": EPOCHS, "steps_per_epoch": STEPS_PER_EPOCH, "val_every": 1,
            # the test report only marks the run finished here (the check reads training and validation): one
            # batch instead of 16 saves about 15 s a run
            "max_test_batches": 1,
            "dataset": DATASET, "neuron": neuron, "seed": seed, "device": "cpu"}


def yaml_value(value: object) -> str:
    """``value`` as the YAML text of a ``--set`` item. Floats keep a ``.``: YAML reads ``1e-05`` as a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return str(value)


def run_name(neuron: str, precision: str, seed: int) -> str:
    return f"{neuron}-{precision}-seed{seed}"


def train_command(base: Path, run_dir: Path, neuron: str, precision: str, seed: int) -> list[str]:
    # a fresh interpreter that imports nothing from the current directory (``-m stcsnn`` would put it first)
    cmd = python_command(CLI_CODE, "train", "--config", str(base), "--out", str(run_dir),
                         "--resume", "auto", "--threads", str(THREADS), "--quiet")
    if precision == "bf16":
        cmd += ["--amp", "bf16"]
    for key, value in run_config(neuron, seed).items():
        cmd += ["--set", f"{key}={yaml_value(value)}"]
    return cmd


def run_one(out: Path, base: Path, neuron: str, precision: str, seed: int) -> tuple[str, int]:
    """Train one run unless its report is written; (name, exit status). Its output goes to OUT/logs/NAME.log."""
    name = run_name(neuron, precision, seed)
    run_dir = out / name
    if (run_dir / "report.json").is_file():
        print(f"{name}: finished earlier, skipped", flush=True)
        return name, 0
    cmd = train_command(base, run_dir, neuron, precision, seed)
    log = out / "logs" / f"{name}.log"
    print(f"{name}: training (log {log})", flush=True)
    start = datetime.datetime.now()
    # appended, never through a symbolic link planted at the log's place
    with open(log, "a", opener=lambda p, flags: os.open(p, flags | NOFOLLOW, 0o644)) as f:
        f.write(f"# {start.isoformat(timespec='seconds')} {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    seconds = (datetime.datetime.now() - start).total_seconds()
    # 130: stopped by Ctrl-C, after saving last.pt (the next start continues it)
    what = "done" if rc == 0 else "stopped" if rc == 130 else f"FAILED (exit {rc})"
    print(f"{name}: {what} in {seconds:.0f} s", flush=True)
    return name, rc


# --------------------------------------------------------------------------------- reading and the verdict


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file a run wrote (one error line when it cannot be read)."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError as exc:
        raise CheckError(f"cannot read {path}: {exc.strerror}") from None


def read_step_losses(path: Path) -> dict[int, float]:
    """``steps.csv`` -> {step: training loss}."""
    rows = read_rows(path)
    try:
        return {int(r["step"]): float(r["loss"]) for r in rows}
    except (KeyError, TypeError, ValueError):
        raise CheckError(f"{path}: expected the columns step,loss with numbers in every row") from None


def read_val_mse(path: Path, step: int = LAST_STEP) -> float:
    """``metrics.csv`` -> the validation MSE of the epoch that ended at ``step``."""
    rows = read_rows(path)
    try:
        found = [float(r["val_mse"]) for r in rows if int(r["step"]) == step]
    except (KeyError, TypeError, ValueError):
        raise CheckError(f"{path}: expected the columns step,val_mse with numbers in every row") from None
    if len(found) != 1:
        raise CheckError(f"{path}: expected one row at step {step}, found {len(found)}")
    return found[0]


def mean_loss(losses: dict[int, float], first: int = LATE_STEPS[0], last: int = LATE_STEPS[1]) -> float:
    """The mean training loss over steps ``first``..``last`` (every one of them must be there)."""
    missing = [s for s in range(first, last + 1) if s not in losses]
    if missing:
        raise CheckError(f"expected the loss of every step {first}..{last}, missing {len(missing)} (first: "
                         f"step {missing[0]})")
    return statistics.fmean(losses[s] for s in range(first, last + 1))


def curve_difference(a: dict[int, float], b: dict[int, float]) -> float:
    """The mean over steps of |a - b|, two loss curves of the same steps."""
    if set(a) != set(b) or not a:
        raise CheckError(f"expected two loss curves of the same steps, found {len(a)} and {len(b)} steps")
    return statistics.fmean(abs(a[s] - b[s]) for s in sorted(a))


def verdict(fp32: list[float], bf16: list[float], spread: float = SPREAD) -> dict:
    """Is bf16's seed mean within ``spread`` sample standard deviations of fp32's seed mean?"""
    if len(fp32) < 2 or not bf16:
        raise CheckError(f"expected at least 2 fp32 seeds and 1 bf16 seed, found {len(fp32)} and {len(bf16)}")
    mean_fp32, mean_bf16 = statistics.fmean(fp32), statistics.fmean(bf16)
    sd_fp32 = statistics.stdev(fp32)
    diff = abs(mean_bf16 - mean_fp32)
    return {"mean_fp32": mean_fp32, "sd_fp32": sd_fp32, "min_fp32": min(fp32), "max_fp32": max(fp32),
            "mean_bf16": mean_bf16, "difference": diff, "limit": spread * sd_fp32, "within": diff <= spread * sd_fp32}


def curve_verdict(same_seed: list[float], fp32_between_seeds: list[float]) -> dict:
    """Is the mean same-seed bf16-fp32 curve difference at most the mean fp32 seed-to-seed one?"""
    if not same_seed or not fp32_between_seeds:
        raise CheckError("expected at least one bf16/fp32 pair and two fp32 seeds for the curve difference")
    mean_same, mean_between = statistics.fmean(same_seed), statistics.fmean(fp32_between_seeds)
    return {"mean_bf16_vs_fp32": mean_same, "mean_fp32_seed_to_seed": mean_between,
            "within": mean_same <= mean_between}


def neuron_summary(seeds: list[int], curves: dict[str, dict[int, dict[int, float]]],
                   val_mse: dict[str, dict[int, float]]) -> dict:
    """The per-seed values and the three verdicts of one neuron. ``curves[precision][seed]`` is the run's
    {step: loss}, ``val_mse[precision][seed]`` its validation MSE after the last step."""
    late = {p: {s: mean_loss(curves[p][s]) for s in seeds} for p in PRECISIONS}
    same_seed = {s: curve_difference(curves["bf16"][s], curves["fp32"][s]) for s in seeds}
    between = {f"{a}-{b}": curve_difference(curves["fp32"][a], curves["fp32"][b]) for a, b in combinations(seeds, 2)}
    return {
        "seeds": {str(s): {"late_loss_fp32": late["fp32"][s], "late_loss_bf16": late["bf16"][s],
                           "val_mse_fp32": val_mse["fp32"][s], "val_mse_bf16": val_mse["bf16"][s],
                           "curve_difference": same_seed[s]} for s in seeds},
        "fp32_curve_difference_between_seeds": between,
        "late_loss": verdict([late["fp32"][s] for s in seeds], [late["bf16"][s] for s in seeds]),
        "val_mse": verdict([val_mse["fp32"][s] for s in seeds], [val_mse["bf16"][s] for s in seeds]),
        "curve": curve_verdict(list(same_seed.values()), list(between.values())),
    }


def _g(x: float) -> str:
    return format(x, ".5g")


def markdown(summary: dict[str, dict], meta: dict) -> str:
    """The report: per neuron a table of the seeds and the verdict lines; then how it was made."""
    lines = ["# bf16 vs fp32 training on the CPU", "",
             f"{LAST_STEP} steps ({EPOCHS} epochs x {STEPS_PER_EPOCH}), `small` configuration, dataset "
             f"{meta['dataset']}. Late loss: mean training loss over steps {LATE_STEPS[0]}-{LATE_STEPS[1]}; "
             f"val MSE: validation MSE after step {LAST_STEP}; curve diff: mean over steps of |loss_bf16 - "
             "loss_fp32|, same seed. Verdict: |mean_bf16 - mean_fp32| <= "
             f"{SPREAD:g} x sd_fp32 (sample sd over seeds).", ""]
    for neuron, s in summary.items():
        lines += [f"## {neuron}", "",
                  "| seed | late loss fp32 | late loss bf16 | val MSE fp32 | val MSE bf16 | curve diff |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for seed, r in s["seeds"].items():
            lines.append(f"| {seed} | {_g(r['late_loss_fp32'])} | {_g(r['late_loss_bf16'])} | "
                         f"{_g(r['val_mse_fp32'])} | {_g(r['val_mse_bf16'])} | {_g(r['curve_difference'])} |")
        lines.append("")
        for key, what in (("late_loss", "late loss"), ("val_mse", "val MSE")):
            v = s[key]
            lines.append(f"- {what}: fp32 {_g(v['mean_fp32'])} (sd {_g(v['sd_fp32'])}, {_g(v['min_fp32'])}.."
                         f"{_g(v['max_fp32'])}), bf16 {_g(v['mean_bf16'])}; |difference| {_g(v['difference'])} "
                         f"{'<=' if v['within'] else '>'} {_g(v['limit'])}: "
                         f"**{'within' if v['within'] else 'OUTSIDE'}** fp32's seed spread")
        c = s["curve"]
        lines.append(f"- loss curve: bf16 vs fp32 same seed {_g(c['mean_bf16_vs_fp32'])}, fp32 seed to seed "
                     f"{_g(c['mean_fp32_seed_to_seed'])}: **{'within' if c['within'] else 'OUTSIDE'}**")
        lines.append("")
    lines += ["## Machine", "",
              f"- CPU: {meta['cpu']} ({meta['cpus']} CPUs), torch {meta['torch']}, {meta['threads']} thread per run, "
              f"{meta['jobs']} run(s) at a time",
              f"- date: {meta['date']}, commit: {meta['commit']}",
              f"- command: `{meta['command']}`", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- the CLI


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise CheckError(f"--seeds: expected comma-separated integers, e.g. 0,1,2, found {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--neurons", default="lif,stc_lif", help="comma-separated (default lif,stc_lif)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated, at least 2 (default 0,1,2)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each on one thread (default 1)")
    p.add_argument("--out", default="runs/bf16_check", help="folder of the runs and the report")
    args = p.parse_args(argv)
    try:
        neurons = [n.strip() for n in args.neurons.split(",") if n.strip()]
        seeds = _int_list(args.seeds)
        if len(set(seeds)) < 2 or len(set(seeds)) != len(seeds):
            raise CheckError(f"--seeds: expected at least 2 different seeds, found {args.seeds!r}")
        if not neurons:
            raise CheckError(f"--neurons: expected at least one neuron name, found {args.neurons!r}")
        if args.jobs < 1:
            raise CheckError(f"--jobs: expected a number >= 1, found {args.jobs}")
        out = Path(args.out).resolve()
        (out / "logs").mkdir(parents=True, exist_ok=True)
        base = out / "base.yaml"
        if not base.is_file():
            atomic_write_text(base, BASE_CONFIG)
        # seed by seed, so that a stopped check has whole seeds of every neuron and precision to show
        todo = [(n, prec, s) for s in seeds for n in neurons for prec in PRECISIONS]
        pool = ThreadPoolExecutor(args.jobs)
        try:
            done = list(pool.map(lambda t: run_one(out, base, *t), todo))
        except KeyboardInterrupt:
            # the running trainings got the Ctrl-C too (same process group): they save last.pt and stop; the
            # queued ones must not start (a plain `with` would wait for every one of them)
            pool.shutdown(wait=True, cancel_futures=True)
            print(f"stopped: run the same command again to continue (finished runs are kept in {out})",
                  file=sys.stderr)
            return 130
        pool.shutdown()
        failed = [name for name, rc in done if rc != 0]
        if failed:
            raise CheckError(f"{len(failed)} run(s) failed ({', '.join(failed)}): see {out / 'logs'}; run the "
                             "same command again to continue them")
        summary = {}
        for n in neurons:
            curves = {prec: {s: read_step_losses(out / run_name(n, prec, s) / "steps.csv") for s in seeds}
                      for prec in PRECISIONS}
            val = {prec: {s: read_val_mse(out / run_name(n, prec, s) / "metrics.csv") for s in seeds}
                   for prec in PRECISIONS}
            summary[n] = neuron_summary(seeds, curves, val)
    except StcsnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = {"cpu": cpu_model() or platform.processor() or "unknown", "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": THREADS, "jobs": args.jobs,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": _commit(), "dataset": DATASET,
            "command": " ".join(["python", "benchmarks/bf16_check.py", *(argv if argv is not None else sys.argv[1:])]),
            "config": {n: run_config(n, seeds[0]) for n in neurons}}
    text = markdown(summary, meta)
    atomic_write_text(out / "bf16_check.md", text)
    atomic_write_text(out / "bf16_check.json", json.dumps({"meta": meta, "neurons": summary}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
