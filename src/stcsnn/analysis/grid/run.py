"""Running a ``stcsnn reproduce`` grid: every unfinished cell trained (resuming its ``last.pt``) and evaluated,
one after another or ``--jobs N`` at a time in child processes, under the grid folder's :class:`~stcsnn.io.RunLock`;
then the tables (:mod:`.report`).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from stcsnn.analysis.common import clean_json, write_json
from stcsnn.analysis.grid.cells import Cell, read_cell_json
from stcsnn.analysis.grid.evaluate import cell_energy, long_horizon, sequence_record
from stcsnn.analysis.grid.plan import plan_grid
from stcsnn.config import make_config
from stcsnn.device import cpu_model
from stcsnn.errors import ConfigError, StcsnnError
from stcsnn.machine import source_commit


def run_cell(cell: Cell, progress: bool = True, threads: int | None = None, jobs: int = 1) -> int:
    """Train the cell (resuming its ``last.pt``) unless finished, then add the cached evaluations.
    Returns the training's exit code (0 done; 130 / 143 stopped, resumable). Records the wall-clock time of
    this call, the threads, the machine load, the CPU and the source commit in ``timing.json`` when it did any
    work."""
    from stcsnn.train import loop

    if cell.done:
        return 0
    threads = threads or torch.get_num_threads()
    load0 = _loadavg()
    t0 = time.time()
    if not cell.finished:
        rc = loop.train(cell.cfg, cell.run_dir, resume="auto", progress=progress)
        if rc:
            return rc
    t1 = time.time()
    if cell.horizon:
        long_horizon(cell)
    sequence_record(cell)
    cell_energy(cell)
    t2 = time.time()
    path = cell.run_dir / "timing.json"
    sessions = read_cell_json(path, "the cell's timing record", ("sessions",))["sessions"] if path.is_file() else []
    sessions.append({"train_wall_seconds": t1 - t0, "eval_wall_seconds": t2 - t1, "threads": threads,
                     "jobs": jobs, "loadavg_start": load0, "loadavg_end": _loadavg(),
                     "machine": cpu_model() or platform.processor() or None, "commit": source_commit()})
    write_json(path, clean_json({"sessions": sessions}))
    return 0


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run_grid(scale: str | dict[str, Any], datasets: Sequence[str] | None = None, models: Sequence[str] | None = None,
             seeds: int | Sequence[int] | None = None, out: str | os.PathLike = "runs/reproduce",
             overrides: dict[str, Any] | None = None, configs: str | os.PathLike | None = None,
             progress: bool = True, log: Callable[[str], None] = print, command: str | None = None,
             horizon: int | None = None, jobs: int = 1, threads: int | None = None,
             max_cells: int | None = None, plots: bool = True) -> int:
    """Train every unfinished cell, then write the table and plots. Returns an exit code (130 / 143: stopped,
    run the same command again to continue).

    ``jobs > 1`` runs that many cells at a time, each in its own process with ``threads // jobs`` PyTorch
    threads (at least 1; ``threads`` defaults to the current count). ``max_cells`` trains at most that many
    cells in this call (the table then covers the finished ones). ``plots=False``: no PNGs."""
    from stcsnn.analysis.grid.report import write_results
    from stcsnn.io import RunLock

    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if max_cells is not None and max_cells < 0:
        raise ConfigError(f"--max-cells must be >= 0, got {max_cells}")
    grid = plan_grid(scale, datasets, models, seeds, out, overrides, configs, log, horizon)
    cells = grid.cells
    threads = threads or torch.get_num_threads()
    per_job = max(1, threads // jobs)
    if jobs > 1:
        log(f"{jobs} cells at a time, {per_job} thread(s) each"
            + (f" (--jobs {jobs} exceeds the {threads} thread(s): {jobs * per_job} in all)"
               if threads < jobs else ""))
    for cell in cells:  # before anything runs: a stale cell stops the grid, not its last table
        cell.check_trained_config()
    with RunLock(grid.root, "stcsnn reproduce"):
        todo = []
        for i, cell in enumerate(cells, 1):
            if cell.done:
                log(f"[{i}/{len(cells)}] {cell.label}: finished, skipped ({cell.run_dir / 'report.json'})")
            else:
                todo.append((i, cell))
        training = [ic for ic in todo if not ic[1].finished]
        if max_cells is not None and len(training) > max_cells:
            later = {id(c) for _, c in training[max_cells:]}
            log(f"--max-cells {max_cells}: {len(later)} cell(s) left for a later run")
            todo = [ic for ic in todo if id(ic[1]) not in later]
        if jobs == 1:
            rc = _run_serial(todo, len(cells), progress, threads, log)
        else:
            rc = _run_parallel(todo, len(cells), jobs, per_job, grid.root, log)
        if rc:
            log("stopped; run the same command again to continue (finished cells are kept)")
            return rc
        paths = write_results(grid, command, plots)
    log("wrote " + ", ".join(str(p) for p in paths))
    log((grid.root / "table.md").read_text())  # the table itself, not only where it is
    return 0


def _start_line(i: int, n: int, cell: Cell) -> str:
    if cell.finished:
        what = "evaluating"
    else:
        what = "resuming" if (cell.run_dir / "last.pt").is_file() else "training"
    return f"[{i}/{n}] {cell.label}: {what} in {cell.run_dir}"


def _run_serial(todo: list[tuple[int, Cell]], n: int, progress: bool, threads: int,
                log: Callable[[str], None]) -> int:
    for i, cell in todo:
        log(_start_line(i, n, cell))
        t0 = time.time()
        rc = run_cell(cell, progress, threads, 1)
        if rc:
            return rc
        log(f"[{i}/{n}] {cell.label}: done in {time.time() - t0:.0f} s")
    return 0


def _cell_main(spec_path: str) -> int:
    """Body of one ``--jobs`` process (``python -c``): the cell described in ``spec_path`` (JSON); writes
    ``{"rc": ..., "error": ...}`` to the spec's ``result`` path and returns the exit code."""
    from stcsnn.io import atomic_write_text

    spec = json.loads(Path(spec_path).read_text())
    parent = int(spec["parent"])

    def watch_parent() -> None:  # the grid killed outright: stop this cell at the end of a step, saving last.pt
        while os.getppid() == parent:
            time.sleep(2.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, daemon=True).start()
    torch.set_num_threads(int(spec["threads"]))
    rc, error = 1, None
    try:
        cell = Cell(spec["dataset"], spec["model"], int(spec["seed"]), make_config(spec["config"]),
                    Path(spec["run_dir"]), int(spec["horizon"]))
        rc = run_cell(cell, progress=False, threads=int(spec["threads"]), jobs=int(spec["jobs"]))
    except StcsnnError as exc:
        rc, error = 2, str(exc) or type(exc).__name__
        print(f"error: {error}", flush=True)
    except KeyboardInterrupt:
        rc = 130
    except BaseException as exc:  # the grid reports it in one line and says where this traceback is
        import traceback

        traceback.print_exc()
        rc, error = 1, f"{type(exc).__name__}: {exc}"
    atomic_write_text(spec["result"], json.dumps({"rc": rc, "error": error}) + "\n")
    return rc


