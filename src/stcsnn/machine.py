"""What this machine offers a new allocation: the one definition every memory check asks (config's model and
training-step estimates, safe loading of checkpoints, predict's batches); and which source commit runs on it
(the provenance of a grid's cells). Standard library only, so that the command line's checks stay light."""

from __future__ import annotations

import os


def available_memory() -> int | None:
    """Bytes of host memory available to a new allocation: ``MemAvailable`` of ``/proc/meminfo`` (what the kernel
    can give without swapping), capped by a cgroup v2 memory limit (containers), else the free physical pages;
    ``None`` where none of these can be read."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read())
        if limit != "max":
            free = min(free, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return free


def source_commit(package_dir: str | os.PathLike | None = None) -> str | None:
    """The git commit of the stcsnn source tree that runs: the last commit that changed ``src/`` (``package_dir``:
    the ``stcsnn`` package folder, this one by default), with ``-dirty`` when ``git status --porcelain -- src``
    lists changes; ``None`` when the package is not ``src/stcsnn`` of a git checkout (an installed copy) or git
    cannot tell. Why not HEAD: a grid commits its finished cells' rows while it runs, which moves HEAD but not the
    code that the next cell runs."""
    import subprocess
    from pathlib import Path

    package = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent

    def git(*args: str, where: Path) -> str | None:
        try:  # no fsmonitor hook: asking for the commit runs nothing of the checkout's configuration
            proc = subprocess.run(["git", "-c", "core.fsmonitor=false", "-C", str(where), *args],
                                  capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout if proc.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel", where=package)
    # a package installed into some other checkout (a virtual environment inside a repository) is not its source
    if top is None or Path(top.strip()).resolve() / "src" / package.name != package.resolve():
        return None
    changed = git("log", "-1", "--format=%H", "--", "src", where=Path(top.strip()))
    status = git("status", "--porcelain", "--", "src", where=Path(top.strip()))
    if changed is None or status is None:
        return None
    return changed.strip() + ("-dirty" if status.strip() else "")
