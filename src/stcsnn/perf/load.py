"""Competing CPU load for ``stcsnn bench --busy K``: K processes that spin on the CPUs this process may use.

Each load process is a fresh Python interpreter running a tight pure-Python loop, pinned to this process's
CPU affinity set (so the OS schedules it on the same cores the benchmark runs on). It is bounded three ways,
so that no spinning process outlives the benchmark: :class:`BusyLoad` stops it on leaving its ``with`` block
(also on an exception or Ctrl-C), it exits by itself when its parent process is gone (the benchmark was
killed), and it exits by itself after ``max_seconds`` whatever happens.

This module imports no torch: starting the load costs nothing beyond the interpreters.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable

from stcsnn.children import python_command

#: the mark on every load process's command line (tests and ``ps`` can find them by it)
MARKER = "stcsnn-busy-load"
#: a load process never runs longer than this, even when nobody stops it
DEFAULT_MAX_SECONDS = 3600.0

# The loop: checks every ~50k iterations (a few ms) whether its deadline passed or its parent is gone. SIGINT
# keeps its default action (die quietly): a Ctrl-C at a terminal reaches the whole process group, and a
# traceback from each load process would bury the benchmark's own message.
_LOOP = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_DFL)
parent, deadline = int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
x = 0
while True:
    for _ in range(50000):
        x += 1
    if time.monotonic() > deadline or os.getppid() != parent:
        break
"""


def load_command(parent: int, max_seconds: float) -> list[str]:
    """The command line of one load process."""
    return python_command(_LOOP, MARKER, str(parent), f"{max_seconds:g}")


class BusyLoad:
    """``with BusyLoad(k): ...`` runs ``k`` spinning processes for the duration of the block (none for 0).

    ``cpus``: the CPUs to pin them to (default: this process's affinity set). The processes are stopped on
    leaving the block however it is left: SIGTERM, then SIGKILL for any still running after ``grace`` s."""

    def __init__(self, k: int, cpus: Iterable[int] | None = None, max_seconds: float = DEFAULT_MAX_SECONDS,
                 grace: float = 2.0) -> None:
        if k < 0:
            raise ValueError(f"the number of load processes must be >= 0, got {k}")
        if cpus is None:
            from stcsnn.threads import affinity_cpus

            cpus = affinity_cpus()
        self.k, self.cpus, self.max_seconds, self.grace = k, sorted(cpus), max_seconds, grace
        self.procs: list[subprocess.Popen] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> BusyLoad:
        try:
            for _ in range(self.k):
                proc = subprocess.Popen(load_command(os.getpid(), self.max_seconds), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.procs.append(proc)
                if hasattr(os, "sched_setaffinity"):  # pinned before it spins: on exactly the benchmark's cores
                    os.sched_setaffinity(proc.pid, self.cpus)
        except BaseException:
            self.stop()  # half started: none of them may keep spinning
            raise
        return self

    def running(self) -> int:
        """How many load processes are still running."""
        return sum(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        """Stop every load process (idempotent); returns once all have exited."""
        try:
            for p in self.procs:
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + self.grace
            for p in self.procs:
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        finally:  # also when a second Ctrl-C interrupts the polite stop: none may keep spinning
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            self.procs = []

    def __enter__(self) -> BusyLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
