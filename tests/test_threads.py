"""The thread choice: affinity, cgroup quota and other processes' load give the expected count; explicit
settings win; the re-check during a run keeps the fastest count. Readings are injected (no timing here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stcsnn.errors import ConfigError
from stcsnn.threads import (
    ThreadTuner,
    _cpu_times,
    auto_threads,
    cgroup_quota,
    choose_threads,
    other_load,
    usable_cpus,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("usable", "load", "expected"), [
    (2, 0.0, 2), (2, 0.3, 2), (2, 0.7, 1), (2, 1.0, 1), (2, 2.0, 1), (2, 5.0, 1), (8, 3.0, 5), (1, 0.0, 1),
])
def test_auto_uses_the_free_cpus(usable, load, expected):
    assert auto_threads(usable, load) == expected


def test_affinity_and_quota_bound_the_usable_cpus():
    assert usable_cpus({0, 1, 2, 3}, None) == 4
    assert usable_cpus({0, 1, 2, 3}, 1.5) == 2  # a quota of 1.5 CPUs still runs 2 threads part of the time
    assert usable_cpus({5}, 8.0) == 1
    assert choose_threads("auto", environ={}, cpus={0, 1, 2, 3}, quota=2.0, load=1.0).threads == 1
    assert choose_threads("auto", environ={}, cpus={0, 1}, quota=None, load=0.0).threads == 2


def test_cgroup_quota_files(tmp_path):
    v2 = tmp_path / "cpu.max"
    v2.write_text("150000 100000\n")
    assert cgroup_quota(v2, (tmp_path / "no", tmp_path / "no")) == 1.5
    v2.write_text("max 100000\n")
    assert cgroup_quota(v2, (tmp_path / "no", tmp_path / "no")) is None
    q, p = tmp_path / "quota", tmp_path / "period"
    q.write_text("200000")
    p.write_text("100000")
    assert cgroup_quota(tmp_path / "absent", (q, p)) == 2.0
    q.write_text("-1")
    assert cgroup_quota(tmp_path / "absent", (q, p)) is None


def test_load_is_read_from_proc_stat_for_the_allowed_cpus_only():
    # cpu0 busy 100 of 100 jiffies between the readings, cpu1 idle, cpu2 (not ours) busy
    before = "cpu  0 0 0 0\ncpu0 100 0 0 100 0 0 0 0\ncpu1 0 0 0 200 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0\n"
    after = "cpu  0 0 0 0\ncpu0 200 0 0 100 0 0 0 0\ncpu1 0 0 0 300 0 0 0 0\ncpu2 999 0 0 0 0 0 0 0\n"
    assert _cpu_times(before, {0, 1}) == (100.0, 400.0)
    readings = iter([before, after])
    load = other_load({0, 1}, interval=0.0, read=lambda: next(readings))
    assert load == pytest.approx(1.0, abs=0.05)  # one of the two CPUs busy (our own CPU time ~0)
    assert other_load({0, 1}, interval=0.0, read=lambda: (_ for _ in ()).throw(OSError("no /proc"))) == 0.0


def test_explicit_settings_win():
    assert choose_threads(3, environ={"OMP_NUM_THREADS": "1"}, cpus={0, 1, 2, 3}, load=9.0).threads == 3
    choice = choose_threads("auto", environ={"OMP_NUM_THREADS": "1"}, cpus={0, 1, 2, 3}, load=0.0)
    assert (choice.threads, choice.reason) == (1, "OMP_NUM_THREADS=1")
    with pytest.raises(ConfigError, match="threads must be 'auto' or an integer >= 1, got 0"):
        choose_threads(0)
    with pytest.raises(ConfigError, match="got 'many'"):
        choose_threads("many")


def test_tuner_switches_to_the_faster_count():
    applied = []
    # 2 threads take 3 s a step, 1 thread 1 s: after `every` steps it probes 2, then 1, and keeps 1
    tuner = ThreadTuner(threads=2, usable=2, every=4, probe=2, apply=applied.append)
    speed = {2: 3.0, 1: 1.0}
    current = 2
    for _ in range(12):
        current = tuner.step(speed[current])
    assert tuner.threads == 1 and current == 1
    assert applied[:2] == [2, 1] and applied[-1] == 1


def test_tuner_keeps_the_current_count_when_it_is_fastest():
    tuner = ThreadTuner(threads=2, usable=2, every=3, probe=3, apply=lambda n: None)
    speed = {2: 1.0, 1: 2.0}
    current = 2
    for _ in range(20):
        current = tuner.step(speed[current])
    assert tuner.threads == 2


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stcsnn", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_threads_flag_before_or_after_the_command():
    for args in (["--threads", "1", "neurons"], ["neurons", "--threads", "1"]):
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        assert "stc_lif" in r.stdout
    r = run_cli("neurons", "--threads", "0")
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr


def test_quickstart_script_passes_its_arguments_through(tmp_path):
    """``scripts/quickstart.sh --threads 1`` hands ``--threads 1`` to ``stcsnn train`` (a stand-in ``stcsnn`` in
    a stand-in environment records its arguments: nothing is installed or trained)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    stcsnn = venv / "bin" / "stcsnn"
    stcsnn.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'args.txt'}\n")
    for f in (python, stcsnn):
        f.chmod(0o755)
    (venv / ".stcsnn-installed-cli,viz").touch()
    os.utime(venv / ".stcsnn-installed-cli,viz", (4e9, 4e9))  # newer than pyproject.toml: no reinstall
    r = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), "--threads", "1", "--quiet"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "STCSNN_VENV": str(venv)})
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "args.txt").read_text().split()
    assert args[0] == "train" and args[-3:] == ["--threads", "1", "--quiet"]
