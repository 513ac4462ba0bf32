"""``stcsnn reproduce``: train and evaluate a grid (datasets x models x seeds), then one table and plots.

Each cell of the grid is an ordinary run directory ``<out>/<scale>/<dataset>/<model>/seed<k>/`` trained by
:func:`stcsnn.train.loop.train` (what ``stcsnn train`` runs: the run lock, resumption, cleanup of a failed new
run; the same loop, patching, scheduled sampling and metrics for every model). A cell's training is finished
when its ``report.json`` exists (the test report written at the end of a run); then two cached evaluations are
added to the run directory: ``horizon<N>.json`` (the long-term evaluation, below) and ``energy.json``
(operation counts). A cell is done when all three exist; re-running skips done cells without touching their
files, resumes unfinished ones from their ``last.pt`` and adds missing evaluations. ``--jobs N`` runs N cells
at a time in separate processes. The grid folder holds a :class:`~stcsnn.io.RunLock` while it works.

Long-term memory: every trained cell is also evaluated on test sequences rolled out past the trained horizon
(``T_out`` -> ``horizon`` frames, default 3 x ``T_out``; the data generate the longer truth), from the same
checkpoint and the same first test sequences as the report, fully autoregressive after the input frames.

Outputs in ``<out>/<scale>/``: ``table.md`` (the table), ``table.csv`` (mean and sample standard deviation over
seeds per dataset and model), ``paired.csv`` (STC-X minus X per seed and over seeds), ``runs.csv`` (one row per
cell), ``per_horizon.csv`` (mean and std per predicted frame), ``results.json`` (all of it) and, with
matplotlib, ``per_horizon_<dataset>.png`` and ``pairs_<dataset>.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import signal
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stcsnn.analysis.common import clean_json, write_csv, write_json
from stcsnn.analysis.scales import DEFAULT_MODELS, MAX_SEEDS, REFERENCES, SCALES
from stcsnn.config import MAX_SEED, Config, make_config, read_yaml
from stcsnn.device import cpu_model
from stcsnn.errors import ConfigError, StcsnnError

METRICS = ("mse", "mae", "ssim", "psnr")
#: Metrics where a lower value is better (the others: higher is better).
LOWER_IS_BETTER = {"mse", "mae"}


@dataclass
class Cell:
    dataset: str
    model: str
    seed: int
    cfg: Config
    run_dir: Path
    horizon: int = 0  # frames of the long-term evaluation; 0: none

    @property
    def finished(self) -> bool:
        """Training finished (the test report exists)."""
        return (self.run_dir / "report.json").is_file()

    @property
    def horizon_path(self) -> Path:
        return self.run_dir / f"horizon{self.horizon}.json"

    @property
    def done(self) -> bool:
        """Trained and every cached evaluation written: nothing left to do for this cell."""
        return (self.finished and (self.run_dir / "energy.json").is_file()
                and (not self.horizon or self.horizon_path.is_file()))

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model} seed {self.seed}"


@dataclass
class Grid:
    name: str
    root: Path
    cells: list[Cell]
    horizon: int | None  # the requested horizon (None: each cell's 3 x T_out)
    data_notes: dict[str, str] = field(default_factory=dict)  # dataset -> where its data came from


def get_scale(scale: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, definition)`` of a scale given by name or as a dict (``name`` key optional)."""
    if isinstance(scale, dict):
        return str(scale.get("name", "custom")), scale
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}: expected one of {', '.join(SCALES)}")
    return scale, SCALES[scale]


def _configs_dir(path: str | os.PathLike | None) -> Path:
    if path is not None:
        return Path(path)
    here = Path("configs")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "configs"


def paper_config(template: str, configs: Path, dataset: str, model: str, log: Callable[[str], None]) -> dict:
    """The reference config of ``dataset`` (one file per dataset: the reference settings are the same for every
    model, ``scripts/make_configs.py``) with ``model``'s neuron in it; ``log`` is kept for the caller's notes."""
    path = Path(template.format(configs=configs, dataset=dataset, model=model))
    if not path.is_file():
        raise ConfigError(f"no reference config {str(path)!r}; generate it with `python scripts/make_configs.py` "
                          "or pass --configs DIR")
    raw = read_yaml(path)
    if raw.get("neuron") != model:
        raw["neuron"] = model
        raw["neuron_options"] = {}  # the file's options belong to its own neuron
    return raw


def parse_seeds(text: str | int | Sequence[int] | None) -> int | list[int] | None:
    """``"3"`` -> 3 (seeds 0, 1, 2); ``"0,2"`` -> [0, 2]; ``"1-3"`` -> [1, 2, 3]; ``"4,"`` -> [4]."""
    if text is None or isinstance(text, int) or (isinstance(text, Sequence) and not isinstance(text, str)):
        return text  # type: ignore[return-value]
    text = str(text).strip()
    try:
        if "," not in text and "-" not in text:
            return int(text)
        seeds: list[int] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            seeds += _seed_range(int(lo), int(hi), text) if sep else [int(lo)]
    except ConfigError:  # (a ValueError too) a range too long: its own message
        raise
    except ValueError:
        raise ConfigError(f"--seeds expects a count N (seeds 0..N-1) or a list such as 0,2 or 1-3, got {text!r}"
                          ) from None
    if not seeds:
        raise ConfigError(f"--seeds expects a count N (seeds 0..N-1) or a list such as 0,2 or 1-3, got {text!r}")
    return seeds


