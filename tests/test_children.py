"""Every Python child stcsnn starts (``reproduce --jobs`` cells, ``bench``'s measuring processes, the ``bench
--busy`` load) imports nothing from the current directory: a ``json.py``, ``torch.py`` or ``stcsnn.py`` planted
there never runs. PYTHONPATH still works in the children (stcsnn runs from a source tree with PYTHONPATH=src)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stcsnn import children
from stcsnn.cli import main
from stcsnn.errors import StcsnnError
from stcsnn.perf import bench, load

PLANTED = ("json", "torch", "stcsnn")


def plant(folder: Path) -> Path:
    """``json.py``, ``torch.py`` and ``stcsnn.py`` in ``folder``, each writing ``MARKER-<name>`` into
    ``folder/markers`` when imported; returns that folder (empty)."""
    markers = folder / "markers"
    markers.mkdir()
    for name in PLANTED:
        (folder / f"{name}.py").write_text(f"open({str(markers / ('MARKER-' + name))!r}, 'w').write('ran')\n")
    return markers


def test_planted_modules_do_run_under_plain_python_c(tmp_path):
    """The reference: what the children used to be, ``python -c``, imports the planted files."""
    markers = plant(tmp_path)
    subprocess.run([sys.executable, "-c", "import json"], cwd=tmp_path, check=False)
    assert [p.name for p in markers.iterdir()] == ["MARKER-json"]


@pytest.mark.parametrize("safe_path_flag", [True, False], ids=["-P", "3.10-form"])
def test_python_command_imports_nothing_from_the_current_directory(tmp_path, monkeypatch, safe_path_flag):
    markers = plant(tmp_path)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "probe_mod.py").write_text("VALUE = 42\n")
    monkeypatch.setattr(children, "HAS_SAFE_PATH_FLAG", safe_path_flag)
    code = "import json, sys, probe_mod; print(json.dumps([sys.argv[1:], probe_mod.VALUE, sys.path[0]]))"
    env = {**os.environ, "PYTHONPATH": str(extra)}
    proc = subprocess.run(children.python_command(code, "a b", "c"), cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    import json

    args, value, first = json.loads(proc.stdout)
    assert args == ["a b", "c"] and value == 42  # arguments passed as given, PYTHONPATH honoured
    assert first == str(extra)  # the first entry is PYTHONPATH's, not the current directory ("")
    assert list(markers.iterdir()) == []


def test_busy_load_process_starts_safely_from_a_planted_directory(tmp_path, monkeypatch):
    markers = plant(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert load.load_command(123, 5.0) == children.python_command(load._LOOP, load.MARKER, "123", "5")
    with load.BusyLoad(1, max_seconds=30) as busy:
        time.sleep(0.5)
        assert busy.running() == 1  # it spins (a planted module breaking it would have ended it)
    assert list(markers.iterdir()) == []


def test_bench_child_starts_safely_from_a_planted_directory(tmp_path, monkeypatch):
    """A real measuring process: it imports stcsnn.perf.commands (json, torch, stcsnn) and runs child_main, whose
    answer to an unknown task comes back as the benchmark's one error."""
    markers = plant(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StcsnnError, match="unknown benchmark task 'nosuch'"):
        bench.run_child("nosuch", {})
    assert list(markers.iterdir()) == []


@pytest.mark.slow
def test_reproduce_jobs_cells_start_safely_from_a_planted_directory(tmp_path, monkeypatch, capsys):
    """``stcsnn reproduce --scale tiny --jobs 2`` (one cell of one step) run from a folder holding the planted
    modules: the cell's process trains and evaluates, none of them runs."""
    work = tmp_path / "cwd"
    work.mkdir()
    markers = plant(work)
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    sets = ["epochs=1", "steps_per_epoch=1", "max_val_batches=1", "max_test_batches=1", "batch_size=1",
            "eval_batch_size=1", "input_frames=2", "output_frames=2", "hidden_channels=[16]", "num_visualize=1",
            "warmup_epochs=0"]
    argv = ["--threads", "1", "reproduce", "--scale", "tiny", "--models", "lif", "--seeds", "1", "--jobs", "2",
            "--horizon", "0", "--quiet", "--out", str(out)] + [x for s in sets for x in ("--set", s)]
    assert main(argv) == 0, capsys.readouterr()
    assert (out / "tiny" / "embedded" / "lif" / "seed0" / "energy.json").is_file()
    assert (out / "tiny" / "table.md").is_file()
    assert list(markers.iterdir()) == []