def _relative_cost(model: str) -> int:
    """Rough relative cost of a training step (``stcsnn bench`` on CPU: an STC neuron about twice its base
    neuron, ConvLSTM about three times an STC neuron); only used to order the cells of ``--jobs``."""
    from stcsnn.neurons.registry import get_spec

    spec = get_spec(model)
    return 6 if spec.is_ann else 2 if spec.is_stc else 1


def _open_log(path: Path) -> Any:
    """The cell's output log opened for appending, never through a symbolic link: a link there (to a file of
    the user's, say) is refused, its target untouched."""
    import errno

    try:  # "ab": O_WRONLY | O_CREAT | O_APPEND
        return open(path, "ab", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW, 0o644))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StcsnnError(f"{path}: expected the cell's output log (a regular file), found a symbolic link; "
                              "nothing was written through it: remove the link and run the same command again"
                              ) from None
        raise StcsnnError(f"cannot open the cell's output log {path}: {exc.strerror or exc}") from None


def _start_cell(i: int, n: int, cell: Cell, root: Path, logs: Path, threads: int, jobs: int, env: dict,
                log: Callable[[str], None]) -> tuple[Any, tuple]:
    """Start one cell in a fresh interpreter (its own session); returns the process and its record."""
    import subprocess

    from stcsnn.children import python_command
    from stcsnn.io import atomic_write_text

    stem = logs / cell.run_dir.relative_to(root).as_posix().replace("/", "_")
    spec, result, out = (stem.with_suffix(x) for x in (".json", ".result.json", ".log"))
    f = _open_log(out)
    result.unlink(missing_ok=True)
    atomic_write_text(spec, json.dumps({
        "config": cell.cfg.to_dict(), "dataset": cell.dataset, "model": cell.model, "seed": cell.seed,
        "run_dir": str(cell.run_dir), "horizon": cell.horizon, "threads": threads, "jobs": jobs,
        "result": str(result), "parent": os.getpid()}) + "\n")
    log(_start_line(i, n, cell) + f" (output: {out})")
    code = "import sys; from stcsnn.analysis.grid.run import _cell_main; sys.exit(_cell_main(sys.argv[1]))"
    proc = subprocess.Popen(python_command(code, str(spec)), stdout=f, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc, (i, cell, result, time.time(), f)


def _finish_cell(proc: Any, record: tuple, n: int, others_running: bool,
                 log: Callable[[str], None]) -> tuple[int, str | None]:
    """``(rc, failure message or None)`` of a finished cell process, logged."""
    i, cell, result, t0, f = record
    f.close()
    try:
        reply = json.loads(result.read_text())
        rc, message = int(reply["rc"]), reply.get("error")
    except (OSError, ValueError, KeyError):
        rc, message = proc.returncode or 1, None
    if rc == 0:
        log(f"[{i}/{n}] {cell.label}: done in {time.time() - t0:.0f} s")
        return 0, None
    if rc in (130, 143):
        log(f"[{i}/{n}] {cell.label}: stopped (its last.pt holds the step it reached)")
        return rc, None
    how = f"ended by signal {-proc.returncode}" if proc.returncode < 0 else f"ended with status {proc.returncode}"
    log(f"[{i}/{n}] {cell.label}: failed" + ("; no new cell starts, waiting for the running ones"
                                              if others_running else ""))
    return rc, f"{cell.label}: {message or 'its process ' + how}; output in {f.name}"


def _run_parallel(todo: list[tuple[int, Cell]], n: int, jobs: int, threads: int, root: Path,
                  log: Callable[[str], None]) -> int:
    """Run ``todo`` in up to ``jobs`` processes (``python -c``, a fresh interpreter each, in its own session so
    that the terminal's Ctrl-C reaches the grid only). SIGINT / SIGTERM to the grid: no new cell starts and
    each running cell gets the signal once (it finishes its step, saves last.pt and stops); the grid then
    returns 130 / 143."""

    import stcsnn

    logs = root / "logs"
    if logs.is_symlink():  # the cells' logs go into the grid's own folder, not wherever a link points
        raise StcsnnError(f"{logs}: expected the grid's folder of cell logs, found a symbolic link; remove it and "
                          "run the same command again")
    logs.mkdir(parents=True, exist_ok=True)
    # the children import this very stcsnn, installed or not
    source = str(Path(stcsnn.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])}
    # seed by seed as planned (a grid stopped part-way holds whole seeds of every pair), and within a seed the
    # longest cells first, so that a seed does not end waiting on one long cell while the other jobs idle
    seed_rank = {s: r for r, s in enumerate(dict.fromkeys(c.seed for _, c in todo))}
    pending = sorted(todo, key=lambda ic: (seed_rank[ic[1].seed], -_relative_cost(ic[1].model)))
    running: dict[Any, tuple[int, Cell, Path, float, Any]] = {}
    stop = {"rc": 0}
    error: str | None = None

    def forward(signum, frame) -> None:
        stop["rc"] = stop["rc"] or (130 if signum == signal.SIGINT else 143)
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        while (pending and not stop["rc"] and error is None) or running:
            while pending and len(running) < jobs and not stop["rc"] and error is None:
                i, cell = pending.pop(0)
                try:
                    proc, record = _start_cell(i, n, cell, root, logs, threads, jobs, env, log)
                except StcsnnError as exc:  # no new cell starts; the running ones finish, as after a failure
                    error = str(exc)
                    break
                running[proc] = record
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                rc, failure = _finish_cell(proc, running.pop(proc), n, bool(running), log)
                if rc in (130, 143):
                    stop["rc"] = stop["rc"] or rc
                error = error or failure
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if error is not None:
        raise StcsnnError(error)
    return stop["rc"]