def _seed_range(lo: int, hi: int, given: object) -> list[int]:
    """Seeds ``lo..hi``, refused before the list is built when there are more than :data:`MAX_SEEDS` or the last
    is above the config's ``MAX_SEED``."""
    if hi - lo + 1 > MAX_SEEDS or hi > MAX_SEED:
        raise ConfigError(f"--seeds must give at most {MAX_SEEDS} seeds, each 0..{MAX_SEED}, got {given}")
    return list(range(lo, hi + 1))


def _seed_list(seeds: int | Sequence[int] | None, default: int) -> list[int]:
    if seeds is None:
        seeds = default
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        return _seed_range(0, seeds - 1, seeds)
    out = [int(s) for s in seeds]
    if len(out) > MAX_SEEDS or max(out, default=0) > MAX_SEED:
        raise ConfigError(f"--seeds must give at most {MAX_SEEDS} seeds, each 0..{MAX_SEED}, got {len(out)} seeds "
                          f"up to {max(out)}")
    if any(s < 0 for s in out) or len(set(out)) != len(out):
        raise ConfigError(f"--seeds must list distinct seeds >= 0, got {','.join(map(str, out))}")
    return out


def missing_files(dataset: str, cfg: Config) -> list[Path]:
    """The files ``dataset`` needs under ``cfg``'s data root that are absent ([] for generated data)."""
    from stcsnn.data.registry import get_dataset_spec

    return [path for _, path in get_dataset_spec(dataset).files(cfg.data_root) if not path.is_file()]


def data_note(dataset: str, cfg: Config) -> str:
    """Where ``dataset``'s sequences come from, for the caption."""
    from stcsnn.data.registry import get_dataset_spec

    if dataset == "embedded":
        return ("embedded: Moving Fashion-MNIST generated from the Fashion-MNIST subset shipped with stcsnn "
                "(2,000 train / 500 test images, src/stcsnn/data/embedded)")
    spec = get_dataset_spec(dataset)
    files = [str(path) for _, path in spec.files(cfg.data_root) if path.is_file()]
    return f"{dataset}: {spec.description}" + (f", from {', '.join(files)}" if files else "")


def _check_request(models: list[str], datasets: list[str], horizon: int | None) -> None:
    """Every name registered, none twice, a non-negative horizon (one error line otherwise)."""
    from stcsnn.data.registry import get_dataset_spec
    from stcsnn.neurons.registry import get_spec

    if horizon is not None and horizon < 0:
        raise ConfigError(f"--horizon must be 0 (no long-term evaluation) or a frame count, got {horizon}")
    for m in models:
        get_spec(m)
    for d in datasets:
        get_dataset_spec(d)
    if len(set(models)) != len(models) or len(set(datasets)) != len(datasets):
        raise ConfigError("--models and --datasets must not repeat a name")


def _choose_datasets(datasets: list[str], spec: dict[str, Any], explicit: bool, probe_config: Callable,
                     log: Callable[[str], None]) -> tuple[list[str], dict[str, str]]:
    """The datasets the grid uses (a default one whose files are absent replaced by the scale's fallback, said
    in a note) and the caption note of each."""
    notes: dict[str, str] = {}
    chosen = []
    for d in datasets:
        fallback = (spec.get("fallback") or {}).get(d)
        probe = probe_config(d)
        lacking = missing_files(d, probe)
        if lacking and fallback and not explicit:
            note = (f"{data_note(fallback, probe_config(fallback))}, in place of {d}: "
                    f"{d}'s files were not found ({', '.join(map(str, lacking))}; `apt-get install "
                    f"dataset-fashion-mnist` or `stcsnn data prepare {d}` provides them)")
            log(f"note: {note}")
            notes[fallback] = note
            chosen.append(fallback)
        else:
            notes[d] = data_note(d, probe)
            chosen.append(d)
    return chosen, notes


