"""How many CPU threads PyTorch should use: ``auto`` fits the CPUs this process may use and their load.

Why: on a 2-core machine where another job runs, OpenMP's spinning threads wait at each of the thousands of
small parallel regions of a training step for a thread the OS has descheduled, so that 2 threads can take
far longer a step than 1, while on a quiet machine 2 threads are the faster (``stcsnn bench --busy K``
measures both). So ``auto`` counts the CPUs this process may run on (its affinity mask and its
cgroup CPU quota) and subtracts the CPUs that other processes keep busy (sampled from ``/proc/stat`` over a
short interval), and a long training run re-checks the choice by timing (:class:`ThreadTuner`).

Precedence: an explicit ``--threads N`` (or ``set_threads(N)``) wins, then ``OMP_NUM_THREADS`` from the
environment, then ``auto``. Python API: ``stcsnn.set_threads("auto")`` (what every command does by default).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stcsnn.errors import ConfigError

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
PROC_STAT = Path("/proc/stat")


def affinity_cpus() -> set[int]:
    """The CPUs this process may run on (all of them where the OS has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cgroup_quota(v2: Path = CGROUP_V2, v1: tuple[Path, Path] = CGROUP_V1) -> float | None:
    """The cgroup CPU quota in CPUs (``"150000 100000"`` -> 1.5), or ``None`` when unlimited or unknown."""
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = int(v1[0].read_text()), int(v1[1].read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cpus(cpus: set[int] | None = None, quota: float | None = None) -> int:
    """``min(len(affinity), ceil(quota))``, at least 1."""
    n = len(affinity_cpus() if cpus is None else cpus)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def _cpu_times(stat_text: str, cpus: set[int]) -> tuple[float, float]:
    """(busy, total) jiffies summed over ``cpus`` from the text of ``/proc/stat``."""
    busy = total = 0.0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            index = int(name[3:])
        except ValueError:
            continue
        if index not in cpus:
            continue
        values = [float(v) for v in rest.split()]
        idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
        total += sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
        busy += sum(values[:8]) - idle
    return busy, total


def other_load(cpus: set[int] | None = None, interval: float = 0.2,
               read: Callable[[], str] | None = None) -> float:
    """CPUs kept busy by *other* processes on ``cpus`` over ``interval`` seconds (0 where unreadable): the busy
    share of those CPUs times their number, minus this process's own CPU time in the interval."""
    cpus = affinity_cpus() if cpus is None else cpus
    read = read or PROC_STAT.read_text
    try:
        b0, t0 = _cpu_times(read(), cpus)
        own0 = time.process_time()
        time.sleep(interval)
        b1, t1 = _cpu_times(read(), cpus)
        own1 = time.process_time()
    except OSError:
        return 0.0
    if t1 <= t0:
        return 0.0
    busy_cpus = (b1 - b0) / (t1 - t0) * len(cpus)
    own = (own1 - own0) / interval if interval > 0 else 0.0
    return max(0.0, busy_cpus - own)


def auto_threads(usable: int, load: float) -> int:
    """Threads for ``usable`` CPUs of which other processes keep ``load`` busy: the free ones, at least 1."""
    return max(1, min(usable, usable - int(load + 0.5)))


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str
    warning: str = ""  # printed once on stderr by set_threads (an explicit count above the usable CPUs)

    @property
    def auto(self) -> bool:
        """Chosen by ``auto`` (the count is the tool's to re-tune or restore), not given by the user."""
        return self.reason.startswith("auto")


def choose_threads(setting: int | str | None = "auto", environ: dict | None = None, cpus: set[int] | None = None,
                   quota: float | None = None, load: float | None = None) -> ThreadChoice:
    """The thread count for ``setting`` (an int, ``"auto"`` or ``None`` = auto); readings may be injected.

    An explicit count (``--threads N``, ``OMP_NUM_THREADS``) above the usable CPUs is capped at them, with a
    warning: more OpenMP threads than CPUs only wait for each other (10000 threads on 2 CPUs ran 9x slower)."""
    environ = os.environ if environ is None else environ
    cpu_set = affinity_cpus() if cpus is None else cpus

    def usable() -> int:
        return usable_cpus(cpu_set, cgroup_quota() if quota is None and cpus is None else quota)

    if setting not in (None, "auto"):
        return _capped(parse_threads(setting), "--threads ", usable())
    env = environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            n = max(1, int(env))
        except ValueError:
            pass  # not a plain number (e.g. "4,2" nested): let auto decide
        else:
            return _capped(n, "OMP_NUM_THREADS=", usable())
    n_usable = usable()
    busy = other_load(cpu_set) if load is None else load
    n = auto_threads(n_usable, busy)
    return ThreadChoice(n, f"auto: {n_usable} usable CPU(s), {busy:.1f} busy with other work")


def _capped(n: int, source: str, usable: int) -> ThreadChoice:
    """``n`` threads asked for by ``source`` (``"--threads "``, ``"OMP_NUM_THREADS="``), at most ``usable``."""
    if n <= usable:
        return ThreadChoice(n, f"{source}{n}")
    asked = f"{source}{n}" if n.bit_length() <= 64 else f"{source}<an integer of {n.bit_length()} bits>"
    return ThreadChoice(usable, f"{asked}, capped at the {usable} usable CPU(s)",
                        f"warning: {asked} is more threads than the {usable} CPU(s) this process may use; using "
                        f"{usable} (threads beyond the CPUs only wait for each other)")


def parse_threads(value: int | str) -> int:
    """``"auto"`` is handled by the caller; anything else must be an integer >= 1."""
    from stcsnn.config import quoted

    try:
        n = int(value)
    except (TypeError, ValueError):  # also a string of more digits than int() converts
        raise ConfigError(f"threads must be 'auto' or an integer >= 1, got {quoted(value)}") from None
    if n < 1:
        raise ConfigError(f"threads must be 'auto' or an integer >= 1, got {quoted(n)}")
    return n


def set_threads(setting: int | str | None = "auto", verbose: bool = False) -> ThreadChoice:
    """Choose and apply PyTorch's intra-op thread count (see the module docstring); returns the choice."""
    import torch

    choice = choose_threads(setting)
    torch.set_num_threads(choice.threads)
    import sys

    if choice.warning:
        print(choice.warning, file=sys.stderr)
    if verbose:
        print(f"threads: {choice.threads} ({choice.reason})", file=sys.stderr)
    return choice


class ThreadTuner:
    """Re-checks an ``auto`` thread count during a long run: every ``every`` steps it times ``probe`` steps at
    the current count and ``probe`` steps at one fewer thread (and one more, up to ``usable``), and keeps the
    fastest. Only speed changes: results of a step may differ by float rounding between thread counts.

    Call :meth:`step` with each step's duration in seconds; it returns the thread count to use next."""

    def __init__(self, threads: int, usable: int, every: int = 500, probe: int = 5,
                 apply: Callable[[int], None] | None = None) -> None:
        self.threads, self.usable, self.every, self.probe = threads, usable, max(1, every), max(1, probe)
        self.apply = apply or _torch_set
        self.count = 0
        self.trials: list[int] = []
        self.timings: dict[int, list[float]] = {}

    def _candidates(self) -> list[int]:
        return [n for n in (self.threads, self.threads - 1, self.threads + 1) if 1 <= n <= self.usable]

    def step(self, seconds: float) -> int:
        self.count += 1
        if self.trials:  # probing: record this step for the count in use
            current = self.trials[0]
            self.timings.setdefault(current, []).append(seconds)
            if len(self.timings[current]) >= self.probe:
                self.trials.pop(0)
                if self.trials:
                    self.apply(self.trials[0])
                else:
                    best = min(self.timings, key=lambda n: sorted(self.timings[n])[len(self.timings[n]) // 2])
                    self.threads = best
                    self.apply(best)
        elif self.count % self.every == 0 and len(self._candidates()) > 1:
            self.trials, self.timings = self._candidates(), {}
            self.apply(self.trials[0])
        return self.trials[0] if self.trials else self.threads


def _torch_set(n: int) -> None:
    import torch

    torch.set_num_threads(n)
