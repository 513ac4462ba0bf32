"""How long ``stcsnn --help`` takes: the median wall and CPU time of fresh processes.

    python benchmarks/cli_startup.py                     # stcsnn --help, 10 processes
    python benchmarks/cli_startup.py --runs 20 train --help

Runs the ``stcsnn`` script beside this Python (else ``python -m stcsnn``) with the given arguments (default
``--help``), one process after another, output discarded; each process's CPU time (user + system) comes from
``os.wait4``. Prints the medians, the spread and the machine's load average (a busy machine stretches the wall
time, much less the CPU time). A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def command() -> list[str]:
    """The ``stcsnn`` console script of this environment, else ``python -m stcsnn``."""
    script = Path(sys.executable).with_name("stcsnn")
    if script.is_file():
        return [str(script)]
    found = shutil.which("stcsnn")
    return [found] if found else [sys.executable, "-m", "stcsnn"]


def run_once(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit status) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def main(args: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10, help="fresh processes to time (default 10)")
    p.add_argument("stcsnn_args", nargs=argparse.REMAINDER, help="arguments of stcsnn (default --help)")
    opts = p.parse_args(args)
    if opts.runs < 1:
        p.error(f"--runs must be >= 1, got {opts.runs}")
    argv = command() + (opts.stcsnn_args or ["--help"])
    run_once(argv)  # untimed: fills the page cache (and writes .pyc files) as any earlier use would have
    walls, cpus, codes = [], [], set()
    for _ in range(opts.runs):
        wall, cpu, code = run_once(argv)
        walls.append(wall)
        cpus.append(cpu)
        codes.add(code)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{' '.join(argv)}  ({opts.runs} processes, exit status {', '.join(map(str, sorted(codes)))})")
    print(f"wall  median {statistics.median(walls):.3f} s  (min {min(walls):.3f}, max {max(walls):.3f})")
    print(f"cpu   median {statistics.median(cpus):.3f} s  (min {min(cpus):.3f}, max {max(cpus):.3f})")
    print(f"load average {load} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