def plan_grid(scale: str | dict[str, Any], datasets: Sequence[str] | None = None,
              models: Sequence[str] | None = None, seeds: int | Sequence[int] | None = None,
              out: str | os.PathLike = "runs/reproduce", overrides: dict[str, Any] | None = None,
              configs: str | os.PathLike | None = None, log: Callable[[str], None] = print,
              horizon: int | None = None) -> Grid:
    """Validate the request and build every cell's config (nothing is trained or written).

    Default datasets whose files are absent are replaced by the scale's ``fallback`` (logged, and stated in
    the table's caption); datasets named explicitly are used as named. ``horizon``: frames of the long-term
    evaluation (None: the scale's, else 3 x ``output_frames``; 0: none)."""
    name, spec = get_scale(scale)
    explicit = datasets is not None
    datasets = list(datasets or spec.get("datasets") or ["embedded"])
    models = list(models or spec.get("models") or DEFAULT_MODELS)
    seed_list = _seed_list(seeds, int(spec.get("seeds", 1)))
    if horizon is None:
        horizon = spec.get("horizon")
    _check_request(models, datasets, horizon)
    root = Path(out) / name

    def raw_config(d: str, m: str, s: int) -> dict:
        if "config_files" in spec:
            raw = paper_config(spec["config_files"], _configs_dir(configs), d, m, log)
        else:
            raw = json.loads(json.dumps(spec.get("config", {})))  # a deep copy of plain data
        raw.update({"dataset": d, "neuron": m, "seed": s})
        return raw

    def config(d: str, m: str, s: int) -> Config:
        try:
            return make_config(raw_config(d, m, s), overrides)
        except ConfigError as exc:
            raise ConfigError(f"scale {name!r}, {d}/{m}: {exc}") from None

    chosen, notes = _choose_datasets(datasets, spec, explicit, lambda d: config(d, models[0], seed_list[0]), log)
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"datasets {', '.join(datasets)} resolve to {', '.join(chosen)}: a dataset twice")
    cells = []
    for d in chosen:
        for m in models:
            for s in seed_list:
                cfg = config(d, m, s)
                h = 3 * cfg.output_frames if horizon is None else int(horizon)
                if h and h <= cfg.output_frames:
                    raise ConfigError(f"--horizon must exceed the trained output_frames ({cfg.output_frames}) or "
                                      f"be 0 (no long-term evaluation), got {h}")
                cells.append(Cell(d, m, s, cfg, root / d / m / f"seed{s}", h))
    return Grid(name, root, cells, horizon, notes)


# ---------------------------------------------------------------------------------------------- running


def run_cell(cell: Cell, progress: bool = True, threads: int | None = None, jobs: int = 1) -> int:
    """Train the cell (resuming its ``last.pt``) unless finished, then add the cached evaluations.
    Returns the training's exit code (0 done; 130 / 143 stopped, resumable). Records the wall-clock time of
    this call, the threads and the machine load in ``timing.json`` when it did any work."""
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
    cell_energy(cell)
    t2 = time.time()
    path = cell.run_dir / "timing.json"
    sessions = read_cell_json(path, "the cell's timing record", ("sessions",))["sessions"] if path.is_file() else []
    sessions.append({"train_wall_seconds": t1 - t0, "eval_wall_seconds": t2 - t1, "threads": threads,
                     "jobs": jobs, "loadavg_start": load0, "loadavg_end": _loadavg()})
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
    code = "import sys; from stcsnn.analysis.reproduce import _cell_main; sys.exit(_cell_main(sys.argv[1]))"
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
    # longest cells first, so that the grid does not end waiting on one long cell while the other jobs idle
    pending = sorted(todo, key=lambda ic: -_relative_cost(ic[1].model))
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


# ---------------------------------------------------------------------------------------------- evaluations


