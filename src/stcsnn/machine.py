"""What this machine offers a new allocation: the one definition every memory check asks (config's model and
training-step estimates, safe loading of checkpoints, predict's batches). Standard library only, so that the
command line's checks stay light."""

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