#: the keys each JSON file of a cell must hold (dotted: nested), checked when it is read
REPORT_KEYS = tuple(f"metrics.{m}" for m in METRICS)
HORIZON_KEYS = ("horizon", "trained_output_frames", "ranges", "per_horizon")  # when "available"
ENERGY_KEYS = tuple(f"total.{k}" for k in ("params", "macs", "sops", "energy_snn_pj", "energy_ann_pj"))
#: how to make a cell's file again: the grid re-tests a cell without report.json from its last.pt and
#: recomputes a missing evaluation
REDO = "delete it and run the same `stcsnn reproduce` command again"
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def read_cell_json(path: Path, what: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    """A cell's JSON file (``report.json``, ``horizon<N>.json``, ``energy.json``, ``timing.json``): a JSON object
    holding ``keys``. Anything else (truncated, garbage, ``[]``, a key missing) is one error line naming the
    file, what it should hold and how to make it again."""
    try:
        data: Any = json.loads(path.read_bytes())
    except OSError as exc:
        found = f"a file that cannot be read ({exc.strerror or exc})"
    except ValueError as exc:  # not JSON, truncated, not UTF-8
        found = f"no valid JSON ({str(exc).splitlines()[0][:100]})"
    else:
        found = _missing_keys(data, keys)
        if found is None:
            return data
    holding = f" holding {', '.join(keys)}" if keys else ""
    raise StcsnnError(f"{path}: expected {what} (a JSON object{holding}), found {found}; {REDO}")


def _missing_keys(data: Any, keys: Sequence[str]) -> str | None:
    """What is wrong with ``data`` as a JSON object holding the dotted ``keys``; None when nothing."""
    if not isinstance(data, dict):
        return "null" if data is None else _JSON_TYPES.get(type(data), type(data).__name__)
    for key in keys:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return f"no {key}"
            node = node[part]
    return None


def _checkpoint(cell: Cell) -> Path:
    """The checkpoint the cell's test report evaluated (best.pt, else last.pt), in the cell's folder."""
    report = cell.run_dir / "report.json"
    if report.is_file():
        name = Path(str(read_cell_json(report, "the cell's test report", REPORT_KEYS).get("checkpoint", "best.pt"))
                    ).name
        if (cell.run_dir / name).is_file():
            return cell.run_dir / name
    best = cell.run_dir / "best.pt"
    return best if best.is_file() else cell.run_dir / "last.pt"


@dataclass(frozen=True)
class TrainedCell:
    """A finished cell found in a grid folder: its coordinates and the checkpoint its test report evaluated."""

    dataset: str
    model: str
    seed: int
    checkpoint: Path


def finished_cells(root: str | os.PathLike) -> list[TrainedCell]:
    """The finished cells (``<dataset>/<model>/seed<k>/report.json``) of the grid folder ``root`` (what
    ``stcsnn reproduce`` writes, e.g. ``runs/reproduce/small``), ordered by dataset, then each STC neuron right
    after its base neuron, then seed."""
    root = Path(root)
    if not root.is_dir():
        raise StcsnnError(f"--grid {str(root)!r}: expected the folder of a `stcsnn reproduce` grid (such as "
                          "runs/reproduce/small), found no such folder")
    found = []
    for report in root.glob("*/*/seed*/report.json"):
        run_dir = report.parent
        try:
            seed = int(run_dir.name[4:])
        except ValueError:
            continue
        cell = Cell(run_dir.parent.parent.name, run_dir.parent.name, seed, make_config({}), run_dir)
        found.append(TrainedCell(cell.dataset, cell.model, seed, _checkpoint(cell)))
    if not found:
        raise StcsnnError(f"--grid {str(root)!r}: expected finished cells <dataset>/<model>/seed<k>/report.json "
                          "(a `stcsnn reproduce` grid folder such as runs/reproduce/small), found none")

    def key(c: TrainedCell) -> tuple:
        base = c.model[4:] if c.model.startswith("stc_") else c.model
        return c.dataset, base, c.model.startswith("stc_"), c.model, c.seed

    return sorted(found, key=key)


def horizon_ranges(trained: int, horizon: int) -> list[tuple[int, int]]:
    """Frame ranges (1-based, inclusive) after the trained horizon, each ``trained`` frames long:
    ``(10, 30)`` -> ``[(11, 20), (21, 30)]``."""
    return [(a, min(a + trained - 1, horizon)) for a in range(trained + 1, horizon + 1, trained)]


def long_horizon(cell: Cell, device: str | torch.device | None = None) -> dict[str, Any]:
    """The cell's evaluation rolled out to ``cell.horizon`` frames (cached in ``horizon<N>.json``): per-frame
    metrics and the mean MSE over each range of :func:`horizon_ranges`. The test split is rebuilt with
    ``output_frames = horizon``, so its truth covers every predicted frame; the first ``max_test_batches``
    batches are evaluated, the sequences of the test report. Data that cannot give that many frames (a fixed
    test file) are recorded as ``{"available": false, "reason": ...}``."""
    from stcsnn.data import build_split
    from stcsnn.device import pick_device
    from stcsnn.models.loading import load_model
    from stcsnn.train.evaluate import evaluate_model

    path = cell.horizon_path
    if path.is_file():
        what = f"the cell's evaluation to {cell.horizon} frames"
        cached = read_cell_json(path, what, ("available",))
        return read_cell_json(path, what, ("available", *HORIZON_KEYS)) if cached["available"] else cached
    ckpt = _checkpoint(cell)
    dev = pick_device(device or cell.cfg.device)
    model, saved = load_model(ckpt, dev)
    h = cell.horizon
    options = dict(saved.data_options)
    if "output_frames" in options:
        options["output_frames"] = h
    payload: dict[str, Any] = {"horizon": h, "input_frames": saved.input_frames,
                               "trained_output_frames": saved.output_frames, "checkpoint": ckpt.name}
    t0 = time.time()
    try:
        cfg = make_config({**saved.to_dict(), "output_frames": h, "data_options": options})
        dataset = build_split(cfg, "test")
    except StcsnnError as exc:
        payload.update({"available": False, "reason": str(exc)})
    else:
        results, _ = evaluate_model(model, dataset, cfg, dev, saved.max_test_batches)
        per = results["per_horizon"]
        payload.update({"available": True, "num_samples": results["num_samples"],
                        "metrics": {k: results[k] for k in METRICS}, "per_horizon": per,
                        "ranges": {f"{a}-{b}": statistics.fmean(per["mse"][a - 1:b])
                                   for a, b in horizon_ranges(saved.output_frames, h)},
                        "seconds": time.time() - t0})
    write_json(path, clean_json(payload))
    return payload


def cell_energy(cell: Cell, max_samples: int = 16) -> dict[str, Any]:
    """Operation counts of the cell's evaluated weights on its first test batch (cached in energy.json)."""
    from stcsnn.analysis.common import batch_indices, get_batch
    from stcsnn.analysis.energy import count_operations
    from stcsnn.data import build_split
    from stcsnn.models.loading import load_model

    cache = cell.run_dir / "energy.json"
    if cache.is_file():
        return read_cell_json(cache, "the cell's operation counts", ENERGY_KEYS)
    ckpt = _checkpoint(cell)
    model, cfg = load_model(ckpt, "cpu")
    dataset = build_split(cfg, "test")
    frames = get_batch(dataset, batch_indices(dataset, min(max_samples, cfg.eval_batch_size or cfg.batch_size)),
                       torch.device("cpu"))
    report = count_operations(model, [frames], cfg.input_frames, cfg.output_frames).to_dict()
    report["checkpoint"] = ckpt.name
    write_json(cache, clean_json(report))
    return report


# ---------------------------------------------------------------------------------------------- results


def training_seconds(run_dir: Path) -> float:
    """Sum of the per-epoch ``seconds`` of ``metrics.csv`` (training and validation, resumptions included)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return float("nan")
    with path.open() as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds"))


def _timing(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "timing.json"
    sessions = read_cell_json(path, "the cell's timing record", ("sessions",))["sessions"] if path.is_file() else []
    loads = [x for s in sessions for x in (s.get("loadavg_start"), s.get("loadavg_end")) if x is not None]
    return {"cell_wall_seconds": sum(s["train_wall_seconds"] + s["eval_wall_seconds"] for s in sessions)
            if sessions else float("nan"),
            "threads": sorted({s["threads"] for s in sessions}), "jobs": sorted({s["jobs"] for s in sessions}),
            "loadavg": [min(loads), max(loads)] if loads else []}


def range_key(a: int, b: int) -> str:
    return f"mse_{a}_{b}"


def cell_row(cell: Cell) -> dict[str, Any]:
    """One row of ``runs.csv``: the cell's test metrics, long-horizon MSE ranges, counts, firing rate and
    times (``per_horizon``, ``long`` and ``timing`` hold the series and details for results.json)."""
    from stcsnn.neurons.registry import get_spec

    report = read_cell_json(cell.run_dir / "report.json", "the cell's test report", REPORT_KEYS)
    energy = cell_energy(cell)
    ann = get_spec(cell.model).is_ann
    rates = [float(r) for r in report.get("firing_rate") or []]
    total = energy["total"]
    row: dict[str, Any] = {
        "dataset": cell.dataset, "model": cell.model, "kind": "ANN" if ann else "SNN", "seed": cell.seed,
        **{m: float(report["metrics"][m]) for m in METRICS}}
    long = long_horizon(cell) if cell.horizon else {"available": False, "reason": ""}  # none was asked for
    if long.get("available"):
        for a, b in horizon_ranges(long["trained_output_frames"], long["horizon"]):
            row[range_key(a, b)] = float(long["ranges"][f"{a}-{b}"])
    timing = _timing(cell.run_dir)
    row.update({"params": total["params"], "macs": total["macs"], "sops": total["sops"],
                "energy_snn_uj": total["energy_snn_pj"] / 1e6, "energy_ann_uj": total["energy_ann_pj"] / 1e6,
                "firing_rate": float("nan") if ann or not rates else sum(rates) / len(rates),
                "train_seconds": training_seconds(cell.run_dir), "cell_wall_seconds": timing["cell_wall_seconds"],
                "test_samples": report.get("num_samples"), "run_dir": str(cell.run_dir)})
    row["per_horizon"] = report.get("per_horizon", {})
    row["long"] = long
    row["timing"] = timing
    return row


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of the finite values; std is NaN for fewer than two."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else float("nan")


_mean_std = mean_std  # the older private name

TABLE_KEYS = ("mse", "mae", "ssim", "psnr", "params", "macs", "sops", "energy_snn_uj", "energy_ann_uj",
              "firing_rate", "train_seconds", "cell_wall_seconds")


def _range_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith("mse_") and k[4:].replace("_", "").isdigit())
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds per (dataset, model), in the order the cells came."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    out = []
    for (d, m), rs in groups.items():
        row = {"dataset": d, "model": m, "kind": rs[0]["kind"], "seeds": len(rs)}
        for k in (*TABLE_KEYS[:4], *_range_keys(rs), *TABLE_KEYS[4:]):
            row[f"{k}_mean"], row[f"{k}_std"] = mean_std([r.get(k) for r in rs])
        out.append(row)
    return out


def stc_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """``(stc_model, base_model)`` for every ``stc_X`` whose ``X`` is also in ``models``, in grid order."""
    return [(m, m[4:]) for m in models if m.startswith("stc_") and m[4:] in models]


def paired_differences(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and pair (STC-X, X): the difference STC-X minus X of every metric for each seed both
    finished, its mean and sample std over those seeds, and in how many seeds STC-X was the better one."""
    out = []
    for d in dict.fromkeys(r["dataset"] for r in rows):
        by = {(r["model"], r["seed"]): r for r in rows if r["dataset"] == d}
        models = list(dict.fromkeys(m for m, _ in by))
        for stc, base in stc_pairs(models):
            seeds = sorted({s for m, s in by if m == stc} & {s for m, s in by if m == base})
            if not seeds:
                continue
            keys = [k for k in (*METRICS, *_range_keys([by[(stc, s)] for s in seeds]))
                    if all(k in by[(m, s)] for m in (stc, base) for s in seeds)]
            per_seed = [{"seed": s, **{k: by[(stc, s)][k] - by[(base, s)][k] for k in keys}} for s in seeds]
            row: dict[str, Any] = {"dataset": d, "stc": stc, "base": base, "seeds": seeds, "per_seed": per_seed}
            for k in keys:
                diffs = [p[k] for p in per_seed]
                row[f"{k}_mean"], row[f"{k}_std"] = mean_std(diffs)
                row[f"{k}_stc_better"] = sum((x < 0) if k in LOWER_IS_BETTER or k.startswith("mse_") else (x > 0)
                                             for x in diffs)
            row["keys"] = keys
            out.append(row)
    return out


def horizon_series(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (dataset, model, metric, predicted frame): from the long-term evaluation
    where every seed has one (``source: long``), else from the test report (``source: report``)."""
    out = []
    for d, m in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        rs = [r for r in rows if r["dataset"] == d and r["model"] == m]
        long = all(r["long"].get("available") for r in rs)
        for metric in METRICS:
            series = [(r["long"]["per_horizon"] if long else r["per_horizon"]).get(metric, []) for r in rs]
            for t in range(min((len(s) for s in series), default=0)):
                mean, std = mean_std([s[t] for s in series])
                out.append({"dataset": d, "model": m, "metric": metric, "frame": t + 1, "mean": mean, "std": std,
                            "seeds": len(rs), "source": "long" if long else "report"})
    return out


def _fmt(mean: float, std: float, digits: int, scale: float = 1.0, sign: bool = False) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    text = f"{mean / scale:+.{digits}f}" if sign else f"{mean / scale:.{digits}f}"
    return text + (f" ± {std / scale:.{digits}f}" if std is not None and not math.isnan(std) else "")


def _machine(cells: list[Cell]) -> str:
    device = cells[0].cfg.device if cells else "?"
    cpu = cpu_model()
    return (f"{platform.platform()}, {f'{cpu}, ' if cpu else ''}{os.cpu_count()} logical CPUs, "
            f"Python {platform.python_version()}, "
            f"torch {torch.__version__}, config device {device!r}"
            + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))


def _range_label(key: str) -> str:
    _, a, b = key.split("_")
    return f"MSE {a}-{b}"


def _scale_summary(cfg: Config) -> str:
    steps = (cfg.steps_per_epoch or 0) * cfg.epochs
    layers = len(cfg.hidden_channels)
    return (f"{layers} layer{'s' if layers > 1 else ''} of {', '.join(map(str, cfg.hidden_channels))} channels, kernel "
            f"{cfg.kernel_size}, patch {cfg.patch_size}, {cfg.input_frames} -> {cfg.output_frames} frames, "
            + (f"{steps} steps" if steps else f"{cfg.epochs} epochs") + f" of batch {cfg.batch_size}, lr {cfg.lr:g}, "
            f"{cfg.sampling} sampling")


def _pairs_markdown(pairs: list[dict[str, Any]]) -> list[str]:
    """The paired-differences table of one dataset: STC-X minus X per seed, mean +- std, STC better k/n."""
    lines: list[str] = []
    keys = list(dict.fromkeys(k for p in pairs for k in p["keys"]))
    names = [k.upper() if k in METRICS else _range_label(k) for k in keys]
    lines += ["", "### Paired differences: STC-X minus X, same seed", "",
              "Each STC neuron against its base neuron trained with the same seed (same initial data order "
              "and scheduled-sampling draws). Negative ΔMSE / ΔMAE and positive ΔSSIM / ΔPSNR mean the STC "
              "neuron is better; the last rows give mean ± sample std over seeds and in how many seeds the "
              "STC neuron was better.", "",
              "| pair | seed | " + " | ".join(f"Δ{n}" for n in names) + " |",
              "|---|---|" + "---:|" * len(keys)]
    for p in pairs:
        label = f"{p['stc']} − {p['base']}"
        digits = {"ssim": 4, "psnr": 3}
        for s in p["per_seed"]:
            lines.append(f"| {label} | {s['seed']} | "
                         + " | ".join(_fmt(s[k], float("nan"), digits.get(k, 2), sign=True) if k in s
                                      else "-" for k in keys) + " |")
        n = len(p["seeds"])
        lines.append(f"| {label} | mean ± std (n = {n}) | "
                     + " | ".join(_fmt(p.get(k + "_mean", float("nan")), p.get(k + "_std", float("nan")),
                                       digits.get(k, 2), sign=True) for k in keys) + " |")
        lines.append(f"| {label} | STC better | "
                     + " | ".join(f"{p[k + '_stc_better']}/{n}" if k + "_stc_better" in p else "-"
                                  for k in keys) + " |")
    return lines


def _header_lines(grid: Grid, rows: list[dict[str, Any]], command: str | None) -> list[str]:
    """The table's caption: command, seeds, cells finished, machine, threads, jobs and load."""
    cells = grid.cells
    seeds = sorted({c.seed for c in cells})
    done = sum(c.finished for c in cells)
    command = command or f"stcsnn reproduce --scale {grid.name}"
    threads = sorted({t for r in rows for t in r["timing"]["threads"]})
    jobs = sorted({j for r in rows for j in r["timing"]["jobs"]})
    loads = [x for r in rows for x in r["timing"]["loadavg"]]
    lines = [f"# stcsnn reproduce: scale {grid.name}", "",
             f"command: `{command}`  ", f"seeds: {', '.join(map(str, seeds))}  ",
             f"cells: {done} of {len(cells)} finished" + ("" if done == len(cells) else
                                                            " (the others are missing from this table)") + "  ",
             f"machine: {_machine(cells)}" + ("  " if threads else "")]
    if threads:
        lines.append(f"threads per cell: {', '.join(map(str, threads))}; cells at a time: "
                     f"{', '.join(map(str, jobs))}; 1-minute load average during the cells: "
                     + (f"{min(loads):.1f} to {max(loads):.1f}" if loads else "unknown"))
    return lines


def results_markdown(grid: Grid, rows: list[dict[str, Any]], table: list[dict[str, Any]],
                     paired: list[dict[str, Any]], command: str | None = None) -> str:
    cells = grid.cells
    lines = _header_lines(grid, rows, command)
    lines += ["", "Test split, the evaluated checkpoint (best validation MSE) of each run. MSE and MAE are "
              "per-frame sums over pixels (OpenSTL's convention). Mean ± sample standard deviation (n - 1) over "
              "seeds (no ± with one seed). MSE a-b: mean per-frame MSE over predicted frames a..b of the same test "
              "sequences rolled out past the trained horizon (fully autoregressive). MACs and SOPs are per "
              "sequence, counted by `stcsnn energy` on the real forward pass. Firing rate: mean over layers "
              "(SNN rows only). Train time: wall-clock seconds of training and validation per cell.", ""]
    for d in dict.fromkeys(r["dataset"] for r in table):
        rows_d = [r for r in table if r["dataset"] == d]
        ranges = _range_keys([{k[:-5]: 1 for k in r if k.endswith("_mean")} for r in rows_d])
        first = next(c for c in cells if c.dataset == d)
        lines += [f"## {d}", "", f"Data: {grid.data_notes.get(d, d)}.  ",
                  f"Model and training: {_scale_summary(first.cfg)}.  "]
        tested = sorted({r["test_samples"] for r in rows if r["dataset"] == d and r.get("test_samples")})
        if tested:
            lines.append(f"Test sequences per cell: {', '.join(map(str, tested))}.  ")
        unavailable = sorted({r["long"].get("reason", "") for r in rows
                              if r["dataset"] == d and not r["long"].get("available")} - {""})
        if unavailable:
            lines.append(f"No long-term evaluation for some cells: {'; '.join(unavailable)}.  ")
        lines += ["", "| model | kind | seeds | MSE | MAE | SSIM | PSNR | "
                  + "".join(f"{_range_label(k)} | " for k in ranges)
                  + "params | MACs (M) | SOPs (M) | firing rate | train time (s) |",
                  "|---|---|---:|" + "---:|" * (4 + len(ranges) + 5)]
        for r in rows_d:
            lines.append(
                f"| {r['model']} | {r['kind']} | {r['seeds']} | {_fmt(r['mse_mean'], r['mse_std'], 2)} | "
                f"{_fmt(r['mae_mean'], r['mae_std'], 2)} | {_fmt(r['ssim_mean'], r['ssim_std'], 4)} | "
                f"{_fmt(r['psnr_mean'], r['psnr_std'], 3)} | "
                + "".join(f"{_fmt(r[k + '_mean'], r[k + '_std'], 2)} | " for k in ranges)
                + f"{int(r['params_mean']):,d} | {_fmt(r['macs_mean'], float('nan'), 2, 1e6)} | "
                f"{_fmt(r['sops_mean'], r['sops_std'], 2, 1e6)} | "
                f"{_fmt(r['firing_rate_mean'], r['firing_rate_std'], 3)} | "
                f"{_fmt(r['train_seconds_mean'], r['train_seconds_std'], 0)} |")
        pairs = [p for p in paired if p["dataset"] == d]
        if pairs:
            lines += _pairs_markdown(pairs)
        refs = REFERENCES.get(d)
        if refs:
            lines += ["", "Outside references (reported by others at their own scale, not measured here):", ""]
            for ref in refs:
                vals = ", ".join(f"{k.upper()} {ref[k]}" for k in METRICS if k in ref)
                lines.append(f"- {ref['model']}: {vals} ({ref['source']})")
        plots = f"`per_horizon_{d}.png` (every model)" + (f", `pairs_{d}.png` (each STC neuron against its base "
                                                          "neuron)" if pairs else "")
        lines += ["", f"Per-horizon plots: {plots}; mean over seeds with a band of ± one standard deviation.", ""]
    return "\n".join(lines)


def write_results(grid: Grid, command: str | None = None, plots: bool = True) -> list[Path]:
    """``table.md``, ``table.csv``, ``paired.csv``, ``runs.csv``, ``per_horizon.csv``, ``results.json`` and the
    plots for the finished cells of ``grid``; returns the written paths."""
    from stcsnn.io import atomic_write_text

    root = grid.root
    rows = [cell_row(c) for c in grid.cells if c.finished]
    if not rows:
        raise StcsnnError(f"no finished runs under {root}")
    table = aggregate(rows)
    paired = paired_differences(rows)
    horizon = horizon_series(rows)
    root.mkdir(parents=True, exist_ok=True)
    flat = [{k: v for k, v in r.items() if k not in ("per_horizon", "long", "timing")} for r in rows]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    paths = [write_csv(root / "runs.csv", flat, fields)]
    paths.append(write_csv(root / "table.csv", table, list(dict.fromkeys(k for r in table for k in r))))
    paired_rows = [{"dataset": p["dataset"], "stc": p["stc"], "base": p["base"], "seed": s["seed"],
                    **{k: s[k] for k in p["keys"]}} for p in paired for s in p["per_seed"]]
    paired_rows += [{"dataset": p["dataset"], "stc": p["stc"], "base": p["base"], "seed": stat,
                     **{k: p[f"{k}_{stat}"] for k in p["keys"]}} for p in paired for stat in ("mean", "std")]
    if paired_rows:
        paths.append(write_csv(root / "paired.csv", paired_rows, list(dict.fromkeys(k for r in paired_rows
                                                                                      for k in r))))
    atomic_write_text(root / "table.md", results_markdown(grid, rows, table, paired, command))
    paths.append(root / "table.md")
    if horizon:
        paths.append(write_csv(root / "per_horizon.csv", horizon))
    payload = {"scale": grid.name, "command": command or f"stcsnn reproduce --scale {grid.name}",
               "machine": _machine(grid.cells), "data": grid.data_notes,
               "cells": {"total": len(grid.cells), "finished": len(rows)},
               "runs": rows, "table": table, "paired": paired, "per_horizon": horizon}
    paths.append(write_json(root / "results.json", clean_json(payload)))
    if horizon and plots:
        paths += plot_horizons(horizon, root, {c.dataset: c.cfg.output_frames for c in grid.cells})
    return paths


def _band(ax, rows: list[dict[str, Any]], label: str, style: str = "-", color=None) -> None:
    x = [r["frame"] for r in rows]
    mean = [r["mean"] for r in rows]
    (line,) = ax.plot(x, mean, style, marker="o", ms=2.5, label=label, color=color)
    std = [r["std"] for r in rows]
    if all(s is not None and math.isfinite(s) for s in std):
        ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2, lw=0)


def plot_horizons(rows: list[dict[str, Any]], root: Path, trained: dict[str, int] | None = None) -> list[Path]:
    """``per_horizon_<dataset>.png`` (MSE and SSIM per predicted frame, every model) and ``pairs_<dataset>.png``
    (one row per STC pair); a dotted line marks the trained horizon."""
    from stcsnn.analysis.common import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return []
    trained = trained or {}
    paths = []

    def finish(ax, d: str, metric: str) -> None:
        if d in trained and max(r["frame"] for r in rows if r["dataset"] == d) > trained[d]:
            ax.axvline(trained[d] + 0.5, color="grey", lw=0.8, ls=":",
                       label=f"trained horizon ({trained[d]} frames)")
        ax.set_xlabel("predicted frame")
        ax.set_ylabel(metric.upper() + (" (per frame, sum over pixels)" if metric == "mse" else ""))
        # every panel has its legend, below the axes: no line or band is drawn over its text
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)

    for d in dict.fromkeys(r["dataset"] for r in rows):
        models = list(dict.fromkeys(r["model"] for r in rows if r["dataset"] == d))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, metric in zip(axes, ("mse", "ssim")):
            for m in models:
                rs = [r for r in rows if r["dataset"] == d and r["model"] == m and r["metric"] == metric]
                _band(ax, rs, m, "--" if is_ann_name(m) else "-")
            finish(ax, d, metric)
            ax.set_title(f"{d}: {metric.upper()} per predicted frame")
        fig.tight_layout()
        paths.append(save_figure(fig, root / f"per_horizon_{d}.png"))
        pairs = stc_pairs(models)
        if pairs:
            fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 3.4 * len(pairs)), squeeze=False)
            for (stc, base), row in zip(pairs, axes):
                for ax, metric in zip(row, ("mse", "ssim")):
                    for m, color in ((base, "tab:blue"), (stc, "tab:red")):
                        rs = [r for r in rows if r["dataset"] == d and r["model"] == m and r["metric"] == metric]
                        _band(ax, rs, m, color=color)
                    finish(ax, d, metric)
                    ax.set_title(f"{d}: {stc} vs {base}, {metric.upper()}")
            fig.tight_layout()
            paths.append(save_figure(fig, root / f"pairs_{d}.png"))
    return paths


def is_ann_name(model: str) -> bool:
    from stcsnn.neurons.registry import NEURONS

    spec = NEURONS.get(model)
    return bool(spec is not None and spec.is_ann)


__all__ = ["Cell", "Grid", "TrainedCell", "aggregate", "finished_cells", "horizon_ranges", "long_horizon", "mean_std",
           "paired_differences", "plan_grid", "run_cell", "run_grid", "write_results"]
